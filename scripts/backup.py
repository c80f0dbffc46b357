"""``mlops backup --stack NAME``: a manual snapshot of the stack's database, tagged and awaited.

The database holds every MLflow run, model version and alias and every Prefect flow run and
deployment; the artifacts (models, plots) are in the versioned bucket, which is their backup.
RDS keeps automated snapshots for ``dbBackupRetentionDays``; a manual snapshot is kept until
deleted, so take one before an upgrade. The snapshot is tagged with the stack it came from,
which is how ``mlops backup --list`` (and a restore drill) find it again; a new stack is made
from it with ``pulumi config set restoreFromSnapshot ID``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from scripts.common import OpsError, require_tool, stack_outputs, string_outputs

BACKUP_OUTPUTS = ("db_endpoint", "region")
STACK_TAG = "mlops-platform:stack"
_NOT_IN_SNAPSHOT_ID = re.compile(r"[^a-z0-9]+")
_INSTANCE_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One manual snapshot of a stack's database."""

    identifier: str
    created: str  # ISO 8601, as RDS reports it
    status: str
    allocated_storage_gib: int  # a database restored from it needs at least this much


def database_identifier(db_endpoint: str) -> str:
    """The RDS instance identifier: the first label of its endpoint (``id.xxxx.region.rds...``)."""
    host = db_endpoint.rsplit(":", 1)[0]
    identifier = host.split(".", 1)[0]
    if not _INSTANCE_ID.fullmatch(identifier) or ".rds." not in host:
        raise OpsError(f"stack output db_endpoint {db_endpoint!r} is not an RDS endpoint host:port")
    return identifier


def snapshot_identifier(stack: str, now: datetime) -> str:
    """``mlops-<stack>-<UTC time>``: letters, digits and single hyphens, as RDS requires."""
    name = _NOT_IN_SNAPSHOT_ID.sub("-", stack.rsplit("/", 1)[-1].lower()).strip("-")
    return f"mlops-{name}-{now.astimezone(UTC):%Y%m%d-%H%M%S}"


def aws(*args: str) -> str:
    """Run ``aws ARGS`` and return its standard output; a failure is an OpsError with stderr."""
    command = [require_tool("aws"), *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        detail = result.stderr.strip() or "no error output"
        raise OpsError(
            f"`aws {' '.join(args)}` failed with exit status {result.returncode}: {detail}"
        )
    return result.stdout


def clock() -> datetime:
    """The current time (UTC); tests replace it."""
    return datetime.now(UTC)


def backup(stack: str, announce: Callable[[str], None]) -> str:
    """Snapshot the stack's database, wait until it is available, return its identifier."""
    outputs = string_outputs(stack, stack_outputs(stack), BACKUP_OUTPUTS)
    region, instance = outputs["region"], database_identifier(outputs["db_endpoint"])
    snapshot = snapshot_identifier(stack, clock())
    announce(f"snapshotting database {instance} of stack {stack} as {snapshot}")
    aws(
        "rds", "create-db-snapshot",
        "--region", region,
        "--db-instance-identifier", instance,
        "--db-snapshot-identifier", snapshot,
        "--tags", f"Key={STACK_TAG},Value={stack}",
        "--output", "json",
    )  # fmt: skip
    announce("waiting for the snapshot to become available (minutes for a small database)")
    aws("rds", "wait", "db-snapshot-available", "--region", region,
        "--db-snapshot-identifier", snapshot)  # fmt: skip
    announce(
        f"snapshot {snapshot} is available; a stack restored from it: "
        f"`pulumi config set restoreFromSnapshot {snapshot} --stack NEW`"
    )
    return snapshot


def snapshots(stack: str) -> list[Snapshot]:
    """The stack's manual snapshots, newest first."""
    outputs = string_outputs(stack, stack_outputs(stack), BACKUP_OUTPUTS)
    text = aws(
        "rds", "describe-db-snapshots",
        "--region", outputs["region"],
        "--db-instance-identifier", database_identifier(outputs["db_endpoint"]),
        "--snapshot-type", "manual",
        "--output", "json",
    )  # fmt: skip
    try:
        listed = json.loads(text)["DBSnapshots"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise OpsError("`aws rds describe-db-snapshots` did not print its JSON document") from None
    found = [
        Snapshot(
            identifier=str(entry["DBSnapshotIdentifier"]),
            created=str(entry.get("SnapshotCreateTime", "")),
            status=str(entry.get("Status", "")),
            allocated_storage_gib=int(entry.get("AllocatedStorage") or 0),
        )
        for entry in listed
        if isinstance(entry, dict) and entry.get("DBSnapshotIdentifier")
    ]
    return sorted(found, key=lambda snapshot: snapshot.created, reverse=True)
