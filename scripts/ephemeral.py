"""``mlops ephemeral create|destroy|list|reap``: short-lived stacks made from the dev configuration.

An ephemeral stack is the dev stack's configuration with ``mlops-platform:environment`` set to
``ephemeral`` and ``mlops-platform:deletionProtection`` to false (the program refuses an
ephemeral stack with deletion protection; its bucket is emptied on destroy).

What a stack *is* must be readable wherever the command runs, including a CI job on another
machine where the stack's ``Pulumi.<name>.yaml`` does not exist (it is never committed). So
the kind is taken from the backend: the stack's ``environment`` output once it has been
deployed, and before that the stack tag ``mlops-platform:environment`` that ``create`` sets
when it initialises the stack. ``destroy`` refuses any stack whose kind, so read, is not
``ephemeral``, before it runs anything destructive; ``create`` refuses to reconfigure one.

Every ephemeral stack expires: ``create`` sets its ``expiresAt`` config (the program tags every
resource with it) and records it, with the creation time, as stack tags, where ``list`` and
``reap`` read them from any machine. Running ``create`` again extends the expiry. ``reap``
destroys the expired ones (a scheduled workflow runs it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scripts import cost
from scripts.common import NAMESPACE, OpsError, pulumi, stack_outputs

EPHEMERAL = "ephemeral"
ENVIRONMENT_KEY = f"{NAMESPACE}:environment"
DELETION_PROTECTION_KEY = f"{NAMESPACE}:deletionProtection"
EXPIRES_KEY = f"{NAMESPACE}:expiresAt"
CREATED_KEY = f"{NAMESPACE}:createdAt"
DEFAULT_TTL = timedelta(hours=24)
MAX_TTL = timedelta(days=30)
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


def clock() -> datetime:
    """The current time (UTC); tests replace it."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """A time as the stack config and tags hold it: 2026-12-01T09:00:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def create(
    name: str,
    announce: Callable[[str], None],
    ttl: timedelta = DEFAULT_TTL,
    settings: Mapping[str, str] | None = None,
) -> None:
    """Create (or update) ephemeral stack ``name`` from the dev configuration and deploy it.

    The stack expires ``ttl`` from now (also when it already existed: creating again extends).
    ``settings`` are further project config keys set over dev's (e.g. a restore drill's
    ``restoreFromSnapshot``).
    """
    check_name(name)
    if not timedelta(hours=1) <= ttl <= MAX_TTL:
        raise OpsError(f"an ephemeral stack lives 1 hour to {MAX_TTL.days} days; got {ttl}")
    now = clock()
    expires = iso(now + ttl)
    if stack_exists(name):
        _require_ephemeral(name, "update")
        announce(f"stack {name} exists and is ephemeral: updating it")
    else:
        pulumi("stack", "init", name, "--no-select")
        pulumi("stack", "tag", "set", ENVIRONMENT_KEY, EPHEMERAL, "--stack", name)
        pulumi("stack", "tag", "set", CREATED_KEY, iso(now), "--stack", name)
        announce(f"created stack {name}")
    pulumi("stack", "tag", "set", EXPIRES_KEY, expires, "--stack", name)
    # The configuration lives in Pulumi.<name>.yaml in this working tree only, so it is
    # (re)made from dev's every time: an ephemeral stack is dev's config by definition.
    pulumi("config", "cp", "--stack", SOURCE_STACK, "--dest", name)
    pulumi("config", "set", ENVIRONMENT_KEY, EPHEMERAL, "--stack", name)
    pulumi("config", "set", DELETION_PROTECTION_KEY, "false", "--stack", name)
    pulumi("config", "set", EXPIRES_KEY, expires, "--stack", name)
    for key, value in (settings or {}).items():
        pulumi("config", "set", f"{NAMESPACE}:{key}", value, "--stack", name)
    announce(f"deploying {name} (dev configuration, environment {EPHEMERAL}, expires {expires})")
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


@dataclass(frozen=True, kw_only=True)
class EphemeralStack:
    """What the backend records of one ephemeral stack."""

    name: str
    created: datetime | None
    expires: datetime | None

    def age(self, now: datetime) -> timedelta | None:
        """How long the stack has existed."""
        return now - self.created if self.created else None

    def expired(self, now: datetime) -> bool:
        """Past its expiry (a stack without one never expires on its own)."""
        return self.expires is not None and self.expires <= now


def ephemeral_stacks() -> list[EphemeralStack]:
    """The project's stacks tagged ephemeral, with their creation and expiry times."""
    try:
        listed = json.loads(pulumi("stack", "ls", "--json"))
    except json.JSONDecodeError:
        raise OpsError("`pulumi stack ls --json` did not print JSON") from None
    found = []
    for entry in listed:
        name = str(entry.get("name", "")).rsplit("/", 1)[-1] if isinstance(entry, dict) else ""
        if not name:
            continue
        tags = _tags(name)
        if tags.get(ENVIRONMENT_KEY) == EPHEMERAL:
            found.append(
                EphemeralStack(
                    name=name,
                    created=_time(tags.get(CREATED_KEY)),
                    expires=_time(tags.get(EXPIRES_KEY)),
                )
            )
    return found


def list_stacks(announce: Callable[[str], None]) -> None:
    """One line per ephemeral stack: age, expiry and the estimated cost so far."""
    stacks = ephemeral_stacks()
    if not stacks:
        announce("no ephemeral stacks")
        return
    hourly = hourly_estimate()
    now = clock()
    announce(f"{'stack':<32}  {'age':>8}  {'expires':<20}  {'cost so far':>11}")
    for stack in stacks:
        age = stack.age(now)
        hours = age.total_seconds() / 3600 if age else None
        expires = iso(stack.expires) if stack.expires else "never"
        if stack.expired(now):
            expires += " (expired)"
        announce(
            f"{stack.name:<32}  {_hours(hours):>8}  {expires:<20}  "
            f"{'unknown' if hours is None else f'${hours * hourly:.2f}':>11}"
        )
    announce(f"(estimate: ${hourly:.3f} an hour, dev's sizes as `mlops cost --stack dev` prices)")


def reap(announce: Callable[[str], None]) -> list[str]:
    """Destroy every expired ephemeral stack; return their names."""
    now = clock()
    expired = [stack.name for stack in ephemeral_stacks() if stack.expired(now)]
    if not expired:
        announce("no expired ephemeral stacks")
    for name in expired:
        destroy(name, announce)
    return expired


def hourly_estimate() -> float:
    """What an hour of an ephemeral stack costs on average: dev's sizes, ephemeral's rules."""
    settings = {**cost.stack_settings(SOURCE_STACK), "environment": EPHEMERAL}
    return cost.estimate(cost.sizes_of(SOURCE_STACK, settings)).hourly_usd


def _tags(name: str) -> dict[str, str]:
    try:
        tags = json.loads(pulumi("stack", "tag", "ls", "--json", "--stack", name))
    except json.JSONDecodeError:
        raise OpsError(
            f"`pulumi stack tag ls --json` for stack {name} did not print JSON"
        ) from None
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def _hours(hours: float | None) -> str:
    if hours is None:
        return "unknown"
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"
