"""The boot step's database work against real PostgreSQL: one role per service, each reaching
only its own database (SECURITY_INVARIANTS.md 49), and the server's certificate verified
(50).

Roles: the machine's PostgreSQL at 127.0.0.1:5432, with a master role made as RDS makes
it (may create databases and roles, no superuser) and names unique to the test, dropped after.
TLS: a throwaway cluster in a temporary directory with a test CA made by openssl, on a
loopback port, stopped after.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hostboot
import psycopg
import pytest
from hostboot import ControlHostSettings, boot
from hostboot.services import ServiceDatabase, libpq_tls_query, prefect_tls_environment
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.hosts.rendered_hosts import CONTROL, Rendered

HOST, PORT, SUPERUSER = "127.0.0.1", 5432, "postgres"


@dataclass(frozen=True)
class Cluster:
    """A master role and the boot config naming it and three service databases."""

    prefix: str
    config: dict[str, Any]
    passwords: dict[str, str]

    @property
    def databases(self) -> list[dict[str, str]]:
        return list(self.config["databases"])


def superuser() -> psycopg.Connection[Any]:
    return psycopg.connect(host=HOST, port=PORT, user=SUPERUSER, dbname="postgres", autocommit=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """RDS as it is before the first boot: the master role and its first database."""
    prefix = f"svcsec_{secrets.token_hex(4)}"
    master = f"{prefix}_master"
    passwords = {
        name: secrets.token_urlsafe(24) for name in ("master", "mlflow", "auth", "prefect")
    }
    databases = [
        ServiceDatabase(
            name=f"{prefix}_mlflow", owner=f"{prefix}_mlflow", password_secret="mlflow"
        ),
        ServiceDatabase(
            name=f"{prefix}_mlflow_auth", owner=f"{prefix}_mlflow_auth", password_secret="auth"
        ),
        ServiceDatabase(
            name=f"{prefix}_prefect", owner=f"{prefix}_prefect", password_secret="prefect"
        ),
    ]
    config = {
        "host": HOST,
        "port": PORT,
        "user": master,
        "sslmode": "disable",
        "sslrootcert": None,
        "maintenance_db": "postgres",
        "databases": [db.__dict__ for db in databases],
        "password_secret": "master",
    }
    with superuser() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                sql.Identifier(master), sql.Literal(passwords["master"])
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(databases[0].name), sql.Identifier(master)
            )
        )
    try:
        yield Cluster(prefix=prefix, config=config, passwords=passwords)
    finally:
        with superuser() as conn:
            for db in databases:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db.name)
                    )
                )
            for role in (*(db.owner for db in databases), master):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def password_is(role: str, password: str) -> bool:
    """Whether ``role``'s stored SCRAM verifier is ``password``'s.

    The shared server trusts loopback logins, so a login would prove nothing about the
    password: the verifier in ``pg_authid`` is checked instead (RFC 5802's StoredKey).
    """
    with superuser() as conn:
        query = "SELECT rolpassword FROM pg_authid WHERE rolname = %s"
        row = conn.execute(query, (role,)).fetchone()
    assert row is not None, f"no role {role}"
    (verifier,) = row
    mechanism, rest = verifier.split("$", 1)
    assert mechanism == "SCRAM-SHA-256", verifier[:16]
    parameters, keys = rest.split("$")
    iterations, salt = parameters.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key))


def connect_as(role: str, password: str, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=HOST, port=PORT, user=role, password=password, dbname=database, autocommit=True
    )


def test_invariant_49_each_service_role_reaches_only_its_own_database(cluster: Cluster) -> None:
    boot.create_databases(cluster.config, cluster.passwords)
    for db in cluster.databases:
        with connect_as(db["owner"], cluster.passwords[db["password_secret"]], db["name"]) as conn:
            # The owner may build its schema (MLflow and Prefect migrate at start).
            conn.execute("CREATE TABLE probe (id int)")
            conn.execute("DROP TABLE probe")
            attributes = conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles"
                " WHERE rolname = current_user"
            ).fetchone()
            assert attributes == (False, False, False), db["owner"]
        for other in cluster.databases:
            if other is db:
                continue
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                connect_as(db["owner"], cluster.passwords[db["password_secret"]], other["name"])


def test_invariant_49_boot_is_idempotent_and_resets_a_changed_password(cluster: Cluster) -> None:
    boot.create_databases(cluster.config, cluster.passwords)
    rotated = {**cluster.passwords, "prefect": secrets.token_urlsafe(24)}
    boot.create_databases(cluster.config, rotated)
    with superuser() as conn:
        owners = conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname LIKE %s",
            (f"{cluster.prefix}_%",),
        ).fetchall()
        public = conn.execute(
            "SELECT count(*) FROM pg_database, aclexplode(datacl) a "
            "WHERE datname LIKE %s AND a.grantee = 0",
            (f"{cluster.prefix}_%",),
        ).fetchone()
    assert sorted(owners) == sorted((db["name"], db["owner"]) for db in cluster.databases)
    assert public == (0,), "PUBLIC may still connect to a service database"
    prefect = cluster.databases[2]
    with connect_as(prefect["owner"], rotated["prefect"], prefect["name"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (prefect["owner"],)


def test_invariant_49_a_database_restored_from_another_stack_gets_this_stacks_passwords(
    cluster: Cluster,
) -> None:
    """``restoreFromSnapshot``: the roles exist with the old stack's passwords; the boot resets
    every one to this stack's secrets, and the old passwords no longer log in."""
    boot.create_databases(cluster.config, cluster.passwords)  # the old stack's first boot
    fresh = {name: secrets.token_urlsafe(24) for name in ("mlflow", "auth", "prefect")}
    restored = {**cluster.passwords, **fresh}  # the master password is set by RDS on restore
    boot.create_databases(cluster.config, restored)
    for db in cluster.databases:
        assert password_is(db["owner"], fresh[db["password_secret"]]), db["owner"]
        assert not password_is(db["owner"], cluster.passwords[db["password_secret"]])


def test_invariant_49_services_connect_as_their_roles_and_never_see_the_master_password(
    control: Rendered,
) -> None:
    files = control.secret_file_templates()
    text = "".join(files.values())
    assert "${db_password}" not in text, "the master password reached a service's file"
    assert "mlflow:${mlflow_db_password}@" in files["/etc/mlops/mlflow.env"]
    assert "mlflow_auth:${mlflow_auth_db_password}@" in files["/etc/mlops/mlflow-auth.ini"]
    assert "prefect:${prefect_db_password}@" in files["/etc/mlops/prefect-server.env"]
    database = control.boot_config()["database"]
    assert database["password_secret"] == "db_password"
    assert [db["owner"] for db in database["databases"]] == ["mlflow", "mlflow_auth", "prefect"]


# -- TLS: verify-full against a throwaway cluster with a test CA ----------------------------------


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed test CA ``<name>.crt`` (key beside it)."""
    openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt")  # fmt: skip
    return directory / f"{name}.crt"


def sign_server_certificate(directory: Path, ca: str) -> None:
    """``server.crt``/``server.key`` for the name ``localhost`` (only), signed by ``ca``."""
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    openssl(directory, "x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey",
            f"{ca}.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
            "-out", "server.crt")  # fmt: skip


def as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True)


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: Path  # signed the server's certificate
    other_ca: Path  # an unrelated CA


@pytest.fixture
def tls_server() -> Iterator[TlsServer]:
    """A throwaway TLS-only cluster (trust auth, superuser ``postgres``) on a loopback port."""
    directory = Path(tempfile.mkdtemp(prefix="pg-tls-"))  # not under /tmp/pytest-of-root (0700)
    try:
        ca, other_ca = make_ca(directory, "test-ca"), make_ca(directory, "other-ca")
        sign_server_certificate(directory, "test-ca")
        for path in (directory, directory / "server.key", directory / "server.crt"):
            shutil.chown(path, "postgres", "postgres")
        (directory / "server.key").chmod(0o600)
        data = directory / "data"
        as_postgres("initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"ssl = on\nssl_cert_file = '{directory}/server.crt'\n"
                f"ssl_key_file = '{directory}/server.key'\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{directory}'\n"
            )
        (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\n")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        log = directory / "server.log"  # the server must not hold our pipes: pg_ctl waits on them
        as_postgres(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            f"-p {port}",
            "-w",
            "-t",
            "120",
            "start",
        )
        try:
            yield TlsServer(port=port, ca=ca, other_ca=other_ca)
        finally:
            as_postgres("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def tls_settings(server: TlsServer, ca: Path, host: str = "localhost") -> ControlHostSettings:
    """The control host's settings pointing at the throwaway cluster, with CA ``ca``."""
    return dataclasses.replace(
        CONTROL, db_host=host, db_port=server.port, db_ca_file=str(ca), db_ca_bundle_url=None
    )


def test_invariant_50_libpq_verifies_the_server_certificate_and_name(tls_server: TlsServer) -> None:
    def connect(settings: ControlHostSettings) -> None:
        query = dict(pair.split("=") for pair in libpq_tls_query(settings).split("&"))
        conninfo = (
            f"host={settings.db_host} port={settings.db_port} user={SUPERUSER} dbname=postgres"
        )
        psycopg.connect(make_conninfo(conninfo, **query), connect_timeout=10).close()

    connect(tls_settings(tls_server, tls_server.ca))  # the rendered parameters work
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connect(tls_settings(tls_server, tls_server.other_ca))  # an impostor's certificate
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        connect(tls_settings(tls_server, tls_server.ca, host="127.0.0.1"))  # another name


def test_invariant_50_boot_step_connects_with_verify_full(tls_server: TlsServer) -> None:
    plan = hostboot.control_plan(tls_settings(tls_server, tls_server.ca))
    assert plan.boot.database is not None
    rendered = plan.boot.to_json_dict(service_groups=False)["database"]
    assert isinstance(rendered, dict)
    database: dict[str, Any] = {**rendered}
    assert (database["sslmode"], database["sslrootcert"]) == ("verify-full", str(tls_server.ca))
    prefix = f"svcsec_{secrets.token_hex(4)}"
    database.update(
        user=SUPERUSER,
        databases=[{"name": f"{prefix}_db", "owner": f"{prefix}_role", "password_secret": "p"}],
    )
    boot.create_databases(database, {"db_password": "unused-trust", "p": "x" * 16})
    with psycopg.connect(
        host="localhost", port=tls_server.port, user=SUPERUSER, dbname=f"{prefix}_db",
        sslmode="verify-full", sslrootcert=str(tls_server.ca),
    ) as conn:  # fmt: skip
        assert conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone() == (True,)


PREFECT_PROBE = """
import asyncio, os
from prefect.server.database.configurations import AsyncPostgresConfiguration

async def main():
    engine = await AsyncPostgresConfiguration(connection_url=os.environ["URL"]).engine()
    async with engine.connect() as conn:
        query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        print((await conn.exec_driver_sql(query)).scalar())

asyncio.run(main())
"""


def test_invariant_50_prefect_asyncpg_verifies_the_server(tls_server: TlsServer) -> None:
    def probe(ca: Path) -> subprocess.CompletedProcess[str]:
        environment = prefect_tls_environment(tls_settings(tls_server, ca))
        url = f"postgresql+asyncpg://{SUPERUSER}@localhost:{tls_server.port}/postgres"
        return subprocess.run(
            [sys.executable, "-c", PREFECT_PROBE],
            env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "URL": url, **environment},
            capture_output=True,
            text=True,
            timeout=180,
        )

    verified = probe(tls_server.ca)
    assert verified.returncode == 0, verified.stderr[-2000:]
    assert verified.stdout.strip() == "True"
    impostor = probe(tls_server.other_ca)
    assert impostor.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in impostor.stderr
