"""Runs on a Dask cluster they were given (the stack's) take turns on it.

A run holds the cluster's turn (one lease of the scheduler's semaphore ``mlops-cluster``) from
before it gives the workers its ``pipeline`` (which may restart them) until its work there
ends; another run waits, saying for whom, up to its deadline. The clusters here are a
``dask scheduler`` and ``dask worker`` processes, as on the stack; the tests hold a turn
themselves (the "gate") to make runs wait for certain, not by chance of timing.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import dask.config
import pytest
from distributed import Client, LocalCluster
from mlflow import MlflowClient

from pipeline.dask_engine import (
    CLUSTER_TURN,
    HOLDER_KEY,
    TRACKER_PORT_VARIABLE,
    cluster_turn,
    pipeline_digest,
)
from pipeline.errors import PipelineError
from pipeline.flows import training
from pipeline.parameters import TrainingParameters, TrainingSummary
from pipeline.ports import free_port
from tests.pipeline.synthetic import SMALL_CONFIG
from tests.support.processes import stop_groups

DASK = str(Path(sys.executable).with_name("dask"))
READY_SECONDS = 120.0
RUN_SECONDS = 600.0
# The turn of a killed holder passes on after the lease's timeout (30 s by default), checked
# by the scheduler every validation interval (10 s): shortened here, the mechanism is the same.
LEASE_TIMEOUT = "6s"
SCHEDULER_ENVIRONMENT = {"DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "1s"}
ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:.0f} s"
        time.sleep(0.2)


def waiting(watcher: Client) -> int:
    """How many clients are waiting for the cluster's turn (the scheduler's gauge)."""

    def pending(dask_scheduler: object) -> int:
        extension = dask_scheduler.extensions["semaphores"]  # type: ignore[attr-defined]
        return int(extension.metrics["pending"].get("mlops-cluster", 0))

    return int(watcher.run_on_scheduler(pending))


def turns_taken(watcher: Client) -> int:
    """How many leases of the cluster's turn the scheduler counts as held (at most 1)."""

    def held(dask_scheduler: object) -> int:
        extension = dask_scheduler.extensions["semaphores"]  # type: ignore[attr-defined]
        return int(extension.get_value("mlops-cluster"))

    return int(watcher.run_on_scheduler(held))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, Client]]:
    """A scheduler and two single-thread workers, each a process; a client to watch them."""
    address = f"tcp://127.0.0.1:{free_port()}"
    common = {
        "cwd": tmp_path,
        "start_new_session": True,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }
    processes = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
             "--no-dashboard"],
            env={**os.environ, **SCHEDULER_ENVIRONMENT},
            **common,  # type: ignore[call-overload]
        ),
        *(
            subprocess.Popen(
                [DASK, "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard"],
                **common,  # type: ignore[call-overload]
            )
            for _ in range(2)
        ),
    ]  # fmt: skip
    try:
        with Client(address, timeout=60, set_as_default=False) as watcher:
            watcher.wait_for_workers(2, timeout=READY_SECONDS)
            yield address, watcher
    finally:
        stop_groups(processes)


def test_past_the_deadline_the_run_fails_naming_the_cluster_and_its_holder(
    synthetic_data_dir: Path, unique_name: str, prefect_api: None, mlflow_store: str
) -> None:
    with (
        LocalCluster(
            n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
        ) as local,
        Client(local.scheduler_address, set_as_default=False) as gate,
        cluster_turn(gate, local.scheduler_address, holder="the test's gate", wait_seconds=0),
    ):
        address = local.scheduler_address
        parameters = run_parameters(synthetic_data_dir, unique_name, address, dask_wait_seconds=1)
        with pytest.raises(PipelineError) as failure:
            training(parameters)
    message = str(failure.value)
    assert message.startswith(f"the Dask cluster at {address} was still in use by the test's gate")
    assert "after waiting 1 s (dask_wait_seconds)" in message
    experiment = MlflowClient().get_experiment_by_name(unique_name)
    assert experiment is not None
    (run,) = MlflowClient().search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == message
    assert list(MlflowClient().search_model_versions(f"name = '{unique_name}'")) == []


def test_a_killed_holder_passes_the_turn_on(cluster: tuple[str, Client], tmp_path: Path) -> None:
    """A holder killed (SIGKILL: nothing of it runs after) never releases; its lease, no longer
    refreshed, expires and the waiting run gets the turn."""
    address, watcher = cluster
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": LEASE_TIMEOUT},
        start_new_session=True,
    )
    lines: list[str] = []
    got = threading.Event()
    failed: list[BaseException] = []

    def wait_for_the_turn() -> None:
        try:
            with (
                dask.config.set({"distributed.scheduler.locks.lease-timeout": LEASE_TIMEOUT}),
                Client(address, set_as_default=False) as client,
                cluster_turn(
                    client, address, holder="the waiter", wait_seconds=300, log=lines.append
                ),
            ):
                got.set()
        except BaseException as exc:
            failed.append(exc)

    waiter = threading.Thread(target=wait_for_the_turn)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"holding\n"
        waiter.start()
        wait_until(lambda: waiting(watcher) == 1 or bool(failed), READY_SECONDS, "the waiter")
        assert not failed, failed
        assert not got.is_set()
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        assert got.wait(timeout=120), "the killed holder's turn never passed on"
    finally:
        stop_groups([holder])
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
        waiter.join(timeout=60)
    assert not failed, failed
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"the Dask cluster at {address} is in use by the killed holder (")
    assert "waiting up to 300 s (dask_wait_seconds)" in lines[0]
    assert lines[1].startswith(f"the Dask cluster at {address} is this run's after ")
    assert lines[2].startswith(
        f"the previous holder of the Dask cluster at {address}, the killed holder (host "
    )
    assert "did not give its turn back" in lines[2]
    # The waiter released its turn on the way out and said so.
    assert watcher.get_metadata(HOLDER_KEY, None) is None
    assert waiting(watcher) == 0
    assert turns_taken(watcher) == 0


# The holder: takes the turn, says so, then blocks until it is killed.
HOLD = """
import sys
from distributed import Client
from pipeline.dask_engine import cluster_turn

client = Client(sys.argv[1], set_as_default=False)
with cluster_turn(client, sys.argv[1], holder="the killed holder", wait_seconds=0):
    print("holding", flush=True)
    sys.stdin.read()
"""
assert CLUSTER_TURN == "mlops-cluster"  # the name the scheduler's gauge is read under


@pytest.mark.slow  # two training runs, each a process, on a cluster of worker processes
@pytest.mark.usefixtures("prefect_api")
def test_two_runs_of_different_pipelines_both_complete(
    cluster: tuple[str, Client],
    synthetic_data_dir: Path,
    unique_name: str,
    mlflow_store: str,
    tmp_path: Path,
) -> None:
    """Started together, a run of this pipeline and one of another version (its upload restarts
    the workers) wait for the gate, then train one after the other: both complete, each with
    its model, on the one port xgboost's tracker may use there (as on the stack)."""
    from prefect.settings import PREFECT_API_URL

    address, watcher = cluster
    other = tmp_path / "other"
    shutil.copytree(
        ROOT / "pipeline", other / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    with (other / "pipeline" / "__init__.py").open("a") as module:
        module.write("# another version of the package\n")
    environment = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "MLFLOW_TRACKING_URI": mlflow_store,
        TRACKER_PORT_VARIABLE: str(free_port()),
    }
    versions = {"this": str(ROOT), "other": str(other)}
    runs: dict[str, subprocess.Popen[str]] = {}
    outputs = {}
    with ExitStack() as cleanup:
        cleanup.callback(_stop_runs, runs)
        with ExitStack() as gate_held:
            gate = gate_held.enter_context(Client(address, set_as_default=False))
            gate_held.enter_context(
                cluster_turn(gate, address, holder="the test's gate", wait_seconds=0)
            )
            for name, path in versions.items():
                runs[name] = subprocess.Popen(
                    [sys.executable, "-m", "pipeline", "train", "--train-month", "2023-01",
                     "--val-month", "2023-02", "--data-dir", str(synthetic_data_dir),
                     "--model-name", f"{unique_name}-{name}", "--engine", "dask",
                     "--dask-address", address, "--dask-wait-seconds", "600"],
                    env={**environment, "PYTHONPATH": path},
                    cwd=Path.cwd(),  # the MLflow store's directory (its artifacts are under it)
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )  # fmt: skip
            wait_until(
                lambda: (
                    waiting(watcher) == 2 or any(run.poll() is not None for run in runs.values())
                ),
                READY_SECONDS,
                "both runs waiting for the cluster",
            )
            assert all(run.poll() is None for run in runs.values()), "a run ended before its turn"
        # The gate is released: the runs take their turns.
        for name, run in runs.items():
            out, err = run.communicate(timeout=RUN_SECONDS)
            assert run.returncode == 0, f"the {name} run failed:\n{err[-3000:]}"
            assert "is in use by the test's gate" in err, err[-3000:]
            outputs[name] = json.loads(out.strip().splitlines()[-1])
    client = MlflowClient()
    for name, summary in outputs.items():
        assert summary["model_name"] == f"{unique_name}-{name}"
        assert "challenger" in summary["aliases"]
        assert client.get_run(summary["run_id"]).info.status == "FINISHED"
        (version,) = client.search_model_versions(f"name = '{unique_name}-{name}'")
        assert version.run_id == summary["run_id"]
    # The last run's version is the one left on the workers; the turn is free again.
    assert set(watcher.run(pipeline_digest).values()) <= {pipeline_digest(), _digest_of(other)}
    assert watcher.get_metadata(HOLDER_KEY, None) is None
    assert turns_taken(watcher) == 0


def _stop_runs(runs: dict[str, subprocess.Popen[str]]) -> None:
    """Stop the runs still going; close their pipes."""
    stop_groups(list(runs.values()))
    for run in runs.values():
        for pipe in (run.stdout, run.stderr):
            if pipe is not None:
                pipe.close()


def _digest_of(path: Path) -> str:
    """The pipeline digest of the package under ``path``, computed in a process importing it."""
    return subprocess.run(
        [sys.executable, "-c", "from pipeline.dask_engine import pipeline_digest as d; print(d())"],
        env={**os.environ, "PYTHONPATH": str(path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def run_parameters(
    data_dir: Path, name: str, address: str, **options: object
) -> TrainingParameters:
    return TrainingParameters.model_validate(
        {
            "train_month": "2023-01",
            "val_month": "2023-02",
            "data_dir": str(data_dir),
            "model_name": name,
            "experiment": name,
            "hyperparameters": SMALL_CONFIG,
            "engine": "dask",
            "dask_address": address,
            **options,
        }
    )


# A training driver: the real months, slow enough to be killed mid-training (as
# test_dask_worker_killed.py), on the cluster it takes its turn on.
TRAIN = """
import sys
from pipeline.dask_engine import shared_cluster, train_and_evaluate
from pipeline.data import load_month
from pipeline.features import make_labeled_set
from pipeline.schema import TLC_BASE_URL
from tests.pipeline.test_dask_worker_killed import SLOW

address, data_dir = sys.argv[1:]
val = make_labeled_set(load_month(data_dir, "green", "2023-02").trips, label="2023-02")
with shared_cluster(address, holder="the driver killed", wait_seconds=0) as client:
    train_and_evaluate(client, data_dir, ["2023-01"], val, color="green", config=SLOW,
                       base_url=TLC_BASE_URL, allow_insecure_mirror=False)
"""


@pytest.mark.slow  # the real months trained on by a cluster of worker processes
@pytest.mark.usefixtures("prefect_api", "mlflow_store")
def test_after_a_run_killed_mid_training_the_next_does_not_hang(
    cluster: tuple[str, Client],
    real_data_dir: Path,
    synthetic_data_dir: Path,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run killed mid-training leaves xgboost's lock on the workers held for good (it has
    no lease) and its tracker waiting on the fixed port in the scheduler's process, for a
    while or for good. The next run releases the lock and either trains or fails at once
    naming the port (a fallback port would be closed by a stack's firewall); it never hangs,
    and registers nothing when it fails. Which of the two depends on whether the killed
    run's tracker has ended by then: both were seen."""
    from pipeline import dask_engine

    address, watcher = cluster
    port = free_port()
    monkeypatch.setenv(TRACKER_PORT_VARIABLE, str(port))
    monkeypatch.setattr(dask_engine, "TRACKER_PORT_WAIT_SECONDS", 5.0)
    lease = {"DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": LEASE_TIMEOUT}
    driver = subprocess.Popen(
        [sys.executable, "-c", TRAIN, address, str(real_data_dir)],
        env={**os.environ, **lease, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: len(training_on(watcher)) == 2 or driver.poll() is not None,
            RUN_SECONDS,
            "the driver's training on both workers",
        )
        assert driver.poll() is None, "the driver ended before it was killed"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop_groups([driver])
    assert xgboost_locks_held(watcher) == 1  # the killed run's, on both workers
    parameters = run_parameters(synthetic_data_dir, unique_name, address, dask_wait_seconds=120)
    outcome: list[object] = []
    context = contextvars.copy_context()  # the Prefect test harness's settings

    def next_run() -> None:
        try:
            outcome.append(training(parameters))
        except BaseException as exc:
            outcome.append(exc)

    with dask.config.set({"distributed.scheduler.locks.lease-timeout": LEASE_TIMEOUT}):
        runner = threading.Thread(target=context.run, args=(next_run,), daemon=True)
        runner.start()
        runner.join(timeout=RUN_SECONDS)
    assert outcome, f"the next run still runs after {RUN_SECONDS:.0f} s"
    (result,) = outcome
    versions = list(MlflowClient().search_model_versions(f"name = '{unique_name}'"))
    if isinstance(result, BaseException):
        assert isinstance(result, PipelineError), result
        assert str(result).startswith(
            f"xgboost's tracker port 127.0.0.1:{port} ({TRACKER_PORT_VARIABLE}) on the Dask "
            "scheduler's host is still taken after 5 s"
        )
        assert versions == []
    else:
        assert isinstance(result, TrainingSummary)
        assert [version.run_id for version in versions] == [result.run_id]
    # The run gave its turn back, and left no xgboost lock behind.
    assert watcher.get_metadata(HOLDER_KEY, None) is None
    assert turns_taken(watcher) == 0
    assert xgboost_locks_held(watcher) == 0


def xgboost_locks_held(watcher: Client) -> int:
    """How many holders of a distributed.MultiLock (xgboost.dask's) the scheduler counts."""

    def held(dask_scheduler: object) -> int:
        extension = dask_scheduler.extensions["multi_locks"]  # type: ignore[attr-defined]
        return sum(1 for left in extension.requests_left.values() if left == 0)

    return int(watcher.run_on_scheduler(held))


def training_on(watcher: Client) -> list[str]:
    """The workers running one of xgboost.dask's training tasks (named ``fn-...``)."""
    return [
        worker
        for worker, keys in watcher.processing().items()
        if any(str(key).startswith("fn-") for key in keys)
    ]
