"""The two copies of the cross-layer names that cannot import ``hostboot.names`` agree with it."""

from __future__ import annotations

from pathlib import Path

import yaml
from hostboot import names

from pipeline import flows

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_deploys_to_the_work_pool_the_workers_poll() -> None:
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    pools = {deployment["work_pool"]["name"] for deployment in deployments}
    assert pools == {names.WORK_POOL}


def test_the_flow_publishes_the_artifact_mlops_run_reads() -> None:
    assert flows.METRICS_ARTIFACT_KEY == names.METRICS_ARTIFACT_KEY
