"""``mlops smoke`` verdicts that need no running service (the real run is tests/e2e/test_smoke.py).

Servers' answers are played by httpx's MockTransport with the status and body the real
MLflow and Prefect servers give; no request leaves the process.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from scripts.cli import app
from scripts.envfile import write_env_file
from scripts.smoke import (
    CheckFailed,
    Service,
    _basic,
    health,
    mlflow_artifacts,
    mlflow_auth,
    prefect_auth,
)

PASSWORD = "Qm7vT2xP9sLk4RzW8nYcHd3F"
AUTH_STRING = "Zr5KpWq8Ns2Lx7Vb4MtYg6Hc"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _mlflow(base_url: str, handler: Callable[[httpx.Request], httpx.Response]) -> Service:
    client = httpx.Client(base_url=base_url, transport=httpx.MockTransport(handler))
    return Service("MLflow", client, "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD", {})


def _prefect(handler: Callable[[httpx.Request], httpx.Response]) -> Service:
    client = httpx.Client(
        base_url="http://127.0.0.1:4200/api/", transport=httpx.MockTransport(handler)
    )
    return Service("Prefect", client, "PREFECT_API_AUTH_STRING", _basic(AUTH_STRING))


def _prefect_server(accepted: str, seen: list[httpx.Request]) -> Callable[..., httpx.Response]:
    """Prefect with ``--auth-string``: 401 unless the basic token is ``accepted``'s."""

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("Authorization") != _basic(accepted)["Authorization"]:
            return httpx.Response(401, json={"exception_message": "Unauthorized"})
        return httpx.Response(200, json="3.9.0")

    return server


def test_prefect_auth_passes_only_with_the_auth_string_sent_on_the_accepted_call() -> None:
    seen: list[httpx.Request] = []

    detail = prefect_auth(_prefect(_prefect_server(AUTH_STRING, seen)))

    assert detail == (
        "anonymous request refused (401); PREFECT_API_AUTH_STRING accepted (server 3.9.0)"
    )
    assert [request.url.path for request in seen] == ["/api/admin/version"] * 2
    assert "Authorization" not in seen[0].headers
    assert seen[1].headers["Authorization"] == _basic(AUTH_STRING)["Authorization"]


def test_a_prefect_server_refusing_the_auth_string_fails_the_auth_check() -> None:
    seen: list[httpx.Request] = []

    with pytest.raises(CheckFailed) as failed:
        prefect_auth(_prefect(_prefect_server("another-auth-string", seen)))

    assert str(failed.value) == "Prefect rejected PREFECT_API_AUTH_STRING (HTTP 401)"
    assert AUTH_STRING not in str(failed.value)


def test_a_prefect_server_answering_anonymous_requests_fails_the_auth_check() -> None:
    def open_server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json="3.9.0")

    with pytest.raises(CheckFailed, match=r"answered GET admin/version without credentials with "):
        prefect_auth(_prefect(open_server))


@pytest.mark.parametrize("status", [401, 404, 500, 204])
def test_the_health_check_fails_on_anything_but_200(status: int) -> None:
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text="not healthy")

    with pytest.raises(CheckFailed) as failed:
        health(_prefect(server), "health")

    assert str(failed.value) == f"GET health answered HTTP {status}: not healthy"
    assert "Authorization" not in seen[0].headers


def test_the_health_check_passes_on_200_naming_the_server_without_credentials() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=True)

    client = httpx.Client(
        base_url="http://admin:secret@127.0.0.1:5000", transport=httpx.MockTransport(server)
    )
    service = Service("MLflow", client, "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD", {})
    assert health(service, "/health") == "http://127.0.0.1:5000/ is up"


def test_smoke_names_the_env_file_s_missing_variables(tmp_path: Path) -> None:
    env_file = tmp_path / "partial.env"
    write_env_file(env_file, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})

    result = CliRunner().invoke(app, ["smoke", "--env-file", str(env_file)])

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: env file {env_file} lacks MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, "
        "PREFECT_API_URL, PREFECT_API_AUTH_STRING\n"
    )


@pytest.fixture
def unreachable_env_file(tmp_path: Path) -> Path:
    """An env file naming loopback ports where nothing listens."""
    env_file = tmp_path / "mlops.env"
    write_env_file(
        env_file,
        {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}",
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": PASSWORD,
            "PREFECT_API_URL": f"http://127.0.0.1:{_closed_port()}/api",
            "PREFECT_API_AUTH_STRING": AUTH_STRING,
        },
    )
    return env_file


def test_smoke_with_nothing_listening_fails_the_health_checks_and_skips_the_rest(
    unreachable_env_file: Path,
) -> None:
    result = CliRunner().invoke(app, ["smoke", "--env-file", str(unreachable_env_file)])

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["FAIL", "mlflow-health"],
        ["SKIP", "mlflow-auth"],
        ["SKIP", "mlflow-artifacts"],
        ["FAIL", "prefect-health"],
        ["SKIP", "prefect-auth"],
        ["SKIP", "work-pool"],
        ["SKIP", "worker"],
    ]
    assert "cannot connect to http://127.0.0.1:" in lines[0]
    assert lines[1].endswith("needs mlflow-health")
    assert "cannot connect to http://127.0.0.1:" in lines[3]
    assert "/api/: " in lines[3]
    assert result.stderr == "error: smoke test failed: mlflow-health, prefect-health\n"
    assert PASSWORD not in result.output
    assert AUTH_STRING not in result.output


class Overran(BaseException):
    """A command that outlived its test's deadline (a BaseException: neither the checks nor
    CliRunner catch it, so the test fails here)."""


def test_smoke_wait_retries_until_the_deadline_then_reports(unreachable_env_file: Path) -> None:
    # Long enough for one round of checks on a loaded machine (or under a coverage tracer).
    args = ["smoke", "--env-file", str(unreachable_env_file), "--wait", "5"]

    def overran(signum: int, frame: object) -> None:
        raise Overran("smoke --wait 5 was still retrying after 30 s")

    # A command that misses its deadline fails the test at 30 s, not never (under `make
    # mutate`: at mutmut's limit, 7 minutes).
    previous = signal.signal(signal.SIGALRM, overran)
    signal.alarm(30)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    assert result.exit_code == 1
    assert re.match(
        r"not passing yet: mlflow-health, prefect-health \([0-5] s left\)\n", result.stdout
    )
    assert result.stdout.count("FAIL  mlflow-health") == 1
    assert result.stderr == "error: smoke test failed: mlflow-health, prefect-health\n"


def test_a_private_address_that_cannot_be_reached_points_at_the_tunnel() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(CheckFailed) as failed:
        health(_mlflow("http://10.0.0.10:5000", unreachable), "/health")

    assert str(failed.value).startswith("no answer from http://10.0.0.10:5000/ in time (10.0.0.10")
    assert "mlops tunnel --stack STACK" in str(failed.value)
    assert "--via-tunnel" in str(failed.value)


def test_a_rejected_password_is_a_verdict_naming_the_credential() -> None:
    def basic_auth(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="You are not authenticated.")

    with pytest.raises(CheckFailed) as failed:
        mlflow_auth(_mlflow("http://127.0.0.1:5000", basic_auth))

    assert str(failed.value) == (
        "MLflow rejected MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (HTTP 401)"
    )


def test_a_server_answering_anonymous_requests_fails_the_auth_check() -> None:
    def open_server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"experiments": []})

    with pytest.raises(CheckFailed, match="authentication is not enforced"):
        mlflow_auth(_mlflow("http://127.0.0.1:5000", open_server))


def test_a_refused_host_header_names_the_host_and_allowed_hosts() -> None:
    def host_check(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            403, text="Invalid Host header - possible DNS rebinding attack detected"
        )

    with pytest.raises(CheckFailed) as failed:
        mlflow_auth(_mlflow("http://mlflow.internal:5000", host_check))

    assert str(failed.value) == (
        "MLflow refused the Host header 'mlflow.internal:5000' (HTTP 403 Invalid Host header): "
        "the server's --allowed-hosts does not list it"
    )


def test_artifacts_not_proxied_by_the_server_fail_the_round_trip_and_the_run() -> None:
    updates: list[bytes] = []

    def server(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/experiments/get-by-name"):
            return httpx.Response(200, json={"experiment": {"experiment_id": "3"}})
        if path.endswith("/runs/create"):
            info = {"run_id": "abc123", "artifact_uri": "s3://bucket/mlflow/3/abc123/artifacts"}
            return httpx.Response(200, json={"run": {"info": info}})
        if path.endswith("/runs/update"):
            updates.append(request.content)
            return httpx.Response(200, json={})
        return httpx.Response(404)

    with pytest.raises(CheckFailed, match="artifacts are not proxied"):
        mlflow_artifacts(_mlflow("http://127.0.0.1:5000", server))

    assert len(updates) == 1
    assert b'"status":"FAILED"' in updates[0]
