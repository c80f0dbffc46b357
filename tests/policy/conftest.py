"""Fixtures of the policy pack tests (the machinery is in pack_harness.py)."""

from __future__ import annotations

import pytest
from pack_harness import STACKS, Stack, program_stack


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> Stack:
    """The resources of each example stack (dev, prod, ephemeral) as the pack receives them."""
    return program_stack(request.param)
