"""The hosts twin for the session: ``mlops twin up --hosts`` once, ``mlops twin down --hosts``
at the end, then a check that nothing named ``mlt-`` is left (namespace, mount, container).

It needs Linux, root, systemd-nspawn, cloud-init, nftables and a PostgreSQL server binary
(``.ci/run`` installs them). The operator's commands run in the ``mlt-operator`` namespace,
the one address the twin's stack lists in ``serviceIngressCidrs``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.envfile import read_env_file
from scripts.twin import containers, hostnet
from scripts.twin.hosts import OPERATOR, HostsTwin, load

MLOPS = str(Path(sys.executable).with_name("mlops"))
MONTHS = ("2023-01", "2023-02")


@dataclass
class HostsHandle:
    """What the tests get: the twin, its env file and variables, and the time ``up`` took."""

    twin: HostsTwin
    env_file: Path
    env: dict[str, str]
    up_seconds: float

    def operator(self, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` where the operator is (the mlt-operator namespace)."""
        return subprocess.run(
            ["ip", "netns", "exec", f"{hostnet.PREFIX}{OPERATOR}", *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def mlops(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """The ``mlops`` command line, run by the operator against the twin's env file."""
        return self.operator(MLOPS, *args, "--env-file", str(self.env_file), timeout=timeout)

    def on_host(self, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host``'s container."""
        return containers.in_container(self.twin.leader(host), *argv)


def _leftovers() -> list[str]:
    """Everything named mlt- that exists now."""
    return [
        *(f"namespace {ns}" for ns in hostnet.namespaces()),
        *(f"mount {point}" for point in containers.mounts()),
        *(f"container {name}" for name in containers.nspawn_processes()),
    ]


@pytest.fixture(scope="session")
def hosts_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostsHandle]:
    """The hosts twin (control host, one worker, stand-ins) for the session."""
    state_dir = tmp_path_factory.mktemp("hosts-state")
    env_file = tmp_path_factory.mktemp("hosts-env") / "mlops.env"
    where = ("--hosts", "--state-dir", str(state_dir))
    started = time.monotonic()
    up = subprocess.run(
        [MLOPS, "twin", "up", *where, "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    up_seconds = time.monotonic() - started
    try:
        if up.returncode:
            pytest.fail(f"`mlops twin up --hosts` failed:\n{up.stdout}\n{up.stderr}", pytrace=False)
        yield HostsHandle(
            twin=load(state_dir), env_file=env_file, env=read_env_file(env_file),
            up_seconds=up_seconds,
        )  # fmt: skip
    finally:
        down = subprocess.run(
            [MLOPS, "twin", "down", *where], capture_output=True, text=True, check=False
        )
        assert down.returncode == 0, f"`mlops twin down --hosts` failed:\n{down.stderr}"
        left = _leftovers()
        assert not left, "`mlops twin down --hosts` left: " + ", ".join(left)


@pytest.fixture(scope="session")
def twin_urls(hosts_twin: HostsHandle) -> dict[str, Any]:
    """The control host's UIs and credentials, for browser tests (run in ``netns``)."""
    env = hosts_twin.env
    return {
        "prefect": env["PREFECT_API_URL"].removesuffix("/api"),
        "mlflow": env["MLFLOW_TRACKING_URI"],
        "mlflow_username": env["MLFLOW_TRACKING_USERNAME"],
        "mlflow_password": env["MLFLOW_TRACKING_PASSWORD"],
        "prefect_auth_string": env["PREFECT_API_AUTH_STRING"],
        "netns": f"{hostnet.PREFIX}{OPERATOR}",
    }
