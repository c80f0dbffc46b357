"""Security group rules, in whichever of the three forms they come (inline in a group, an ec2
``SecurityGroupRule``, a vpc ingress or egress rule), as one ``SgRule`` shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from properties import deps, items, number, of_type
from pulumi_policy.policy import PolicyResource
from resource_types import EGRESS_RULE, GROUP, GROUP_RULE, INGRESS_RULE

WORLD = ("0.0.0.0/0", "::/0")  # the internet, as a rule's source or a route's destination
RULE_TYPES = (GROUP, GROUP_RULE, INGRESS_RULE, EGRESS_RULE)  # the resources that declare rules


@dataclass(frozen=True)
class SgRule:
    """One security group rule, normalised from inline, ec2 rule or vpc rule resources."""

    direction: str  # ingress | egress
    protocol: str  # tcp, udp, icmp, ... or -1 for all
    from_port: int
    to_port: int
    cidrs: tuple[str, ...] = ()
    references_group: bool = False
    description: str = ""

    def covers(self, port: int) -> bool:
        return self.protocol == "-1" or self.from_port <= port <= self.to_port

    @property
    def single_tcp_port(self) -> int | None:
        if self.protocol == "tcp" and self.from_port == self.to_port:
            return self.from_port
        return None


def _protocol(value: Any) -> str:
    text = str(value).lower()
    return {"all": "-1", "6": "tcp", "17": "udp", "1": "icmp"}.get(text, text)


def _inline_rules(props: Mapping[str, Any]) -> list[SgRule]:
    return [
        SgRule(
            direction=direction,
            protocol=_protocol(rule.get("protocol")),
            from_port=number(rule.get("fromPort")),
            to_port=number(rule.get("toPort")),
            cidrs=tuple(items(rule.get("cidrBlocks")) + items(rule.get("ipv6CidrBlocks"))),
            references_group=bool(items(rule.get("securityGroups")) or rule.get("self")),
            description=rule.get("description") or "",
        )
        for direction in ("ingress", "egress")
        for rule in items(props.get(direction))
    ]


def rules_of(resource_type: str, props: Mapping[str, Any]) -> list[SgRule]:
    """The rules a security group or rule resource declares."""
    if resource_type == GROUP:
        return _inline_rules(props)
    if resource_type == GROUP_RULE:
        return [
            SgRule(
                direction=str(props.get("type")),
                protocol=_protocol(props.get("protocol")),
                from_port=number(props.get("fromPort")),
                to_port=number(props.get("toPort")),
                cidrs=tuple(items(props.get("cidrBlocks")) + items(props.get("ipv6CidrBlocks"))),
                references_group=bool(props.get("sourceSecurityGroupId") or props.get("self")),
                description=props.get("description") or "",
            )
        ]
    if resource_type in (INGRESS_RULE, EGRESS_RULE):
        return [
            SgRule(
                direction="ingress" if resource_type == INGRESS_RULE else "egress",
                protocol=_protocol(props.get("ipProtocol")),
                from_port=number(props.get("fromPort")),
                to_port=number(props.get("toPort")),
                cidrs=tuple(items(props.get("cidrIpv4")) + items(props.get("cidrIpv6"))),
                references_group=bool(props.get("referencedSecurityGroupId")),
                description=props.get("description") or "",
            )
        ]
    return []


def describe(rule: SgRule) -> str:
    ports = (
        "all ports" if rule.protocol == "-1" else f"{rule.protocol} {rule.from_port}-{rule.to_port}"
    )
    source = ", ".join(rule.cidrs) or ("a security group" if rule.references_group else "nothing")
    return f"{rule.direction} {ports} with {source}"


def group_rules(
    resources: Sequence[PolicyResource], group: PolicyResource, direction: str
) -> list[tuple[SgRule, PolicyResource]]:
    """A group's rules of one direction, inline or separate, with the resource declaring each."""
    found = [(r, group) for r in rules_of(GROUP, group.props) if r.direction == direction]
    for rule_resource in of_type(resources, GROUP_RULE, INGRESS_RULE, EGRESS_RULE):
        if group in deps(rule_resource, "securityGroupId"):
            found += [
                (r, rule_resource)
                for r in rules_of(rule_resource.resource_type, rule_resource.props)
                if r.direction == direction
            ]
    return found
