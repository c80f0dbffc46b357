"""A Dask worker killed in the middle of ``xgboost.dask.train``: the run fails, cleanly.

XGBoost's Dask training is not resilient: each worker holds a shard of the data and a peer
in the collective, so a lost worker cannot be replaced mid-training (xgboost.dask says so,
"Resilience is not yet supported"). What the platform owes the user is a clean failure: an
error that says a worker was lost, the MLflow run FAILED, and no model version registered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client
from mlflow import MlflowClient

from pipeline.errors import PipelineError
from pipeline.flows import training
from pipeline.ports import free_port
from pipeline.train import TrainConfig
from tests.pipeline.test_dask_engine import dask_parameters

# Long enough to be caught in the act: many rounds, no early stop before the kill.
SLOW = TrainConfig(max_depth=8, learning_rate=0.01, num_boost_round=5000, early_stopping_rounds=500)
TRAINING_STARTS_SECONDS = 300.0
# xgboost.dask.train submits one task per worker, named after its wrapper ``fn``
# (xgboost/dask/__init__.py, map_worker_partitions); nothing else this run submits is.
TRAIN_TASK_PREFIX = "fn-"


@pytest.fixture
def cluster() -> Iterator[tuple[str, Client]]:
    """A scheduler and two workers (one thread each), each a process of its own as on the
    stack, and a client of our own to watch them.

    Not a LocalCluster: its scheduler runs in the test's process, and so would xgboost's
    tracker, which may abort the process it runs in once a worker has died.
    """
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = str(Path(sys.executable).with_name("dask"))
    processes = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
             "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
        *(
            subprocess.Popen(
                [dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ),
    ]  # fmt: skip
    try:
        with Client(address, timeout=60, set_as_default=False) as watcher:
            watcher.wait_for_workers(2, timeout=120)
            yield address, watcher
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def kill_a_worker_once_training(watcher: Client, killed: list[int], stop: threading.Event) -> None:
    """When both workers run a training task, SIGKILL one worker process (not its nanny)."""
    deadline = time.monotonic() + TRAINING_STARTS_SECONDS
    while not stop.is_set() and time.monotonic() < deadline:
        training_on = [
            worker
            for worker, keys in watcher.processing().items()
            if any(str(key).startswith(TRAIN_TASK_PREFIX) for key in keys)
        ]
        if len(training_on) == 2:
            pid = watcher.run(os.getpid, workers=[training_on[0]])[training_on[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        stop.wait(0.1)


@pytest.mark.slow  # the real months on a Dask cluster of worker processes
@pytest.mark.usefixtures("prefect_api", "mlflow_store")
def test_a_worker_killed_mid_training_fails_the_run_with_nothing_registered(
    real_data_dir: Path, unique_name: str, cluster: tuple[str, Client]
) -> None:
    address, watcher = cluster
    parameters = dask_parameters(real_data_dir, unique_name, dask_address=address).model_copy(
        update={"hyperparameters": SLOW}
    )
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_a_worker_once_training, args=(watcher, killed, stop))
    killer.start()
    try:
        with pytest.raises(PipelineError, match="the Dask cluster lost a worker") as failure:
            training(parameters)
    finally:
        stop.set()
        killer.join()
    assert killed, f"training never ran on both workers; the run failed with: {failure.value}"

    experiment = MlflowClient().get_experiment_by_name(unique_name)
    assert experiment is not None
    (run,) = MlflowClient().search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert "lost a worker" in run.data.tags["error"]
    assert list(MlflowClient().search_model_versions(f"name = '{unique_name}'")) == []
