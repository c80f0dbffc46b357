"""Put a database at a given schema revision, as an older release left it (test helper).

Run as ``python -W ignore tests/hosts/migration_setup.py KIND ...`` in a process of its own
(MLflow's server modules warn at import, which pytest turns into errors), with the database
URL in the environment the migration step reads:

- ``older KIND N``: print the revision N steps before the installed head of KIND
  (``mlflow``, ``mlflow_auth`` or ``prefect``);
- ``upgrade KIND REVISION``: upgrade KIND's database from wherever it is to REVISION, with the
  tool's own migrations;
- ``admin create|check PASSWORD``: create the auth database's admin with PASSWORD (as another
  stack's server would have), or exit 1 unless PASSWORD logs the admin in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))

from hostboot import migrate


def older(kind: str, steps: int) -> str:
    """The revision ``steps`` before the head of ``kind``'s installed migrations."""
    from importlib import util

    from alembic.script import ScriptDirectory

    package, directory, versions, _ = migrate.MIGRATIONS[kind]
    spec = util.find_spec(package)
    assert spec is not None
    assert spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations))) / directory
    script = ScriptDirectory(
        str(root), version_locations=[str(root / versions)] if versions else None
    )
    return str(list(script.walk_revisions())[steps].revision)


def upgrade(kind: str, revision: str) -> None:
    """Upgrade ``kind``'s database (URL from the environment) to ``revision``."""
    if kind == "prefect":
        prefect = str(Path(sys.executable).parent / "prefect")
        subprocess.run([prefect, "server", "database", "upgrade", "-y", "-r", revision], check=True)
        return
    import sqlalchemy

    if kind == "mlflow":
        from alembic import command
        from mlflow.store.db.utils import _get_alembic_config
        from mlflow.store.tracking.dbmodels.initial_models import Base

        # What `mlflow db upgrade` does to a new database, stopping at ``revision``.
        url = os.environ["MLFLOW_BACKEND_STORE_URI"]
        Base.metadata.create_all(sqlalchemy.create_engine(url))
        command.upgrade(_get_alembic_config(url), revision)
        return
    from mlflow.server.auth.db.utils import migrate as auth_migrate

    (database,) = migrate.mlflow_databases(dict(os.environ))[1:]
    auth_migrate(sqlalchemy.create_engine(database.url), revision)


def admin(action: str, password: str) -> bool:
    """Create the admin with ``password``, or whether ``password`` logs the admin in."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    url, name = migrate.auth_settings(dict(os.environ))
    store = SqlAlchemyStore()
    store.init_db(url)
    if action == "create":
        store.create_user(name, password, is_admin=True)
        return True
    return bool(store.authenticate_user(name, password))


if __name__ == "__main__":
    command, kind, argument = sys.argv[1:]
    if command == "admin":
        sys.exit(0 if admin(kind, argument) else 1)
    if command == "older":
        print(older(kind, int(argument)))
    else:
        upgrade(kind, argument)
