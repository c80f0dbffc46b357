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

from tests.e2e.twin_api import TwinHandle, mlops

pytestmark = pytest.mark.e2e

# The scheduler is left out: it retitles its process (`dask scheduler [tls://...]`, Dask's
# setproctitle), which overwrites the command line and environment /proc shows; its own test
# is below. The Dask worker's process (its nanny) keeps them.
HOST_SERVICES = ("mlflow", "prefect-server", "prefect-worker", "dask-worker-0")


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
    emulator = set(twin.twin.emulator_environment()) if twin.twin.uses_s3(name) else set()
    allowed = {"PATH", "LANG"} | emulator
    assert set(environment) == allowed
    assert Path(process.cwd()) == Path(spec.working_directory)


def test_twin_dask_scheduler_runs_the_rendered_unit_tls_only_on_loopback(
    twin: TwinHandle,
) -> None:
    spec = twin.twin.specs()["dask-scheduler"]
    (exec_start,) = unit_lines(render_unit(spec), "ExecStart")
    assert shlex.split(exec_start) == list(twin.twin.process("dask-scheduler").argv)
    process = twin.twin.running_process("dask-scheduler")
    assert process is not None, "dask-scheduler is not running"
    address = twin.env["MLOPS_DASK_SCHEDULER_ADDRESS"]
    assert address == f"tls://127.0.0.1:{twin.twin.state.ports['dask-scheduler']}"
    assert process.cmdline()[0] == f"dask scheduler [{address}]"  # its title: the address
    assert Path(process.cwd()) == Path(spec.working_directory)
    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for conn in process.net_connections(kind="inet")
        if conn.status == "LISTEN"
    }
    assert ("127.0.0.1", twin.twin.state.ports["dask-scheduler"]) in listening
    assert all(ip == "127.0.0.1" for ip, _ in listening), listening  # loopback only


def test_twin_env_files_and_dask_identities_are_private(twin: TwinHandle) -> None:
    for name in (*HOST_SERVICES, "dask-scheduler"):
        env_file = Path(twin.twin.specs()[name].env_file)
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, env_file
    assert stat.S_IMODE(twin.env_file.stat().st_mode) == 0o600
    for host in ("control", "worker"):
        directory = Path(twin.twin.config.state_dir) / host / "etc" / "dask"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        for name in ("ca", "cert", "key"):
            assert stat.S_IMODE((directory / f"{name}.pem").stat().st_mode) == 0o600


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
    assert states == dict.fromkeys(twin.twin.config.services, "up")
    assert {"dask-scheduler", "dask-worker-0"} <= set(states)
