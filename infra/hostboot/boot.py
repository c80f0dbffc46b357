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
3. The extra databases are created idempotently through the maintenance database (RDS
   creates only the master user's default database).

The config holds no secret value, only ARNs and templates.
"""

from __future__ import annotations

import contextlib
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


def create_databases(database: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Create ``database["create"]`` through the maintenance database unless they exist."""
    import psycopg
    from psycopg import errors, sql

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=database["host"],
            port=database["port"],
            user=database["user"],
            password=secrets[database["password_secret"]],
            dbname=database["maintenance_db"],
            sslmode=database["sslmode"],
            connect_timeout=10,
            autocommit=True,
        )

    with retry(f"connecting to {database['host']}:{database['port']}", connect) as conn:
        for name in database["create"]:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (name,)).fetchone():
                continue
            # Created concurrently meanwhile: the goal is reached all the same.
            with contextlib.suppress(errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"boot: created database {name}", file=sys.stderr)


def boot(config: Mapping[str, Any]) -> None:
    """Run the boot steps described by ``config`` (see the module docstring)."""
    secrets = fetch_secrets(config["region"], config["secrets"], config["min_secret_length"])
    write_files(config["files"], secrets)
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
