"""EC2: the hosts' metadata options, addresses, volumes, identity and user data, and what a
host must wait for at boot, and what the control host's servers wait for (invariants 16-21, 48,
50, 52, 57-62, 72, 74).

The user data checks read what the host will run, rendered by infra/hostboot: no key in it,
database TLS verified, the bootstrap retried, only hashed installs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from properties import Context, Finding, configuring, deps, items, number, of_type, user_data_text
from pulumi_policy.policy import PolicyResource
from rds_checks import database_groups
from resource_types import (
    ASSOCIATION,
    ATTACHMENTS,
    BUCKET_OBJECT,
    GROUP,
    GROUP_RULE,
    INGRESS_RULE,
    INSTANCE,
    INSTANCE_PROFILE,
    LAUNCH_TEMPLATE,
    RANDOM_PASSWORD,
    ROLE_POLICY,
    ROUTE,
    SECRET_VERSION,
    SUBNET_RESERVATION,
    VOLUME,
)
from sg_rules import WORLD

# What user data must never hold (invariant 20).
ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
PRIVATE_KEY = "PRIVATE KEY-----"
# The host lock the user data names, by content-addressed key (infra/hostboot/locks.py).
HOST_LOCK_KEY = re.compile(r"MLOPS_HOST_LOCK_KEY=(bootstrap/host-lock-([0-9a-f]{64})\.txt)")
DISTRIBUTION_PIP = re.compile(r"\bpython3[0-9.]*-pip\b")
BOOTSTRAP_UNIT = "mlops-bootstrap.service"
_POSTGRES_URL = re.compile(r"postgresql(?:\+\w+)?://[^\s\"']+")
_CORS_ORIGINS = re.compile(r"--cors-allowed-origins\s+\"?([^\s\"]+)")
_DASK_COMMAND = re.compile(r"ExecStart=\S*/dask (scheduler|worker)\b([^\n]*)")
_DASK_TLS_FILES = ("--tls-ca-file", "--tls-cert", "--tls-key")


def _metadata_problems(options: Mapping[str, Any]) -> Iterator[str]:
    if options.get("httpTokens") != "required":
        yield "metadataOptions.httpTokens must be required (IMDSv2)"
    if number(options.get("httpPutResponseHopLimit"), 1) != 1:
        yield "metadataOptions.httpPutResponseHopLimit must be 1"


def ec2_imdsv2(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    yield from _metadata_problems(props.get("metadataOptions") or {})


def ec2_public_address(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if ctx.is_prod and props.get("associatePublicIpAddress") is not False:
        yield "prod hosts sit in private subnets: associatePublicIpAddress must be false"


def ec2_encrypted_volumes(
    resource_type: str, props: Mapping[str, Any], ctx: Context
) -> Iterator[str]:
    if resource_type == VOLUME:
        volumes = [props]
    else:
        volumes = [props.get("rootBlockDevice") or {}, *items(props.get("ebsBlockDevices"))]
    for volume in volumes:
        if volume.get("encrypted") is not True:
            yield "every EBS volume must be encrypted"


def ec2_identity(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if not props.get("iamInstanceProfile"):
        yield "iamInstanceProfile must be set"
    if props.get("keyName"):
        yield "no SSH key pair (keyName): use SSM Session Manager"


def ec2_user_data(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    text = user_data_text(props)
    if ACCESS_KEY_ID.search(text):
        yield "user data holds an AWS access key id"
    if PRIVATE_KEY in text:
        yield "user data holds a private key"
    if text and props.get("userDataReplaceOnChange") is not True:
        yield "userDataReplaceOnChange must be true so configuration changes reach the host"


def _secret_values(resources: Sequence[PolicyResource]) -> list[str]:
    values = [str(p.props.get("result") or "") for p in of_type(resources, RANDOM_PASSWORD)]
    values += [str(v.props.get("secretString") or "") for v in of_type(resources, SECRET_VERSION)]
    return [v for v in values if len(v) >= 8]


def user_data_free_of_secrets(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    secret_sources = (RANDOM_PASSWORD, SECRET_VERSION)
    for host in of_type(resources, INSTANCE, LAUNCH_TEMPLATE):
        if of_type(deps(host, "userData") + deps(host, "userDataBase64"), *secret_sources):
            yield f"{host.name}'s user data is computed from a secret value", host.urn
        text = user_data_text(host.props)
        if any(value in text for value in _secret_values(resources)):
            yield f"{host.name}'s user data holds a generated secret", host.urn


def ec2_service_transport(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    """48, 50, 52 as far as the user data shows them: every PostgreSQL URL verifies the server,
    Prefect's asyncpg checks it, MLflow's CORS origins are listed (never ``*``), and the Prefect
    server's user is refused the instance metadata."""
    text = user_data_text(props)
    for url in _POSTGRES_URL.findall(text):
        verified = "sslmode=verify-full" in url and "sslrootcert=" in url
        if not verified and "asyncpg" not in url:  # asyncpg: Prefect's TLS settings, below
            yield f"a database URL does not verify the server (verify-full): {url}"
    if "postgresql+asyncpg://" in text:
        for setting in ("TLS_ENABLED=true", "TLS_CA_FILE=", "TLS_CHECK_HOSTNAME=true"):
            if f"PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_{setting}" not in text:
                yield f"Prefect's database connection lacks {setting.rstrip('=')}"
    if "mlflow server" in text or "bin/mlflow server" in text:
        origins = _CORS_ORIGINS.findall(text)
        if not origins:
            yield "MLflow is started without --cors-allowed-origins"
        elif any("*" in origin for origin in ",".join(origins).split(",")):
            yield f"MLflow's CORS origins hold a wildcard: {origins}"
    if "prefect server start" in text and "meta skuid" not in text:
        yield "the Prefect server's user is not refused the instance metadata (nft meta skuid)"


def _option(words: list[str], flag: str) -> str | None:
    """The value after ``flag`` in a command line's words, None when absent."""
    return words[words.index(flag) + 1] if flag in words[:-1] else None


def ec2_dask_tls(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    """74 as far as the user data shows it: the Dask scheduler and workers are started with
    TLS files, the scheduler on the tls protocol with its dashboard on loopback, the workers
    on tls:// addresses, and both refuse unencrypted connections."""
    text = user_data_text(props)
    commands = _DASK_COMMAND.findall(text)
    for role, line in commands:
        words = line.split()
        for flag in _DASK_TLS_FILES:
            if not _option(words, flag):
                yield f"the Dask {role} is started without {flag}"
        if role == "scheduler":
            if _option(words, "--protocol") != "tls":
                yield "the Dask scheduler is not started with --protocol tls"
            dashboard = _option(words, "--dashboard-address") or ""
            if "--no-dashboard" not in words and not dashboard.startswith("127.0.0.1:"):
                yield f"the Dask dashboard listens beyond loopback: {dashboard or 'default'}"
        plain = [w for w in words if "://" in w and not w.startswith("tls://")]
        if plain:
            yield f"the Dask {role} names an address other than tls://: {plain}"
    if commands and "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=true" not in text:
        yield "Dask does not require encryption (DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION)"


def ec2_hashed_installs(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    """57: pip and boto3 pinned with hashes, the host lock named by digest, no distro pip."""
    text = user_data_text(props)
    if not text:
        return
    if "--hash=sha256:" not in text:
        yield "user data pins pip without its sha256 (--hash=sha256:...)"
    if DISTRIBUTION_PIP.search(text):
        yield "user data installs the distribution's pip: pip comes from the lock, hashed"
    if not HOST_LOCK_KEY.search(text):
        yield "user data names no host lock by digest (MLOPS_HOST_LOCK_KEY=bootstrap/host-lock-*)"


def ec2_bootstrap_retried(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    """58: the bootstrap is a oneshot unit retried until it succeeds; the services require it."""
    text = user_data_text(props)
    if not text:
        return
    for line in ("Type=oneshot", "RemainAfterExit=yes", "Restart=on-failure"):
        if line not in text:
            yield f"the bootstrap unit lacks {line}"
    if f"Requires={BOOTSTRAP_UNIT}" not in text:
        yield f"the services do not require {BOOTSTRAP_UNIT}"


def ec2_migrates_before_serving(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    """72: the control host's servers start only after their schema migration steps succeeded."""
    text = user_data_text(props)
    if " server --app-name basic-auth" not in text:
        return  # not the control host
    for step in ("mlflow-migrate.service", "prefect-migrate.service"):
        if f"Requires={step}" not in text:
            yield f"no server requires {step}: it could serve an unmigrated schema"
    if text.count("Restart=no") < 2:
        yield "a migration step is restarted on failure (a crash loop over a half-migrated schema)"
    if "PREFECT_SERVER_DATABASE_MIGRATE_ON_START=false" not in text:
        yield "Prefect's server migrates on its own start, outside the logged migration step"


def host_lock_uploaded(resources: Sequence[PolicyResource], ctx: Context) -> Iterator[Finding]:
    """57: the host lock a host's user data names is uploaded, and its content has that digest."""
    objects = {str(o.props.get("key")): o for o in of_type(resources, BUCKET_OBJECT)}
    for host in of_type(resources, INSTANCE):
        match = HOST_LOCK_KEY.search(user_data_text(host.props))
        if match is None:
            continue  # ec2-hashed-installs reports it
        key, digest = match.groups()
        uploaded = objects.get(key)
        if uploaded is None:
            yield f"{host.name}'s host lock {key} is not uploaded by the stack", host.urn
            continue
        content = str(uploaded.props.get("content") or "")
        if hashlib.sha256(content.encode()).hexdigest() != digest:
            yield f"{key}'s content does not have the digest its key names", uploaded.urn
        if uploaded.urn not in {d.urn for d in host.dependencies}:
            yield f"{host.name} is not created after its host lock {key}", host.urn


def control_host_termination_protected(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    """[E] prod: the control host (the database's client) has termination protection."""
    if not ctx.is_prod:
        return
    client_groups = set()
    for group in database_groups(resources):
        peers = of_type(deps(group, "ingress"), GROUP)  # inline rules' source groups
        for rule_type in (INGRESS_RULE, GROUP_RULE):
            for rule in configuring(resources, group, rule_type, "securityGroupId"):
                peers += deps(rule, "referencedSecurityGroupId") + deps(
                    rule, "sourceSecurityGroupId"
                )
        client_groups |= {peer.urn for peer in peers}
    for host in of_type(resources, INSTANCE):
        groups = {g.urn for g in deps(host, "vpcSecurityGroupIds")}
        if groups & client_groups and host.props.get("disableApiTermination") is not True:
            yield f"control host {host.name} needs termination protection in prod", host.urn


def _same_subnet(a: PolicyResource, b: PolicyResource) -> bool:
    """Whether two resources' ``subnetId`` were computed from the same subnet."""
    return bool({s.urn for s in deps(a, "subnetId")} & {s.urn for s in deps(b, "subnetId")})


def _grants(resources: Sequence[PolicyResource], host: PolicyResource) -> list[PolicyResource]:
    """The host's instance profile and its role's inline policies and attachments."""
    profiles = of_type(deps(host, "iamInstanceProfile"), INSTANCE_PROFILE)
    roles = {role.urn for profile in profiles for role in deps(profile, "role")}
    return profiles + [
        grant
        for grant in of_type(resources, ROLE_POLICY, *ATTACHMENTS)
        if {role.urn for role in deps(grant, "role")} & roles
    ]


def _egress(resources: Sequence[PolicyResource], host: PolicyResource) -> list[PolicyResource]:
    """The host subnet's route-table association and that table's default routes."""
    associations = [a for a in of_type(resources, ASSOCIATION) if _same_subnet(a, host)]
    tables = {t.urn for a in associations for t in deps(a, "routeTableId")}
    routes = [
        route
        for route in of_type(resources, ROUTE)
        if route.props.get("destinationCidrBlock") in WORLD
        and {t.urn for t in deps(route, "routeTableId")} & tables
    ]
    return associations + routes


def _reservations(
    resources: Sequence[PolicyResource], host: PolicyResource
) -> list[PolicyResource]:
    """The explicit reservations of the host's subnet that hold its fixed address."""
    address = ipaddress.ip_address(str(host.props["privateIp"]))
    return [
        r
        for r in of_type(resources, SUBNET_RESERVATION)
        if r.props.get("reservationType") == "explicit"
        and _same_subnet(r, host)
        and address in ipaddress.ip_network(str(r.props.get("cidrBlock")), strict=False)
    ]


def hosts_wait_for_boot_prerequisites(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    """59, 60, 62: a host is created after its address reservation, grants and egress routes."""
    hosts = of_type(resources, INSTANCE)
    explicit = [
        r
        for r in of_type(resources, SUBNET_RESERVATION)
        if r.props.get("reservationType") == "explicit"
    ]
    if hosts and not explicit:
        yield "no host address is reserved (the control host needs an explicit one)", hosts[0].urn
    for host in hosts:
        waits_for = {d.urn for d in host.dependencies}
        needed = [("its role's grants", g) for g in _grants(resources, host)]
        egress = _egress(resources, host)
        if not egress:
            yield f"{host.name}'s subnet has no route table association", host.urn
        needed += [("its subnet's egress", e) for e in egress]
        if host.props.get("privateIp"):  # known: requested, or assigned (after creation)
            needed += [("its address reservation", r) for r in _reservations(resources, host)]
        for what, resource in needed:
            if resource.urn not in waits_for:
                yield f"{host.name} is not created after {what} ({resource.name})", host.urn


def hosts_deleted_before_replaced(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    """61: a host is deleted before its replacement is created."""
    for host in of_type(resources, INSTANCE):
        if host.opts.delete_before_replace is not True:
            yield f"{host.name} must be replaced delete-before-create", host.urn
