"""``mlops deploy`` and ``mlops run`` without a real Prefect server (the real run is tests/e2e).

``deploy`` runs a ``prefect`` stand-in beside a stand-in Python (it records its arguments,
working directory, staged files and environment) and checks the credential against a
loopback HTTP server answering as Prefect does. ``run`` follows a flow run through a
stand-in client that replays the states, logs and artifacts a Prefect server returns.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.exceptions import ObjectNotFound
from typer.testing import CliRunner

from scripts import deploy
from scripts.cli import app
from scripts.common import REPO_ROOT, OpsError
from scripts.envfile import write_env_file

AUTH_STRING = "Zr5KpWq8Ns2Lx7Vb4MtYg6Hc"

_PREFECT_STAND_IN = """#!{python}
import json, os, sys

os.makedirs(os.path.dirname({record!r}), exist_ok=True)
staged = sorted(
    os.path.relpath(os.path.join(root, name), ".")
    for root, _, names in os.walk(".") for name in names
)
with open({record!r}, "w") as out:
    json.dump({{"args": sys.argv[1:], "staged": staged, "env": dict(os.environ)}}, out)
sys.exit({exit_code})
"""


@dataclass
class PrefectServer:
    """A loopback HTTP server answering as Prefect does with ``--auth-string``."""

    url: str = ""
    auth_string: str = AUTH_STRING
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def prefect_server() -> Iterator[PrefectServer]:
    """Answers ``/api/admin/version`` and ``/api/hello``; 401 without the right basic token."""
    state = PrefectServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.headers.get("Authorization") != _basic_token(state.auth_string):
                self._answer(401, {"exception_message": "Unauthorized"})
            elif self.path in ("/api/admin/version", "/api/hello"):
                self._answer(200, "3.9.1" if self.path.endswith("version") else "👋")
            else:
                self._answer(404, {"detail": "Not Found"})

        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests inspect ``requests``."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _basic_token(auth_string: str) -> str:
    """The ``Authorization`` value Prefect's client sends for ``auth_string``."""
    return "Basic " + base64.b64encode(auth_string.encode()).decode()


@dataclass
class PrefectCli:
    """The ``prefect`` stand-in: what it was run with (``None`` until it ran)."""

    record: Path

    def call(self) -> dict[str, Any] | None:
        """Arguments, staged files and environment of the run, if any."""
        return json.loads(self.record.read_text()) if self.record.exists() else None


@pytest.fixture
def prefect_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], PrefectCli]:
    """Install a ``prefect`` stand-in exiting with the given status beside ``sys.executable``."""

    def install(exit_code: int = 0) -> PrefectCli:
        bin_dir = tmp_path / "venv-bin"
        bin_dir.mkdir(exist_ok=True)
        cli = PrefectCli(tmp_path / "record" / "prefect.json")
        script = _PREFECT_STAND_IN.format(
            python=sys.executable, record=str(cli.record), exit_code=exit_code
        )
        (bin_dir / "prefect").write_text(script)
        (bin_dir / "prefect").chmod(0o755)
        monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
        return cli

    return install


def _env(server: PrefectServer, **extra: str) -> dict[str, str]:
    return {
        "PREFECT_API_URL": server.url,
        "PREFECT_API_AUTH_STRING": AUTH_STRING,
        "PIPELINE_DATA_DIR": "s3://mlops-artifacts-0123/data",
        **extra,
    }


# --- deploy -------------------------------------------------------------------------------


def test_deploy_runs_prefect_deploy_on_a_staging_directory_with_the_bucket(
    prefect_server: PrefectServer, prefect_cli: Callable[[int], PrefectCli]
) -> None:
    cli = prefect_cli(0)

    deploy.deploy(_env(prefect_server, AWS_REGION="eu-west-3"), None)

    call = cli.call()
    assert call is not None
    assert call["args"] == ["--no-prompt", "deploy", "--all"]
    assert call["env"]["MLOPS_ARTIFACT_BUCKET"] == "mlops-artifacts-0123"
    assert call["env"]["PREFECT_API_AUTH_STRING"] == AUTH_STRING
    assert call["env"]["AWS_DEFAULT_REGION"] == "eu-west-3"
    package = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "pipeline").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    assert call["staged"] == sorted([".prefectignore", "prefect.yaml", *package])
    assert "/api/hello" in prefect_server.requests


def test_deploy_of_one_deployment_names_it_and_keeps_an_explicit_default_region(
    prefect_server: PrefectServer,
    prefect_cli: Callable[[int], PrefectCli],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    cli = prefect_cli(0)

    deploy.deploy(_env(prefect_server, AWS_REGION="eu-west-3"), "training/training")

    call = cli.call()
    assert call is not None
    assert call["args"] == ["--no-prompt", "deploy", "--name", "training/training"]
    assert call["env"]["AWS_DEFAULT_REGION"] == "us-east-2"


def test_deploy_without_a_region_sets_none(
    prefect_server: PrefectServer,
    prefect_cli: Callable[[int], PrefectCli],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    cli = prefect_cli(0)

    deploy.deploy(_env(prefect_server), None)

    call = cli.call()
    assert call is not None
    assert "AWS_DEFAULT_REGION" not in call["env"]


def test_a_failed_prefect_deploy_is_an_error_naming_its_status(
    prefect_server: PrefectServer, prefect_cli: Callable[[int], PrefectCli]
) -> None:
    prefect_cli(3)
    with pytest.raises(
        OpsError, match=r"^`prefect deploy` failed with exit status 3 \(its output is above\)$"
    ):
        deploy.deploy(_env(prefect_server), None)


def test_deploy_with_a_rejected_auth_string_runs_nothing(
    prefect_server: PrefectServer, prefect_cli: Callable[[int], PrefectCli]
) -> None:
    prefect_server.auth_string = "another-auth-string"
    cli = prefect_cli(0)
    with pytest.raises(deploy.PrefectApiError) as raised:
        deploy.deploy(_env(prefect_server), None)
    assert str(raised.value) == (
        f"the Prefect server at {prefect_server.url} rejected PREFECT_API_AUTH_STRING (HTTP 401)"
    )
    assert cli.call() is None


def test_an_unreachable_prefect_server_names_the_variable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/api"
    env = {"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": AUTH_STRING}
    with pytest.raises(
        deploy.PrefectApiError,
        match=rf"^cannot reach the Prefect server at "
        rf"PREFECT_API_URL={url}: ",
    ):
        deploy.check_prefect(env)


@pytest.mark.parametrize("data_dir", ["/srv/data", "data", "s3:///data", "gs://bucket/data"])
def test_deploy_needs_the_data_dir_in_the_artifact_bucket(data_dir: str) -> None:
    with pytest.raises(OpsError) as raised:
        deploy.flow_code_bucket(data_dir)
    assert str(raised.value) == (
        "PIPELINE_DATA_DIR must be s3://<artifact bucket>/data to name the bucket the flow "
        f"code goes to, got {data_dir!r}"
    )


def test_the_bucket_is_the_data_dir_s_whatever_its_prefix() -> None:
    assert deploy.flow_code_bucket("s3://artifacts/data") == "artifacts"
    assert deploy.flow_code_bucket("s3://artifacts") == "artifacts"


def test_the_command_reads_the_env_file_and_names_what_it_lacks(tmp_path: Path) -> None:
    env_file = tmp_path / "mlops.env"
    write_env_file(env_file, {"PREFECT_API_URL": "http://127.0.0.1:4200/api"})

    result = CliRunner().invoke(app, ["deploy", "--env-file", str(env_file)])

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: env file {env_file} lacks PREFECT_API_AUTH_STRING, PIPELINE_DATA_DIR\n"
    )


# --- run ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignments", "expected"),
    [
        ([], {}),
        (
            ["color=yellow", "publication_lag_months=3"],
            {"color": "yellow", "publication_lag_months": "3"},
        ),
        (
            ["tlc_base_url=https://mirror/a=b", "empty="],
            {"tlc_base_url": "https://mirror/a=b", "empty": ""},
        ),
    ],
)
def test_overrides_are_key_value_pairs(assignments: list[str], expected: dict[str, str]) -> None:
    assert deploy.parse_overrides(assignments) == expected


@pytest.mark.parametrize("assignment", ["color", "=yellow"])
def test_an_override_without_a_key_or_sign_is_refused(assignment: str) -> None:
    with pytest.raises(OpsError) as raised:
        deploy.parse_overrides(["color=green", assignment])
    assert str(raised.value) == (f"--set expects KEY=VALUE (e.g. color=yellow), got {assignment!r}")


FLOW_ID = UUID("00000000-0000-0000-0000-00000000f10e")
DEPLOYMENT_ID = UUID("00000000-0000-0000-0000-0000000de910")


def _flow_run(name: str, state: StateType | None, message: str | None = None) -> FlowRun:
    return FlowRun(
        id=UUID("00000000-0000-0000-0000-0000000000a1"),
        name=name,
        flow_id=FLOW_ID,
        state=State(type=state, message=message) if state else None,
    )


@dataclass
class StandInClient:
    """Answers as a Prefect client would, from scripted runs, logs and artifacts."""

    states: list[StateType | None] = field(default_factory=list)
    message: str | None = None
    logs: list[list[str]] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    refusal: httpx.HTTPStatusError | None = None
    api_url: str = "http://127.0.0.1:4200/api/"
    created: list[dict[str, Any]] = field(default_factory=list)
    artifact_queries: list[Any] = field(default_factory=list)
    _log_ids: dict[str, UUID] = field(default_factory=dict)

    def read_deployment_by_name(self, name: str) -> Any:
        if "/" not in name:
            raise ValueError(f"Invalid deployment name {name!r}: expected 'flow/deployment'")
        if name not in self.deployments:
            raise ObjectNotFound(http_exc=Exception(name))
        return SimpleNamespace(id=DEPLOYMENT_ID)

    def read_deployment(self, deployment_id: UUID) -> Any:
        assert deployment_id == DEPLOYMENT_ID
        (parameters,) = self.deployments.values()
        return SimpleNamespace(parameters=parameters)

    def create_flow_run_from_deployment(
        self, deployment_id: UUID, *, parameters: dict[str, Any]
    ) -> FlowRun:
        assert deployment_id == DEPLOYMENT_ID
        if self.refusal is not None:
            raise self.refusal
        self.created.append(parameters)
        return _flow_run("brave-otter", StateType.SCHEDULED)

    def read_flow_run(self, flow_run_id: UUID) -> FlowRun:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        final = state in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED)
        return _flow_run("brave-otter", state, self.message if final else None)

    def read_logs(self, log_filter: Any) -> list[Any]:
        (flow_run_id,) = log_filter.flow_run_id.any_
        assert flow_run_id == _flow_run("x", None).id
        batch = self.logs.pop(0) if self.logs else []
        return [
            SimpleNamespace(
                id=self._log_ids.setdefault(message, uuid4()),
                timestamp=datetime(2026, 11, 29, 14, 3, index, tzinfo=UTC),
                message=message,
            )
            for index, message in enumerate(batch)
        ]

    def read_artifacts(self, *, artifact_filter: Any, flow_run_filter: Any) -> list[Any]:
        self.artifact_queries.append((artifact_filter, flow_run_filter))
        return [SimpleNamespace(data=text) for text in self.artifacts]


@pytest.fixture
def no_poll_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Follow runs without pausing between polls (the stand-in answers at once)."""
    monkeypatch.setattr(deploy, "_POLL_SECONDS", 0.0)


@pytest.fixture
def stand_in_client(monkeypatch: pytest.MonkeyPatch) -> StandInClient:
    """The client ``run`` gets instead of one on a real server."""
    client = StandInClient(deployments={"training/training": {"parameters": {"color": "green"}}})

    @contextmanager
    def connect(env: dict[str, str], *, retries: int = 3) -> Iterator[StandInClient]:
        assert env["PREFECT_API_AUTH_STRING"] == AUTH_STRING
        yield client

    monkeypatch.setattr(deploy, "prefect_client", connect)
    return client


RUN_ENV = {"PREFECT_API_URL": "http://127.0.0.1:4200/api", "PREFECT_API_AUTH_STRING": AUTH_STRING}


@pytest.mark.usefixtures("no_poll_wait")
def test_run_prints_each_state_and_log_once_then_the_metrics(
    stand_in_client: StandInClient,
) -> None:
    stand_in_client.states = [
        StateType.PENDING,
        StateType.RUNNING,
        StateType.RUNNING,
        StateType.COMPLETED,
    ]
    stand_in_client.logs = [[], ["loading 2023-01"], ["loading 2023-01", "trained 95 trees"]]
    stand_in_client.artifacts = ["| RMSE (minutes) | 4.4000 |"]
    said: list[str] = []

    outcome = deploy.run(RUN_ENV, "training/training", {"color": "yellow"}, 60, said.append)

    assert said == [
        f"started flow run brave-otter ({_flow_run('x', None).id}) of training/training",
        "flow run brave-otter: Pending",
        "  14:03:00 loading 2023-01",
        "flow run brave-otter: Running",
        "  14:03:01 trained 95 trees",
        "flow run brave-otter: Completed",
        "| RMSE (minutes) | 4.4000 |",
    ]
    assert outcome.state == "COMPLETED"
    assert outcome.name == "brave-otter"
    assert stand_in_client.created == [{"parameters": {"color": "yellow"}}]
    ((artifact_filter, flow_run_filter),) = stand_in_client.artifact_queries
    assert artifact_filter.key.any_ == [deploy.METRICS_ARTIFACT_KEY]
    assert flow_run_filter.id.any_ == [outcome.flow_run_id]


@pytest.mark.usefixtures("no_poll_wait")
def test_a_completed_run_without_metrics_prints_none(stand_in_client: StandInClient) -> None:
    stand_in_client.states = [StateType.COMPLETED]
    said: list[str] = []
    deploy.run(RUN_ENV, "training/training", {}, 60, said.append)
    assert said[-1] == "flow run brave-otter: Completed"


@pytest.mark.usefixtures("no_poll_wait")
@pytest.mark.parametrize(
    ("state", "message", "expected"),
    [
        (StateType.FAILED, "lacks column(s) DOLocationID", "FAILED: lacks column(s) DOLocationID"),
        (StateType.CRASHED, None, "CRASHED: no message"),
    ],
)
def test_a_run_that_does_not_complete_is_an_error_with_its_message(
    stand_in_client: StandInClient, state: StateType, message: str | None, expected: str
) -> None:
    stand_in_client.states = [StateType.RUNNING, state]
    stand_in_client.message = message
    stand_in_client.artifacts = ["must not be shown"]
    said: list[str] = []
    with pytest.raises(OpsError) as raised:
        deploy.run(RUN_ENV, "training/training", {}, 60, said.append)
    assert str(raised.value) == f"flow run brave-otter ended {expected}"
    assert "must not be shown" not in said


def test_a_run_still_going_at_the_timeout_is_left_running(
    stand_in_client: StandInClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy, "_POLL_SECONDS", 0.01)
    stand_in_client.states = [StateType.RUNNING]
    with pytest.raises(OpsError) as raised:
        deploy.run(RUN_ENV, "training/training", {}, 0.05, lambda _: None)
    assert str(raised.value) == (
        "flow run brave-otter is still Running after 0 s; it goes on without us "
        "(see it in the Prefect UI)"
    )


def test_a_run_never_scheduled_at_the_timeout_is_pending(
    stand_in_client: StandInClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy, "_POLL_SECONDS", 0.01)
    stand_in_client.states = [None]
    with pytest.raises(OpsError, match=r"^flow run brave-otter is still pending after 0 s"):
        deploy.run(RUN_ENV, "training/training", {}, 0.05, lambda _: None)


def test_an_unknown_deployment_says_to_deploy(stand_in_client: StandInClient) -> None:
    with pytest.raises(OpsError) as raised:
        deploy.run(RUN_ENV, "training/nightly", {}, 60, lambda _: None)
    assert str(raised.value) == (
        "deployment 'training/nightly' does not exist on http://127.0.0.1:4200/api/: "
        "run `mlops deploy`"
    )


def test_a_malformed_deployment_name_is_an_error(stand_in_client: StandInClient) -> None:
    with pytest.raises(OpsError, match=r"^Invalid deployment name 'training': expected"):
        deploy.run(RUN_ENV, "training", {}, 60, lambda _: None)


@pytest.mark.parametrize("status", [409, 422])
def test_parameters_prefect_refuses_are_named(stand_in_client: StandInClient, status: int) -> None:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/deployments/x/create_flow_run")
    response = httpx.Response(
        status, json={"detail": "color: must be green or yellow"}, request=request
    )
    stand_in_client.refusal = httpx.HTTPStatusError("refused", request=request, response=response)
    with pytest.raises(OpsError) as raised:
        deploy.run(RUN_ENV, "training/training", {"color": "red"}, 60, lambda _: None)
    assert str(raised.value) == (
        "Prefect refused the run's parameters {'parameters': {'color': 'red'}}: "
        "color: must be green or yellow"
    )


def test_other_refusals_of_a_run_are_not_hidden(stand_in_client: StandInClient) -> None:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/deployments/x/create_flow_run")
    response = httpx.Response(500, text="oops", request=request)
    stand_in_client.refusal = httpx.HTTPStatusError("boom", request=request, response=response)
    with pytest.raises(httpx.HTTPStatusError):
        deploy.run(RUN_ENV, "training/training", {}, 60, lambda _: None)


def test_overrides_go_inside_the_flow_s_parameter_model(stand_in_client: StandInClient) -> None:
    stand_in_client.deployments = {
        "training/training": {"parameters": {"color": "green", "val_month": "2023-02"}, "x": 1}
    }
    parameters = deploy.run_parameters(
        stand_in_client,  # type: ignore[arg-type]
        DEPLOYMENT_ID,
        {"color": "yellow", "train_month": "2023-01"},
    )
    assert parameters == {
        "parameters": {"color": "yellow", "val_month": "2023-02", "train_month": "2023-01"},
        "x": 1,
    }


def test_a_deployment_without_parameters_gets_the_overrides(
    stand_in_client: StandInClient,
) -> None:
    stand_in_client.deployments = {"training/training": {}}
    parameters = deploy.run_parameters(
        stand_in_client,  # type: ignore[arg-type]
        DEPLOYMENT_ID,
        {"color": "yellow"},
    )
    assert parameters == {"parameters": {"color": "yellow"}}


@pytest.mark.usefixtures("no_poll_wait")
def test_the_run_command_passes_months_color_and_settings(
    stand_in_client: StandInClient, tmp_path: Path
) -> None:
    env_file = tmp_path / "mlops.env"
    write_env_file(env_file, RUN_ENV)
    stand_in_client.states = [StateType.COMPLETED]
    args = ["run", "--env-file", str(env_file), "--train-month", "2023-01"]
    args += ["--set", "color=green", "--color", "yellow", "--set", "publication_lag_months=3"]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    assert stand_in_client.created == [
        {"parameters": {"color": "yellow", "publication_lag_months": "3", "train_month": "2023-01"}}
    ]
