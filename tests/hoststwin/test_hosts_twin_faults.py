"""Boot under faults: every host ends up serving.

NOT COLLECTED (the name does not match ``test_*.py``) until main has the bootstrap as a
retried oneshot unit (issue 9, defect 3, helper ``boot``): with today's one-shot ``runcmd``
bootstrap under ``set -e``, a refused package index leaves a host with no services for good.
Rename to ``test_hosts_twin_faults.py`` once that lands. The Secrets Manager and late
database faults need stand-in switches that are not built yet (see the branch's report).

Each test brings up a twin of its own: the session fixture's is healthy by construction.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.twin.hosts import HostsConfig, down, status, up

pytestmark = pytest.mark.hosts


def test_hosts_serve_after_the_package_index_refused_the_first_60_s(tmp_path: Path) -> None:
    config = HostsConfig(state_dir=tmp_path / "state", index_refuse_seconds=60)
    try:
        up(config, tmp_path / "mlops.env", print)
        lines, healthy = status(config.state_dir)
        assert healthy, "\n".join(lines)
    finally:
        down(config.state_dir)
