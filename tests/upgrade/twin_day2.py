"""Day-2 operations on the process twin with real data: upgrade, failed migration, restore
drill, stop and start (``make test-upgrade``; slow, so outside ``make test``).

One twin for the module, brought up on the previous minor versions (previous-requirements.txt:
MLflow 3.16, Prefect 3.8, in a cached virtualenv), deployed and trained on the real months;
then, in order:

1. the upgrade: its servers and worker stopped and started again from the pinned virtualenv
   over the same databases (the migration steps first); every run, model version, alias, flow
   run and deployment is still there, and a new run completes;
2. a failed migration: a corrupted revision keeps MLflow from starting, with a message naming
   the database, until the revision is repaired;
3. the restore drill (``mlops restore-drill --twin``): pg_dump/pg_restore into a second twin;
   runs, models and aliases survive and the champion predicts the same values;
4. the schedule: every host service stopped and started again as EventBridge stops and starts
   the instances (the bucket and the database stay up, as S3 and RDS do); the worker is back
   and a run completes.

The months come from ``$PIPELINE_DATA_DIR`` (green 2023-01 and 2023-02). The fast check of
migrating from an older schema is tests/hosts/test_migrations.py, which ``make test`` runs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scripts import drill, upgrade
from scripts.common import OpsError
from scripts.deploy import prefect_client
from scripts.envfile import read_env_file
from scripts.twin import Twin, TwinConfig, TwinState, lifecycle
from tests.e2e.twin_api import EXPERIMENT, MODEL_NAME, Mlflow, TwinHandle, metrics, mlops, train
from tests.upgrade.previous_venv import previous_venv

MONTHS = ("2023-01", "2023-02")
HOST_SERVICES = ("mlflow", "prefect-server", "prefect-worker")  # what stops with the hosts
TIMINGS: dict[str, float] = {}


def inventory(env: dict[str, str]) -> dict[str, Any]:
    """Every run, model version and alias (MLflow), flow run and deployment (Prefect)."""
    with Mlflow.of(env) as mlflow:
        experiment = mlflow.get("experiments/get-by-name", experiment_name=EXPERIMENT)
        found = mlflow.client.post(
            "/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [experiment["experiment"]["experiment_id"]],
                "max_results": 1000,
            },
        )
        found.raise_for_status()
        runs = {
            run["info"]["run_id"]: (run["info"]["status"], metrics(run))
            for run in found.json().get("runs", [])
        }
        model = mlflow.get("registered-models/get", name=MODEL_NAME)["registered_model"]
        versions = mlflow.get("model-versions/search", filter=f"name='{MODEL_NAME}'")
    with prefect_client(env) as client:
        flow_runs = {str(run.id): str(run.state_type) for run in client.read_flow_runs()}
        deployments = {str(d.id): d.name for d in client.read_deployments()}
    return {
        "runs": runs,
        "versions": {v["version"]: v["run_id"] for v in versions.get("model_versions", [])},
        "aliases": {a["alias"]: a["version"] for a in model.get("aliases", [])},
        "flow_runs": flow_runs,
        "deployments": deployments,
    }


def durable(found: dict[str, Any]) -> dict[str, Any]:
    """The inventory without the flow runs Prefect's scheduler keeps making ahead (SCHEDULED):
    their set changes with the clock, not with the upgrade."""
    ran = {run: state for run, state in found["flow_runs"].items() if "SCHEDULED" not in state}
    return {**found, "flow_runs": ran}


def seed_months(twin: Twin) -> None:
    """The real months from ``$PIPELINE_DATA_DIR`` into the twin's bucket (the worker reads
    them from there)."""
    local = Path(os.environ.get("PIPELINE_DATA_DIR", ""))
    s3 = twin.aws_client("s3")
    for month in MONTHS:
        path = local / f"green_tripdata_{month}.parquet"
        if not path.is_file():
            pytest.fail(f"PIPELINE_DATA_DIR must hold green {month}: {path} is missing")
        s3.upload_file(str(path), twin.config.bucket, f"data/{path.name}")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinHandle]:
    """A twin on the previous versions, deployed and trained once."""
    started = time.monotonic()
    venv = previous_venv()
    TIMINGS["previous venv (cached after the first build)"] = time.monotonic() - started
    state_dir = tmp_path_factory.mktemp("day2-state")
    env_file = state_dir.parent / "day2.env"
    config = TwinConfig(state_dir=state_dir, name=f"day2_{uuid.uuid4().hex[:10]}", venv=venv)
    started = time.monotonic()
    old = lifecycle.up(config, env_file)
    TIMINGS["twin up on the previous versions"] = time.monotonic() - started
    handle = TwinHandle(twin=old, env_file=env_file, env=read_env_file(env_file))
    try:
        seed_months(old)
        deployed = mlops("deploy", "--env-file", str(env_file))
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        started = time.monotonic()
        handle.training = train(env_file, handle.env)
        TIMINGS["training run on the previous versions"] = time.monotonic() - started
        yield handle
    finally:
        for name, seconds in TIMINGS.items():
            print(f"timing: {name}: {seconds:.1f} s")
        lifecycle.down(state_dir)
        handle.twin.reap_children()


def restart_hosts(handle: TwinHandle, venv: Path, said: list[str]) -> Twin:
    """Stop the host services, then start them from ``venv`` as the hosts boot."""
    for name in reversed(HOST_SERVICES):
        handle.twin.stop_service(name)
    state = TwinState.load(handle.twin.config.state_dir)
    state.config = dataclasses.replace(state.config, venv=venv)
    state.save()
    twin = Twin(state, said.append)
    # The emulator (S3's stand-in) keeps running: the new object reaps it at the end.
    twin._children.update(handle.twin._children)
    twin.start_service("mlflow")
    twin.run_post_start("mlflow")
    twin.start_service("prefect-server")
    twin.start_service("prefect-worker")
    handle.twin = twin
    return twin


def test_upgrade_from_the_previous_minor_versions_keeps_everything_and_trains(
    twin: TwinHandle,
) -> None:
    before = inventory(twin.env)
    assert twin.training is not None
    assert before["aliases"]["champion"] == twin.training.version["version"]
    old = upgrade.running_versions(twin.env)
    assert old == {"mlflow": "3.16.1", "prefect": "3.8.8"}
    planned = upgrade.plan(twin.env, twin_state_dir=twin.twin.config.state_dir)
    assert planned.database_verdict("mlflow") == "will be migrated"
    assert planned.database_verdict("prefect") == "will be migrated"
    print("\n".join(upgrade.report(planned)))

    said: list[str] = []
    started = time.monotonic()
    new = restart_hosts(twin, Path(sys.prefix), said)
    TIMINGS["upgrade: stop, migrate, start on the pinned versions"] = time.monotonic() - started
    print("\n".join(said))

    assert upgrade.running_versions(twin.env) == upgrade.pinned_versions()
    heads = upgrade.shipped_heads()
    for database in ("mlflow", "prefect"):
        (line,) = [line for line in said if f"'{new.config.name}_{database}' migrated" in line]
        assert f"from {planned.revisions[database]} to {heads[database].head} in" in line
    after_plan = upgrade.plan(twin.env, twin_state_dir=new.config.state_dir)
    assert {after_plan.database_verdict(d) for d in heads} == {"up to date"}
    upgraded = inventory(twin.env)
    assert durable(upgraded) == durable(before)
    assert any("SCHEDULED" in state for state in upgraded["flow_runs"].values())  # monthly

    started = time.monotonic()
    run = train(twin.env_file, twin.env)
    TIMINGS["training run after the upgrade"] = time.monotonic() - started
    assert run.mlflow_run["info"]["status"] == "FINISHED"
    after = inventory(twin.env)
    assert int(run.version["version"]) == len(before["versions"]) + 1
    assert set(before["runs"]) < set(after["runs"])
    assert set(before["flow_runs"]) < set(after["flow_runs"])
    assert after["deployments"] == before["deployments"]


def test_a_failed_migration_keeps_mlflow_stopped_naming_the_database(twin: TwinHandle) -> None:
    name = twin.twin.config.databases[0]
    twin.twin.stop_service("mlflow")
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as conn:
        (head,) = conn.execute("SELECT version_num FROM alembic_version").fetchone() or ("",)
        conn.execute("UPDATE alembic_version SET version_num = '0badc0ffee00'")
    try:
        with pytest.raises(OpsError) as refused:
            twin.twin.start_service("mlflow")
        message = str(refused.value)
        assert f"the MLflow tracking database '{name}' from revision 0badc0ffee00" in message
        assert "mlflow will not start" in message
        assert twin.twin.running_process("mlflow") is None  # refused, not crash-looping
    finally:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as c:
            c.execute("UPDATE alembic_version SET version_num = %s", (head,))
    twin.twin.start_service("mlflow")
    twin.twin.run_post_start("mlflow")


def test_restore_drill_on_the_twin_keeps_runs_models_aliases_and_predictions(
    twin: TwinHandle,
) -> None:
    said: list[str] = []
    started = time.monotonic()
    report = drill.restore_drill_twin(twin.twin.config.state_dir, said.append)
    TIMINGS["restore drill"] = time.monotonic() - started
    print("\n".join(said))
    assert report.passed, said
    assert [step.step for step in report.steps] == [
        "snapshot", "create", "artifacts", "inventory", "smoke", "champion", "destroy",
    ]  # fmt: skip
    (inventoried,) = [step for step in report.steps if step.step == "inventory"]
    assert "2 model versions" in inventoried.detail  # one before the upgrade, one after
    for step in report.steps:
        TIMINGS[f"restore drill step {step.step}"] = step.seconds
    (drill_dir,) = (twin.twin.config.state_dir / "drills").iterdir()
    assert not (drill_dir / "state.json").exists()  # destroyed: its databases dropped


def test_hosts_stopped_and_started_on_schedule_come_back_and_train(twin: TwinHandle) -> None:
    before = inventory(twin.env)
    said: list[str] = []
    started = time.monotonic()
    restart_hosts(twin, Path(sys.prefix), said)
    TIMINGS["schedule: stop and start the host services"] = time.monotonic() - started
    assert any("already at" in line for line in said), said  # nothing left to migrate
    assert durable(inventory(twin.env)) == durable(before)
    run = train(twin.env_file, twin.env)
    assert run.mlflow_run["info"]["status"] == "FINISHED"
