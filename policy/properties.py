"""Reading resources as the pack receives them, and the stack settings a check depends on.

Resource checks read one resource's inputs, as ``pulumi preview`` sees them (camelCase,
numbers possibly floats, unset properties absent, read-only proxies instead of dicts). Stack
checks follow property dependencies between resources (a rule's ``securityGroupId`` depends on
its group; a database's ``password`` on the resource that generated it), so they need no
physical ids and most run at preview time.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hostboot.names import ENVIRONMENTS
from pulumi_policy.policy import PolicyResource

NAMESPACE = "mlops-platform"  # of the stack's config keys
STRICTEST = "prod"  # the environment kind whose rules apply when the stack does not say


@dataclass(frozen=True)
class Context:
    """What a check may depend on besides the resources: the stack's settings."""

    environment: str = STRICTEST
    service_ingress_cidrs: frozenset[str] = frozenset()

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"


# -- reading properties ---------------------------------------------------------------------


def items(value: Any) -> list[Any]:
    """A property that may be absent, one value or a list, as a list."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def plain(value: Any) -> Any:
    """A property as plain dicts and lists (the engine hands policies read-only proxies)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    return value


def number(value: Any, default: int = -1) -> int:
    """A number property (floats under the engine) as an int."""
    return default if value is None else int(value)


def document(value: Any) -> Mapping[str, Any]:
    """A JSON policy document given as text or as an object."""
    return json.loads(value) if isinstance(value, str) else value or {}


def statements(value: Any) -> list[Mapping[str, Any]]:
    return items(document(value).get("Statement"))


def deps(resource: PolicyResource, prop: str) -> list[PolicyResource]:
    """The resources a property of ``resource`` was computed from."""
    return list(resource.property_dependencies.get(prop, []))


def of_type(resources: Iterable[PolicyResource], *types: str) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type in types]


def configuring(
    resources: Sequence[PolicyResource], target: PolicyResource, resource_type: str, prop: str
) -> list[PolicyResource]:
    """Resources of a type whose ``prop`` depends on ``target`` (a bucket's parts, ...)."""
    return [r for r in of_type(resources, resource_type) if target in deps(r, prop)]


def user_data_text(props: Mapping[str, Any]) -> str:
    """A host's user data as text: ``userData``, or ``userDataBase64`` decoded (and gunzipped:
    cloud-init unpacks gzipped user data, so a secret could hide in it)."""
    packed = props.get("userDataBase64")
    if not packed:
        return str(props.get("userData") or "")
    try:
        raw = base64.b64decode(str(packed), validate=True)
        return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    except (binascii.Error, OSError, UnicodeDecodeError, EOFError):
        return f"<undecodable userDataBase64: {str(packed)[:40]}>"


# A resource check: (type, inputs, context) -> messages. A stack check: (every resource,
# context) -> (message, URN of the resource to blame).
ResourceCheck = Callable[[str, Mapping[str, Any], Context], Iterator[str]]
Finding = tuple[str, str]  # (message, urn)
StackCheck = Callable[[Sequence[PolicyResource], Context], Iterator[Finding]]

# -- the stack's settings ---------------------------------------------------------------------

ConfigReader = Callable[[str], str | None]


def stack_config(key: str) -> str | None:
    """A key of the stack's configuration, as the Pulumi CLI hands it to the policy pack."""
    import pulumi  # only when a policy runs: the pack process has the stack's config

    return pulumi.Config(NAMESPACE).get(key)


def _provider_environment(provider_props: Mapping[str, Any] | None) -> str | None:
    """The ``Environment`` default tag of an AWS provider (given as JSON text or an object)."""
    if not provider_props:
        return None
    default_tags = provider_props.get("defaultTags")
    tags = (document(default_tags) if default_tags else {}).get("tags") or {}
    return tags.get("Environment")


def context_for(read: ConfigReader, provider_props: Mapping[str, Any] | None = None) -> Context:
    """The stack's settings: environment kind (config, then provider tag, then prod) and CIDRs."""
    configured = read("environment") or _provider_environment(provider_props)
    cidrs = json.loads(read("serviceIngressCidrs") or "[]")
    known = configured if configured in ENVIRONMENTS else None
    return Context(
        environment=known or STRICTEST,
        service_ingress_cidrs=frozenset(cidrs),
    )
