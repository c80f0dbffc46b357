"""Schema migrations before serving: ``python migrate.py mlflow|prefect``.

The ``ExecStart=`` of the oneshot units ``mlflow-migrate`` and ``prefect-migrate`` (rendered by
:mod:`hostboot.services`), which run as the service's own user with the service's own env file,
and which the service ``Requires=`` and starts ``After=``; the local twin runs the same command
before it starts the servers. For each of the service's databases it:

1. reads the alembic revision the database is at (waiting while the database is unreachable:
   it may be restarting, or not yet up after a restore);
2. runs the upgrade with the tool's own command: ``mlflow db upgrade`` (tracking database),
   ``mlflow.server.auth``'s ``db upgrade`` (the basic-auth app's database, whose version table
   is ``alembic_version_auth``), ``prefect server database upgrade -y``. The two MLflow
   commands take the URL as an argument: they are invoked in this process, so the password
   never shows on a command line (``/proc/*/cmdline`` is readable by every local user);
   Prefect's reads it from the environment and runs as a child process;
3. reads the revision again and logs ``from -> to`` with the time it took.

A failed upgrade exits 1 with one line naming the database, the revision it was at and the
tool's last words: the unit fails once (no restart: a migration that failed half-way is not
retried blindly), and systemd does not start the service that requires it, so the journal
shows the reason rather than a server crash-looping on an out-of-date schema. MLflow would
refuse to serve such a schema anyway; Prefect's server is told not to migrate on its own
(``PREFECT_SERVER_DATABASE_MIGRATE_ON_START=false``), so only this step changes a schema.

Standalone on purpose (standard library, SQLAlchemy and psycopg from the host's virtualenv),
like boot.py: the database URLs come from the environment the unit gives it.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONNECT_DEADLINE_SECONDS = 300.0
CONNECT_PAUSE_SECONDS = 5.0
UPGRADE_TIMEOUT_SECONDS = 3600  # a large database's migrations may take long; never forever
_TAIL_LINES = 3


class MigrationError(Exception):
    """A migration failed; the message names the database and what to do."""


@dataclass(frozen=True, kw_only=True)
class Database:
    """One database a service migrates: where it is and the command that upgrades it."""

    label: str  # e.g. "MLflow tracking"
    url: str  # a SQLAlchemy URL (any driver; read with psycopg)
    version_table: str
    upgrade: Callable[[], None]  # the tool's own upgrade command; raises on failure
    service: str  # the unit that will not start if this fails

    @property
    def name(self) -> str:
        """The database's name (the URL's path), for messages: never the URL (a password)."""
        return self.url.rsplit("/", 1)[-1].split("?", 1)[0]

    def __str__(self) -> str:
        """How messages name it: ``the MLflow tracking database 'mlflow'``."""
        return f"the {self.label} database {self.name!r}"

    @property
    def refusal(self) -> str:
        """What a failure means for the service, and what to do."""
        return (
            f"{self.service} will not start: restore the database from the snapshot taken before "
            f"the upgrade (docs/day2.md), or fix it, then `systemctl restart {self.service}`"
        )


def log(message: str) -> None:
    """One line to the journal (stderr: unbuffered)."""
    print(f"migrate: {message}", file=sys.stderr, flush=True)


def sync_url(url: str, environment: dict[str, str]) -> str:
    """``url`` for a synchronous psycopg connection.

    Prefect's URL names asyncpg and carries no TLS parameters (its settings do): the same
    checks are added as libpq's (verify-full against the same CA file).
    """
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite+aiosqlite":  # a test's stand-in for Prefect's database
        return f"sqlite://{rest}"
    if scheme.endswith("+asyncpg"):
        url = f"postgresql+psycopg://{rest}"
        prefix = "PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_"
        if environment.get(f"{prefix}ENABLED", "").lower() == "true":
            separator = "&" if "?" in url else "?"
            url += f"{separator}sslmode=verify-full&sslrootcert={environment[f'{prefix}CA_FILE']}"
    return url


def current_revision(url: str, version_table: str) -> str | None:
    """The revision the database is at (None: no version table, a new database)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sqlalchemy.inspect(conn).has_table(version_table):
                return None
            # The table name is one of MIGRATIONS' constants, never input.
            query = sqlalchemy.text(f"SELECT version_num FROM {version_table}")  # noqa: S608
            rows = conn.execute(query)
            revisions = sorted(str(row[0]) for row in rows)
    finally:
        engine.dispose()
    return ",".join(revisions) or None


def wait_for_revision(database: Database, read: Callable[[], str | None]) -> str | None:
    """The current revision, retrying while the database does not answer."""
    import sqlalchemy

    deadline = time.monotonic() + CONNECT_DEADLINE_SECONDS
    while True:
        try:
            return read()
        except sqlalchemy.exc.OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if time.monotonic() > deadline:
                raise MigrationError(
                    f"{database} did not answer within {CONNECT_DEADLINE_SECONDS:.0f} s "
                    f"({reason}); {database.refusal}"
                ) from exc
            log(f"{database} is not reachable ({reason}); retrying")
            time.sleep(CONNECT_PAUSE_SECONDS)


def migrate(database: Database, environment: dict[str, str]) -> tuple[str | None, str | None]:
    """Upgrade ``database`` to the installed packages' head; its revisions before and after."""
    url = sync_url(database.url, environment)
    before = wait_for_revision(database, lambda: current_revision(url, database.version_table))
    log(f"{database} is at revision {before or '(none: a new database)'}; upgrading")
    started = time.monotonic()
    try:
        database.upgrade()
    except Exception as exc:  # whatever the tool raised: the database is named, the URL never
        words = str(exc).strip().splitlines()[-_TAIL_LINES:]
        raise MigrationError(
            f"upgrading {database} from revision {before} failed "
            f"({type(exc).__name__}: {' | '.join(words) or 'no message'}). {database.refusal}"
        ) from exc
    after = current_revision(url, database.version_table)
    seconds = time.monotonic() - started
    if before == after:
        log(f"{database} already at {after} ({seconds:.1f} s)")
    else:
        log(f"{database} migrated from {before or '(none)'} to {after} in {seconds:.1f} s")
    return before, after


def click_command(command: Any, args: list[str]) -> Callable[[], None]:
    """Run a click command in this process (its arguments never on a command line)."""

    def run() -> None:
        command.main(args, prog_name=command.name, standalone_mode=False)

    return run


def prefect_upgrade(environment: dict[str, str]) -> None:
    """``prefect server database upgrade -y`` (its URL comes from the environment)."""
    prefect = str(Path(sys.executable).parent / "prefect")
    try:
        result = subprocess.run(
            (prefect, "server", "database", "upgrade", "-y"),
            env=environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=UPGRADE_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise MigrationError(f"did not finish within {UPGRADE_TIMEOUT_SECONDS} s") from None
    output = (result.stdout + result.stderr).strip()
    for line in output.splitlines():
        print(f"  {line}", file=sys.stderr)
    if result.returncode:
        raise MigrationError(f"exit {result.returncode}: " + output)


def auth_settings(environment: dict[str, str]) -> tuple[str, str]:
    """The basic-auth app's database URL and admin user name (``MLFLOW_AUTH_CONFIG_PATH``)."""
    auth_config = configparser.ConfigParser(interpolation=None)
    config_path = require(environment, "MLFLOW_AUTH_CONFIG_PATH")
    if not auth_config.read(config_path):
        raise MigrationError(f"the MLflow auth config {config_path} cannot be read")
    auth = auth_config.get("mlflow", "database_uri", fallback="")
    if not auth:
        raise MigrationError(f"{config_path} names no database_uri in its [mlflow] section")
    return auth, auth_config.get("mlflow", "admin_username", fallback="admin")


def align_admin(environment: dict[str, str]) -> None:
    """The MLflow admin's password is this stack's (``MLFLOW_AUTH_ADMIN_PASSWORD``).

    The server creates the admin on first start but never changes an existing one's password:
    an auth database restored from another stack's snapshot would keep that stack's, and this
    stack's secret would not log in (the post-start step, the smoke test, the operator).
    """
    password = environment.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    if not password:
        return
    url, admin = auth_settings(environment)
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(url)
    try:
        if not store.has_user(admin) or store.authenticate_user(admin, password):
            return
        store.update_user(admin, password=password, is_admin=True)
    finally:
        store.engine.dispose()
    log(
        f"the MLflow admin {admin!r} had another password (a database restored from another "
        "stack's snapshot?): set to this stack's"
    )


def mlflow_databases(environment: dict[str, str]) -> tuple[Database, ...]:
    """The tracking database (``MLFLOW_BACKEND_STORE_URI``) and the basic-auth app's database
    (``database_uri`` of the ``MLFLOW_AUTH_CONFIG_PATH`` file)."""
    tracking = require(environment, "MLFLOW_BACKEND_STORE_URI")
    auth, _ = auth_settings(environment)
    from mlflow.db import upgrade as tracking_upgrade
    from mlflow.server.auth.db.cli import upgrade as auth_upgrade

    return (
        Database(
            label="MLflow tracking",
            url=tracking,
            version_table="alembic_version",
            upgrade=click_command(tracking_upgrade, [tracking]),
            service="mlflow",
        ),
        Database(
            label="MLflow auth",
            url=auth,
            version_table="alembic_version_auth",
            upgrade=click_command(auth_upgrade, ["--url", auth]),
            service="mlflow",
        ),
    )


def prefect_databases(environment: dict[str, str]) -> tuple[Database, ...]:
    """Prefect's database (``PREFECT_SERVER_DATABASE_CONNECTION_URL``)."""
    return (
        Database(
            label="Prefect",
            url=require(environment, "PREFECT_SERVER_DATABASE_CONNECTION_URL"),
            version_table="alembic_version",
            upgrade=lambda: prefect_upgrade(environment),
            service="prefect-server",
        ),
    )


def require(environment: dict[str, str], key: str) -> str:
    """``environment[key]``, or a MigrationError naming the missing variable."""
    value = environment.get(key, "")
    if not value:
        raise MigrationError(f"{key} is not set (the unit's env file provides it)")
    return value


SERVICES = {"mlflow": mlflow_databases, "prefect": prefect_databases}
# Each database's migration scripts inside the installed packages: (package, directory,
# version directory or "" for the default), and the table its revision is kept in.
MIGRATIONS = {
    "mlflow": ("mlflow", "store/db_migrations", "", "alembic_version"),
    "mlflow_auth": ("mlflow", "server/auth/db/migrations", "", "alembic_version_auth"),
    "prefect": ("prefect", "server/database/_migrations", "versions/postgresql", "alembic_version"),
}


def shipped(with_revisions: bool = False) -> dict[str, dict[str, Any]]:
    """What the installed packages would migrate each database to: package version and head
    (and every revision their scripts know, with ``with_revisions``).

    Read from the migration scripts on disk (no import of MLflow or Prefect: quick).
    """
    from importlib import metadata, util

    from alembic.script import ScriptDirectory

    found: dict[str, dict[str, Any]] = {}
    for database, (package, directory, versions, _) in MIGRATIONS.items():
        spec = util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise MigrationError(f"{package} is not installed in {sys.prefix}")
        root = Path(next(iter(spec.submodule_search_locations))) / directory
        locations = [str(root / versions)] if versions else None
        script = ScriptDirectory(str(root), version_locations=locations)
        found[database] = {
            "package": package,
            "version": metadata.version(package),
            "head": ",".join(sorted(script.get_heads())),
        }
        if with_revisions:
            found[database]["revisions"] = sorted(r.revision for r in script.walk_revisions())
    return found


def main(argv: list[str]) -> int:
    """Migrate every database of the service named in ``argv``; 0 when all are at head.

    ``heads [--revisions]`` instead prints, as JSON, what this virtualenv's packages migrate to.
    """
    if argv[:1] == ["heads"]:
        print(json.dumps(shipped(with_revisions="--revisions" in argv)))
        return 0
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(f"usage: migrate.py {'|'.join(SERVICES)}|heads", file=sys.stderr)
        return 2
    environment = dict(os.environ)
    try:
        for database in SERVICES[argv[0]](environment):
            migrate(database, environment)
        if argv[0] == "mlflow":
            align_admin(environment)
    except MigrationError as exc:
        log(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
