"""``mlops tunnel``: the exact SSM sessions, both stopped on Ctrl-C or when one ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scripts.cli import app
from scripts.common import OpsError
from scripts.tunnel import Forward, LocalPorts, forwards, run_tunnel, session_command

MLOPS = str(Path(sys.executable).parent / "mlops")
OUTPUT_COMMAND = ["pulumi", "stack", "output", "--json", "--stack", "dev"]
INSTANCE = "i-0a1b2c3d4e5f60718"
# No test here takes more than about a second (1.1 s at most on an idle 2-core machine); a
# tunnel that never closes fails it at this deadline rather than holding the session (under
# `make mutate`, until mutmut's own limit, minutes per mutant). Each mutant that leaves a
# session open costs the whole deadline: at 60 s, the tunnel's hanging mutants alone took
# a quarter of an hour of `make mutate`.
TEST_DEADLINE_SECONDS = 15


class TunnelDidNotReturn(Exception):
    """The test's deadline passed: the code under test never returned."""


class SigtermNotHandled(Exception):
    """A SIGTERM sent to the tunnel reached the test's own handler."""


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Each test fails with :class:`TunnelDidNotReturn` after ``TEST_DEADLINE_SECONDS``.

    A SIGALRM raised in the test's (main) thread interrupts a blocking wait there, as Ctrl-C
    would; the tunnel's own handlers (SIGINT, SIGTERM) are not involved.
    """

    def expired(signum: int, frame: object) -> None:
        raise TunnelDidNotReturn(f"the test did not end within {TEST_DEADLINE_SECONDS} s")

    def unhandled_sigterm(signum: int, frame: object) -> None:
        raise SigtermNotHandled("SIGTERM reached the test: the tunnel installed no handler")

    previous = signal.signal(signal.SIGALRM, expired)
    # SIGINT as an interactive shell leaves it to `mlops tunnel`, and a SIGTERM that reaches
    # the test rather than the tunnel's own handler fails the test: under `make mutate`, the
    # test process inherits mutmut's fork-server handlers (SIGTERM: exit 0, which mutmut reads
    # as "tests passed"; SIGINT: ignored), and a mutant that never installs the tunnel's
    # handler survived a test that sends the signal to this process (and with SIGTERM's
    # default, killed the whole session: "suspicious", not a failing test).
    previous_term = signal.signal(signal.SIGTERM, unhandled_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.alarm(TEST_DEADLINE_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


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


# The tests above run `mlops tunnel` as a user does, in a process of its own. Those below call
# the same code in the test's process, where mutation testing sees which lines they exercise
# (docs/mutation-testing.md): the remote ports, the session arguments, the stop on a signal
# and on a session's end, and the signal handler given back afterwards.

STACK_URIS = {
    "mlflow_tracking_uri": "http://10.42.0.10:5001",
    "prefect_api_url": "http://10.42.0.10:4201/api",
}


def test_the_remote_ports_come_from_the_stack_s_uris_and_the_local_ones_from_the_options() -> None:
    assert forwards(STACK_URIS, LocalPorts(mlflow=15000, prefect=14200)) == [
        Forward(service="MLflow", remote_port=5001, local_port=15000),
        Forward(service="Prefect", remote_port=4201, local_port=14200),
    ]
    assert LocalPorts() == LocalPorts(mlflow=5000, prefect=4200)


def test_a_stack_with_dask_also_forwards_the_scheduler_s_dashboard() -> None:
    planned = forwards(STACK_URIS, LocalPorts(dask_dashboard=18787), dask=True)
    assert planned[-1] == Forward(service="Dask dashboard", remote_port=8787, local_port=18787)
    assert len(planned) == 3
    assert LocalPorts().dask_dashboard == 8787


@pytest.mark.parametrize("key", ["mlflow_tracking_uri", "prefect_api_url"])
def test_a_service_uri_without_a_port_is_refused_naming_the_output(key: str) -> None:
    outputs = {**STACK_URIS, key: "http://10.42.0.10/api"}
    with pytest.raises(OpsError) as raised:
        forwards(outputs, LocalPorts())
    assert str(raised.value) == f"stack output {key} has no port: 'http://10.42.0.10/api'"


def test_the_session_is_ssm_port_forwarding_to_the_instance_in_its_region() -> None:
    forward = Forward(service="MLflow", remote_port=5000, local_port=15000)
    assert ["aws", *session_command(INSTANCE, "us-east-1", forward)] == _session(5000, 15000)


def _signal_when_serving(
    fake_tools, stop_signal: signal.Signals, groups: dict[int, int]
) -> threading.Thread:
    """A thread sending ``stop_signal`` to this process once both sessions serve (Ctrl-C),
    noting first each session's process group (session pid -> group) in ``groups``."""

    def send() -> None:
        fake_tools.wait_for_markers("serving", 2)
        groups.update({pid: os.getpgid(pid) for pid in fake_tools.pids("aws")})
        os.kill(os.getpid(), stop_signal)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_closes_both_sessions_and_gives_the_handler_back(
    fake_tools, dev_outputs_masked: str, free_ports: tuple[int, int], stop_signal: signal.Signals
) -> None:
    mlflow_port, prefect_port = free_ports
    fake_tools.answer(OUTPUT_COMMAND, stdout=dev_outputs_masked)
    for session in (_session(5000, mlflow_port), _session(4200, prefect_port)):
        fake_tools.answer(session, serve=True, child=True)
    handler_before = signal.getsignal(signal.SIGTERM)
    announced: list[str] = []
    groups: dict[int, int] = {}
    sender = _signal_when_serving(fake_tools, stop_signal, groups)

    run_tunnel("dev", LocalPorts(mlflow=mlflow_port, prefect=prefect_port), announced.append)

    sender.join(timeout=30)
    # Each session leads a process group of its own: a terminal's Ctrl-C reaches only mlops.
    assert groups == {pid: pid for pid in fake_tools.pids("aws")}
    assert os.getpgid(0) not in groups.values()
    assert announced == [
        f"MLflow: http://localhost:{mlflow_port} -> {INSTANCE}:5000",
        f"Prefect: http://localhost:{prefect_port} -> {INSTANCE}:4200",
        "tunnel open; Ctrl-C closes it",
        "closing the tunnel",
    ]
    assert signal.getsignal(signal.SIGTERM) is handler_before
    # Each session was asked to stop (SIGTERM: its handler left the marker), its child with it.
    stopped = {marker.name.split("-")[1] for marker in fake_tools.markers("stopped")}
    assert stopped == {str(pid) for pid in fake_tools.pids("aws")}
    _assert_all_gone(fake_tools.pids("aws"))
    assert len(fake_tools.child_pids()) == 2
    _wait_until_children_gone(fake_tools)


def test_a_session_ending_on_its_own_fails_naming_it_and_stops_the_other(
    fake_tools, dev_outputs_masked: str, free_ports: tuple[int, int]
) -> None:
    mlflow_port, prefect_port = free_ports
    fake_tools.answer(OUTPUT_COMMAND, stdout=dev_outputs_masked)
    fake_tools.answer(_session(5000, mlflow_port), serve=True, child=True)
    fake_tools.answer(_session(4200, prefect_port), exit=254, after_serving=1)
    handler_before = signal.getsignal(signal.SIGTERM)
    announced: list[str] = []

    with pytest.raises(OpsError) as raised:
        run_tunnel("dev", LocalPorts(mlflow=mlflow_port, prefect=prefect_port), announced.append)

    assert str(raised.value) == (
        "the Prefect session ended with exit status 254 (see the aws output above); "
        "the tunnel is closed"
    )
    assert "closing the tunnel" not in announced
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert len(fake_tools.markers("stopped")) == 1
    _assert_all_gone(fake_tools.pids("aws"))
    _wait_until_children_gone(fake_tools)


def test_a_stack_with_dask_checks_the_dashboard_s_local_port_too(
    fake_tools, dev_outputs_masked: str, free_ports: tuple[int, int]
) -> None:
    outputs = json.loads(dev_outputs_masked) | {"dask_scheduler_address": "tcp://10.0.1.5:8786"}
    fake_tools.answer(OUTPUT_COMMAND, stdout=json.dumps(outputs))
    mlflow_port, prefect_port = free_ports
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = LocalPorts(mlflow=mlflow_port, prefect=prefect_port, dask_dashboard=port)

        with pytest.raises(OpsError) as raised:
            run_tunnel("dev", ports, lambda line: None)

    assert str(raised.value) == (
        f"local port {port} for Dask dashboard is in use: free it or pass another one with "
        "--dask-dashboard-port"
    )
    assert fake_tools.calls() == [OUTPUT_COMMAND]  # no session started


def test_a_stack_without_the_tunnel_s_outputs_is_named(fake_tools) -> None:
    fake_tools.answer(OUTPUT_COMMAND, stdout='{"region": "us-east-1"}')

    with pytest.raises(OpsError) as raised:
        run_tunnel("dev", LocalPorts(), lambda line: None)

    assert str(raised.value).startswith(
        "stack dev lacks the outputs control_instance_id, mlflow_tracking_uri, prefect_api_url "
    )
    assert fake_tools.calls() == [OUTPUT_COMMAND]


def test_a_session_ignoring_sigterm_is_killed_after_the_stop_deadline(
    fake_tools, dev_outputs_masked: str, free_ports: tuple[int, int], monkeypatch
) -> None:
    monkeypatch.setattr("scripts.tunnel._STOP_TIMEOUT_SECONDS", 0.5)  # not 10 s
    mlflow_port, prefect_port = free_ports
    fake_tools.answer(OUTPUT_COMMAND, stdout=dev_outputs_masked)
    fake_tools.answer(_session(5000, mlflow_port), serve=True, stubborn=True)
    fake_tools.answer(_session(4200, prefect_port), serve=True)
    sender = _signal_when_serving(fake_tools, signal.SIGTERM, {})

    run_tunnel("dev", LocalPorts(mlflow=mlflow_port, prefect=prefect_port), lambda line: None)

    sender.join(timeout=30)
    # Both are gone: the stubborn one by SIGKILL (it left no marker), the other by SIGTERM.
    _assert_all_gone(fake_tools.pids("aws"))
    assert len(fake_tools.markers("stopped")) == 1
