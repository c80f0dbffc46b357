"""Case 6: the training deployment on a process twin of its own, from trigger to completed.

The twin (``mlops twin up``) needs PostgreSQL on 127.0.0.1:5432; without it the case is
skipped with a message saying so. It gets its own name (``bench_<random>``: role and
databases), state directory and env file, the real months in its bucket and ``prefect.yaml``
deployed, exactly as the e2e tests do; ``mlops twin down`` removes all of it afterwards.

Each run is triggered as ``mlops run`` triggers it (a flow run of ``training/training``) and
timed from the trigger to the moment the client sees it completed. The run's own records on
the Prefect server split that time into phases:

- pick-up: flow run created -> Pending (the worker's poll found it and submitted it)
- start: Pending -> Running (the flow-run process: interpreter, code pull, the flow's imports)
- stages: the load, build-features, train and evaluate task runs (their durations summed: the
  months load concurrently, so this can exceed the stages' wall time and "other" go below 0)
- tracking: the start-mlflow-run and log-to-mlflow task runs
- registration: the register-model and promote-model task runs
- other: the rest (between tasks, the run ended in MLflow, the artifact, the final state)
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.cases import COLOR, TRAIN_MONTH, VAL_MONTH

POSTGRES = ("127.0.0.1", 5432)
DEPLOYMENT = "training/training"
# Every month is in the bucket; should one be missing, the run fails instead of downloading.
NO_DOWNLOAD = {"tlc_base_url": "https://127.0.0.1:9/no-download-in-bench"}
RUN_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = 0.2
# A line of uvicorn's access log: "GET /api/2.0/mlflow/runs/get?... HTTP/1.1" 200
_REQUEST = re.compile(r'"(?:GET|POST|PUT|PATCH|DELETE) /\S* HTTP/')
PHASES = ("pick_up", "start", "stages", "tracking", "registration", "other")
_TASK_PHASES = {
    "load": "stages",
    "build-features": "stages",
    "train": "stages",
    "evaluate": "stages",
    "start-mlflow-run": "tracking",
    "log-to-mlflow": "tracking",
    "register-model": "registration",
    "promote-model": "registration",
}
MLOPS = str(Path(sys.executable).with_name("mlops"))
ROOT = Path(__file__).resolve().parent.parent


def postgres_missing() -> str | None:
    """Why the twin cannot run here (no PostgreSQL on its default address), or None."""
    try:
        with socket.create_connection(POSTGRES, timeout=2):
            return None
    except OSError as exc:
        return f"no PostgreSQL on {POSTGRES[0]}:{POSTGRES[1]} ({exc}); the twin needs one"


def run_twin(runs: int, data_dir: str, say: Callable[[str], None]) -> list[dict[str, float]]:
    """Bring a twin up, deploy, time ``runs`` training runs, bring it down; the runs' figures."""
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-twin-"))
    state_dir, env_file = work / "state", work / "mlops.env"
    name = f"bench_{secrets.token_hex(4)}"
    where = ("--state-dir", str(state_dir))
    try:
        say(f"  twin: up ({name})")
        _mlops("twin", "up", *where, "--name", name, "--env-file", str(env_file))
        env = _seed_and_deploy(state_dir, env_file, data_dir)
        mlflow_log = _mlflow_log(state_dir)
        samples = []
        for run in range(runs):
            say(f"  twin: run {run + 1}/{runs}")
            wait_until_worker_idle(state_dir)
            before = _requests(mlflow_log)
            samples.append(timed_run(env))
            samples[-1]["mlflow_requests"] = float(_requests(mlflow_log) - before)
        return samples
    finally:
        say("  twin: down")
        try:
            _mlops("twin", "down", *where)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _mlops(*args: str) -> None:
    """Run ``mlops args`` on this checkout's code; a SystemExit with its output if it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "infra")])}
    done = subprocess.run(
        [MLOPS, *args], capture_output=True, text=True, check=False, timeout=900, env=env
    )
    if done.returncode:
        raise SystemExit(f"`mlops {' '.join(args)}` failed:\n{done.stdout}{done.stderr}")


def _seed_and_deploy(state_dir: Path, env_file: Path, data_dir: str) -> dict[str, str]:
    """The months in the twin's bucket and prefect.yaml deployed; returns the env file's values."""
    from scripts.envfile import read_env_file
    from scripts.twin import load

    twin = load(state_dir)
    s3 = twin.aws_client("s3")
    for month in (TRAIN_MONTH, VAL_MONTH):
        file = f"{COLOR}_tripdata_{month}.parquet"
        s3.upload_file(str(Path(data_dir, file)), twin.config.bucket, f"data/{file}")
    _mlops("deploy", "--env-file", str(env_file))
    return read_env_file(env_file)


def wait_until_worker_idle(state_dir: Path) -> None:
    """Wait until the previous run's process has exited: the worker takes one run at a time,
    so a run triggered while that process still shuts down would count its exit as pick-up."""
    from scripts.twin import load

    worker = load(state_dir).running_process("prefect-worker")
    if worker is None:
        raise SystemExit("the twin's worker is not running")
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while worker.children():
        if time.monotonic() > deadline:
            raise SystemExit(f"the twin's worker still runs a flow after {RUN_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)  # polling a condition, with the deadline above


def _mlflow_log(state_dir: Path) -> Path:
    """The twin's MLflow server log (its access log included)."""
    from scripts.twin import load

    return load(state_dir).log_path("mlflow")


def _requests(access_log: Path) -> int:
    """How many HTTP requests the MLflow server has logged so far."""
    return len(_REQUEST.findall(access_log.read_text(errors="replace")))


def timed_run(env: dict[str, str]) -> dict[str, float]:
    """Trigger one training run, wait for it to complete; its wall time and phases in seconds."""
    from scripts.deploy import prefect_client, start_run

    with prefect_client(env) as client:
        triggered = time.perf_counter()
        flow_run = start_run(client, DEPLOYMENT, NO_DOWNLOAD)
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while True:
            current = client.read_flow_run(flow_run.id)
            if current.state is not None and current.state.is_final():
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"twin run {flow_run.id} not done in {RUN_TIMEOUT_SECONDS:.0f} s")
            time.sleep(POLL_SECONDS)  # polling a condition, with the deadline above
        wall = time.perf_counter() - triggered
        if not current.state.is_completed():
            raise SystemExit(f"twin run {flow_run.id} ended {current.state.name}")
        figures = phases(client, flow_run.id)
    return {"trigger_to_completed": wall, **figures, "load_1min": os.getloadavg()[0]}


def phases(client: Any, flow_run_id: UUID) -> dict[str, float]:
    """The run's phases from its states and task runs on the server (see the module's doc)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run = client.read_flow_run(flow_run_id)
    states = client.read_flow_run_states(flow_run_id)
    first: dict[str, datetime] = {}
    for state in sorted(states, key=lambda s: s.timestamp):
        first.setdefault(state.type.value, state.timestamp)
    created, pending, running = flow_run.created, first["PENDING"], first["RUNNING"]
    completed = first["COMPLETED"]
    task_runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    out = dict.fromkeys(PHASES, 0.0)
    out["pick_up"] = (pending - created).total_seconds()
    out["start"] = (running - pending).total_seconds()
    for task_run in task_runs:
        phase = _phase_of(task_run.name)
        if phase and task_run.start_time and task_run.end_time:
            out[phase] += (task_run.end_time - task_run.start_time).total_seconds()
    out["server_total"] = (completed - created).total_seconds()
    out["other"] = out["server_total"] - sum(out[p] for p in PHASES if p != "other")
    return out


def _phase_of(task_run_name: str) -> str | None:
    """The phase of a task run by its name (``load-green-2023-01``, ``train-26c``, ...)."""
    for prefix, phase in sorted(_TASK_PHASES.items(), key=lambda item: -len(item[0])):
        if task_run_name.startswith(prefix + "-"):
            return phase
    return None


def summary(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each figure over the runs."""
    return {
        key: {
            "median": statistics.median(s[key] for s in samples),
            "min": min(s[key] for s in samples),
            "max": max(s[key] for s in samples),
        }
        for key in samples[0]
    }
