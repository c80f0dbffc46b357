"""What the e2e tests read back from the twin: the services' own APIs and storage.

MLflow through its REST API with the env file's credentials, Prefect through its client,
the bucket through the emulator, the MLflow backend through PostgreSQL itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import psutil
import psycopg

from scripts.deploy import prefect_client
from scripts.twin import Twin, running, tree


@dataclass
class TwinHandle:
    """What tests get: the env file and its variables, and control over each service."""

    twin: Twin
    env_file: Path
    env: dict[str, str]
    started_pids: set[int] = field(default_factory=set)
    # The session's training run through the worker, shared by the tests that read it.
    training: TrainingRun | None = None

    def stop_service(self, name: str) -> None:
        """Stop ``name`` (one of the twin's services) as its unit would be stopped; wait until
        gone."""
        self._remember()
        self.twin.stop_service(name)

    def start_service(self, name: str) -> None:
        """Start ``name`` again and wait until it answers (the emulator comes back empty)."""
        self.twin.start_service(name)
        self._remember()

    def running(self, name: str) -> bool:
        """Whether the twin's process of ``name`` runs."""
        return self.twin.running_process(name) is not None

    def _remember(self) -> None:
        """Note every process of the twin now running, for the final check."""
        for name in self.twin.config.services:
            process = self.twin.running_process(name)
            if process is not None:
                self.started_pids.update(member.pid for member in tree(process))


def still_running(pids: set[int]) -> list[str]:
    """The processes among ``pids`` that still run (zombies awaiting their reaper excluded)."""
    alive = []
    for pid in sorted(pids):
        with suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            if running(process):
                alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
    return alive


T = TypeVar("T")
MLOPS = str(Path(sys.executable).with_name("mlops"))


def mlops(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the ``mlops`` command line."""
    return subprocess.run(
        [MLOPS, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


EXPERIMENT = "trip-duration"
MODEL_NAME = "trip-duration-green"


def wait_until(what: str, probe: Callable[[], T | None], seconds: float, pause: float = 1.0) -> T:
    """``probe()``'s first truthy result, polled until ``seconds`` pass (then the test fails)."""
    deadline = time.monotonic() + seconds
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(pause)


@dataclass
class Mlflow:
    """The tracking server's REST API, authenticated as the env file's user."""

    client: httpx.Client

    @classmethod
    @contextmanager
    def of(cls, env: Mapping[str, str]) -> Iterator[Mlflow]:
        """A client on the twin's MLflow server."""
        auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        with httpx.Client(base_url=env["MLFLOW_TRACKING_URI"], auth=auth, timeout=30) as client:
            yield cls(client)

    def get(self, path: str, **params: str) -> Any:
        """GET an API path; any error status fails the test."""
        response = self.client.get(f"/api/2.0/mlflow/{path}", params=params)
        response.raise_for_status()
        return response.json()

    def runs_of_flow_run(self, flow_run_id: UUID) -> list[dict[str, Any]]:
        """The MLflow runs the pipeline tagged with this Prefect flow run."""
        found = self.client.get(
            "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": EXPERIMENT}
        )
        if found.status_code == 404:  # the pipeline has not created its experiment yet
            return []
        found.raise_for_status()
        experiment = found.json()
        response = self.client.post(
            "/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [experiment["experiment"]["experiment_id"]],
                "filter": f"tags.prefect_flow_run_id = '{flow_run_id}'",
            },
        )
        response.raise_for_status()
        return list(response.json().get("runs", []))

    def versions_of_run(self, run_id: str) -> list[dict[str, Any]]:
        """The registered model versions made from run ``run_id``."""
        found = self.get("model-versions/search", filter=f"run_id='{run_id}'")
        return list(found.get("model_versions", []))

    def version(self, name: str, version: str) -> dict[str, Any]:
        """One model version, with its aliases."""
        return dict(self.get("model-versions/get", name=name, version=version)["model_version"])


# Every month is seeded into the bucket; should one be missing, the pipeline would download
# it: point that at a closed loopback port so no test ever reaches the internet (https: the
# pipeline refuses plain http unless a mirror is explicitly allowed).
NO_DOWNLOAD = "tlc_base_url=https://127.0.0.1:9/no-download-in-tests"
STARTED = re.compile(r"started flow run (\S+) \(([0-9a-f-]{36})\)")


@dataclass(frozen=True, kw_only=True)
class TrainingRun:
    """A completed run of the training deployment, and what it left, read right after it."""

    output: subprocess.CompletedProcess[str]  # of `mlops run`
    seconds: float  # trigger to completed flow run
    flow_run_id: UUID
    flow_run_name: str
    task_run_names: tuple[str, ...]
    mlflow_run: dict[str, Any]
    version: dict[str, Any]  # the registered model version, with its aliases then

    @property
    def run_id(self) -> str:
        """The MLflow run's id."""
        return str(self.mlflow_run["info"]["run_id"])


def train(env_file: Path, env: Mapping[str, str], parameters: Sequence[str] = ()) -> TrainingRun:
    """Trigger the training deployment with ``mlops run`` (``parameters``: more ``--set``
    values, ``KEY=VALUE``) and read back what it made.

    Works on any twin: it only needs the env file and its variables.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    sets = [arg for value in (NO_DOWNLOAD, *parameters) for arg in ("--set", value)]
    triggered = time.monotonic()
    result = mlops("run", "--env-file", str(env_file), *sets, timeout=900)
    seconds = time.monotonic() - triggered
    started = STARTED.search(result.stdout)
    output = f"`mlops run`:\n{result.stdout[-4000:]}{result.stderr}"
    assert result.returncode == 0, output
    assert started, output
    flow_run_id = UUID(started.group(2))
    with prefect_client(env) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    with Mlflow.of(env) as mlflow:
        (run,) = mlflow.runs_of_flow_run(flow_run_id)
        (version,) = mlflow.versions_of_run(run["info"]["run_id"])
        registered = mlflow.version(MODEL_NAME, version["version"])
    return TrainingRun(
        output=result,
        seconds=seconds,
        flow_run_id=flow_run_id,
        flow_run_name=started.group(1),
        task_run_names=tuple(sorted(task_run.name for task_run in task_runs)),
        mlflow_run=run,
        version=registered,
    )


def metrics(run: dict[str, Any]) -> dict[str, float]:
    """A run's latest metrics by key."""
    return {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}


def backend_run_status(twin: TwinHandle, run_id: str) -> str | None:
    """The run's status as stored in the MLflow server's PostgreSQL database."""
    config = twin.twin.config
    with psycopg.connect(
        host=config.postgres_host,
        port=config.postgres_port,
        user=config.postgres_superuser,
        dbname=config.databases[0],
    ) as conn:
        row = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,)).fetchone()
    return None if row is None else str(row[0])


def bucket_keys(twin: TwinHandle, prefix: str) -> list[str]:
    """Every object key under ``prefix`` in the twin's bucket."""
    s3 = twin.twin.aws_client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=twin.twin.config.bucket, Prefix=prefix
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def flow_run_state(twin: TwinHandle, flow_run_id: UUID) -> tuple[str, str]:
    """The flow run's state type and message."""
    with prefect_client(twin.env) as client:
        state = client.read_flow_run(flow_run_id).state
    assert state is not None
    return state.type.value, state.message or ""


def flow_run_logs(twin: TwinHandle, flow_run_id: UUID) -> list[str]:
    """The flow run's log messages, oldest first."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with prefect_client(twin.env) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def task_states(twin: TwinHandle, flow_run_id: UUID) -> dict[str, str]:
    """The flow run's task runs: name prefix (before the last '-') -> state type."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_client(twin.env) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {
        task_run.name.rsplit("-", 1)[0]: task_run.state.type.value
        for task_run in task_runs
        if task_run.state is not None
    }
