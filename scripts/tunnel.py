"""``mlops tunnel``: the control host's MLflow and Prefect ports forwarded onto localhost.

With a Dask cluster (stack output ``dask_scheduler_address`` not empty), the scheduler's
dashboard too: it listens on the control host's loopback, where the SSM session lands.

One SSM session per service (``aws ssm start-session --document-name
AWS-StartPortForwardingSession``), so no inbound rule and no SSH key is needed: the instance's
SSM agent dials out. Each session runs in its own process group, so Ctrl-C reaches only this
command, which then stops every session (the aws CLI and its session-manager-plugin child) and
exits 0; SIGTERM does the same (a script running the tunnel in the background stops it that
way). If a session ends on its own, the others are stopped too and the command fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from hostboot.names import DASK_DASHBOARD_PORT, MLFLOW_PORT, PREFECT_PORT

from scripts.common import OpsError, require_tool, stack_outputs, string_outputs

TUNNEL_OUTPUTS = ("control_instance_id", "region", "mlflow_tracking_uri", "prefect_api_url")
_STOP_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.5


@dataclass(frozen=True, kw_only=True)
class LocalPorts:
    """The tunnel's local ends (change them when a port is taken, e.g. 5000 by macOS AirPlay)."""

    mlflow: int = MLFLOW_PORT
    prefect: int = PREFECT_PORT
    dask_dashboard: int = DASK_DASHBOARD_PORT


@dataclass(frozen=True, kw_only=True)
class Forward:
    """One forwarded port: the service it reaches, its port on the host and on localhost."""

    service: str
    remote_port: int
    local_port: int


def forwards(outputs: Mapping[str, str], ports: LocalPorts, *, dask: bool = False) -> list[Forward]:
    """The forwards, with remote ports taken from the stack's service URIs; with ``dask``,
    the Dask dashboard's too."""
    result = []
    for service, key, local_port in (
        ("MLflow", "mlflow_tracking_uri", ports.mlflow),
        ("Prefect", "prefect_api_url", ports.prefect),
    ):
        remote_port = urlsplit(outputs[key]).port
        if remote_port is None:
            raise OpsError(f"stack output {key} has no port: {outputs[key]!r}")
        result.append(Forward(service=service, remote_port=remote_port, local_port=local_port))
    if dask:
        result.append(
            Forward(
                service="Dask dashboard",
                remote_port=DASK_DASHBOARD_PORT,
                local_port=ports.dask_dashboard,
            )
        )
    return result


def session_command(instance_id: str, region: str, forward: Forward) -> list[str]:
    """The ``aws`` arguments of the SSM port-forwarding session for ``forward``."""
    parameters = {
        "portNumber": [str(forward.remote_port)],
        "localPortNumber": [str(forward.local_port)],
    }
    return [
        "ssm",
        "start-session",
        "--target",
        instance_id,
        "--document-name",
        "AWS-StartPortForwardingSession",
        "--parameters",
        json.dumps(parameters, separators=(",", ":")),
        "--region",
        region,
    ]


def _check_port_free(forward: Forward) -> None:
    """Fail before starting anything when ``forward``'s local port is already taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", forward.local_port))
        except OSError:
            option = f"--{forward.service.lower().replace(' ', '-')}-port"
            raise OpsError(
                f"local port {forward.local_port} for {forward.service} is in use: "
                f"free it or pass another one with {option}"
            ) from None


def _wait_for_first_exit(sessions: list[tuple[Forward, subprocess.Popen[bytes]]]) -> None:
    """Block until one session ends, then raise an OpsError naming it."""
    while True:
        for forward, process in sessions:
            try:
                code = process.wait(timeout=_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                continue
            raise OpsError(
                f"the {forward.service} session ended with exit status {code} "
                "(see the aws output above); the tunnel is closed"
            )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a session's whole process group: SIGTERM, then SIGKILL after a deadline."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: close the tunnel as Ctrl-C does."""
    raise KeyboardInterrupt


def run_tunnel(stack: str, ports: LocalPorts, announce: Callable[[str], None]) -> None:
    """Forward the stack's MLflow and Prefect ports to localhost until Ctrl-C."""
    every_output = stack_outputs(stack)
    outputs = string_outputs(stack, every_output, TUNNEL_OUTPUTS)
    aws = require_tool("aws")
    require_tool("session-manager-plugin")
    planned = forwards(outputs, ports, dask=bool(every_output.get("dask_scheduler_address")))
    for forward in planned:
        _check_port_free(forward)
    sessions: list[tuple[Forward, subprocess.Popen[bytes]]] = []
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for forward in planned:
            command = session_command(outputs["control_instance_id"], outputs["region"], forward)
            sessions.append((forward, subprocess.Popen([aws, *command], start_new_session=True)))
        for forward in planned:
            announce(
                f"{forward.service}: http://localhost:{forward.local_port} -> "
                f"{outputs['control_instance_id']}:{forward.remote_port}"
            )
        announce("tunnel open; Ctrl-C closes it")
        _wait_for_first_exit(sessions)
    except KeyboardInterrupt:
        announce("closing the tunnel")
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        for _, process in sessions:
            _stop(process)
