"""Run the policy pack's validations without the Pulumi CLI, the way the CLI's analyzer does.

Resources come from the mocked program run (``tests.support.program``, so its ``Mocks`` stay
the one mock of the project): each resource validation gets one resource's inputs behind
pulumi-policy's unknown-checking proxy and its AWS provider; each stack validation gets every
resource with its outputs and property dependencies. The pack's objects are built as
pulumi-policy's analyzer server builds them (``PolicyResource``, ``PolicyResourceOptions``,
``unknown_checking_proxy``; checked against pulumi-policy 1.21.0).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import rules  # the pack's rules table (policy/; never policy/__main__.py, which starts a server)
from properties import NAMESPACE, ConfigReader
from pulumi.runtime import rpc
from pulumi_policy import (
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
)
from pulumi_policy.proxy import unknown_checking_proxy

from tests.support.program import ProgramRun, run_program, stack_config


@dataclass
class Declared:
    """A resource as the analyzer sees it (mutable, so tests can break it)."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    deps: dict[str, list[str]] = field(default_factory=dict)  # property -> URNs
    provider: str | None = None  # the provider's URN
    dependencies: list[str] = field(default_factory=list)  # every URN it waits for
    delete_before_replace: bool = False

    def set(self, **changes: Any) -> None:
        """Change properties as the program would (inputs) and the provider would echo them."""
        self.inputs.update(changes)
        self.outputs.update(changes)


@dataclass(frozen=True)
class Violation:
    policy: str
    message: str
    urn: str | None


@dataclass
class Stack:
    """A stack's resources and configuration, as the policy pack receives them."""

    resources: list[Declared]
    config: dict[str, str]

    def find(self, resource_type: str, name_part: str = "") -> Declared:
        (found,) = [r for r in self.of_type(resource_type) if name_part in r.name]
        return found

    def of_type(self, resource_type: str) -> list[Declared]:
        return [r for r in self.resources if r.type == resource_type]

    def read_config(self, key: str) -> str | None:
        return self.config.get(f"{NAMESPACE}:{key}")


def stack_of(run: ProgramRun) -> Stack:
    """The resources of a mocked program run (components left out: the engine analyses those
    too, but no policy applies to them)."""
    providers = {
        r.id: r.engine.urn for r in run.resources if r.type.startswith("pulumi:providers:")
    }
    resources = [
        Declared(
            type=r.type,
            name=r.name,
            urn=r.engine.urn,
            inputs={k: rpc.unwrap_rpc_secret(v) for k, v in r.inputs.items()},
            outputs=dict(r.state),
            deps={k: list(v) for k, v in r.engine.property_dependencies.items()},
            provider=providers.get(r.provider.rsplit("::", 1)[1]) if r.provider else None,
            dependencies=list(r.engine.dependencies),
            delete_before_replace=r.engine.delete_before_replace,
        )
        for r in run.resources
    ]
    return Stack(copy.deepcopy(resources), dict(run.config))


def evaluate(stack: Stack, read: ConfigReader | None = None) -> list[Violation]:
    """Every violation the pack's policies report for the stack."""
    read = read or stack.read_config
    by_urn = {r.urn: r for r in stack.resources}
    providers = {
        r.urn: PolicyProviderResource(r.type, unknown_checking_proxy(r.inputs), r.urn, r.name)
        for r in stack.resources
        if r.type.startswith("pulumi:providers:")
    }
    options = {
        r.urn: PolicyResourceOptions(
            False, [], r.delete_before_replace, [], PolicyCustomTimeouts(0, 0, 0), []
        )
        for r in stack.resources
    }
    stack_resources = {
        r.urn: PolicyResource(
            r.type,
            unknown_checking_proxy(r.outputs),
            r.urn,
            r.name,
            options[r.urn],
            providers.get(r.provider or ""),
            None,
            [],
            {},
        )
        for r in stack.resources
    }
    for urn, resource in stack_resources.items():
        resource.dependencies = [
            stack_resources[u] for u in by_urn[urn].dependencies if u in stack_resources
        ]
        for prop, urns in by_urn[urn].deps.items():
            resource.property_dependencies[prop] = [
                stack_resources[u] for u in urns if u in stack_resources
            ]

    found: list[Violation] = []
    for policy in rules.policies(read):

        def report(message: str, urn: str | None = None, name: str = policy.name) -> None:
            found.append(Violation(name, message, urn))

        if isinstance(policy, ResourceValidationPolicy):
            for r in stack.resources:
                args = ResourceValidationArgs(
                    r.type,
                    unknown_checking_proxy(copy.deepcopy(r.inputs)),
                    r.urn,
                    r.name,
                    options[r.urn],
                    providers.get(r.provider or ""),
                )
                policy.validate(args, report)
        else:
            assert isinstance(policy, StackValidationPolicy)
            policy.validate(StackValidationArgs(list(stack_resources.values())), report)
    return found


def policy_names(violations: Sequence[Violation]) -> set[str]:
    return {v.policy for v in violations}


_STACKS: dict[str, Stack] = {}
# Not an example stack: dev with a Dask cluster (two worker hosts, one a Dask worker).
DASK_STACK = "dev-dask"
DASK_OVERRIDES = {f"{NAMESPACE}:workerCount": 2, f"{NAMESPACE}:daskWorkers": 1}


def program_stack(name: str) -> Stack:
    """A fresh copy of an example stack's resources, or ``DASK_STACK``'s (the program runs
    once per stack)."""
    if name not in _STACKS:
        if name == DASK_STACK:
            run = run_program("dev", stack_config("dev", DASK_OVERRIDES))
        else:
            run = run_program(name)
        _STACKS[name] = stack_of(run)
    return copy.deepcopy(_STACKS[name])
