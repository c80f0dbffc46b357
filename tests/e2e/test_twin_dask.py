"""The stack's Dask cluster on the process twin (the session's twin runs ``--dask-workers 1``).

The scheduler and the Dask worker run the command lines of their rendered units (TLS only,
on loopback, on the twin's ports); the Prefect worker's flow runs are the cluster's clients
with the workers' identity and the twin's tracker port. A training run triggered through the
deployed ``training`` deployment with the Dask engine and the scheduler's ``tls://`` address
trains on the cluster, as tests/hoststwin/test_hosts_twin_dask.py does on the hosts twin.
"""

from __future__ import annotations

import pytest

from tests.e2e.twin_api import TwinHandle, metrics, mlops, train

pytestmark = pytest.mark.e2e


def test_a_training_run_through_the_worker_trains_on_the_twins_dask_cluster(
    deployed: TwinHandle,
) -> None:
    address = deployed.env["MLOPS_DASK_SCHEDULER_ADDRESS"]
    assert address.startswith("tls://127.0.0.1:")
    scheduler_log = deployed.twin.log_path("dask-scheduler")
    logged_before = scheduler_log.stat().st_size

    run = train(deployed.env_file, deployed.env, ["engine=dask", f"dask_address={address}"])

    print(f"trigger -> completed Dask training run through the worker: {run.seconds:.0f} s")
    tags = {tag["key"]: tag["value"] for tag in run.mlflow_run["data"]["tags"]}
    assert tags["engine"] == "dask"
    assert run.mlflow_run["info"]["status"] == "FINISHED"
    scores = metrics(run.mlflow_run)
    assert 0 < scores["rmse"] < scores["baseline_rmse"]
    assert "challenger" in run.version.get("aliases", [])
    # The flow run described the twin's cluster: its scheduler, its one worker and its limit.
    logs = run.output.stdout
    assert f"Dask cluster: {address}: 1 workers" in logs, logs[-3000:]
    assert "memory limit 2560 MiB" in logs
    # xgboost trained on this cluster: its collective's tracker ran in the twin's scheduler.
    with scheduler_log.open() as log:
        log.seek(logged_before)
        assert "Run out-of-band function '_start_tracker'" in log.read()


def test_a_stopped_dask_worker_is_named_by_smoke_and_serves_again_once_started(
    twin: TwinHandle,
) -> None:
    smoke = ("smoke", "--env-file", str(twin.env_file))
    address = twin.env["MLOPS_DASK_SCHEDULER_ADDRESS"]
    twin.stop_service("dask-worker-0")
    try:
        assert not twin.running("dask-worker-0")
        stopped = mlops(*smoke, timeout=300)
    finally:
        twin.start_service("dask-worker-0")  # waits until the scheduler sees it again

    assert stopped.returncode == 1
    assert f"FAIL  dask-cluster      the scheduler at {address} sees 0 workers" in stopped.stdout
    assert stopped.stderr == "error: smoke test failed: dask-cluster\n"
    started = mlops(*smoke, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"PASS  dask-cluster      {address} answers with 1 workers" in started.stdout
