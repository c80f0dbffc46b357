"""The stack's Dask cluster on the booted hosts (the twin's stack has ``daskWorkers`` 1).

The control host runs the TLS-only scheduler and the worker host a Dask worker, from the units
hostboot renders for the Pulumi program; their TLS identity comes from Secrets Manager through
the units' own fetch step. A training run triggered by the operator, with the Dask engine and
the stack's scheduler address as its parameters, runs on the worker host and trains on the
cluster with the worker host's identity.
"""

from __future__ import annotations

import pytest
from hostboot.names import DASK_SCHEDULER_PORT

from tests.e2e.twin_api import metrics
from tests.hoststwin.hoststwin_api import HostsHandle

pytestmark = pytest.mark.hosts


def test_the_cluster_runs_with_the_identity_fetched_at_start_readable_by_its_units_only(
    hosts_twin: HostsHandle,
) -> None:
    assert "dask-scheduler.service" in hosts_twin.twin.units("control")
    assert "dask-worker.service" in hosts_twin.twin.units("worker-1")
    for host in ("control", "worker-1"):
        shown = hosts_twin.on_host(host, "stat", "-c", "%a %U %G %n", *(
            f"/etc/mlops/dask/{name}.pem" for name in ("ca", "cert", "key")
        ))  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        for line in shown.stdout.splitlines():
            assert line.startswith("640 root dask-tls "), line


def test_a_training_run_on_the_worker_trains_on_the_stacks_dask_cluster(
    deployed: HostsHandle,
) -> None:
    address = f"tls://{deployed.twin.node('control').address}:{DASK_SCHEDULER_PORT}"
    run = deployed.train("engine=dask", f"dask_address={address}")
    print(f"trigger -> completed Dask training run through the worker: {run.seconds:.0f} s")
    tags = {tag["key"]: tag["value"] for tag in run.mlflow_run["data"]["tags"]}
    assert tags["engine"] == "dask"
    assert 0 < metrics(run.mlflow_run)["rmse"] < metrics(run.mlflow_run)["baseline_rmse"]
    assert "challenger" in run.version.get("aliases", [])
