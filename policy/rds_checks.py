"""RDS: the database is private, encrypted, backed up, protected in prod, generated a password,
forces TLS and admits only the control host's group (invariants 8-15)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hostboot.names import POSTGRES_PORT
from properties import Context, Finding, deps, items, number, of_type
from pulumi_policy.policy import PolicyResource
from resource_types import (
    ASSOCIATION,
    DB,
    DB_PARAMS,
    GROUP,
    INTERNET_GATEWAY,
    RANDOM_PASSWORD,
    ROUTE,
    ROUTE_TABLE,
    SUBNET,
)
from sg_rules import describe, group_rules


def rds_private(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if props.get("publiclyAccessible") is True:
        yield "publiclyAccessible must be false"


def rds_encrypted(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if props.get("storageEncrypted") is not True:
        yield "storageEncrypted must be true"


def rds_backups(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    least = 7 if ctx.is_prod else 1
    days = props.get("backupRetentionPeriod")
    if days is None or number(days) < least:
        yield f"backupRetentionPeriod must be at least {least} in {ctx.environment}; got {days!r}"


def rds_deletion_protection(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    protected = props.get("deletionProtection") is True
    if ctx.is_prod and not protected:
        yield "deletionProtection must be true in prod"
    if ctx.environment == "ephemeral" and protected:
        yield "deletionProtection must be false in an ephemeral stack"


def rds_final_snapshot(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    skip = props.get("skipFinalSnapshot") is True
    if ctx.is_prod and (skip or not props.get("finalSnapshotIdentifier")):
        yield "prod needs skipFinalSnapshot false and a finalSnapshotIdentifier"
    if not ctx.is_prod and not skip:
        yield f"skipFinalSnapshot must be true in {ctx.environment}"


def rds_resilient(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if ctx.is_prod and props.get("multiAz") is not True:
        yield "multiAz must be true in prod"
    if props.get("autoMinorVersionUpgrade") is False:
        yield "autoMinorVersionUpgrade must not be false"


def _public_subnets(resources: Sequence[PolicyResource]) -> set[str]:
    """URNs of subnets with a route to an internet gateway (or auto-assigned public IPs)."""
    internet_tables = {
        table.urn
        for route in of_type(resources, ROUTE)
        if of_type(deps(route, "gatewayId"), INTERNET_GATEWAY)
        for table in deps(route, "routeTableId")
    } | {
        table.urn
        for table in of_type(resources, ROUTE_TABLE)
        if of_type(deps(table, "routes"), INTERNET_GATEWAY)
    }
    routed = {
        subnet.urn
        for association in of_type(resources, ASSOCIATION)
        if {t.urn for t in deps(association, "routeTableId")} & internet_tables
        for subnet in deps(association, "subnetId")
    }
    return routed | {
        s.urn for s in of_type(resources, SUBNET) if s.props.get("mapPublicIpOnLaunch")
    }


def database_in_private_subnets(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    public = _public_subnets(resources)
    for db in of_type(resources, DB):
        for group in deps(db, "dbSubnetGroupName"):
            for subnet in deps(group, "subnetIds"):
                if subnet.urn in public:
                    yield f"database {db.name} uses public subnet {subnet.name}", db.urn


def database_password_generated(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    for db in of_type(resources, DB):
        if db.props.get("manageMasterUserPassword") is True:
            continue
        if not of_type(deps(db, "password"), RANDOM_PASSWORD):
            yield f"database {db.name}: the master password must come from a generator", db.urn


def database_groups(resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    return [
        g for db in of_type(resources, DB) for g in of_type(deps(db, "vpcSecurityGroupIds"), GROUP)
    ]


def database_admits_control_group_only(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    for group in database_groups(resources):
        for rule, declared_by in group_rules(resources, group, "ingress"):
            if rule.cidrs or not rule.references_group or rule.single_tcp_port != POSTGRES_PORT:
                yield (
                    f"database group {group.name} admits only {POSTGRES_PORT} from the control "
                    f"host's group: {describe(rule)}",
                    declared_by.urn,
                )


def database_forces_tls(resources: Sequence[PolicyResource], ctx: Context) -> Iterator[Finding]:
    for db in of_type(resources, DB):
        groups = of_type(deps(db, "parameterGroupName"), DB_PARAMS)
        forced = any(
            p.get("name") == "rds.force_ssl" and str(p.get("value")) == "1"
            for g in groups
            for p in items(g.props.get("parameters"))
        )
        if not forced:
            yield f"database {db.name} needs a parameter group with rds.force_ssl=1", db.urn
