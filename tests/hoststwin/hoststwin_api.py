"""What the hosts-twin tests share (test modules never import conftest at run time): the
handle on the session's twin, how the operator's commands run, and what ``down`` must leave.

The e2e tests' training helper and browser tests (tests/e2e) are written for any twin; here
they run where the operator is, in the ``mlt-operator`` namespace.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from scripts.twin import containers, hostnet
from scripts.twin.hosts import OPERATOR, HostsTwin
from tests.e2e.twin_api import TrainingRun, train

MLOPS = str(Path(sys.executable).with_name("mlops"))
MONTHS = ("2023-01", "2023-02")
OPERATOR_NAMESPACE = f"{hostnet.PREFIX}{OPERATOR}"


@dataclass
class HostsHandle:
    """What the tests get: the twin, its env file and variables, and the time ``up`` took."""

    twin: HostsTwin
    env_file: Path
    env: dict[str, str]
    up_seconds: float
    deployed: bool = False
    # The session's training run through the worker, shared by the tests that read it.
    training: TrainingRun | None = None

    def operator(self, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` where the operator is (the mlt-operator namespace)."""
        return subprocess.run(
            ["ip", "netns", "exec", OPERATOR_NAMESPACE, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def mlops(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """The ``mlops`` command line, run by the operator against the twin's env file."""
        return self.operator(MLOPS, *args, "--env-file", str(self.env_file), timeout=timeout)

    def train(self, *parameters: str) -> TrainingRun:
        """``mlops run`` of the training deployment (``parameters``: ``KEY=VALUE`` flow
        parameters) and what it made, read by the operator (the e2e tests' helper, its commands
        and API calls in the operator's namespace)."""
        return hostnet.inside(
            OPERATOR_NAMESPACE, lambda: train(self.env_file, self.env, parameters)
        )

    def on_host(self, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host``'s container."""
        return containers.in_container(self.twin.leader(host), *argv)

    def journal(self, host: str, unit: str) -> str:
        """``unit``'s journal on ``host`` since the container's boot."""
        return self.on_host(
            host, "journalctl", "--boot", "--no-pager", "-o", "cat", "-u", unit
        ).stdout


def leftovers() -> list[str]:
    """Everything named mlt- that exists now."""
    return [
        *(f"namespace {ns}" for ns in hostnet.namespaces()),
        *(f"mount {point}" for point in containers.mounts()),
        *(f"container {name}" for name in containers.nspawn_processes()),
    ]
