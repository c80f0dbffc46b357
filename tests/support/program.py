"""Run the Pulumi program (infra/) under mocks, once per example stack, and keep what it registered.

Tests assert on the collected registrations after the program has run (never inside an
``apply``, which might never run): see ``ProgramRun``. tests/infra takes the runs as fixtures
(``run``, ``harness``); tests/policy hands the same resources to the policy pack.
"""

from __future__ import annotations

import contextlib
import json
import runpy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hostboot
import yaml

from tests.support.pulumi_internals import run_under_mocks
from tests.support.pulumi_mocks import Mocks, Registered

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROJECT = "mlops-platform"
STACKS = ("dev", "prod", "ephemeral")
# An ephemeral stack has no example file: `mlops ephemeral create` copies dev's configuration
# and sets the environment kind.
EPHEMERAL_BASE = "dev"
EPHEMERAL_EXPIRY = "2026-12-01T09:00:00Z"


@dataclass
class ProgramRun:
    """Everything one run of the program registered, exported and rendered."""

    stack: str
    config: dict[str, str]
    mocks: Mocks
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    control_settings: list[hostboot.ControlHostSettings] = field(default_factory=list)
    worker_settings: list[hostboot.WorkerHostSettings] = field(default_factory=list)

    @property
    def environment(self) -> str:
        return self.config[f"{PROJECT}:environment"]

    @property
    def resources(self) -> list[Registered]:
        return self.mocks.resources

    def of_type(self, resource_type: str) -> list[Registered]:
        """Every registered resource of a type token (a test asserting on none fails here)."""
        found = [r for r in self.resources if r.type == resource_type]
        assert found, f"the {self.stack} program registered no {resource_type}"
        return found

    def one(self, resource_type: str) -> Registered:
        (found,) = self.of_type(resource_type)
        return found

    def by_id(self, resource_id: str) -> Registered:
        (found,) = [r for r in self.resources if r.id == resource_id]
        return found


def _config_text(value: object) -> str:
    """A config value as the Pulumi CLI hands it to the program (strings; JSON for lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def stack_config(stack: str, overrides: Mapping[str, object] | None = None) -> dict[str, str]:
    """Pulumi.yaml defaults, then Pulumi.<stack>.yaml, then ``overrides`` (as the CLI merges)."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    values: dict[str, object] = {
        f"{PROJECT}:{key}": spec["default"] for key, spec in project["config"].items()
    }
    example = EPHEMERAL_BASE if stack == "ephemeral" else stack
    values.update(yaml.safe_load((ROOT / f"Pulumi.{example}.yaml").read_text())["config"])
    if stack == "ephemeral":  # what `mlops ephemeral create` sets
        values[f"{PROJECT}:environment"] = "ephemeral"
        values[f"{PROJECT}:deletionProtection"] = False
        values[f"{PROJECT}:expiresAt"] = EPHEMERAL_EXPIRY
    values.update(overrides or {})
    return {key: _config_text(value) for key, value in values.items()}


@contextlib.contextmanager
def _recording_renderers(run: ProgramRun) -> Iterator[None]:
    """Record the settings the program hands the host-bootstrap renderer."""
    control, worker = hostboot.render_control_user_data, hostboot.render_worker_user_data

    def record_control(settings: hostboot.ControlHostSettings) -> str:
        run.control_settings.append(settings)
        return control(settings)

    def record_worker(settings: hostboot.WorkerHostSettings) -> str:
        run.worker_settings.append(settings)
        return worker(settings)

    hostboot.render_control_user_data = record_control
    hostboot.render_worker_user_data = record_worker
    try:
        yield
    finally:
        hostboot.render_control_user_data = control
        hostboot.render_worker_user_data = worker


def run_program(
    stack: str, config: Mapping[str, str] | None = None, mocks: Mocks | None = None
) -> ProgramRun:
    """Run infra/__main__.py for a stack under mocks, to completion, and return what it did."""
    config = dict(config if config is not None else stack_config(stack))
    mocks = mocks or Mocks(config.get("aws:region", "us-east-1"), stack=stack)
    run = ProgramRun(stack=stack, config=config, mocks=mocks)

    def main() -> None:
        runpy.run_path(str(INFRA / "__main__.py"), run_name="__main__")

    with _recording_renderers(run):
        outputs = run_under_mocks(
            main, project=PROJECT, stack=stack, config=config, mocks=mocks, on_register=mocks.see
        )
    run.outputs = {name: value for name, (value, _) in outputs.items()}
    run.secret_outputs = {name for name, (_, secret) in outputs.items() if secret}
    return run


_RUNS: dict[str, ProgramRun] = {}


def program_run(stack: str) -> ProgramRun:
    """The (cached) run of an example stack."""
    if stack not in _RUNS:
        _RUNS[stack] = run_program(stack)
    return _RUNS[stack]


class Harness:
    """Runs the program the way a test needs (tests/infra's ``harness`` fixture)."""

    root = ROOT
    stacks = STACKS

    config = staticmethod(stack_config)
    run = staticmethod(run_program)
    cached = staticmethod(program_run)

    @staticmethod
    def mocks(stack: str = "dev", **options: Any) -> Mocks:
        """Mocks for us-east-1; ``options``: ``unoffered_zones``, ``tamper``."""
        return Mocks("us-east-1", stack=stack, **options)

    @staticmethod
    def empty_run(stack: str = "dev") -> ProgramRun:
        """A run of nothing: what a check sees if the program registered no resources."""
        return ProgramRun(stack=stack, config=stack_config(stack), mocks=Harness.mocks(stack))
