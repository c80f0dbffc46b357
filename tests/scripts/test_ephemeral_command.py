"""``mlops ephemeral create|destroy``: the exact pulumi commands, and the refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner, Result

from scripts import ephemeral
from scripts.cli import app
from scripts.common import OpsError

LS = ["pulumi", "stack", "ls", "--json"]
KEY = "mlops-platform:environment"
NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
EXPIRES = "2026-11-30T14:00:00Z"  # NOW + the default 24 hours


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command here runs at NOW."""
    monkeypatch.setattr(ephemeral, "clock", lambda: NOW)


def _stack(name: str) -> dict[str, object]:
    """One entry of ``pulumi stack ls --json``."""
    return {
        "name": name,
        "current": name.endswith("dev"),
        "lastUpdate": "2025-11-20T09:41:07.000Z",
        "updateInProgress": False,
        "resourceCount": 61,
        "url": f"https://app.pulumi.com/acme/mlops-platform/{name.rsplit('/', 1)[-1]}",
    }


def _stacks(*names: str) -> str:
    return json.dumps([_stack(name) for name in names], indent=2)


def _outputs(name: str) -> list[str]:
    return ["pulumi", "stack", "output", "--json", "--stack", name]


def _tag_get(name: str) -> list[str]:
    return ["pulumi", "stack", "tag", "get", KEY, "--stack", name]


def _tags_ls(name: str) -> list[str]:
    return ["pulumi", "stack", "tag", "ls", "--json", "--stack", name]


def _configure_and_up(name: str, expires: str = EXPIRES) -> list[list[str]]:
    return [
        ["pulumi", "stack", "tag", "set", "mlops-platform:expiresAt", expires, "--stack", name],
        ["pulumi", "config", "cp", "--stack", "dev", "--dest", name],
        ["pulumi", "config", "set", KEY, "ephemeral", "--stack", name],
        ["pulumi", "config", "set", "mlops-platform:deletionProtection", "false", "--stack", name],
        ["pulumi", "config", "set", "mlops-platform:expiresAt", expires, "--stack", name],
        ["pulumi", "up", "--yes", "--stack", name],
    ]


def _destroy_and_rm(name: str) -> list[list[str]]:
    return [
        ["pulumi", "destroy", "--yes", "--stack", name],
        ["pulumi", "stack", "rm", name, "--yes"],
    ]


def _script(fake_tools, commands: list[list[str]]) -> None:
    for command in commands:
        fake_tools.answer(command)


def _mlops(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_create_initialises_tags_configures_from_dev_and_deploys(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev"))
    new_stack = [
        ["pulumi", "stack", "init", "pr-42", "--no-select"],
        ["pulumi", "stack", "tag", "set", KEY, "ephemeral", "--stack", "pr-42"],
        [
            "pulumi",
            *("stack", "tag", "set", "mlops-platform:createdAt", "2026-11-29T14:00:00Z"),
            *("--stack", "pr-42"),
        ],
    ]
    _script(fake_tools, new_stack + _configure_and_up("pr-42"))

    result = _mlops("ephemeral", "create", "pr-42")

    assert result.exit_code == 0, result.stderr
    assert fake_tools.calls() == [LS, *new_stack, *_configure_and_up("pr-42")]


def test_pulumi_up_shows_its_progress_on_the_terminal_as_it_runs(
    fake_tools, capfd: pytest.CaptureFixture[str]
) -> None:
    """An `up` takes minutes: its output goes to the terminal (the process's own standard
    output, which pulumi inherits), not into a string shown at the end or never."""
    fake_tools.answer(LS, stdout=_stacks("dev", "pr-42"))
    fake_tools.answer(_outputs("pr-42"), stdout=json.dumps({"environment": "ephemeral"}))
    _script(fake_tools, _configure_and_up("pr-42")[:-1])
    fake_tools.answer(
        ["pulumi", "up", "--yes", "--stack", "pr-42"], stdout="Updating (pr-42): 41 resources\n"
    )

    result = _mlops("ephemeral", "create", "pr-42")

    assert result.exit_code == 0, result.stderr
    assert "Updating (pr-42): 41 resources" in capfd.readouterr().out
    assert "Updating (pr-42)" not in result.stdout


def test_create_updates_an_existing_ephemeral_stack(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("acme/dev", "acme/pr-42"))
    fake_tools.answer(_outputs("pr-42"), stdout=json.dumps({"environment": "ephemeral"}))
    _script(fake_tools, _configure_and_up("pr-42"))

    result = _mlops("ephemeral", "create", "pr-42")

    assert result.exit_code == 0, result.stderr
    assert "stack pr-42 exists and is ephemeral: updating it" in result.stdout
    assert fake_tools.calls() == [LS, _outputs("pr-42"), *_configure_and_up("pr-42")]


@pytest.mark.parametrize(("action", "verb"), [("create", "update"), ("destroy", "destroy")])
def test_a_stack_deployed_as_another_kind_is_refused_before_anything_changes(
    fake_tools, action: str, verb: str
) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev", "staging"))
    fake_tools.answer(_outputs("staging"), stdout=json.dumps({"environment": "prod"}))

    result = _mlops("ephemeral", action, "staging")

    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: refusing to {verb} stack staging: it records environment 'prod', not 'ephemeral'"
    )
    assert "Traceback" not in result.output
    assert fake_tools.calls() == [LS, _outputs("staging")]


def test_destroy_destroys_then_removes_an_ephemeral_stack(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("acme/dev", "acme/pr-42"))
    fake_tools.answer(
        _outputs("pr-42"), stdout=json.dumps({"environment": "ephemeral", "region": "us-east-1"})
    )
    _script(fake_tools, _destroy_and_rm("pr-42"))

    result = _mlops("ephemeral", "destroy", "pr-42")

    assert result.exit_code == 0, result.stderr
    assert fake_tools.calls() == [LS, _outputs("pr-42"), *_destroy_and_rm("pr-42")]


def test_destroy_trusts_the_tag_of_a_stack_whose_first_deploy_failed(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev", "pr-7"))
    fake_tools.answer(_outputs("pr-7"), stdout="{}\n")
    fake_tools.answer(_tag_get("pr-7"), stdout="ephemeral\n")
    _script(fake_tools, _destroy_and_rm("pr-7"))

    result = _mlops("ephemeral", "destroy", "pr-7")

    assert result.exit_code == 0, result.stderr
    assert fake_tools.calls() == [LS, _outputs("pr-7"), _tag_get("pr-7"), *_destroy_and_rm("pr-7")]


def test_destroy_refuses_a_stack_that_records_no_kind(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev", "scratch"))
    fake_tools.answer(_outputs("scratch"), stdout="{}\n")
    fake_tools.answer(
        _tag_get("scratch"),
        stderr=f"error: stack tag '{KEY}' not found for stack 'scratch'\n",
        exit=255,
    )

    result = _mlops("ephemeral", "destroy", "scratch")

    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: refusing to destroy stack scratch: it records no environment kind, not 'ephemeral'"
    )
    assert fake_tools.calls() == [LS, _outputs("scratch"), _tag_get("scratch")]


def test_destroy_of_a_missing_stack_is_nothing_to_do(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev"))

    result = _mlops("ephemeral", "destroy", "pr-9")

    assert result.exit_code == 0, result.stderr
    assert "no stack pr-9: nothing to destroy" in result.stdout
    assert fake_tools.calls() == [LS]


def test_a_failed_deploy_fails_the_command(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev", "pr-42"))
    fake_tools.answer(_outputs("pr-42"), stdout=json.dumps({"environment": "ephemeral"}))
    *configure, up = _configure_and_up("pr-42")
    _script(fake_tools, configure)
    fake_tools.answer(up, stderr="error: update failed\n", exit=255)

    result = _mlops("ephemeral", "create", "pr-42")

    assert result.exit_code == 1
    assert "error: `pulumi up --yes --stack pr-42` failed with exit status 255" in result.stderr


@pytest.mark.parametrize(
    "name", ["dev", "prod", "PR-42", "pr_42", "-rf", "pr-", "a", "pr--1", "x" * 33]
)
@pytest.mark.parametrize("action", ["create", "destroy"])
def test_names_that_are_not_ephemeral_stack_names_are_refused_before_pulumi_runs(
    fake_tools, action: str, name: str
) -> None:
    result = _mlops("ephemeral", action, "--", name)

    assert result.exit_code == 1
    assert result.stderr.startswith("error: "), result.output
    assert name in result.stderr
    assert fake_tools.calls() == []


def test_create_again_extends_the_expiry_by_the_requested_hours(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev", "pr-42"))
    fake_tools.answer(_outputs("pr-42"), stdout=json.dumps({"environment": "ephemeral"}))
    _script(fake_tools, _configure_and_up("pr-42", "2026-12-02T14:00:00Z"))

    result = _mlops("ephemeral", "create", "pr-42", "--ttl-hours", "72")

    assert result.exit_code == 0, result.stderr
    assert "expires 2026-12-02T14:00:00Z" in result.stdout
    assert fake_tools.calls() == [
        LS,
        _outputs("pr-42"),
        *_configure_and_up("pr-42", "2026-12-02T14:00:00Z"),
    ]


@pytest.mark.parametrize("hours", ["0", "721", "soon"])
def test_a_ttl_outside_an_hour_to_30_days_is_refused_before_pulumi_runs(
    fake_tools, hours: str
) -> None:
    result = _mlops("ephemeral", "create", "pr-42", "--ttl-hours", hours)

    assert result.exit_code != 0
    assert "--ttl-hours" in result.output
    assert fake_tools.calls() == []


def _tags(kind: str, created: str | None = None, expires: str | None = None) -> str:
    tags = {"pulumi:project": "mlops-platform", KEY: kind}
    if created:
        tags["mlops-platform:createdAt"] = created
    if expires:
        tags["mlops-platform:expiresAt"] = expires
    return json.dumps(tags)


def _three_stacks(fake_tools) -> None:
    """dev, a fresh ephemeral stack, an expired one and one made before stacks expired."""
    fake_tools.answer(LS, stdout=_stacks("acme/dev", "acme/pr-1", "acme/pr-2", "acme/pr-3"))
    fake_tools.answer(_tags_ls("dev"), stdout=_tags("dev"))
    fake_tools.answer(
        _tags_ls("pr-1"),
        stdout=_tags("ephemeral", "2026-11-29T12:00:00Z", "2026-11-30T12:00:00Z"),
    )
    fake_tools.answer(
        _tags_ls("pr-2"),
        stdout=_tags("ephemeral", "2026-11-26T14:00:00Z", "2026-11-27T14:00:00Z"),
    )
    fake_tools.answer(_tags_ls("pr-3"), stdout=_tags("ephemeral"))


def test_list_shows_age_expiry_and_cost_so_far(fake_tools) -> None:
    _three_stacks(fake_tools)
    hourly = ephemeral.hourly_estimate()

    result = _mlops("ephemeral", "list")

    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:-1]}
    assert set(rows) == {"pr-1", "pr-2", "pr-3"}
    assert rows["pr-1"][1:4] == ["2.0", "h", "2026-11-30T12:00:00Z"]
    assert rows["pr-1"][4] == f"${2 * hourly:.2f}"
    assert rows["pr-2"][1:5] == ["3.0", "d", "2026-11-27T14:00:00Z", "(expired)"]
    assert rows["pr-3"][1:3] == ["unknown", "never"]
    assert 0.04 < hourly < 0.07  # dev's sizes, asleep outside working hours


def test_reap_destroys_only_the_expired_stacks(fake_tools) -> None:
    _three_stacks(fake_tools)
    fake_tools.answer(_outputs("pr-2"), stdout=json.dumps({"environment": "ephemeral"}))
    _script(fake_tools, _destroy_and_rm("pr-2"))

    result = _mlops("ephemeral", "reap")

    assert result.exit_code == 0, result.stderr
    destructive = [c for c in fake_tools.calls() if c[1] == "destroy" or c[1:3] == ["stack", "rm"]]
    assert destructive == _destroy_and_rm("pr-2")
    assert "stack pr-2 destroyed and removed" in result.stdout


def test_create_says_what_it_does_and_sets_extra_settings_over_dev_s(fake_tools) -> None:
    # The restore drill creates its stack this way, from a snapshot.
    fake_tools.answer(LS, stdout=_stacks("dev"))
    created = "2026-11-29T14:00:00Z"
    expires = "2026-11-29T20:00:00Z"
    new_stack = [
        ["pulumi", "stack", "init", "drill-1", "--no-select"],
        ["pulumi", "stack", "tag", "set", KEY, "ephemeral", "--stack", "drill-1"],
        [
            "pulumi",
            "stack",
            "tag",
            "set",
            "mlops-platform:createdAt",
            created,
            "--stack",
            "drill-1",
        ],
    ]
    *configure, up = _configure_and_up("drill-1", expires)
    snapshot = ["pulumi", "config", "set", "mlops-platform:restoreFromSnapshot", "snap-1"]
    snapshot += ["--stack", "drill-1"]
    _script(fake_tools, [*new_stack, *configure, snapshot, up])
    announced: list[str] = []

    ephemeral.create(
        "drill-1", announced.append, timedelta(hours=6), {"restoreFromSnapshot": "snap-1"}
    )

    assert fake_tools.calls() == [LS, *new_stack, *configure, snapshot, up]
    assert announced == [
        "created stack drill-1",
        f"deploying drill-1 (dev configuration, environment ephemeral, expires {expires})",
    ]


@pytest.mark.parametrize(
    ("ttl", "accepted"),
    [
        (timedelta(minutes=59), False),
        (timedelta(hours=1), True),
        (timedelta(days=30), True),
        (timedelta(days=30, seconds=1), False),
    ],
    ids=["59-minutes", "1-hour", "30-days", "30-days-and-a-second"],
)
def test_a_stack_lives_an_hour_to_30_days(fake_tools, ttl: timedelta, accepted: bool) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev", "pr-42"))
    fake_tools.answer(_outputs("pr-42"), stdout=json.dumps({"environment": "ephemeral"}))
    _script(fake_tools, _configure_and_up("pr-42", ephemeral.iso(NOW + ttl)))

    if accepted:
        ephemeral.create("pr-42", lambda line: None, ttl)
        assert fake_tools.calls()[-1] == ["pulumi", "up", "--yes", "--stack", "pr-42"]
    else:
        with pytest.raises(OpsError) as raised:
            ephemeral.create("pr-42", lambda line: None, ttl)
        assert str(raised.value) == f"an ephemeral stack lives 1 hour to 30 days; got {ttl}"
        assert fake_tools.calls() == []


def test_only_a_stack_of_that_exact_name_exists(fake_tools) -> None:
    fake_tools.answer(
        LS, stdout=json.dumps([_stack("acme/xpr-42"), _stack("pr-42-old"), {"url": "x"}, "pr-42"])
    )

    assert not ephemeral.stack_exists("pr-42")
    assert ephemeral.stack_exists("xpr-42")
    assert ephemeral.stack_exists("pr-42-old")


@pytest.mark.parametrize("command", [["ephemeral", "destroy", "pr-42"], ["ephemeral", "list"]])
def test_a_stack_list_that_is_not_json_is_one_error_line(fake_tools, command: list[str]) -> None:
    fake_tools.answer(LS, stdout="warning: a newer version of Pulumi is available\n")

    result = _mlops(*command)

    assert result.exit_code == 1
    assert result.stderr == "error: `pulumi stack ls --json` did not print JSON\n"


def test_stack_tags_that_are_not_json_are_one_error_line_naming_the_stack(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev", "pr-1"))
    fake_tools.answer(_tags_ls("dev"), stdout=_tags("dev"))
    fake_tools.answer(_tags_ls("pr-1"), stdout="oops")

    result = _mlops("ephemeral", "list")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: `pulumi stack tag ls --json` for stack pr-1 did not print JSON\n"
    )


def test_list_and_reap_say_when_there_is_nothing(fake_tools) -> None:
    fake_tools.answer(LS, stdout=json.dumps([_stack("acme/dev"), {"name": ""}]))
    fake_tools.answer(_tags_ls("dev"), stdout=_tags("dev"))

    listed, reaped = _mlops("ephemeral", "list"), _mlops("ephemeral", "reap")

    assert (listed.exit_code, listed.stdout) == (0, "no ephemeral stacks\n")
    assert (reaped.exit_code, reaped.stdout) == (0, "no expired ephemeral stacks\n")


def test_list_has_a_header_and_says_how_the_cost_is_estimated(fake_tools) -> None:
    # Entries without a name (or not objects at all) are skipped, not the end of the list.
    listed = [{"name": ""}, {"url": "x"}, "garbage", _stack("acme/mlops-platform/pr-5")]
    listed.append(_stack("pr-6"))
    fake_tools.answer(LS, stdout=json.dumps(listed))
    # Expiring exactly now: expired. Unreadable times are unknown, not an error.
    fake_tools.answer(
        _tags_ls("pr-5"), stdout=_tags("ephemeral", "2026-11-27T14:00:00Z", "2026-11-29T14:00:00Z")
    )
    fake_tools.answer(_tags_ls("pr-6"), stdout=_tags("ephemeral", "yesterday", "soon"))
    hourly = ephemeral.hourly_estimate()

    result = _mlops("ephemeral", "list")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{'stack':<32}  {'age':>8}  {'expires':<20}  {'cost so far':>11}",
        f"{'pr-5':<32}  {'2.0 d':>8}  {'2026-11-29T14:00:00Z (expired)':<20}  "
        f"{f'${48 * hourly:.2f}':>11}",
        f"{'pr-6':<32}  {'unknown':>8}  {'never':<20}  {'unknown':>11}",
        f"(estimate: ${hourly:.3f} an hour, dev's sizes as `mlops cost --stack dev` prices)",
    ]


def test_ages_under_two_days_are_in_hours_then_in_days() -> None:
    assert ephemeral._hours(47.94) == "47.9 h"
    assert ephemeral._hours(48.0) == "2.0 d"
    assert ephemeral._hours(None) == "unknown"


def test_the_kind_is_the_tag_when_the_environment_output_is_empty(fake_tools) -> None:
    fake_tools.answer(_outputs("pr-7"), stdout=json.dumps({"environment": ""}))
    fake_tools.answer(_tag_get("pr-7"), stdout="\n")

    assert ephemeral.stack_kind("pr-7") is None
    assert fake_tools.calls() == [_outputs("pr-7"), _tag_get("pr-7")]


def test_destroy_shows_pulumi_s_progress_and_says_what_it_does(fake_tools, capfd) -> None:
    fake_tools.answer(LS, stdout=_stacks("dev", "pr-42"))
    fake_tools.answer(_outputs("pr-42"), stdout=json.dumps({"environment": "ephemeral"}))
    destroy, remove = _destroy_and_rm("pr-42")
    fake_tools.answer(destroy, stdout="Destroying (pr-42): 61 resources deleted\n")
    fake_tools.answer(remove)
    announced: list[str] = []

    ephemeral.destroy("pr-42", announced.append)

    assert "Destroying (pr-42): 61 resources deleted" in capfd.readouterr().out
    assert announced == ["destroying pr-42", "stack pr-42 destroyed and removed"]


def test_stack_tags_that_are_not_an_object_are_no_tags(fake_tools) -> None:
    fake_tools.answer(LS, stdout=_stacks("pr-1"))
    fake_tools.answer(_tags_ls("pr-1"), stdout=json.dumps([KEY, "ephemeral"]))

    assert ephemeral.ephemeral_stacks() == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "PR-42",
            "use 2 to 32 lower-case letters, digits and single hyphens, starting with a letter "
            "and not ending with a hyphen (e.g. pr-42)",
        ),
        ("prod", "names a long-lived stack; pick another name (e.g. pr-42)"),
    ],
)
def test_a_refused_name_says_what_a_name_must_be(name: str, reason: str) -> None:
    with pytest.raises(OpsError) as refused:
        ephemeral.check_name(name)
    assert str(refused.value).endswith(reason)
