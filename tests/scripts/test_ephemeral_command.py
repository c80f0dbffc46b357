"""``mlops ephemeral create|destroy``: the exact pulumi commands, and the refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from scripts.cli import app

LS = ["pulumi", "stack", "ls", "--json"]
KEY = "mlops-platform:environment"


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


def _configure_and_up(name: str) -> list[list[str]]:
    return [
        ["pulumi", "config", "cp", "--stack", "dev", "--dest", name],
        ["pulumi", "config", "set", KEY, "ephemeral", "--stack", name],
        ["pulumi", "config", "set", "mlops-platform:deletionProtection", "false", "--stack", name],
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
    ]
    _script(fake_tools, new_stack + _configure_and_up("pr-42"))

    result = _mlops("ephemeral", "create", "pr-42")

    assert result.exit_code == 0, result.stderr
    assert fake_tools.calls() == [LS, *new_stack, *_configure_and_up("pr-42")]


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
