"""An existing cluster whose workers run another ``pipeline`` (the stack's: its hosts install no
project code) gets this run's, uploaded and its workers restarted, before the run uses it.

The cluster is a ``dask scheduler`` and a ``dask worker`` (with its nanny) started here as
processes; the worker imports a stand-in ``pipeline`` package first, as a worker that served
another version would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from distributed import Client

from pipeline.dask_engine import connect, pipeline_digest
from pipeline.flows import tuning_flow
from pipeline.parameters import TrainingParameters
from pipeline.ports import free_port
from pipeline.train import TrainConfig
from pipeline.tuning import TuningParameters
from tests.support.processes import stop_groups

DASK = str(Path(sys.executable).parent / "dask")
READY_SECONDS = 60


@pytest.fixture
def stale_cluster(tmp_path: Path) -> Iterator[str]:
    """A scheduler and one worker that imports a stand-in ``pipeline`` package."""
    with cluster_importing(tmp_path, '"""Another version of the package."""\n') as address:
        yield address


@pytest.fixture
def cluster_without_pipeline(tmp_path: Path) -> Iterator[str]:
    """A scheduler and one worker that cannot import ``pipeline`` (a stack's, before any run:
    its hosts install no project code)."""
    with cluster_importing(
        tmp_path, "raise ImportError(\"No module named 'pipeline'\")\n"
    ) as address:
        yield address


@contextmanager
def cluster_importing(tmp_path: Path, package: str) -> Iterator[str]:
    """A scheduler and one worker whose ``pipeline`` is a package of ``package`` alone (on
    their PYTHONPATH: it hides the one this environment installs)."""
    stand_in = tmp_path / "other" / "pipeline"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text(package)
    environment = {**os.environ, "PYTHONPATH": str(stand_in.parent)}
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    common = {"cwd": tmp_path, "env": environment, "start_new_session": True}
    processes = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            **common,  # type: ignore[call-overload]
        )
    ]
    processes.append(
        subprocess.Popen(
            [DASK, "worker", address, "--nworkers", "1", "--no-dashboard"],
            **common,  # type: ignore[call-overload]
        )
    )
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                with Client(address, timeout=5, set_as_default=False) as client:
                    if client.scheduler_info(n_workers=-1)["workers"]:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no worker at {address} in {READY_SECONDS} s"
            assert all(p.poll() is None for p in processes), "a Dask process exited"
            time.sleep(0.5)
        yield address
    finally:
        stop_groups(processes)


def test_workers_with_another_pipeline_get_this_runs(stale_cluster: str) -> None:
    local = pipeline_digest()
    assert local is not None
    with Client(stale_cluster, set_as_default=False) as client:
        (before,) = client.run(pipeline_digest).values()
    assert before is not None
    assert before != local  # the stand-in

    parameters = TrainingParameters.model_validate(
        {
            "train_month": "2023-01",
            "val_month": "2023-02",
            "engine": "dask",
            "dask_address": stale_cluster,
        }
    )
    with connect(parameters) as client:
        assert set(client.run(pipeline_digest).values()) == {local}
        # (a lambda travels by value: the worker cannot import this test module)
        (origin,) = client.run(lambda: __import__("pipeline").__file__).values()
    assert origin.endswith(f"pipeline-{local[:16]}.zip/pipeline/__init__.py"), origin


@pytest.mark.slow  # a search's trials on a cluster of worker processes
@pytest.mark.usefixtures("prefect_api", "mlflow_store")
def test_a_search_on_a_cluster_without_pipeline_gives_it_this_runs(
    cluster_without_pipeline: str, synthetic_data_dir: Path, unique_name: str
) -> None:
    """The tuning flow's trials import ``pipeline`` on the workers: the search uploads it (as
    a training run does) before its first trial, without a training run before it."""
    address = cluster_without_pipeline
    with Client(address, set_as_default=False) as client:
        assert set(client.run(pipeline_digest).values()) == {None}
    summary = tuning_flow(
        TuningParameters(
            training=TrainingParameters(
                train_month="2023-01",
                val_month="2023-02",
                data_dir=str(synthetic_data_dir),
                experiment=unique_name,
                hyperparameters=TrainConfig(num_boost_round=8, early_stopping_rounds=4),
            ),
            trials=2,
            parallel=1,
            seed=0,
            dask_address=address,
        )
    )
    assert [trial.number for trial in summary.trials] == [0, 1]
    with Client(address, set_as_default=False) as client:
        assert set(client.run(pipeline_digest).values()) == {pipeline_digest()}
