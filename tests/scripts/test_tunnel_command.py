"""``mlops tunnel``: the exact SSM sessions, both stopped on Ctrl-C or when one ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scripts.cli import app

MLOPS = str(Path(sys.executable).parent / "mlops")
OUTPUT_COMMAND = ["pulumi", "stack", "output", "--json", "--stack", "dev"]
INSTANCE = "i-0a1b2c3d4e5f60718"


def _session(remote_port: int, local_port: int) -> list[str]:
    return [
        "aws",
        "ssm",
        "start-session",
        "--target",
        INSTANCE,
        "--document-name",
        "AWS-StartPortForwardingSession",
        "--parameters",
        f'{{"portNumber":["{remote_port}"],"localPortNumber":["{local_port}"]}}',
        "--region",
        "us-east-1",
    ]


@pytest.fixture
def free_ports() -> tuple[int, int]:
    """Two local ports free right now (the tunnel's local ends)."""
    probes = [socket.socket() for _ in range(2)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return probes[0].getsockname()[1], probes[1].getsockname()[1]
    finally:
        for probe in probes:
            probe.close()


@pytest.fixture
def tunnel_process(free_ports: tuple[int, int]) -> Iterator[subprocess.Popen[str]]:
    """``mlops tunnel --stack dev`` on the free ports, as a user runs it (killed if left over)."""
    mlflow_port, prefect_port = free_ports
    command = [MLOPS, "tunnel", "--stack", "dev", "--mlflow-port", str(mlflow_port)]
    command += ["--prefect-port", str(prefect_port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def _assert_all_gone(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _wait_until_children_gone(fake_tools, deadline_seconds: float = 15.0) -> None:
    """Wait until no session's child runs (a SIGTERM lands shortly after the sender exits)."""
    deadline = time.monotonic() + deadline_seconds
    while running := fake_tools.running_children():
        assert time.monotonic() < deadline, f"still running after {deadline_seconds} s: {running}"
        time.sleep(0.05)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_tunnel_runs_both_sessions_until_stopped_then_stops_them(
    fake_tools,
    dev_outputs_masked: str,
    free_ports: tuple[int, int],
    request: pytest.FixtureRequest,
    stop_signal: signal.Signals,
) -> None:
    mlflow_port, prefect_port = free_ports
    mlflow_session, prefect_session = _session(5000, mlflow_port), _session(4200, prefect_port)
    fake_tools.answer(OUTPUT_COMMAND, stdout=dev_outputs_masked)
    for session in (mlflow_session, prefect_session):
        fake_tools.answer(
            session, stdout="Starting session with SessionId: ops-0123\n", serve=True, child=True
        )
    process = request.getfixturevalue("tunnel_process")

    fake_tools.wait_for_markers("serving", 2)
    process.send_signal(stop_signal)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    assert f"MLflow: http://localhost:{mlflow_port} -> {INSTANCE}:5000" in stdout
    assert f"Prefect: http://localhost:{prefect_port} -> {INSTANCE}:4200" in stdout
    assert "closing the tunnel" in stdout
    calls = fake_tools.calls()
    assert calls[0] == OUTPUT_COMMAND
    assert sorted(calls[1:]) == sorted([mlflow_session, prefect_session])
    stopped = {marker.name.split("-")[1] for marker in fake_tools.markers("stopped")}
    assert stopped == {str(pid) for pid in fake_tools.pids("aws")}
    _assert_all_gone(fake_tools.pids("aws"))
    # Each session's child (the session-manager plugin's part) is stopped with it.
    assert len(fake_tools.child_pids()) == 2
    _wait_until_children_gone(fake_tools)


def test_tunnel_fails_naming_the_session_that_ended_and_stops_the_other(
    fake_tools, dev_outputs_masked: str, free_ports: tuple[int, int], request: pytest.FixtureRequest
) -> None:
    mlflow_port, prefect_port = free_ports
    fake_tools.answer(OUTPUT_COMMAND, stdout=dev_outputs_masked)
    fake_tools.answer(
        _session(5000, mlflow_port),
        stderr="An error occurred (TargetNotConnected): i-0a1b2c3d4e5f60718 is not connected.\n",
        exit=254,
        after_serving=1,
    )
    fake_tools.answer(_session(4200, prefect_port), serve=True, child=True)
    process = request.getfixturevalue("tunnel_process")

    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "TargetNotConnected" in stderr
    assert "error: the MLflow session ended with exit status 254" in stderr
    assert "Traceback" not in stderr
    assert len(fake_tools.markers("stopped")) == 1
    _assert_all_gone(fake_tools.pids("aws"))
    assert len(fake_tools.child_pids()) == 1
    _wait_until_children_gone(fake_tools)


def test_tunnel_refuses_a_local_port_in_use_before_starting_sessions(
    fake_tools, dev_outputs_masked: str
) -> None:
    fake_tools.answer(OUTPUT_COMMAND, stdout=dev_outputs_masked)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(app, ["tunnel", "--stack", "dev", "--mlflow-port", str(port)])

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: local port {port} for MLflow is in use: free it or pass another one with "
        "--mlflow-port\n"
    )
    assert fake_tools.calls() == [OUTPUT_COMMAND]


def test_tunnel_without_the_session_manager_plugin_says_how_to_install_it(
    fake_tools, dev_outputs_masked: str
) -> None:
    fake_tools.answer(OUTPUT_COMMAND, stdout=dev_outputs_masked)
    fake_tools.remove("session-manager-plugin")

    result = CliRunner().invoke(app, ["tunnel", "--stack", "dev"])

    assert result.exit_code == 1
    assert (
        "`session-manager-plugin` is not on PATH: install the Session Manager plugin"
        in result.stderr
    )
    assert fake_tools.calls() == [OUTPUT_COMMAND]
