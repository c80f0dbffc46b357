"""The session's local twin, brought up and down through the ``mlops twin`` command line.

It needs PostgreSQL on 127.0.0.1:5432 (superuser ``postgres``, as ``.ci/run`` starts it);
without it ``mlops twin up`` fails and so does the fixture, with that error. Each session
uses its own role and databases (``e2e_<random>``), free ports and a temporary state dir, so
concurrent sessions on one machine do not collide; ``mlops twin down`` drops all of it, and
the fixture then checks that no process the twin started is left.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from scripts.envfile import read_env_file
from scripts.twin import load
from tests.e2e.twin_api import TrainingRun, TwinHandle, bucket_keys, mlops, still_running, train
from tests.e2e.twin_ui import TwinUrls

MONTHS = ("2023-01", "2023-02")


def local_month(month: str) -> Path:
    """A month of real green trip records from $PIPELINE_DATA_DIR (the shared data)."""
    data_dir = os.environ.get("PIPELINE_DATA_DIR", "")
    path = Path(data_dir) / f"green_tripdata_{month}.parquet"
    if not data_dir or not path.is_file():
        pytest.fail(
            f"PIPELINE_DATA_DIR must be a directory holding green 2023-01 and 2023-02 "
            f"(the e2e tests seed the twin's bucket from it); {path} is missing",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinHandle]:
    """The local twin for the session: services s3, mlflow, prefect-server, prefect-worker,
    and the stack's Dask cluster with one worker (dask-scheduler, dask-worker-0).

    One twin with Dask rather than a second twin for the Dask tests: the cluster starts
    beside the servers (a few seconds more), where a twin of its own costs a whole `up`."""
    state_dir = tmp_path_factory.mktemp("twin-state")
    env_file = tmp_path_factory.mktemp("twin-env") / "mlops.env"
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    where = ("--state-dir", str(state_dir))
    options = ("--name", name, "--env-file", str(env_file), "--dask-workers", "1")
    started = mlops("twin", "up", *where, *options)
    if started.returncode:
        pytest.fail(f"`mlops twin up` failed:\n{started.stderr}", pytrace=False)
    handle = TwinHandle(twin=load(state_dir), env_file=env_file, env=read_env_file(env_file))
    handle._remember()
    try:
        yield handle
    finally:
        handle._remember()
        stopped = mlops("twin", "down", *where)
        with suppress(subprocess.TimeoutExpired):
            handle.twin.reap_children()  # the services this process restarted
        assert stopped.returncode == 0, f"`mlops twin down` failed:\n{stopped.stderr}"
        left = still_running(handle.started_pids)
        assert not left, "`mlops twin down` left processes running:\n" + "\n".join(left)


@pytest.fixture
def deployed(twin: TwinHandle) -> TwinHandle:
    """The twin with the real months in ``s3://<bucket>/data/`` and prefect.yaml deployed.

    Done once; done again if an emulator restart emptied the bucket since.
    """
    keys = set(bucket_keys(twin, ""))
    s3 = twin.twin.aws_client("s3")
    for month in MONTHS:
        key = f"data/green_tripdata_{month}.parquet"
        if key not in keys:
            s3.upload_file(str(local_month(month)), twin.twin.config.bucket, key)
    if "flow-code/pipeline/flows.py" not in keys:
        result = mlops("deploy", "--env-file", str(twin.env_file))
        assert result.returncode == 0, f"`mlops deploy` failed:\n{result.stdout}{result.stderr}"
    return twin


@pytest.fixture
def trained(deployed: TwinHandle) -> TrainingRun:
    """A completed run of the training deployment through the worker, shared by the session.

    Done once; done again if an emulator restart emptied the bucket of the run's artifacts.
    """
    run = deployed.training
    keys = bucket_keys(deployed, "mlflow/")
    if run is None or not any(f"/{run.run_id}/artifacts/" in key for key in keys):
        run = deployed.training = train(deployed.env_file, deployed.env)
    return run


@pytest.fixture
def twin_urls(deployed: TwinHandle, trained: TrainingRun) -> TwinUrls:
    """Where a browser reaches the twin's UIs, with what it logs in, and the run to look for."""
    return TwinUrls.of(deployed.env, trained)
