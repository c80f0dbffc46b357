"""The deploy path end to end on the twin: ``mlops deploy`` (prefect.yaml, code pushed to the
bucket), ``mlops run`` (the worker pulls the code and trains on the real months in the
bucket), then what landed where: the flow run, the MLflow run in PostgreSQL, the model files
in the bucket, the registered version and its aliases."""

from __future__ import annotations

import re

import pytest

from scripts.deploy import prefect_client
from tests.e2e.twin_api import (
    MODEL_NAME,
    TrainingRun,
    TwinHandle,
    backend_run_status,
    bucket_keys,
    flow_run_logs,
    flow_run_state,
    metrics,
)

pytestmark = pytest.mark.e2e


def test_training_runs_through_the_worker_and_lands_in_postgres_and_the_bucket(
    deployed: TwinHandle, trained: TrainingRun
) -> None:
    twin = deployed
    result = trained.output
    assert "Traceback" not in result.stderr
    flow_run_id = trained.flow_run_id
    print(f"trigger to completed flow run: {trained.seconds:.0f} s")

    # Prefect: completed, on the worker, with the code pulled from the bucket's flow-code/.
    assert flow_run_state(twin, flow_run_id)[0] == "COMPLETED"
    logs = flow_run_logs(twin, flow_run_id)
    worker = twin.twin.worker_settings().worker_name
    assert f"Worker '{worker}' submitting flow run '{flow_run_id}'" in logs
    assert "Executing deployment step: pull_from_s3" in logs
    assert "Deployment step 'pull_from_s3' completed successfully" in logs
    with prefect_client(twin.env) as client:
        deployment_id = client.read_flow_run(flow_run_id).deployment_id
        assert deployment_id is not None
        deployment = client.read_deployment(deployment_id)
    (pull,) = deployment.pull_steps or []
    assert pull["prefect_aws.deployments.steps.pull_from_s3"]["bucket"] == twin.twin.config.bucket
    assert pull["prefect_aws.deployments.steps.pull_from_s3"]["folder"] == "flow-code"
    assert "flow-code/pipeline/flows.py" in bucket_keys(twin, "flow-code/")
    # The emulator's own access log: the flow run fetched the flow's module from the bucket.
    s3_log = twin.twin.log_path("s3").read_text()
    assert f"GET /{twin.twin.config.bucket}/flow-code/pipeline/flows.py" in s3_log

    run, registered = trained.mlflow_run, trained.version
    run_id = trained.run_id
    assert run["info"]["status"] == "FINISHED"
    scores = metrics(run)
    assert {"rmse", "mae", "baseline_rmse"} <= set(scores)
    assert 0 < scores["rmse"] < scores["baseline_rmse"]
    # The run is in the server's PostgreSQL database, not in some local store.
    assert backend_run_status(twin, run_id) == "FINISHED"
    # The model's files are in the bucket, under the server's artifact destination.
    model_id = registered["source"].removeprefix("models:/")
    model_keys = [key for key in bucket_keys(twin, "mlflow/") if f"/models/{model_id}/" in key]
    assert any(key.endswith("/artifacts/MLmodel") for key in model_keys)
    assert any(key.endswith(".ubj") for key in model_keys)  # the booster
    # Every new version is the challenger; the flow's log names the aliases it was given
    # (promotion runs after the metrics artifact is published, so the artifact cannot).
    assert "challenger" in registered["aliases"]
    promoted = re.search(
        rf"{MODEL_NAME} version {registered['version']} now has aliases ([a-z, ]+) \(",
        "\n".join(logs),
    )
    assert promoted, logs
    assert set(promoted.group(1).split(", ")) == set(registered["aliases"])
    assert f"## {MODEL_NAME} version {registered['version']}" in result.stdout
