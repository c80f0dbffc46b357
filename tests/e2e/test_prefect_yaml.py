"""prefect.yaml and .prefectignore, read as files (no server needed): the deployments target
the work pool, push and pull the flow code through the bucket's flow-code/ prefix with the
pinned prefect-aws, name nothing local, and upload the flow's package and nothing else; the
scheduled deployment trains on the latest published months, not on fixed ones."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostboot.locks import pinned_requirements
from prefect.utilities.filesystem import filter_files

from pipeline.parameters import TrainingParameters
from pipeline.tuning import TuningParameters
from scripts.common import REPO_ROOT

PREFECT_YAML = REPO_ROOT / "prefect.yaml"
PULL = "prefect_aws.deployments.steps.pull_from_s3"
PUSH = "prefect_aws.deployments.steps.push_to_s3"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """prefect.yaml, parsed (anchors resolved)."""
    return dict(yaml.safe_load(PREFECT_YAML.read_text()))


def test_versions_are_the_repository_pins(config: dict[str, Any]) -> None:
    pins = pinned_requirements()
    assert f"prefect=={config['prefect-version']}" == pins["prefect"]
    for step in (*config["push"], *config["pull"]):
        (body,) = step.values()
        assert body["requires"] == pins["prefect-aws"]


def test_code_goes_through_the_buckets_flow_code_prefix(config: dict[str, Any]) -> None:
    (push,) = config["push"]
    assert push[PUSH]["bucket"] == "{{ $MLOPS_ARTIFACT_BUCKET }}"
    assert push[PUSH]["folder"] == "flow-code"
    (pull,) = config["pull"]
    push_id = push[PUSH]["id"]
    assert pull[PULL]["bucket"] == f"{{{{ {push_id}.bucket }}}}"
    assert pull[PULL]["folder"] == f"{{{{ {push_id}.folder }}}}"


def test_deployments_run_the_flow_on_the_training_pool(config: dict[str, Any]) -> None:
    deployments = {d["name"]: d for d in config["deployments"]}
    assert set(deployments) == {"training", "training-monthly", "tuning"}
    flows = (REPO_ROOT / "pipeline/flows.py").read_text()
    entrypoints = (REPO_ROOT / "pipeline/entrypoints.py").read_text()
    for deployment in deployments.values():
        path, function = deployment["entrypoint"].split(":")
        assert path == "pipeline/entrypoints.py"
        assert re.search(rf"^def {function}\(", flows, re.MULTILINE)
        assert re.search(rf"^    from pipeline.flows import .*\b{function}\b", entrypoints, re.M)
        assert deployment["work_pool"]["name"] == "training"
    assert "schedules" not in deployments["training"]
    (monthly,) = deployments["training-monthly"]["schedules"]
    assert (monthly["cron"], monthly["timezone"]) == ("0 6 3 * *", "UTC")


def test_on_demand_runs_fixed_months_and_the_schedule_the_latest_published(
    config: dict[str, Any],
) -> None:
    """Both deployments' parameters are valid for the flow; only the scheduled one moves on."""
    deployments = {d["name"]: d for d in config["deployments"]}
    on_demand, monthly = (
        TrainingParameters.model_validate(deployments[name]["parameters"]["parameters"])
        for name in ("training", "training-monthly")
    )
    april, may = (datetime(2024, month, 3, 6, tzinfo=UTC) for month in (4, 5))
    assert on_demand.months(april) == on_demand.months(may) == ("2023-01", "2023-02")
    assert (monthly.train_month, monthly.val_month) == (None, None)
    assert monthly.months(april) == ("2023-12", "2024-01")
    assert monthly.months(may) == ("2024-01", "2024-02")


def test_the_tuning_deployment_searches_on_dask_with_a_seed(config: dict[str, Any]) -> None:
    deployments = {d["name"]: d for d in config["deployments"]}
    assert deployments["tuning"]["entrypoint"] == "pipeline/entrypoints.py:tuning_flow"
    search = TuningParameters.model_validate(deployments["tuning"]["parameters"]["parameters"])
    assert (search.trials, search.parallel, search.seed) == (20, 2, 0)
    assert search.training.months(datetime(2024, 4, 3, tzinfo=UTC)) == ("2023-01", "2023-02")


def test_nothing_local_is_hard_coded(config: dict[str, Any]) -> None:
    text = yaml.safe_dump(config)  # the settings, not the comments
    for local in ("127.0.0.1", "localhost", "http://", "AWS_ACCESS_KEY", "AWS_SECRET", "twin"):
        assert local not in text, local


def test_only_the_flow_package_is_uploaded(tmp_path: Path) -> None:
    for name in (
        "pipeline/__init__.py",
        "pipeline/flows.py",
        "pipeline/__pycache__/flows.cpython-311.pyc",
        "mlops.env",
        ".env",
        ".venv/lib/site.py",
        ".twin/control/etc/mlflow.env",
        "data/green_tripdata_2023-01.parquet",
        "infra/hostboot/boot.py",
        "tests/e2e/conftest.py",
        "prefect.yaml",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    patterns = (REPO_ROOT / ".prefectignore").read_text().splitlines()
    uploaded = {
        name
        for name in filter_files(str(tmp_path), patterns, as_posix=True)
        if (tmp_path / name).is_file()
    }
    assert uploaded == {"pipeline/__init__.py", "pipeline/flows.py"}
