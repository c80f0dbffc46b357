"""``mlops restore-drill``: the steps it takes, and that its stack is destroyed whatever fails.

The success path needs servers behind a tunnel; the same restore is exercised end to end on the
local twin. Here stand-ins answer ``pulumi`` and ``aws`` exactly, so these tests pin the
commands the drill runs and its clean-up.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner, Result

from scripts import ephemeral
from scripts.cli import app

NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
DRILL = "drill-dev-11291400"
SNAPSHOT = "mlops-dev-20261129-093005"
SOURCE_OUTPUTS = ["pulumi", "stack", "output", "--json", "--stack", "dev"]
DRILL_OUTPUTS = ["pulumi", "stack", "output", "--json", "--stack", DRILL]
LS = ["pulumi", "stack", "ls", "--json"]
DESCRIBE = [
    "aws", "rds", "describe-db-snapshots",
    "--region", "us-east-1",
    "--db-instance-identifier", "mlops-db-dev-7c41e0a",
    "--snapshot-type", "manual",
    "--output", "json",
]  # fmt: skip


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ephemeral, "clock", lambda: NOW)


def _mlops(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _snapshots(*entries: tuple[str, str, str]) -> str:
    return json.dumps(
        {
            "DBSnapshots": [
                {
                    "DBSnapshotIdentifier": name,
                    "SnapshotCreateTime": created,
                    "Status": status,
                    "AllocatedStorage": 50,
                }
                for name, created, status in entries
            ]
        }
    )


def _create_drill() -> list[list[str]]:
    """What `ephemeral create` runs for the drill's new stack (restored, 6 hours to live)."""
    key = "mlops-platform"
    return [
        ["pulumi", "stack", "init", DRILL, "--no-select"],
        ["pulumi", "stack", "tag", "set", f"{key}:environment", "ephemeral", "--stack", DRILL],
        ["pulumi", "stack", "tag", "set", f"{key}:createdAt", "2026-11-29T14:00:00Z",
         "--stack", DRILL],
        ["pulumi", "stack", "tag", "set", f"{key}:expiresAt", "2026-11-29T20:00:00Z",
         "--stack", DRILL],
        ["pulumi", "config", "cp", "--stack", "dev", "--dest", DRILL],
        ["pulumi", "config", "set", f"{key}:environment", "ephemeral", "--stack", DRILL],
        ["pulumi", "config", "set", f"{key}:deletionProtection", "false", "--stack", DRILL],
        ["pulumi", "config", "set", f"{key}:expiresAt", "2026-11-29T20:00:00Z", "--stack", DRILL],
        ["pulumi", "config", "set", f"{key}:restoreFromSnapshot", SNAPSHOT, "--stack", DRILL],
        ["pulumi", "config", "set", f"{key}:dbAllocatedStorageGiB", "50", "--stack", DRILL],
        ["pulumi", "up", "--yes", "--stack", DRILL],
    ]  # fmt: skip


def _destroy_drill() -> list[list[str]]:
    return [
        ["pulumi", "destroy", "--yes", "--stack", DRILL],
        ["pulumi", "stack", "rm", DRILL, "--yes"],
    ]


def _script(fake_tools, dev_outputs_masked: str, snapshots: str) -> None:
    fake_tools.answer(SOURCE_OUTPUTS, stdout=dev_outputs_masked)
    fake_tools.answer(DESCRIBE, stdout=snapshots)


def test_without_a_backup_the_drill_stops_before_creating_anything(
    fake_tools, dev_outputs_masked: str
) -> None:
    _script(fake_tools, dev_outputs_masked, _snapshots(("older", "2026-11-01T00:00:00Z", "failed")))

    result = _mlops("restore-drill", "--stack", "dev")

    assert result.exit_code == 1
    assert "stack dev has no available manual snapshot: take one with `mlops backup`" in (
        result.stdout
    )
    assert result.stderr.startswith("error: restore drill of stack dev failed at: snapshot")
    assert fake_tools.calls() == [SOURCE_OUTPUTS, DESCRIBE]


def test_a_failed_restore_still_destroys_the_drill_stack(
    fake_tools, dev_outputs_masked: str
) -> None:
    _script(
        fake_tools,
        dev_outputs_masked,
        _snapshots(
            ("mlops-dev-20261101-080000", "2026-11-01T08:00:03Z", "available"),
            (SNAPSHOT, "2026-11-29T09:30:07Z", "available"),
            ("mlops-dev-20261129-120000", "2026-11-29T12:00:01Z", "creating"),
        ),
    )
    # The stand-ins answer one way per command: the drill stack is listed from the start (as
    # after `stack init`), so create takes its update path, as a retried drill would.
    fake_tools.answer(LS, stdout=json.dumps([{"name": "dev"}, {"name": DRILL}]))
    *create, up = _create_drill()[3:]
    for command in create:
        fake_tools.answer(command)
    fake_tools.answer(up, stderr="error: DBSnapshotNotFound\n", exit=255)
    fake_tools.answer(DRILL_OUTPUTS, stdout="{}")
    fake_tools.answer(
        ["pulumi", "stack", "tag", "get", "mlops-platform:environment", "--stack", DRILL],
        stdout="ephemeral\n",
    )
    for command in _destroy_drill():
        fake_tools.answer(command)

    result = _mlops("restore-drill", "--stack", "dev")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: restore drill of stack dev failed at: create")
    calls = fake_tools.calls()
    tag_get = ["pulumi", "stack", "tag", "get", "mlops-platform:environment", "--stack", DRILL]
    assert (
        calls
        == [
            SOURCE_OUTPUTS,
            DESCRIBE,
            *[LS, DRILL_OUTPUTS, tag_get],  # create: the stack is ephemeral, update it
            *_create_drill()[3:],
            *[LS, DRILL_OUTPUTS, tag_get],  # destroy: the same check
            *_destroy_drill(),
        ]
    )
    assert not [call for call in calls if call[:3] == ["aws", "s3", "sync"]]
    steps = [line.split()[:2] for line in result.stdout.splitlines()[-3:]]
    assert steps == [["ok", "snapshot"], ["FAIL", "create"], ["ok", "destroy"]]


def test_keep_leaves_the_stack_and_says_how_to_remove_it(
    fake_tools, dev_outputs_masked: str
) -> None:
    _script(
        fake_tools, dev_outputs_masked, _snapshots((SNAPSHOT, "2026-11-29T09:30:07Z", "available"))
    )
    fake_tools.answer(LS, stdout=json.dumps([{"name": "dev"}]))
    *create, up = _create_drill()
    for command in create:
        fake_tools.answer(command)
    fake_tools.answer(up, exit=255)

    result = _mlops("restore-drill", "--stack", "dev", "--keep")

    assert result.exit_code == 1
    assert f"kept stack {DRILL}: `mlops ephemeral destroy {DRILL}` when done" in result.stdout
    assert not [call for call in fake_tools.calls() if call[1] == "destroy"]


def test_a_snapshot_that_is_not_the_stacks_is_refused(fake_tools, dev_outputs_masked) -> None:
    _script(
        fake_tools, dev_outputs_masked, _snapshots((SNAPSHOT, "2026-11-29T09:30:07Z", "available"))
    )

    result = _mlops("restore-drill", "--stack", "dev", "--snapshot", "someone-elses")

    assert result.exit_code == 1
    assert "has no available snapshot someone-elses" in result.stdout
    assert fake_tools.calls() == [SOURCE_OUTPUTS, DESCRIBE]


@pytest.mark.parametrize("args", [[], ["--stack", "dev", "--twin", "."]])
def test_a_drill_needs_exactly_one_of_a_stack_or_a_twin(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["restore-drill", *args])
    assert result.exit_code == 1
    assert "give either --stack NAME or --twin STATE_DIR" in result.output


def test_a_twin_drill_of_no_twin_says_so(tmp_path) -> None:
    result = CliRunner().invoke(app, ["restore-drill", "--twin", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no twin recorded in {tmp_path}" in result.output
    assert not (tmp_path / "snapshots").exists()
