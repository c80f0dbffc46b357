"""``mlops backup``: the exact aws calls that snapshot a stack's database, and the refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner, Result

from scripts import backup
from scripts.cli import app
from scripts.common import OpsError

OUTPUTS = ["pulumi", "stack", "output", "--json", "--stack", "dev"]
INSTANCE = "mlops-db-dev-7c41e0a"
SNAPSHOT = "mlops-dev-20261129-093005"
CREATE = [
    "aws", "rds", "create-db-snapshot",
    "--region", "us-east-1",
    "--db-instance-identifier", INSTANCE,
    "--db-snapshot-identifier", SNAPSHOT,
    "--tags", "Key=mlops-platform:stack,Value=dev",
    "--output", "json",
]  # fmt: skip


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every backup here starts at 09:30:05 on 2026-11-29."""
    monkeypatch.setattr(backup, "clock", lambda: datetime(2026, 11, 29, 9, 30, 5, tzinfo=UTC))


def _mlops(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_a_backup_snapshots_the_stacks_database_tags_it_and_waits(
    fake_tools, dev_outputs_masked: str
) -> None:
    wait = [
        "aws", "rds", "wait", "db-snapshot-available",
        "--region", "us-east-1", "--db-snapshot-identifier", SNAPSHOT,
    ]  # fmt: skip
    fake_tools.answer(OUTPUTS, stdout=dev_outputs_masked)
    fake_tools.answer(CREATE, stdout=json.dumps({"DBSnapshot": {"Status": "creating"}}))
    fake_tools.answer(wait)

    result = _mlops("backup", "--stack", "dev")

    assert result.exit_code == 0, result.stderr
    assert fake_tools.calls() == [OUTPUTS, CREATE, wait]
    assert f"pulumi config set restoreFromSnapshot {SNAPSHOT}" in result.stdout


def test_a_refused_snapshot_is_one_error_line_and_no_wait(fake_tools, dev_outputs_masked) -> None:
    fake_tools.answer(OUTPUTS, stdout=dev_outputs_masked)
    fake_tools.answer(CREATE, stderr="An error occurred (SnapshotQuotaExceeded)\n", exit=254)

    result = _mlops("backup", "--stack", "dev")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: `aws rds create-db-snapshot")
    assert "SnapshotQuotaExceeded" in result.stderr
    assert fake_tools.calls() == [OUTPUTS, CREATE]


def test_list_shows_the_stacks_snapshots_newest_first(fake_tools, dev_outputs_masked) -> None:
    describe = [
        "aws", "rds", "describe-db-snapshots",
        "--region", "us-east-1",
        "--db-instance-identifier", INSTANCE,
        "--snapshot-type", "manual",
        "--output", "json",
    ]  # fmt: skip
    fake_tools.answer(OUTPUTS, stdout=dev_outputs_masked)
    fake_tools.answer(
        describe,
        stdout=json.dumps(
            {
                "DBSnapshots": [
                    {
                        "DBSnapshotIdentifier": "mlops-dev-20261101-080000",
                        "SnapshotCreateTime": "2026-11-01T08:00:03.120Z",
                        "Status": "available",
                    },
                    {
                        "DBSnapshotIdentifier": "mlops-dev-20261129-093005",
                        "SnapshotCreateTime": "2026-11-29T09:30:07.981Z",
                        "Status": "creating",
                    },
                ]
            }
        ),
    )

    result = _mlops("backup", "--stack", "dev", "--list")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "mlops-dev-20261129-093005  2026-11-29T09:30:07.981Z  creating",
        "mlops-dev-20261101-080000  2026-11-01T08:00:03.120Z  available",
    ]


@pytest.mark.parametrize(
    ("stack", "expected"),
    [("dev", "mlops-dev-"), ("acme/PR_42", "mlops-pr-42-"), ("org/proj/stage.1", "mlops-stage-1-")],
)
def test_snapshot_names_are_what_rds_accepts(stack: str, expected: str) -> None:
    name = backup.snapshot_identifier(stack, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert name == f"{expected}20260102-030405"
    assert "--" not in name


@pytest.mark.parametrize("endpoint", ["localhost:5432", ":5432", "10.0.0.5:5432"])
def test_an_endpoint_that_is_not_rds_is_named(endpoint: str) -> None:
    with pytest.raises(OpsError, match="is not an RDS endpoint"):
        backup.database_identifier(endpoint)
