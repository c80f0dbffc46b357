"""The GitHub Actions workflows: actionlint (with shellcheck on every ``run:`` block), their
security properties, and their shell steps run against stand-in ``pulumi`` and ``mlops``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.common import REPO_ROOT

BIN = Path(sys.executable).parent
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
PR_STACK = "pr-12"
PREVIEW = [
    "pulumi",
    "preview",
    "--stack",
    "dev",
    "--policy-pack",
    "policy",
    "--diff",
    "--color",
    "never",
]


def _actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "actionlint", "-no-color", "-shellcheck", BIN / "shellcheck", *files],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def _workflow(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as true
    return workflow


def _step(name: str) -> dict[str, Any]:
    """A step of the reusable pulumi workflow, by name."""
    steps = _workflow("pulumi.yml")["jobs"]["pulumi"]["steps"]
    return next(step for step in steps if step.get("name") == name)


def test_actionlint_passes_on_every_workflow() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [file.name for file in files] == [
        "ephemeral.yml",
        "main.yml",
        "pull-request.yml",
        "pulumi.yml",
        "tests.yml",
    ]

    result = _actionlint(*files)

    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_runs_shellcheck_on_run_blocks(tmp_path: Path) -> None:
    """The control: without it, a missing shellcheck would pass the test above silently."""
    workflow = tmp_path / "unquoted.yml"
    workflow.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo $HOME\n"
    )

    result = _actionlint(workflow)

    assert result.returncode == 1
    assert "shellcheck reported issue in this script: SC2086" in result.stdout


def test_aws_access_is_oidc_role_assumption_with_no_stored_keys() -> None:
    for file in WORKFLOWS.glob("*.yml"):
        text = file.read_text().lower()
        assert "aws-access-key-id" not in text, file.name
        assert "aws_secret_access_key" not in text, file.name
    pulumi = _workflow("pulumi.yml")
    assert pulumi["permissions"] == {"contents": "read", "id-token": "write"}
    credentials = _step("Assume the deploy role (OIDC)")
    assert credentials["uses"].startswith("aws-actions/configure-aws-credentials@")
    assert set(credentials["with"]) == {"role-to-assume", "role-session-name", "aws-region"}
    assert (
        pulumi["jobs"]["pulumi"]["env"]["PULUMI_ACCESS_TOKEN"]
        == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    )


def test_each_event_runs_the_operation_it_should() -> None:
    pull_request = _workflow("pull-request.yml")
    assert "pull_request" in pull_request["on"]
    assert pull_request["jobs"]["tests"]["uses"] == "./.github/workflows/tests.yml"
    assert pull_request["jobs"]["preview"]["with"] == {"operation": "preview", "stack": "dev"}
    main = _workflow("main.yml")
    assert main["on"]["push"] == {"branches": ["main"]}
    assert main["jobs"]["deploy-dev"]["needs"] == "tests"
    assert main["jobs"]["deploy-dev"]["with"] == {"operation": "up", "stack": "dev"}
    ephemeral = _workflow("ephemeral.yml")
    assert "closed" in ephemeral["on"]["pull_request"]["types"]
    destroy = ephemeral["jobs"]["destroy"]
    assert "github.event.action == 'closed'" in destroy["if"]
    assert destroy["with"] == {
        "operation": "ephemeral-destroy",
        "stack": "pr-${{ github.event.pull_request.number }}",
    }
    for workflow in (pull_request, main, ephemeral):
        for job in workflow["jobs"].values():
            if job["uses"] == "./.github/workflows/pulumi.yml":
                assert job["permissions"]["id-token"] == "write"
    test_steps = _workflow("tests.yml")["jobs"]["test"]["steps"]
    assert any(step.get("run") == "make test" for step in test_steps)


def _run_step(step: dict[str, Any], checkout: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a step's script as GitHub's runner does (bash -eo pipefail) in ``checkout``."""
    script = checkout / "step.sh"
    script.write_text(step["run"])
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=checkout,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def checkout(fake_tools, tmp_path: Path) -> Path:
    """A stand-in checkout: ``.venv/bin/mlops`` is a stand-in too, pulumi runs here."""
    root = tmp_path / "checkout"
    fake_tools.install(root / ".venv" / "bin" / "mlops")
    fake_tools.pulumi_cwd = root
    return root


@pytest.mark.parametrize(
    ("operation", "stack", "command"),
    [
        ("preview", "dev", PREVIEW),
        ("up", "dev", ["pulumi", "up", "--yes", "--stack", "dev", "--policy-pack", "policy"]),
        ("ephemeral-create", PR_STACK, ["mlops", "ephemeral", "create", PR_STACK]),
        ("ephemeral-destroy", PR_STACK, ["mlops", "ephemeral", "destroy", PR_STACK]),
    ],
)
def test_the_operation_step_runs_exactly_the_command(
    fake_tools, checkout: Path, operation: str, stack: str, command: list[str]
) -> None:
    fake_tools.answer(command, stdout="Resources:\n    61 unchanged\n")
    summary = checkout / "summary.md"

    result = _run_step(
        _step("Run the operation"),
        checkout,
        OPERATION=operation,
        STACK=stack,
        GITHUB_STEP_SUMMARY=str(summary),
    )

    assert result.returncode == 0, result.stderr
    assert fake_tools.calls() == [command]
    if operation == "preview":
        expected = "### pulumi preview of dev\n```\nResources:\n    61 unchanged\n```\n"
        assert summary.read_text() == expected


def test_the_operation_step_rejects_an_unknown_operation(fake_tools, checkout: Path) -> None:
    result = _run_step(_step("Run the operation"), checkout, OPERATION="refresh", STACK="dev")

    assert result.returncode == 2
    assert "unknown operation 'refresh'" in result.stderr
    assert fake_tools.calls() == []


@pytest.mark.parametrize("smoke_exit", [0, 1], ids=["passes", "fails"])
def test_the_smoke_step_tunnels_smoke_tests_and_closes_the_tunnel(
    fake_tools, checkout: Path, smoke_exit: int
) -> None:
    env = ["mlops", "env", "--stack", PR_STACK, "--via-tunnel"]
    tunnel = ["mlops", "tunnel", "--stack", PR_STACK]
    smoke = ["mlops", "smoke", "--wait", "1200"]
    fake_tools.answer(env)
    fake_tools.answer(tunnel, serve=True)
    fake_tools.answer(smoke, exit=smoke_exit, after_serving=1)

    result = _run_step(
        _step("Smoke-test the environment through an SSM tunnel"), checkout, STACK=PR_STACK
    )

    assert result.returncode == smoke_exit, result.stderr
    calls = fake_tools.calls()
    assert calls[0] == env
    assert sorted(calls[1:]) == sorted([tunnel, smoke])
    assert len(fake_tools.markers("stopped")) == 1
