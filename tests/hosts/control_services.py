"""The control host's services run from their rendered specs on loopback, for experiments.

Each server runs with its rendered command line and environment (``hostboot.control_plan``,
as its systemd unit carries them), only addresses, ports, directories and the secrets' values
substituted, and, where an experiment is about something else, its database swapped for a
SQLite file. Helpers shared by the tests of SECURITY_INVARIANTS.md 47-56.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import hostboot
import httpx
from hostboot.cloudconfig import BOOT_SCRIPT
from hostboot.services import HostPlan, ServiceSpec

from tests.hosts.rendered_hosts import CONTROL, CONTROL_IP

LOOPBACK = "127.0.0.1"
SECRETS = {
    name: f"{name.replace('_', '')}Test1234567890"
    for name in (
        "db_password",
        "mlflow_db_password",
        "mlflow_auth_db_password",
        "prefect_db_password",
        "mlflow_admin_password",
        "mlflow_worker_password",
        "mlflow_flask_secret_key",
        "prefect_auth_string",
    )
}


def local_plan(root: Path, mlflow_port: int = 5000, prefect_port: int = 4200) -> HostPlan:
    """The control host's plan bound to loopback, its directories under ``root``.

    The private address stays the stack's (10.42.0.10): requests name it in their Host and
    Origin headers, as a browser on the VPN does.
    """
    settings = dataclasses.replace(
        CONTROL,
        bind_address=LOOPBACK,
        mlflow_port=mlflow_port,
        prefect_port=prefect_port,
        db_sslmode="disable",
    )
    assert settings.private_ip == CONTROL_IP
    layout = hostboot.HostLayout(
        venv=PurePosixPath(sys.prefix),
        config_dir=PurePosixPath(root / "etc"),
        state_dir=PurePosixPath(root / "var-lib"),
        scripts_dir=PurePosixPath(BOOT_SCRIPT.parent),
        service_groups=False,
    )
    return hostboot.control_plan(settings, layout)


def write_secret_files(plan: HostPlan, overrides: Mapping[str, str] = {}) -> None:
    """What the boot step writes: each secret file with the test secrets substituted.

    ``overrides`` replaces a line starting with one of its keys (a database URL) by the value.
    """
    for spec in plan.boot.files:
        text = string.Template(spec.template).substitute(SECRETS)
        lines = [
            next((v for k, v in overrides.items() if line.startswith(k)), line)
            for line in text.splitlines()
        ]
        path = Path(spec.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


def service_environment(spec: ServiceSpec) -> dict[str, str]:
    """What systemd gives the service: a clean environment, the unit's, the env file's."""
    env_file = Path(spec.env_file).read_text().splitlines()
    return {
        "PATH": f"{sys.prefix}/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        **spec.environment,
        **dict(line.split("=", 1) for line in env_file if line),
    }


def run_steps(plan: HostPlan, service: str, cwd: Path) -> str:
    """Run ``service``'s steps (its schema migrations) as systemd does before starting it; their
    output. A failing step fails the test with it."""
    output = ""
    for step in (s for s in plan.services if s.prepares == service):
        cwd.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            step.argv,
            env=service_environment(step),
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert result.returncode == 0, f"{step.name} failed:\n{result.stderr[-3000:]}"
        output += result.stderr
    return output


@contextmanager
def running(
    argv: tuple[str, ...],
    env: Mapping[str, str],
    cwd: Path,
    ready: Callable[[], bool],
    *,
    log: Path,
    preexec: tuple[str, ...] = (),
    seconds: float = 90.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (after ``preexec``, e.g. setpriv) until ``ready()``; stop its group after."""
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = subprocess.Popen(
            (*preexec, *argv),
            env=dict(env),
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + seconds
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{argv[0]} did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process``'s whole session: SIGTERM, then SIGKILL after 20 s."""
    for signum, seconds in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=seconds)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout=10)


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False
