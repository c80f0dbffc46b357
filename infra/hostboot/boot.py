"""Host boot step: fetch the stack's secrets and lay down what the services read.

Runs once per instance as root from the bootstrap script, with the host's virtualenv
(``/opt/mlops/venv/bin/python boot.py /etc/mlops/boot.json``); the local twin runs this very
file with its own config. It is standalone on purpose: standard library plus boto3 (and
psycopg where databases are created), no import of the renderer.

1. Every secret named in the config is fetched from AWS Secrets Manager by ARN (instance
   profile credentials) and checked: long enough, and only URL-safe characters, since the
   values sit in connection strings and env files.
2. Every file in the config is its template with ``${secret}`` placeholders substituted,
   written atomically with its mode and group (env files stay root-only: systemd reads them
   before it drops privileges; a file the service itself reads is group-readable by the
   service's group; none is world-readable).
3. The database's CA bundle is fetched over HTTPS and installed, so that every client checks
   the server's certificate and name (verify-full).
4. As the master user, through the maintenance database: one login role per service (its
   password reset to the stored one), owning its database (created if missing), which no
   other role may connect to. The master password goes nowhere else.

The config holds no secret value, only ARNs and templates.
"""

from __future__ import annotations

import grp
import json
import os
import re
import string
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

SECRET_VALUE = re.compile(r"[A-Za-z0-9_-]+")
RETRY_DEADLINE_SECONDS = 600.0
RETRY_PAUSE_SECONDS = 5.0

T = TypeVar("T")


class BootError(Exception):
    """A boot step failed in a way the operator must fix; the message says which and why."""


def retry(what: str, attempt: Callable[[], T], seconds: float = RETRY_DEADLINE_SECONDS) -> T:
    """``attempt()`` until it succeeds or ``seconds`` pass (the network is slow at boot)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return attempt()
        except BootError:
            raise
        except Exception as exc:  # the SDKs raise many types for "not reachable yet"
            if time.monotonic() > deadline:
                raise BootError(f"{what} still failing after {seconds:.0f} s: {exc}") from exc
            print(f"boot: {what} failed ({exc}); retrying", file=sys.stderr)
            time.sleep(RETRY_PAUSE_SECONDS)


def check_secret(name: str, value: str, min_length: int) -> str:
    """``value`` if it is a usable secret, else a BootError naming the secret (not the value)."""
    if len(value) < min_length:
        raise BootError(
            f"secret {name} is {len(value)} characters long; at least {min_length} are needed"
        )
    if not SECRET_VALUE.fullmatch(value):
        raise BootError(f"secret {name} holds characters outside [A-Za-z0-9_-]")
    return value


def read_secret(region: str, arn: str) -> str:
    """One secret's value, through a client of its own.

    A new session per attempt: the instance profile's credentials may appear only after the
    first attempt, and a client keeps whatever credentials (none) it found when it was built.
    """
    import boto3

    client = boto3.session.Session().client("secretsmanager", region_name=region)
    return str(client.get_secret_value(SecretId=arn)["SecretString"])


def fetch_secrets(region: str, arns: Mapping[str, str], min_length: int) -> dict[str, str]:
    """The secret values by name, read from Secrets Manager by ARN."""
    values = {}
    for name, arn in arns.items():
        value = retry(f"reading secret {name}", partial(read_secret, region, arn))
        values[name] = check_secret(name, value, min_length)
    return values


def write_file(path: Path, content: str, mode: int, group: str | None) -> None:
    """Write ``content`` to ``path`` atomically with ``mode``, owned by root:``group``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if group is not None:
            os.fchown(fd, 0, grp.getgrnam(group).gr_gid)
        os.fchmod(fd, mode)
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_files(files: list[dict[str, Any]], secrets: Mapping[str, str]) -> None:
    """Write every configured file with its ``${secret}`` placeholders substituted."""
    for spec in files:
        try:
            content = string.Template(spec["template"]).substitute(secrets)
        except KeyError as exc:
            raise BootError(f"file {spec['path']} refers to unknown secret {exc}") from None
        write_file(Path(spec["path"]), content, int(spec["mode"], 8), spec.get("group"))


def install_ca_bundle(bundle: Mapping[str, Any]) -> None:
    """Fetch the CA bundle over HTTPS (the system's trust) and install it world-readable."""
    import hashlib
    import ssl
    import tempfile
    import urllib.request

    url = bundle["url"]
    if not url.startswith("https://"):
        raise BootError(f"the CA bundle must be fetched over https, not {url!r}")

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (https only)
            return bytes(response.read())

    content = retry(f"fetching the CA bundle {url}", fetch)
    digest = hashlib.sha256(content).hexdigest()
    if bundle.get("sha256") and digest != bundle["sha256"]:
        raise BootError(f"CA bundle {url} has sha256 {digest}; expected {bundle['sha256']}")
    with tempfile.NamedTemporaryFile(suffix=".pem") as probe:
        probe.write(content)
        probe.flush()
        try:
            ssl.create_default_context(cafile=probe.name)
        except ssl.SSLError as exc:
            raise BootError(f"CA bundle {url} holds no usable certificate: {exc}") from None
    write_file(Path(bundle["path"]), content.decode(), 0o644, None)


def ensure_role(conn: Any, role: str, password: str, master: str) -> None:
    """Login role ``role`` with ``password`` (reset if it exists), granted to the master.

    The master may then make it a database's owner (PostgreSQL requires membership); the
    role itself gets no attribute: no CREATEDB, CREATEROLE or membership of anything.
    """
    from psycopg import errors, sql

    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    statement = "ALTER ROLE {} LOGIN PASSWORD {}" if exists else "CREATE ROLE {} LOGIN PASSWORD {}"
    try:
        conn.execute(sql.SQL(statement).format(sql.Identifier(role), sql.Literal(password)))
    except errors.DuplicateObject:  # created concurrently meanwhile
        conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    granted = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (master, role)).fetchone()
    if not granted[0]:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(master)))


def ensure_database(conn: Any, name: str, owner: str) -> None:
    """Database ``name`` owned by ``owner``, which only its owner may connect to."""
    from psycopg import errors, sql

    database, role = sql.Identifier(name), sql.Identifier(owner)
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
    else:
        # Created concurrently meanwhile: set its owner all the same.
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, role))
            print(f"boot: created database {name}", file=sys.stderr)
        except errors.DuplicateDatabase:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
    # PUBLIC may connect to every database by default: no other service's role may.
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))


def create_databases(database: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """One role per service owning its database, created or updated as the master user."""
    import psycopg

    def connect() -> psycopg.Connection[Any]:
        tls = {"sslrootcert": database["sslrootcert"]} if database.get("sslrootcert") else {}
        return psycopg.connect(
            host=database["host"],
            port=database["port"],
            user=database["user"],
            password=secrets[database["password_secret"]],
            dbname=database["maintenance_db"],
            sslmode=database["sslmode"],
            connect_timeout=10,
            autocommit=True,
            **tls,
        )

    with retry(f"connecting to {database['host']}:{database['port']}", connect) as conn:
        for service in database["databases"]:
            ensure_role(
                conn, service["owner"], secrets[service["password_secret"]], database["user"]
            )
            ensure_database(conn, service["name"], service["owner"])


def boot(config: Mapping[str, Any]) -> None:
    """Run the boot steps described by ``config`` (see the module docstring)."""
    secrets = fetch_secrets(config["region"], config["secrets"], config["min_secret_length"])
    write_files(config["files"], secrets)
    if config.get("ca_bundle"):
        install_ca_bundle(config["ca_bundle"])
    if config.get("database"):
        create_databases(config["database"], secrets)


def main(argv: list[str]) -> int:
    """``boot.py CONFIG.json``: exit 0 when done, 1 with one line on stderr when not."""
    if len(argv) != 2:
        print("usage: boot.py CONFIG.json", file=sys.stderr)
        return 2
    try:
        boot(json.loads(Path(argv[1]).read_text()))
    except BootError as exc:
        print(f"boot: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
