"""The schema migration step (infra/hostboot/migrate.py, SECURITY_INVARIANTS.md 72) against real
PostgreSQL, and its units as rendered.

The databases: the machine's PostgreSQL at 127.0.0.1:5432, one role owning three databases
with names unique to the test, dropped after. A database is put at an older revision with the
tools' own migrations (tests/hosts/migration_setup.py); the step runs as its unit runs it
(``python migrate.py mlflow|prefect`` with the service's environment).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hostboot.cloudconfig import MIGRATE_SCRIPT
from hostboot.units import BOOTSTRAP_UNIT
from psycopg import sql

from tests.hosts.rendered_hosts import Rendered, parse_unit, unit_environment

HOST, PORT, SUPERUSER = "127.0.0.1", 5432, "postgres"
SETUP = Path(__file__).with_name("migration_setup.py")
STEPS = {
    "mlflow-migrate.service": "mlflow.service",
    "prefect-migrate.service": "prefect-server.service",
}


@dataclass(frozen=True)
class Databases:
    """A role and its three databases, and the environment the migration steps read."""

    prefix: str
    environment: dict[str, str]

    def name(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"


def superuser(dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(host=HOST, port=PORT, user=SUPERUSER, dbname=dbname, autocommit=True)


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[Databases]:
    """A role owning three new databases, as the boot step leaves them (but one role)."""
    prefix = f"migr_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    with superuser() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(prefix), sql.Literal(password)))  # fmt: skip
        for kind in ("mlflow", "mlflow_auth", "prefect"):
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(f"{prefix}_{kind}"), sql.Identifier(prefix)))  # fmt: skip
    url = f"{prefix}:{password}@{HOST}:{PORT}/{prefix}"
    auth_ini = tmp_path / "mlflow-auth.ini"
    auth_ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = postgresql+psycopg://{url}_mlflow_auth?sslmode=disable\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg://{url}_mlflow?sslmode=disable",
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{url}_prefect",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    try:
        yield Databases(prefix=prefix, environment=environment)
    finally:
        with superuser() as conn:
            for kind in ("mlflow", "mlflow_auth", "prefect"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(f"{prefix}_{kind}")))  # fmt: skip
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(prefix)))


def setup(databases: Databases, *args: str) -> str:
    """Run migration_setup.py with the databases' environment; its output."""
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(SETUP), *args],
        env=databases.environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def migrate(databases: Databases, service: str) -> subprocess.CompletedProcess[str]:
    """The migration step of ``service`` as its unit runs it."""
    return subprocess.run(
        [sys.executable, str(MIGRATE_SCRIPT), service],
        env=databases.environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def heads() -> dict[str, str]:
    """The installed packages' head revision of each database."""
    import json

    result = subprocess.run(
        [sys.executable, str(MIGRATE_SCRIPT), "heads"], capture_output=True, text=True, check=True
    )
    return {kind: found["head"] for kind, found in json.loads(result.stdout).items()}


def revision(databases: Databases, kind: str, table: str = "alembic_version") -> str:
    """The revision the database of ``kind`` is at."""
    with superuser(databases.name(kind)) as conn:
        row = conn.execute(sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(table)))
        (found,) = row.fetchone() or ("",)
    return str(found)


def test_72_older_schemas_are_upgraded_and_the_log_names_from_and_to(
    databases: Databases,
) -> None:
    head = heads()
    older = {kind: setup(databases, "older", kind, "3") for kind in ("mlflow", "prefect")}
    older["mlflow_auth"] = setup(databases, "older", "mlflow_auth", "2")
    for kind, old in older.items():
        setup(databases, "upgrade", kind, old)
        assert old != head[kind]

    for service, kinds in (("mlflow", ("mlflow", "mlflow_auth")), ("prefect", ("prefect",))):
        result = migrate(databases, service)
        assert result.returncode == 0, result.stderr
        for kind in kinds:
            line = f"'{databases.name(kind)}' migrated from {older[kind]} to {head[kind]} in "
            assert line in result.stderr, result.stderr
    assert revision(databases, "mlflow") == head["mlflow"]
    assert revision(databases, "mlflow_auth", "alembic_version_auth") == head["mlflow_auth"]
    assert revision(databases, "prefect") == head["prefect"]

    again = migrate(databases, "mlflow")
    assert again.returncode == 0, again.stderr
    assert f"'{databases.name('mlflow')}' already at {head['mlflow']}" in again.stderr


def test_72_a_restored_auth_database_gets_this_stacks_admin_password(
    databases: Databases,
) -> None:
    """The server never changes an existing admin's password; the step does."""
    setup(databases, "admin", "create", "the-source-stacks-password")
    ours = "this-stacks-admin-password"
    databases.environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = ours

    result = migrate(databases, "mlflow")

    assert result.returncode == 0, result.stderr
    assert "the MLflow admin 'admin' had another password" in result.stderr
    assert ours not in result.stderr
    setup(databases, "admin", "check", ours)
    again = migrate(databases, "mlflow")
    assert "had another password" not in again.stderr


def test_72_a_corrupted_revision_fails_naming_the_database_and_the_service(
    databases: Databases,
) -> None:
    assert migrate(databases, "mlflow").returncode == 0  # new databases: created at head
    with superuser(databases.name("mlflow")) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0badc0ffee00'")

    result = migrate(databases, "mlflow")

    assert result.returncode == 1
    (failure,) = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert f"the MLflow tracking database '{databases.name('mlflow')}'" in failure
    assert "from revision 0badc0ffee00 failed" in failure
    assert "mlflow will not start" in failure
    assert "systemctl restart mlflow" in failure
    assert databases.environment["MLFLOW_BACKEND_STORE_URI"].split("@")[0] not in result.stderr


def test_72_a_database_the_role_cannot_alter_fails_naming_it(databases: Databases) -> None:
    """Prefect's database owned by another role: the step's role may connect, not create."""
    name = databases.name("prefect")
    with superuser() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(name), sql.Identifier(SUPERUSER)))  # fmt: skip
    with superuser(name) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")

    result = migrate(databases, "prefect")

    assert result.returncode == 1
    (failure,) = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert f"upgrading the Prefect database '{name}' from revision None failed" in failure
    assert "prefect-server will not start" in failure


def test_72_migration_steps_are_oneshots_the_servers_require(control: Rendered) -> None:
    units = control.units()
    for step, service in STEPS.items():
        step_unit, service_unit = parse_unit(units[step]), parse_unit(units[service])
        assert step_unit["Service"]["Type"] == ["oneshot"]
        assert step_unit["Service"]["RemainAfterExit"] == ["yes"]
        # Failed once, it stays failed: no crash loop, and the server is not started.
        assert step_unit["Service"]["Restart"] == ["no"]
        assert step_unit["Unit"]["PartOf"] == [service]  # rerun when the server restarts
        assert step in service_unit["Unit"]["Requires"]
        assert step in service_unit["Unit"]["After"]
        assert BOOTSTRAP_UNIT in step_unit["Unit"]["After"][0].split()
        # The server's own identity and secrets: it reaches exactly the server's databases.
        for key in ("User", "EnvironmentFile", "WorkingDirectory"):
            assert step_unit["Service"][key] == service_unit["Service"][key], key
        assert unit_environment(step_unit) == unit_environment(service_unit)
        (argv,) = step_unit["Service"]["ExecStart"]
        assert re.fullmatch(r"/opt/mlops/venv/bin/python /opt/mlops/migrate\.py \w+", argv)
    # Prefect's server never migrates by itself (only the logged, refusing step does), and the
    # step keeps the Prefect user away from the instance metadata like its server.
    prefect = parse_unit(units["prefect-server.service"])
    assert unit_environment(prefect)["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"
    step_unit = parse_unit(units["prefect-migrate.service"])
    assert step_unit["Service"]["ExecStartPre"] == prefect["Service"]["ExecStartPre"]
    assert control.files["/opt/mlops/migrate.py"] == MIGRATE_SCRIPT.read_text()
    # The env files are written once, by the boot step, from the servers' templates.
    paths = [f["path"] for f in control.boot_config()["files"]]
    assert len(paths) == len(set(paths))
