"""The twin runs exactly what the rendered units run, and its services refuse what the hosts'
services refuse (anonymous calls, foreign Host headers, requests without a CSRF token)."""

from __future__ import annotations

import base64
import shlex
import stat
from pathlib import Path

import httpx
import pytest
from hostboot import render_unit

from scripts.twin import SERVICES
from tests.e2e.twin_api import TwinHandle, mlops

pytestmark = pytest.mark.e2e

HOST_SERVICES = ("mlflow", "prefect-server", "prefect-worker")


def unit_lines(text: str, key: str) -> list[str]:
    """The values of ``key=`` lines in a unit file."""
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


@pytest.mark.parametrize("name", HOST_SERVICES)
def test_twin_process_runs_the_rendered_unit(twin: TwinHandle, name: str) -> None:
    spec = twin.twin.specs()[name]
    unit = render_unit(spec)
    process = twin.twin.running_process(name)
    assert process is not None, f"{name} is not running"
    # The command line, read back from the unit text, is the process's (after its interpreter).
    (exec_start,) = unit_lines(unit, "ExecStart")
    argv = shlex.split(exec_start)
    assert process.cmdline()[-len(argv) :] == argv
    # Its environment is the unit's, its env file's and nothing of the caller's, except the
    # base systemd gives and the emulator's endpoint and dummy keys.
    environment = process.environ()
    for assignment in unit_lines(unit, "Environment"):
        key, _, value = assignment.strip('"').partition("=")
        assert environment.pop(key) == value, key
    for line in Path(spec.env_file).read_text().splitlines():
        key, _, value = line.partition("=")
        assert environment.pop(key) == value, key
    emulator = set(twin.twin.emulator_environment()) if name != "prefect-server" else set()
    allowed = {"PATH", "LANG"} | emulator
    assert set(environment) == allowed
    assert Path(process.cwd()) == Path(spec.working_directory)


def test_twin_env_files_are_private(twin: TwinHandle) -> None:
    for name in HOST_SERVICES:
        env_file = Path(twin.twin.specs()[name].env_file)
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, env_file
    assert stat.S_IMODE(twin.env_file.stat().st_mode) == 0o600


def test_twin_mlflow_refuses_anonymous_calls_and_foreign_hosts(twin: TwinHandle) -> None:
    url = twin.env["MLFLOW_TRACKING_URI"]
    path = "/api/2.0/mlflow/experiments/search?max_results=1"
    auth = (twin.env["MLFLOW_TRACKING_USERNAME"], twin.env["MLFLOW_TRACKING_PASSWORD"])
    assert httpx.get(url + path).status_code == 401
    assert httpx.get(url + path, auth=auth).status_code == 200
    # DNS rebinding: a name outside --allowed-hosts is refused even with credentials.
    foreign = httpx.get(url + path, auth=auth, headers={"Host": "attacker.example:5000"})
    assert foreign.status_code == 403
    tunnel = httpx.get(url + path, auth=auth, headers={"Host": "localhost:15000"})
    assert tunnel.status_code == 200


def test_twin_prefect_refuses_wrong_auth_and_missing_csrf_token(twin: TwinHandle) -> None:
    api = twin.env["PREFECT_API_URL"]
    headers = {"Authorization": _basic(twin.env["PREFECT_API_AUTH_STRING"])}
    assert httpx.get(f"{api}/admin/version").status_code == 401
    wrong = {"Authorization": _basic("not-the-auth-string")}
    assert httpx.get(f"{api}/admin/version", headers=wrong).status_code == 401
    assert httpx.get(f"{api}/admin/version", headers=headers).status_code == 200
    no_token = httpx.post(f"{api}/flows/filter", headers=headers, json={})
    assert no_token.status_code == 403
    assert "CSRF" in no_token.text


def _basic(credential: str) -> str:
    """An HTTP basic Authorization header value (Prefect compares it with its auth string)."""
    return "Basic " + base64.b64encode(credential.encode()).decode()


def test_twin_status_lists_every_service_up(twin: TwinHandle) -> None:
    result = mlops("twin", "status", "--state-dir", str(twin.twin.config.state_dir), timeout=120)
    assert result.returncode == 0, result.stderr
    states = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert states == dict.fromkeys(SERVICES, "up")
