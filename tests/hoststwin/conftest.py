"""The hosts twin for the session: ``mlops twin up --hosts`` once, ``mlops twin down --hosts``
at the end, then a check that nothing named ``mlt-`` is left (namespace, mount, container).

It needs Linux, root, systemd-nspawn, cloud-init, nftables and a PostgreSQL server binary
(``.ci/run`` installs them). The operator's commands run in the ``mlt-operator`` namespace,
the one address the twin's stack lists in ``serviceIngressCidrs``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.envfile import read_env_file
from scripts.twin.hosts import load
from tests.e2e.twin_api import TrainingRun
from tests.e2e.twin_ui import TwinUrls
from tests.hoststwin.hoststwin_api import MLOPS, MONTHS, HostsHandle, leftovers


@pytest.fixture(scope="session")
def hosts_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostsHandle]:
    """The hosts twin (control host, one worker, stand-ins; the stack's Dask cluster on
    them) for the session."""
    if os.geteuid() != 0:
        pytest.fail("the hosts twin needs root (network namespaces, containers)", pytrace=False)
    # Not under pytest's base temp (mode 0700): the database stand-in runs as postgres, which
    # must traverse the state dir's parents to reach its cluster.
    state_dir = Path(tempfile.mkdtemp(prefix="mlt-hosts-state-"))
    logs = tmp_path_factory.mktemp("hosts-logs")
    env_file = tmp_path_factory.mktemp("hosts-env") / "mlops.env"
    where = ("--hosts", "--state-dir", str(state_dir))
    started = time.monotonic()
    up = subprocess.run(
        [MLOPS, "twin", "up", *where, "--dask-workers", "1", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    up_seconds = time.monotonic() - started
    handle = None
    try:
        if up.returncode:
            pytest.fail(f"`mlops twin up --hosts` failed:\n{up.stdout}\n{up.stderr}", pytrace=False)
        handle = HostsHandle(
            twin=load(state_dir), env_file=env_file, env=read_env_file(env_file),
            up_seconds=up_seconds,
        )  # fmt: skip
        yield handle
    finally:
        down = subprocess.run(
            [MLOPS, "twin", "down", *where], capture_output=True, text=True, check=False
        )
        if handle is not None:
            handle.twin.reap_children()  # what the tests restarted (reboot, faults)
        if (state_dir / "logs").is_dir():  # kept for a person
            shutil.copytree(state_dir / "logs", logs, dirs_exist_ok=True)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert down.returncode == 0, f"`mlops twin down --hosts` failed:\n{down.stderr}"
        left = leftovers()
        assert not left, "`mlops twin down --hosts` left: " + ", ".join(left)


@pytest.fixture
def deployed(hosts_twin: HostsHandle) -> HostsHandle:
    """The twin with the real months in its bucket and prefect.yaml deployed (once)."""
    if not hosts_twin.deployed:
        data_dir = os.environ.get("PIPELINE_DATA_DIR", "")
        for month in MONTHS:
            path = Path(data_dir) / f"green_tripdata_{month}.parquet"
            if not data_dir or not path.is_file():
                pytest.fail(
                    f"PIPELINE_DATA_DIR must hold green 2023-01 and 2023-02; {path} is missing",
                    pytrace=False,
                )
            hosts_twin.twin.upload(path, f"data/{path.name}")
        result = hosts_twin.mlops("deploy")
        assert result.returncode == 0, result.stdout + result.stderr
        hosts_twin.deployed = True
    return hosts_twin


@pytest.fixture
def trained(deployed: HostsHandle) -> TrainingRun:
    """A completed run of the training deployment on the worker, shared by the session."""
    if deployed.training is None:
        deployed.training = deployed.train()
    return deployed.training


@pytest.fixture
def twin_urls(hosts_twin: HostsHandle, trained: TrainingRun) -> TwinUrls:
    """Where a browser in the operator's namespace reaches the control host's UIs."""
    return TwinUrls.of(hosts_twin.env, trained)
