"""Faults on the twin: wrong credentials, a restarted worker, the MLflow server gone during a
run. Each says what happens to the user and to what was recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest

from scripts.deploy import DEFAULT_DEPLOYMENT, prefect_client, start_run
from scripts.envfile import read_env_file, write_env_file
from scripts.twin import running
from tests.e2e.twin_api import (
    Mlflow,
    TwinHandle,
    flow_run_logs,
    flow_run_state,
    mlops,
    task_states,
    wait_until,
)

pytestmark = pytest.mark.e2e

# Fault runs need a run, not a good model: a few boosting rounds keep them short.
QUICK_RUN = {
    "tlc_base_url": "https://127.0.0.1:9/no-download-in-tests",
    "hyperparameters": {"num_boost_round": 20, "early_stopping_rounds": 5},
}
RUN_SECONDS = 600.0


def with_wrong(twin: TwinHandle, key: str, directory: Path) -> tuple[Path, str]:
    """An env file like the twin's but with a wrong value for ``key``."""
    wrong = "wrong" + "0" * 27
    path = directory / f"wrong-{key.lower()}.env"
    write_env_file(path, {**twin.env, key: wrong})
    return path, wrong


def trigger(twin: TwinHandle) -> UUID:
    """Start a quick run of the training deployment."""
    with prefect_client(twin.env) as client:
        return start_run(client, DEFAULT_DEPLOYMENT, QUICK_RUN).id


def final_state(twin: TwinHandle, flow_run_id: UUID) -> tuple[str, str]:
    """Wait for the flow run to end; its state type and message."""

    def ended() -> tuple[str, str] | None:
        state = flow_run_state(twin, flow_run_id)
        return state if state[0] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

    return wait_until(f"flow run {flow_run_id} to end", ended, RUN_SECONDS, pause=2.0)


@pytest.mark.parametrize("command", ["run", "deploy"])
def test_wrong_prefect_auth_string_is_named_without_traceback(
    deployed: TwinHandle, tmp_path: Path, command: str
) -> None:
    env_file, wrong = with_wrong(deployed, "PREFECT_API_AUTH_STRING", tmp_path)
    result = mlops(command, "--env-file", str(env_file), timeout=120)
    assert result.returncode == 1
    url = deployed.env["PREFECT_API_URL"]
    expected = f"error: the Prefect server at {url} rejected PREFECT_API_AUTH_STRING (HTTP 401)"
    assert result.stderr.strip() == expected
    assert wrong not in result.stdout + result.stderr


def test_wrong_mlflow_password_is_named_without_traceback(
    deployed: TwinHandle, tmp_path: Path
) -> None:
    """The pipeline's own command line, pointed at the twin with a wrong MLflow password."""
    env_file, wrong = with_wrong(deployed, "MLFLOW_TRACKING_PASSWORD", tmp_path)
    months = ("--train-month", "2023-01", "--val-month", "2023-02")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", *months],
        env={**os.environ, **read_env_file(env_file)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode != 0
    assert "MLFLOW_TRACKING_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr
    assert wrong not in result.stdout + result.stderr


def test_restarted_worker_runs_the_next_flow_through_an_mlflow_outage(
    deployed: TwinHandle,
) -> None:
    """Two faults, one run (each run costs a minute): the worker is restarted between runs,
    and the MLflow server is stopped during the next one, after the run was opened.

    The restarted worker must pick that run up. As for the outage: the flow's MLflow tasks
    retry (MLflow's client retries refused connections with backoff, and the tasks themselves
    retry with backoff and jitter), so an outage shorter than that budget ends in a COMPLETED
    run, FINISHED in MLflow, with its version registered. Were it longer, the run would FAIL
    with the MLflow run marked FAILED (by the pipeline, once MLflow answers again) and nothing
    registered: the test accepts either outcome and checks each fully.
    """
    twin = deployed
    before = twin.twin.running_process("prefect-worker")
    assert before is not None
    twin.stop_service("prefect-worker")
    assert not running(before)
    twin.start_service("prefect-worker")
    after = twin.twin.running_process("prefect-worker")
    assert after is not None
    assert after.pid != before.pid

    flow_run_id = trigger(twin)
    with Mlflow.of(twin.env) as mlflow:
        (run,) = wait_until(
            "the flow to open its MLflow run", lambda: mlflow.runs_of_flow_run(flow_run_id), 300
        )
    run_id = run["info"]["run_id"]
    worker_log = twin.twin.log_path("prefect-worker")
    log_size = worker_log.stat().st_size
    twin.stop_service("mlflow")
    try:
        wait_until(
            "the flow to hit the MLflow outage",
            lambda: (
                "Connection refused" in worker_log.read_text()[log_size:]
                or flow_run_state(twin, flow_run_id)[0] in {"FAILED", "CRASHED"}
            ),
            RUN_SECONDS,
        )
    finally:
        twin.start_service("mlflow")
    state, message = final_state(twin, flow_run_id)
    worker = twin.twin.worker_settings().worker_name
    assert f"Worker '{worker}' submitting flow run '{flow_run_id}'" in flow_run_logs(
        twin, flow_run_id
    )
    with Mlflow.of(twin.env) as mlflow:
        recorded = mlflow.get("runs/get", run_id=run_id)["run"]["info"]["status"]
        versions = mlflow.versions_of_run(run_id)
    print(f"MLflow outage during a run: flow run {state}, MLflow run {recorded}")
    if state == "COMPLETED":
        assert recorded == "FINISHED"
        assert len(versions) == 1
        assert task_states(twin, flow_run_id)["register-model"] == "COMPLETED"
    elif recorded == "FINISHED":  # the outage hit the promotion, the run's last step
        assert state == "FAILED", message
        assert task_states(twin, flow_run_id)["promote-model"] == "FAILED"
        assert len(versions) == 1
    else:
        assert state == "FAILED", message
        assert recorded == "FAILED"
        assert versions == []
