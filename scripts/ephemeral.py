"""``mlops ephemeral create|destroy NAME``: short-lived stacks made from the dev configuration.

An ephemeral stack is the dev stack's configuration with ``mlops-platform:environment`` set to
``ephemeral`` and ``mlops-platform:deletionProtection`` to false (the program refuses an
ephemeral stack with deletion protection; its bucket is emptied on destroy).

What a stack *is* must be readable wherever the command runs, including a CI job on another
machine where the stack's ``Pulumi.<name>.yaml`` does not exist (it is never committed). So
the kind is taken from the backend: the stack's ``environment`` output once it has been
deployed, and before that the stack tag ``mlops-platform:environment`` that ``create`` sets
when it initialises the stack. ``destroy`` refuses any stack whose kind, so read, is not
``ephemeral``, before it runs anything destructive; ``create`` refuses to reconfigure one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from scripts.common import OpsError, pulumi, stack_outputs

EPHEMERAL = "ephemeral"
ENVIRONMENT_KEY = "mlops-platform:environment"
DELETION_PROTECTION_KEY = "mlops-platform:deletionProtection"
SOURCE_STACK = "dev"
_RESERVED = frozenset({"dev", "prod"})
_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]")


def check_name(name: str) -> str:
    """Return ``name`` if it may name an ephemeral stack, else raise an OpsError saying why."""
    if not _NAME.fullmatch(name) or "--" in name:
        raise OpsError(
            f"ephemeral stack name {name!r} is not valid: use 2 to 32 lower-case letters, "
            "digits and single hyphens, starting with a letter and not ending with a hyphen "
            "(e.g. pr-42)"
        )
    if name in _RESERVED:
        raise OpsError(f"{name!r} names a long-lived stack; pick another name (e.g. pr-42)")
    return name


def stack_exists(name: str) -> bool:
    """Whether the project has a stack called ``name`` (plain or org-qualified)."""
    try:
        stacks = json.loads(pulumi("stack", "ls", "--json"))
    except json.JSONDecodeError:
        raise OpsError("`pulumi stack ls --json` did not print JSON") from None
    names = {str(entry.get("name", "")) for entry in stacks if isinstance(entry, dict)}
    return any(found == name or found.endswith(f"/{name}") for found in names)


def stack_kind(name: str) -> str | None:
    """The environment kind the backend records for ``name`` (see the module docstring)."""
    kind = stack_outputs(name).get("environment")
    if isinstance(kind, str) and kind:
        return kind
    try:
        tag = pulumi("stack", "tag", "get", ENVIRONMENT_KEY, "--stack", name).strip()
    except OpsError:
        return None
    return tag or None


def _require_ephemeral(name: str, action: str) -> None:
    """Raise an OpsError unless the backend records ``name`` as an ephemeral stack."""
    kind = stack_kind(name)
    if kind != EPHEMERAL:
        recorded = f"environment {kind!r}" if kind else "no environment kind"
        raise OpsError(
            f"refusing to {action} stack {name}: it records {recorded}, not {EPHEMERAL!r} "
            f"(neither an `environment` output nor a {ENVIRONMENT_KEY} stack tag says "
            f"{EPHEMERAL}); only stacks made by `mlops ephemeral create` are handled here"
        )


def create(name: str, announce: Callable[[str], None]) -> None:
    """Create (or update) ephemeral stack ``name`` from the dev configuration and deploy it."""
    check_name(name)
    if stack_exists(name):
        _require_ephemeral(name, "update")
        announce(f"stack {name} exists and is ephemeral: updating it")
    else:
        pulumi("stack", "init", name, "--no-select")
        pulumi("stack", "tag", "set", ENVIRONMENT_KEY, EPHEMERAL, "--stack", name)
        announce(f"created stack {name}")
    # The configuration lives in Pulumi.<name>.yaml in this working tree only, so it is
    # (re)made from dev's every time: an ephemeral stack is dev's config by definition.
    pulumi("config", "cp", "--stack", SOURCE_STACK, "--dest", name)
    pulumi("config", "set", ENVIRONMENT_KEY, EPHEMERAL, "--stack", name)
    pulumi("config", "set", DELETION_PROTECTION_KEY, "false", "--stack", name)
    announce(f"deploying {name} (dev configuration, environment {EPHEMERAL})")
    pulumi("up", "--yes", "--stack", name, capture=False)


def destroy(name: str, announce: Callable[[str], None]) -> None:
    """Destroy ephemeral stack ``name`` and remove it; a missing stack is nothing to do."""
    check_name(name)
    if not stack_exists(name):
        announce(f"no stack {name}: nothing to destroy")
        return
    _require_ephemeral(name, "destroy")
    announce(f"destroying {name}")
    pulumi("destroy", "--yes", "--stack", name, capture=False)
    pulumi("stack", "rm", name, "--yes")
    announce(f"stack {name} destroyed and removed")
