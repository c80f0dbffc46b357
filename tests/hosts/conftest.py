"""Fixtures: each host's rendered user data, taken apart (see rendered_hosts.py)."""

from __future__ import annotations

import hostboot
import pytest

from tests.hosts.rendered_hosts import CONTROL, WORKER, Rendered, take_apart


@pytest.fixture(scope="session")
def control() -> Rendered:
    """The control host's rendered user data."""
    return take_apart(hostboot.render_control_user_data(CONTROL))


@pytest.fixture(scope="session")
def worker() -> Rendered:
    """A worker host's rendered user data."""
    return take_apart(hostboot.render_worker_user_data(WORKER))


@pytest.fixture(params=["control", "worker"])
def host(request: pytest.FixtureRequest) -> Rendered:
    """Each host's rendered user data in turn."""
    return request.getfixturevalue(request.param)
