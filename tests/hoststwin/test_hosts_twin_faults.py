"""Boot under faults: every host ends up serving, with no one stepping in.

On the session's twin, after the healthy boot, hosts are replaced by fresh instances (an
empty disk, the same user data) while what they need at boot fails:

- a worker, while the package index refuses connections (PyPI or the NAT route missing for
  a while): its bootstrap fails, says so, and retries with a pause;
- the control host, while Secrets Manager refuses to read one of its secrets and then the
  database refuses connections (RDS rebooting or still being created): its boot step says
  what it waits for and retries each, and the control host serves the same tracking and
  orchestration state once both answer.

Each fault is held until the host's journal shows it was met, so each retry path runs.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hostboot.names import POSTGRES_PORT

from scripts.twin import hostnet
from tests.e2e.twin_api import Mlflow, TrainingRun
from tests.hoststwin.hoststwin_api import OPERATOR_NAMESPACE, HostsHandle

pytestmark = pytest.mark.hosts
BOOTSTRAP = "mlops-bootstrap.service"
SECRET = "mlflow_admin_password"  # read at every control host's boot
# From a fresh container to the bootstrap's first pip install: cloud-init, the virtualenv.
FIRST_ATTEMPT_SECONDS = 600.0


def wait_for_journal(hosts_twin: HostsHandle, host: str, line: str) -> None:
    """Wait until ``line`` is in ``host``'s bootstrap journal (its fault was met)."""
    deadline = time.monotonic() + FIRST_ATTEMPT_SECONDS
    while line not in hosts_twin.journal(host, BOOTSTRAP):
        assert time.monotonic() < deadline, hosts_twin.journal(host, BOOTSTRAP)
        time.sleep(2.0)


def test_a_worker_serves_after_the_package_index_refused_its_bootstrap(
    hosts_twin: HostsHandle,
) -> None:
    twin = hosts_twin.twin
    twin.stop_package_index()
    started = time.monotonic()
    twin.replace("worker-1", wait=False)
    try:
        wait_for_journal(hosts_twin, "worker-1", "attempt 1 failed; retrying in")
    finally:
        twin.start_package_index(0)  # the index answers again
    refused = time.monotonic() - started
    twin.wait_hosts(time.monotonic(), only=("worker-1",))
    print(f"worker-1 replaced, the index down for its first {refused:.0f} s: serving after "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip

    journal = hosts_twin.journal("worker-1", BOOTSTRAP)
    assert "failed (exit 1): installing pip from" in journal, journal
    assert "bootstrapped after" in journal, journal
    assert "bootstrapped after 1 attempt" not in journal, journal
    smoke = hosts_twin.mlops("smoke", "--wait", "120")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr


def test_the_control_host_serves_after_secrets_manager_and_the_database_refused_its_boot(
    deployed: HostsHandle, trained: TrainingRun
) -> None:
    twin = deployed.twin
    database = f"{twin.node('db').address}:{POSTGRES_PORT}"
    started = time.monotonic()
    twin.hide_secret(SECRET)
    twin.stop_database()
    try:
        try:
            twin.replace("control", wait=False)
            wait_for_journal(deployed, "control", f"boot: reading secret {SECRET} failed")
        finally:
            twin.restore_secret(SECRET)
        wait_for_journal(deployed, "control", f"boot: connecting to {database} failed")
    finally:
        twin.run_database()
    refused = time.monotonic() - started
    twin.wait_hosts(time.monotonic(), only=("control",))
    print(f"control replaced, a secret and then the database refused for its first "
          f"{refused:.0f} s: serving after {time.monotonic() - started:.0f} s")  # fmt: skip

    journal = deployed.journal("control", BOOTSTRAP)
    assert "marked deleted" in journal, journal  # Secrets Manager's own refusal, logged
    assert "bootstrapped after" in journal, journal
    smoke = deployed.mlops("smoke", "--wait", "180")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    # The new instance serves what the old one tracked: it is all in the database and bucket.
    version = trained.version

    def read_back() -> tuple[dict[str, Any], dict[str, Any]]:
        with Mlflow.of(deployed.env) as mlflow:
            run = mlflow.get("runs/get", run_id=trained.run_id)["run"]
            return run, mlflow.version(version["name"], version["version"])

    run, version_now = hostnet.inside(OPERATOR_NAMESPACE, read_back)
    assert run["info"]["status"] == "FINISHED"
    assert version_now["run_id"] == trained.run_id
