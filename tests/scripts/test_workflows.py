"""The GitHub Actions workflows: actionlint (with shellcheck on every ``run:`` block), their
security properties, and their shell steps run against stand-in ``pulumi`` and ``mlops``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
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
    "base/policy",
    "--diff",
    "--show-secrets=false",
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
        "ephemeral-reaper.yml",
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


def test_each_event_runs_the_operation_it_should() -> None:
    pull_request = _workflow("pull-request.yml")
    assert "pull_request" in pull_request["on"]
    assert pull_request["jobs"]["tests"]["uses"] == "./.github/workflows/tests.yml"
    preview = _preview_step()
    assert 'pulumi preview --stack "$STACK"' in preview["run"]
    assert pull_request["jobs"]["preview"]["env"]["STACK"] == "dev"
    main = _workflow("main.yml")
    assert main["on"]["push"] == {"branches": ["main"]}
    assert main["jobs"]["deploy-dev"]["needs"] == "tests"
    assert main["jobs"]["deploy-dev"]["with"] == {
        "operation": "up",
        "stack": "dev",
        "environment": "dev",
    }
    ephemeral = _workflow("ephemeral.yml")
    assert "closed" in ephemeral["on"]["pull_request"]["types"]
    destroy = ephemeral["jobs"]["destroy"]
    assert "github.event.action == 'closed'" in destroy["if"]
    assert destroy["with"] == {
        "operation": "ephemeral-destroy",
        "stack": "pr-${{ github.event.pull_request.number }}",
        "environment": "ephemeral",
    }
    reaper = _workflow("ephemeral-reaper.yml")
    assert reaper["on"]["schedule"] == [{"cron": "17 * * * *"}]
    assert reaper["jobs"]["reap"]["with"] == {
        "operation": "ephemeral-reap",
        "stack": "ephemeral-reaper",
        "environment": "ephemeral",
    }
    for workflow in (main, ephemeral, reaper):
        for job in workflow["jobs"].values():
            if job["uses"] == "./.github/workflows/pulumi.yml":
                assert job["permissions"]["id-token"] == "write"
    test_steps = _workflow("tests.yml")["jobs"]["test"]["steps"]
    assert any(step.get("run") == "make test" for step in test_steps)


# -- who holds what: the properties of SECURITY_INVARIANTS.md 40-42 --------------------------

Workflows = dict[str, dict[str, Any]]
DEPLOY_ROLE = "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
PREVIEW_ROLE = "${{ vars.AWS_PREVIEW_ROLE_ARN }}"
PROTECTED_ENVIRONMENTS = {"dev", "prod", "ephemeral"}
CALLERS = "${{ inputs.environment }}"  # a reusable workflow's job: the caller names it
BASE_REF = "${{ github.event.pull_request.base.sha }}"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
TRUST_POLICY = re.compile(r"trust policy.*?```json\n(.*?)```", re.DOTALL)


def _all_workflows() -> Workflows:
    return {file.name: _workflow(file.name) for file in sorted(WORKFLOWS.glob("*.yml"))}


def _local_actions() -> dict[str, dict[str, Any]]:
    actions = REPO_ROOT / ".github" / "actions"
    return {
        str(f.relative_to(REPO_ROOT)): yaml.safe_load(f.read_text())
        for f in actions.rglob("action.yml")
    }


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def _called(workflows: Workflows, job: dict[str, Any]) -> dict[str, Any] | None:
    """The reusable workflow a job calls (``./.github/workflows/X.yml``), if any."""
    uses = job.get("uses", "")
    return workflows.get(uses.rsplit("/", 1)[-1]) if uses.startswith("./") else None


def _roles(job: dict[str, Any]) -> list[str]:
    return [
        step["with"]["role-to-assume"]
        for step in _steps(job)
        if str(step.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")
    ]


def _input(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    """A reusable workflow's declared input (empty if it declares none of that name)."""
    inputs = (workflow["on"].get("workflow_call") or {}).get("inputs") or {}
    return inputs.get(name) or {}


def deploy_role_problems(workflows: Workflows) -> list[str]:
    """Invariant 40: the deploy role only in jobs bound to a protected GitHub environment (so a
    job a pull request starts without one holds the preview role at most)."""
    problems = []
    for name, workflow in workflows.items():
        for job_name, job in workflow["jobs"].items():
            environment = job.get("environment")
            for role in _roles(job):
                if role == DEPLOY_ROLE and environment not in (*PROTECTED_ENVIRONMENTS, CALLERS):
                    problems.append(
                        f"{name}:{job_name} assumes the deploy role in environment {environment!r}"
                    )
                if role not in (DEPLOY_ROLE, PREVIEW_ROLE):
                    problems.append(f"{name}:{job_name} assumes an unknown role {role}")
            if environment == CALLERS and not _input(workflow, "environment").get("required"):
                problems.append(f"{name}:{job_name}: its environment input is optional")
            callee = _called(workflows, job)
            if callee and any(DEPLOY_ROLE in _roles(j) for j in callee["jobs"].values()):
                given = (job.get("with") or {}).get("environment")
                if given not in PROTECTED_ENVIRONMENTS:
                    problems.append(f"{name}:{job_name} deploys in environment {given!r}")
    return problems


def token_problems(workflows: Workflows) -> list[str]:
    """Invariant 41: secrets only in the env of the steps that run Pulumi (or mlops, which runs
    it), never for a whole workflow or job, never inherited by a called workflow."""
    problems = []
    for name, workflow in workflows.items():
        if "secrets." in json.dumps(workflow.get("env") or {}):
            problems.append(f"{name}: a secret in the workflow's env")
        for job_name, job in workflow["jobs"].items():
            where = f"{name}:{job_name}"
            if "secrets." in json.dumps(job.get("env") or {}):
                problems.append(f"{where}: a secret in the job's env")
            if job.get("secrets") == "inherit":
                problems.append(f"{where}: secrets: inherit")
            for step in _steps(job):
                uses_secret = "secrets." in json.dumps(
                    {k: v for k, v in step.items() if k != "env"}
                )
                in_env = "secrets." in json.dumps(step.get("env") or {})
                runs_pulumi = re.search(r"\bpulumi |\.venv/bin/mlops ", step.get("run", ""))
                if uses_secret or (in_env and not runs_pulumi):
                    problems.append(
                        f"{where}: step {step.get('name', step.get('uses'))} gets a secret"
                    )
    return problems


def pinning_problems(workflows: Workflows, actions: dict[str, dict[str, Any]]) -> list[str]:
    """Invariant 42: every action from outside the repository pinned by full commit SHA; no
    checkout leaves the job's GitHub token in .git/config."""
    problems = []
    steps = [
        (f"{name}:{job_name}", step)
        for name, workflow in workflows.items()
        for job_name, job in workflow["jobs"].items()
        for step in _steps(job)
    ]
    steps += [(path, step) for path, action in actions.items() for step in action["runs"]["steps"]]
    for where, step in steps:
        uses = step.get("uses")
        if uses is None or uses.startswith("./"):
            continue
        if not PINNED.fullmatch(uses):
            problems.append(f"{where}: {uses} is not pinned by commit SHA")
        if (
            uses.startswith("actions/checkout@")
            and (step.get("with") or {}).get("persist-credentials") is not False
        ):
            problems.append(f"{where}: checkout persists credentials")
    return problems


def preview_problems(workflows: Workflows) -> list[str]:
    """Invariant 40: the pull request's preview uses the base branch's policy pack and
    Makefile, hides secrets, and holds the preview role and token only."""
    job = workflows["pull-request.yml"]["jobs"]["preview"]
    steps = _steps(job)
    problems = []
    base = [
        s
        for s in steps
        if str(s.get("uses", "")).startswith("actions/checkout@")
        and (s.get("with") or {}).get("ref") == BASE_REF
    ]
    if not base or base[0]["with"].get("path") != "base":
        problems.append("no checkout of the base branch into base/")
    runs = "\n".join(s.get("run", "") for s in steps).replace("\\\n", " ")
    previews = [line for line in runs.splitlines() if line.strip().startswith("pulumi preview")]
    if not previews:
        problems.append("no pulumi preview")
    for line in previews:
        if "--policy-pack base/policy" not in line:
            problems.append(f"the preview's policy pack is not the base branch's: {line}")
        if "--show-secrets=false" not in line:
            problems.append(f"the preview may show secrets: {line}")
    makes = [line for line in runs.splitlines() if re.match(r"\s*make\b", line)]
    if not makes or any(not line.strip().startswith("make -C base ") for line in makes):
        problems.append(f"the preview runs the pull request's Makefile: {makes}")
    if _roles(job) != [PREVIEW_ROLE]:
        problems.append(f"the preview assumes {_roles(job)}, not only the preview role")
    tokens = {v for s in steps for v in (s.get("env") or {}).values() if "secrets." in str(v)}
    if tokens != {"${{ secrets.PULUMI_PREVIEW_TOKEN }}"}:
        problems.append(f"the preview gets {sorted(tokens)}, not only the preview token")
    return problems


def trust_problems(readme: str) -> list[str]:
    """Invariant 40: docs/ci.md's deploy-role trust policy admits one environment's subject."""
    found = TRUST_POLICY.search(readme)
    if found is None:
        return ["docs/ci.md has no deploy-role trust policy"]
    problems = []
    for statement in json.loads(found.group(1))["Statement"]:
        condition = statement.get("Condition") or {}
        equals = condition.get("StringEquals") or {}
        subject = equals.get("token.actions.githubusercontent.com:sub", "")
        if set(condition) != {"StringEquals"}:
            problems.append(f"conditions other than StringEquals: {sorted(condition)}")
        if equals.get("token.actions.githubusercontent.com:aud") != "sts.amazonaws.com":
            problems.append("the audience is not sts.amazonaws.com")
        environment = subject.rpartition(":environment:")[2]
        if not subject.startswith("repo:<owner>/<repo>:environment:") or (
            environment not in PROTECTED_ENVIRONMENTS
        ):
            problems.append(f"the deploy role trusts {subject!r}, not a protected environment")
    if "repo:<owner>/<repo>:pull_request" not in readme:
        problems.append("the preview role's subject is not documented")
    for action in ("kms:Decrypt", "secretsmanager:GetSecretValue"):
        if action not in readme.split("**preview role**", 1)[-1].split("**deploy role**")[0]:
            problems.append(f"the preview role is not documented as denied {action}")
    return problems


def test_40_to_42_the_workflows_and_the_trust_recipe_hold() -> None:
    workflows = _all_workflows()
    readme = (REPO_ROOT / "docs" / "ci.md").read_text()

    assert deploy_role_problems(workflows) == []
    assert token_problems(workflows) == []
    assert pinning_problems(workflows, _local_actions()) == []
    assert preview_problems(workflows) == []
    assert trust_problems(readme) == []


Breakage = Callable[[Workflows], None]


def _preview_job(workflows: Workflows) -> dict[str, Any]:
    return workflows["pull-request.yml"]["jobs"]["preview"]


def _named(job: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(s for s in _steps(job) if s.get("name", "").startswith(prefix))


def token_at_job_level(workflows: Workflows) -> None:
    job = workflows["pulumi.yml"]["jobs"]["pulumi"]
    job["env"]["PULUMI_ACCESS_TOKEN"] = "${{ secrets.PULUMI_ACCESS_TOKEN }}"


def token_at_workflow_level(workflows: Workflows) -> None:
    workflows["pull-request.yml"]["env"] = {
        "PULUMI_ACCESS_TOKEN": "${{ secrets.PULUMI_PREVIEW_TOKEN }}"
    }


def token_for_pip(workflows: Workflows) -> None:
    step = _named(workflows["pulumi.yml"]["jobs"]["pulumi"], "Create the virtualenv")
    step["env"] = {"PULUMI_ACCESS_TOKEN": "${{ secrets.PULUMI_ACCESS_TOKEN }}"}


def secrets_inherited(workflows: Workflows) -> None:
    workflows["main.yml"]["jobs"]["deploy-dev"]["secrets"] = "inherit"


def preview_with_deploy_role(workflows: Workflows) -> None:
    _named(_preview_job(workflows), "Assume")["with"]["role-to-assume"] = DEPLOY_ROLE


def preview_with_deploy_token(workflows: Workflows) -> None:
    _named(_preview_job(workflows), "Preview")["env"]["PULUMI_ACCESS_TOKEN"] = (
        "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    )


def deploy_without_environment(workflows: Workflows) -> None:
    del workflows["pulumi.yml"]["jobs"]["pulumi"]["environment"]


def deploy_in_unprotected_environment(workflows: Workflows) -> None:
    workflows["ephemeral.yml"]["jobs"]["create"]["with"]["environment"] = "scratch"


def unpinned_action(workflows: Workflows) -> None:
    _steps(workflows["tests.yml"]["jobs"]["lint"])[1]["uses"] = "actions/setup-python@v6"


def short_sha(workflows: Workflows) -> None:
    _named(_preview_job(workflows), "Assume")["uses"] = (
        "aws-actions/configure-aws-credentials@8df5847"
    )


def checkout_keeps_token(workflows: Workflows) -> None:
    del _steps(workflows["pulumi.yml"]["jobs"]["pulumi"])[0]["with"]["persist-credentials"]


def policy_pack_from_head(workflows: Workflows) -> None:
    step = _named(_preview_job(workflows), "Preview")
    step["run"] = step["run"].replace("--policy-pack base/policy", "--policy-pack policy")


def head_makefile(workflows: Workflows) -> None:
    step = _named(_preview_job(workflows), "Create the virtualenv")
    step["run"] = "make venv\n"


def no_base_checkout(workflows: Workflows) -> None:
    _named(_preview_job(workflows), "Check out the base")["with"]["ref"] = "${{ github.head_ref }}"


def secrets_shown(workflows: Workflows) -> None:
    step = _named(_preview_job(workflows), "Preview")
    step["run"] = step["run"].replace("--show-secrets=false", "--show-secrets")


def preview_in_unprotected_environment(workflows: Workflows) -> None:
    job = _preview_job(workflows)
    job["environment"] = "scratch"
    _named(job, "Assume")["with"]["role-to-assume"] = DEPLOY_ROLE


def environment_left_to_chance(workflows: Workflows) -> None:
    workflows["pulumi.yml"]["on"]["workflow_call"]["inputs"]["environment"]["required"] = False


WORKFLOW_BREAKAGES: list[tuple[str, Breakage]] = [
    ("token", token_at_job_level),
    ("token", token_at_workflow_level),
    ("token", token_for_pip),
    ("token", secrets_inherited),
    ("deploy", preview_with_deploy_role),
    ("preview", preview_with_deploy_token),
    ("deploy", deploy_without_environment),
    ("deploy", deploy_in_unprotected_environment),
    ("deploy", preview_in_unprotected_environment),
    ("deploy", environment_left_to_chance),
    ("pinning", unpinned_action),
    ("pinning", short_sha),
    ("pinning", checkout_keeps_token),
    ("preview", policy_pack_from_head),
    ("preview", head_makefile),
    ("preview", no_base_checkout),
    ("preview", secrets_shown),
]
CHECKS: dict[str, Callable[[Workflows], list[str]]] = {
    "deploy": deploy_role_problems,
    "token": token_problems,
    "pinning": lambda workflows: pinning_problems(workflows, _local_actions()),
    "preview": preview_problems,
}


@pytest.mark.parametrize(
    ("check", "breakage"), WORKFLOW_BREAKAGES, ids=[b.__name__ for _, b in WORKFLOW_BREAKAGES]
)
def test_40_to_42_a_broken_workflow_is_caught(check: str, breakage: Breakage) -> None:
    workflows = _all_workflows()
    assert CHECKS[check](workflows) == []

    breakage(workflows)

    assert CHECKS[check](workflows) != []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("repo:<owner>/<repo>:environment:dev", "repo:<owner>/<repo>:ref:refs/heads/main"),
        ("repo:<owner>/<repo>:environment:dev", "repo:<owner>/<repo>:pull_request"),
        ("repo:<owner>/<repo>:environment:dev", "repo:<owner>/<repo>:*"),
        ('"StringEquals"', '"StringLike"'),
        ('"sts.amazonaws.com",\n', '"*",\n'),
        ("`kms:Decrypt`", "`kms:Encrypt`"),
    ],
)
def test_40_a_broken_trust_recipe_is_caught(old: str, new: str) -> None:
    readme = (REPO_ROOT / "docs" / "ci.md").read_text()
    assert old in readme

    assert trust_problems(readme.replace(old, new, 1)) != []


def _preview_step() -> dict[str, Any]:
    return _named(_workflow("pull-request.yml")["jobs"]["preview"], "Preview")


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
        ("up", "dev", ["pulumi", "up", "--yes", "--stack", "dev", "--policy-pack", "policy"]),
        ("ephemeral-create", PR_STACK, ["mlops", "ephemeral", "create", PR_STACK]),
        ("ephemeral-destroy", PR_STACK, ["mlops", "ephemeral", "destroy", PR_STACK]),
        ("ephemeral-reap", "ephemeral-reaper", ["mlops", "ephemeral", "reap"]),
    ],
)
def test_the_operation_step_runs_exactly_the_command(
    fake_tools, checkout: Path, operation: str, stack: str, command: list[str]
) -> None:
    fake_tools.answer(command)

    result = _run_step(_step("Run the operation"), checkout, OPERATION=operation, STACK=stack)

    assert result.returncode == 0, result.stderr
    assert fake_tools.calls() == [command]


def test_the_preview_step_previews_dev_and_writes_the_summary(fake_tools, checkout: Path) -> None:
    fake_tools.answer(PREVIEW, stdout="Resources:\n    61 unchanged\n")
    summary = checkout / "summary.md"

    result = _run_step(_preview_step(), checkout, STACK="dev", GITHUB_STEP_SUMMARY=str(summary))

    assert result.returncode == 0, result.stderr
    assert fake_tools.calls() == [PREVIEW]
    expected = "### pulumi preview of dev\n```\nResources:\n    61 unchanged\n```\n"
    assert summary.read_text() == expected


def test_a_failed_preview_fails_the_step(fake_tools, checkout: Path) -> None:
    fake_tools.answer(PREVIEW, stdout="policy violation\n", exit=255)
    summary = checkout / "summary.md"

    result = _run_step(_preview_step(), checkout, STACK="dev", GITHUB_STEP_SUMMARY=str(summary))

    assert result.returncode == 255


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
