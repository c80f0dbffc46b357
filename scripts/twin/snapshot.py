"""The process twin's stand-in for an RDS snapshot: ``pg_dump``/``pg_restore`` of its databases.

A snapshot of a stack holds its three databases (MLflow tracking, MLflow auth, Prefect); here
each is dumped in PostgreSQL's custom format into a directory, as ``mlflow.dump``,
``mlflow_auth.dump`` and ``prefect.dump``. A twin restored from it loads them into its own
databases (made by its boot step, as on a restored stack) before its migration steps and
servers run, owned by its own service roles: the source twin's role names (its prefix) are
not carried over (``--no-owner --no-privileges``, restored as the owner role), as a restored
stack's roles get that stack's passwords from its boot step.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.common import OpsError

if TYPE_CHECKING:
    from scripts.twin.lifecycle import Twin

KINDS = ("mlflow", "mlflow_auth", "prefect")
_TIMEOUT_SECONDS = 600


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise OpsError(f"`{name}` is not installed (Debian: apt-get install postgresql-client)")
    return path


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=_TIMEOUT_SECONDS
    )
    if result.returncode:
        raise OpsError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()}")


def _connection(twin: Twin) -> list[str]:
    config = twin.config
    return [
        "-h",
        config.postgres_host,
        "-p",
        str(config.postgres_port),
        "-U",
        config.postgres_superuser,
    ]


def dump(twin: Twin, directory: Path) -> dict[str, Path]:
    """Dump the twin's three databases into ``directory`` (the snapshot); the files by kind."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind, database in zip(KINDS, twin.config.databases, strict=True):
        path = directory / f"{kind}.dump"
        _run(
            [_tool("pg_dump"), *_connection(twin), "--format=custom", f"--file={path}", database],
            f"pg_dump of {database}",
        )
        files[kind] = path
    return files


def restore(twin: Twin, directory: Path) -> float:
    """Load the dumps in ``directory`` into the twin's (new, empty) databases; the seconds taken.

    Each is restored in one transaction, as the database's owner role: all or nothing.
    """
    started = time.monotonic()
    missing = [kind for kind in KINDS if not (directory / f"{kind}.dump").is_file()]
    if missing:
        raise OpsError(f"{directory} holds no {', '.join(f'{k}.dump' for k in missing)}")
    for kind, database in zip(KINDS, twin.config.databases, strict=True):
        # The twin's service roles are named after their databases (see Twin.control_settings).
        _run(
            [
                _tool("pg_restore"), *_connection(twin), f"--dbname={database}",
                f"--role={database}", "--no-owner", "--no-privileges",
                "--single-transaction", "--exit-on-error",
                str(directory / f"{kind}.dump"),
            ],
            f"pg_restore of {kind}.dump into {database}",
        )  # fmt: skip
    return time.monotonic() - started
