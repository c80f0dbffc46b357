"""Pulumi's private API, in one function: run a program to completion under mocks.

Everything else in tests/support uses Pulumi's public API (``pulumi.runtime.Mocks``,
``MockResourceArgs``, the exported ``pulumi.runtime.rpc`` secret helpers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto.resource_pb2 import RegisterResourceRequest
from pulumi.runtime.settings import get_root_resource, reset_options
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

# (value, whether it is secret) of each stack output
StackOutputs = dict[str, tuple[Any, bool]]
Registration = Callable[[RegisterResourceRequest, str], None]  # (request, URN)


def run_under_mocks(
    main: Callable[[], None],
    *,
    project: str,
    stack: str,
    config: Mapping[str, str],
    mocks: pulumi.runtime.Mocks,
    on_register: Registration,
) -> StackOutputs:
    """Run ``main`` (the program) as ``pulumi up`` would, with ``mocks`` as the providers; call
    ``on_register`` with each registration request, one at a time, before the mocks see it;
    return the stack's outputs once every registration and output has resolved.

    Why private calls: the public ``pulumi.runtime.test`` decorator runs one test function and
    cannot hand back the stack's outputs or whether each is secret, nor run a second program
    (another stack, another configuration) in the same process with fresh settings; and the
    stock mock monitor does not tell the mocks what the engine sees of a registration (URN,
    ``protect``, ``ignoreChanges``, ``deleteBeforeReplace``, dependencies, property
    dependencies, ``additionalSecretOutputs``), which the tests assert on. So this function
    resets the runtime's settings (``reset_options``), subclasses ``MockMonitor`` (its
    ``RegisterResource`` and ``make_urn``), runs the program with ``run_pulumi_func`` (which
    waits for every outstanding RPC) through ``_sync_await``, and reads the root stack
    resource's ``outputs``. Checked against pulumi 3.272.0 (the version constraints.txt pins);
    a Pulumi upgrade that breaks a test here is the place to look first.
    """

    class RecordingMonitor(MockMonitor):
        """The mock monitor, handing each registration to ``on_register`` first. Registrations
        are serialised so that ``on_register`` and the mocks see the same resource."""

        def __init__(self) -> None:
            super().__init__(mocks)
            self._lock = threading.Lock()

        def RegisterResource(self, request: RegisterResourceRequest) -> Any:  # gRPC name
            with self._lock:
                on_register(request, self.make_urn(request.parent, request.type, request.name))
                return super().RegisterResource(request)

    outputs: StackOutputs = {}

    async def resolve_outputs() -> None:
        root = get_root_resource()
        assert root is not None
        for name, value in root.outputs.items():  # type: ignore[attr-defined]
            output = pulumi.Output.from_input(value)
            outputs[name] = (await output.future(), await output.is_secret())

    def program() -> Any:
        main()
        return resolve_outputs()

    reset_options(project=project, stack=stack, preview=False)
    pulumi.runtime.set_all_config(dict(config))
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=False, monitor=RecordingMonitor()
    )
    _sync_await(run_pulumi_func(program))
    return outputs
