"""Fixtures of the policy pack tests (the machinery is tests/support/policy_pack.py)."""

from __future__ import annotations

import pytest

from tests.support.policy_pack import Stack, program_stack
from tests.support.program import STACKS


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> Stack:
    """The resources of each example stack (dev, prod, ephemeral) as the pack receives them."""
    return program_stack(request.param)
