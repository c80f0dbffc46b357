"""Security groups: no ingress from the internet, from outside private space or on SSH; the
service ports only from groups and configured CIDRs; the Dask ports only from groups, the
dashboard's never; every rule described; egress limited; the default group empty; one rule
style per group (invariants 17, 22-27, 37, 43, 73)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hostboot.names import (
    DASK_DASHBOARD_PORT,
    DASK_NANNY_PORTS,
    DASK_PEER_PORTS,
    DASK_SCHEDULER_PORT,
    DASK_TRACKER_PORT,
    DASK_WORKER_PORTS,
    MLFLOW_PORT,
    POSTGRES_PORT,
    PREFECT_PORT,
)
from properties import Context, Finding, configuring, items, of_type
from pulumi_policy.policy import PolicyResource
from resource_types import EGRESS_RULE, GROUP, GROUP_RULE, INGRESS_RULE
from sg_rules import WORLD, SgRule, describe, rules_of

SERVICE_PORTS = (MLFLOW_PORT, PREFECT_PORT)
HTTPS_PORT = 443
# The Dask cluster's ports (first, last), which only the stack's groups may reach (73).
DASK_PORT_RANGES = (
    (DASK_SCHEDULER_PORT, DASK_SCHEDULER_PORT),
    (DASK_TRACKER_PORT, DASK_TRACKER_PORT),
    DASK_WORKER_PORTS,
    DASK_NANNY_PORTS,
    DASK_PEER_PORTS,
)

# Ingress may come only from private address space (invariant 37): RFC 1918 and RFC 6598.
# infra/config.py holds the same list for the config check; tests/policy checks they agree.
PRIVATE_INGRESS_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")


def _is_world(cidr: str) -> bool:
    return cidr in WORLD or ipaddress.ip_network(cidr, strict=False).prefixlen == 0


def sg_no_world_ingress(
    resource_type: str, props: Mapping[str, Any], ctx: Context
) -> Iterator[str]:
    for rule in rules_of(resource_type, props):
        if rule.direction == "ingress" and any(_is_world(c) for c in rule.cidrs):
            yield f"ingress from the internet: {describe(rule)}"
        elif rule.direction == "ingress" and rule.protocol == "-1" and rule.cidrs:
            yield f"ingress of every protocol from a CIDR: {describe(rule)}"


def _outside_private_ranges(cidr: str) -> bool:
    """Whether a rule's CIDR is anything but a network inside ``PRIVATE_INGRESS_RANGES``."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return True
    return not isinstance(network, ipaddress.IPv4Network) or not any(
        network.subnet_of(ipaddress.IPv4Network(r)) for r in PRIVATE_INGRESS_RANGES
    )


def sg_private_ingress_only(
    resource_type: str, props: Mapping[str, Any], ctx: Context
) -> Iterator[str]:
    """Whatever the stack config lists: a public range split in pieces is still the internet."""
    for rule in rules_of(resource_type, props):
        public = [c for c in rule.cidrs if _outside_private_ranges(c)]
        if rule.direction == "ingress" and public:
            yield (
                f"ingress from {', '.join(public)}, outside the private ranges "
                f"{', '.join(PRIVATE_INGRESS_RANGES)}: {describe(rule)}"
            )


def sg_default_group_empty(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    """The VPC's default group is taken over only to empty it: nothing may use it."""
    for direction in ("ingress", "egress"):
        if items(props.get(direction)):
            yield f"the VPC's default security group has {direction} rules: leave it empty"


def sg_no_ssh(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for rule in rules_of(resource_type, props):
        if rule.direction == "ingress" and rule.covers(22):
            yield f"port 22 ingress (SSM replaces SSH): {describe(rule)}"


def sg_service_ports(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for rule in rules_of(resource_type, props):
        if rule.direction != "ingress" or not any(rule.covers(p) for p in SERVICE_PORTS):
            continue
        unlisted = set(rule.cidrs) - ctx.service_ingress_cidrs
        if unlisted:
            yield f"MLflow/Prefect ingress from CIDRs not configured: {sorted(unlisted)}"


def _overlaps(rule: SgRule, ports: tuple[int, int]) -> bool:
    return rule.protocol == "-1" or (rule.from_port <= ports[1] and ports[0] <= rule.to_port)


def sg_dask_ports(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    """73: the Dask ports admit only the stack's groups (TLS aside, a scheduler runs whatever
    its clients send); the dashboard listens on loopback and is reached through SSM only."""
    for rule in rules_of(resource_type, props):
        if rule.direction != "ingress":
            continue
        if rule.covers(DASK_DASHBOARD_PORT):
            yield f"the Dask dashboard port {DASK_DASHBOARD_PORT} is opened: {describe(rule)}"
        dask = [ports for ports in DASK_PORT_RANGES if _overlaps(rule, ports)]
        if dask and rule.cidrs:
            yield f"Dask ports {dask} admit CIDRs, not only the stack's groups: {describe(rule)}"


def sg_described(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if resource_type == GROUP and str(props.get("description") or "").strip() in (
        "",
        "Managed by Pulumi",
    ):
        yield "the security group needs a description"
    for rule in rules_of(resource_type, props):
        if not rule.description.strip():
            yield f"undescribed rule: {describe(rule)}"


def sg_egress_limited(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    allowed_to_groups = (POSTGRES_PORT, *SERVICE_PORTS)
    for rule in rules_of(resource_type, props):
        if rule.direction != "egress":
            continue
        port = rule.single_tcp_port
        if rule.cidrs and port != HTTPS_PORT:
            yield f"egress to CIDRs other than HTTPS: {describe(rule)}"
        inside_dask = any(
            rule.protocol == "tcp" and first <= rule.from_port <= rule.to_port <= last
            for first, last in DASK_PORT_RANGES
        )
        if rule.references_group and port not in allowed_to_groups and not inside_dask:
            yield (
                f"egress to a group on a port other than {allowed_to_groups} and the Dask "
                f"ports {DASK_PORT_RANGES}: {describe(rule)}"
            )
        if not rule.cidrs and not rule.references_group:
            yield f"egress to an unrecognised destination: {describe(rule)}"


def _shape(rule: SgRule) -> tuple[object, ...]:
    """What makes two rules the same rule, whichever form declares them."""
    return (
        rule.direction,
        rule.protocol,
        rule.from_port,
        rule.to_port,
        rule.cidrs,
        rule.references_group,
    )


def groups_do_not_mix_rule_styles(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    """A group's outputs list every rule it has (after a refresh, those of rule resources too):
    an output rule that no rule resource declares is an inline one."""
    for group in of_type(resources, GROUP):
        separate = [
            rule
            for rule_type in (GROUP_RULE, INGRESS_RULE, EGRESS_RULE)
            for rule in configuring(resources, group, rule_type, "securityGroupId")
        ]
        if not separate:
            continue
        declared = {_shape(r) for s in separate for r in rules_of(s.resource_type, s.props)}
        for inline in rules_of(GROUP, group.props):
            if _shape(inline) not in declared:
                yield (
                    f"group {group.name} has inline rule ({describe(inline)}) and rule "
                    f"resources ({', '.join(s.name for s in separate)})",
                    group.urn,
                )
