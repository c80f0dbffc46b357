"""Boot under faults: every host ends up serving.

On the session's twin, after the healthy boot: a worker is replaced by a fresh instance (an
empty disk, the same user data) while the package index refuses connections, as PyPI or the
NAT route can be missing for a while when a host boots. Its bootstrap fails, says so, retries
with a pause, and the worker serves once the index answers, with no one stepping in.
"""

from __future__ import annotations

import time

import pytest

from tests.hoststwin.hoststwin_api import HostsHandle

pytestmark = pytest.mark.hosts
BOOTSTRAP = "mlops-bootstrap.service"
# From a fresh container to the bootstrap's first pip install: cloud-init, the virtualenv.
FIRST_ATTEMPT_SECONDS = 600.0


def test_a_worker_serves_after_the_package_index_refused_its_bootstrap(
    hosts_twin: HostsHandle,
) -> None:
    twin = hosts_twin.twin
    twin.stop_package_index()
    started = time.monotonic()
    twin.replace("worker-1", wait=False)
    try:
        deadline = time.monotonic() + FIRST_ATTEMPT_SECONDS
        while "attempt 1 failed; retrying in" not in hosts_twin.journal("worker-1", BOOTSTRAP):
            assert time.monotonic() < deadline, hosts_twin.journal("worker-1", BOOTSTRAP)
            time.sleep(2.0)
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
