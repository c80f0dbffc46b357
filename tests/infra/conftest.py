"""The program's runs as fixtures (the machinery is tests/support/program.py)."""

from __future__ import annotations

import pytest

from tests.support.program import STACKS, Harness, ProgramRun, program_run


@pytest.fixture(scope="session")
def harness() -> Harness:
    return Harness()


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    """The program's run for each example stack: dev, prod, ephemeral."""
    return program_run(request.param)
