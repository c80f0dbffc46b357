"""The checks of the policy pack: SECURITY_INVARIANTS.md 1-31, 37-39, 43-45, 47-52, 57-62 and 72
(those a policy can see) as plain functions.

Importing this module builds nothing and starts nothing: ``policies()`` returns the
pulumi-policy ``Policy`` objects that ``__main__.py`` hands to ``PolicyPack`` (and that the
tests call directly, without the Pulumi CLI).

Resource checks read one resource's inputs, as ``pulumi preview`` sees them (camelCase, numbers
possibly floats, unset properties absent). Stack checks follow property dependencies between
resources (a rule's ``securityGroupId`` depends on its group; a database's ``password`` on the
resource that generated it), so they need no physical ids and most run at preview time.

Rules marked [E] depend on the environment kind: the stack's ``mlops-platform:environment``
config, else the ``Environment`` default tag of the resource's AWS provider, else ``prod``
(the strictest). Invariant 32 (secret stack outputs) is asserted by tests/infra only: the
policy SDK hands policies secret values already unwrapped, so it cannot tell them apart.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import PolicyResource

NAMESPACE = "mlops-platform"
ENVIRONMENTS = ("dev", "prod", "ephemeral")
STRICTEST = "prod"
DB_PORT = 5432
SERVICE_PORTS = (5000, 4200)  # MLflow, Prefect
HTTPS_PORT = 443
MIN_TLS = 1.2
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
WORLD = ("0.0.0.0/0", "::/0")
# What a host may do to the bucket itself, as opposed to its objects: list it (invariant 45).
BUCKET_LEVEL_ACTIONS = frozenset(
    {
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:ListBucketVersions",
        "s3:ListBucketMultipartUploads",
    }
)
PUBLIC_GROUPS = ("AllUsers", "AuthenticatedUsers")  # ACL grantee groups: anyone, any AWS account
# Ingress may come only from private address space (invariant 37): RFC 1918 and RFC 6598.
# infra/config.py holds the same list for the config check; tests/policy checks they agree.
PRIVATE_INGRESS_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
PRIVATE_KEY = "PRIVATE KEY-----"
# AWS managed policies no role of the stack may carry (invariant 39), besides every
# `...FullAccess` one: each grants account-wide power far beyond a host's needs (all actions;
# all but IAM, which PowerUserAccess still lets reach every resource; every secret; every
# instance through SSM commands; key administration; the job-function administrator roles).
PRIVILEGED_MANAGED_POLICIES = frozenset(
    {
        "AdministratorAccess",
        "PowerUserAccess",
        "SecretsManagerReadWrite",
        "AmazonEC2RoleforSSM",
        "AmazonSSMAutomationRole",
        "AWSKeyManagementServicePowerUser",
        "SystemAdministrator",
        "NetworkAdministrator",
        "DatabaseAdministrator",
    }
)

BUCKET = "aws:s3/bucket:Bucket"
BUCKET_V2 = "aws:s3/bucketV2:BucketV2"
PUBLIC_ACCESS = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
)
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_ACL = "aws:s3/bucketAcl:BucketAcl"
DB = "aws:rds/instance:Instance"
DB_PARAMS = "aws:rds/parameterGroup:ParameterGroup"
INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
VOLUME = "aws:ebs/volume:Volume"
SUBNET = "aws:ec2/subnet:Subnet"
ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
INTERNET_GATEWAY = "aws:ec2/internetGateway:InternetGateway"
GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
ROLE = "aws:iam/role:Role"
INSTANCE_PROFILE = "aws:iam/instanceProfile:InstanceProfile"
ATTACHMENTS = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
)
POLICY_DOCUMENTS = (
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/policy:Policy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
)
EC2_SERVICE = "ec2.amazonaws.com"
SCHEDULER_SERVICE = "scheduler.amazonaws.com"
IAM_IDENTITIES = (
    "aws:iam/user:User",
    "aws:iam/accessKey:AccessKey",
    "aws:iam/userLoginProfile:UserLoginProfile",
)
# type tokens, not credentials:
SUBNET_RESERVATION = "aws:ec2/subnetCidrReservation:SubnetCidrReservation"
BUCKET_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
# The host lock the user data names, by content-addressed key (infra/hostboot/locks.py).
HOST_LOCK_KEY = re.compile(r"MLOPS_HOST_LOCK_KEY=(bootstrap/host-lock-([0-9a-f]{64})\.txt)")
DISTRIBUTION_PIP = re.compile(r"\bpython3[0-9.]*-pip\b")
BOOTSTRAP_UNIT = "mlops-bootstrap.service"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"  # noqa: S105
SECRET = "aws:secretsmanager/secret:Secret"  # noqa: S105
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"  # noqa: S105


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


# -- security group rules, in whichever of the three forms they come ----------------------------


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


RULE_TYPES = (GROUP, GROUP_RULE, INGRESS_RULE, EGRESS_RULE)


def _is_world(cidr: str) -> bool:
    return cidr in WORLD or ipaddress.ip_network(cidr, strict=False).prefixlen == 0


def _describe(rule: SgRule) -> str:
    ports = (
        "all ports" if rule.protocol == "-1" else f"{rule.protocol} {rule.from_port}-{rule.to_port}"
    )
    source = ", ".join(rule.cidrs) or ("a security group" if rule.references_group else "nothing")
    return f"{rule.direction} {ports} with {source}"


# -- resource checks ----------------------------------------------------------------------------

ResourceCheck = Callable[[str, Mapping[str, Any], Context], Iterator[str]]


def s3_public_access_blocked(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for flag in (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ):
        if props.get(flag) is not True:
            yield f"{flag} must be true"


def s3_encrypted(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for rule in items(props.get("rules")):
        default = rule.get("applyServerSideEncryptionByDefault") or {}
        algorithm = default.get("sseAlgorithm")
        if algorithm == "AES256" or (algorithm == "aws:kms" and rule.get("bucketKeyEnabled")):
            continue
        yield f"encryption must be AES256 or aws:kms with a bucket key; got {algorithm!r}"
    if not items(props.get("rules")):
        yield "no encryption rule"


def s3_versioned(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    status = (props.get("versioningConfiguration") or {}).get("status")
    allowed = ("Enabled", "Suspended") if ctx.environment == "ephemeral" else ("Enabled",)
    if status not in allowed:
        yield f"versioning must be {' or '.join(allowed)} in {ctx.environment}; got {status!r}"


def s3_lifecycle(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    enabled = [r for r in items(props.get("rules")) if r.get("status") == "Enabled"]
    if not any(
        number((r.get("noncurrentVersionExpiration") or {}).get("noncurrentDays"), 0) > 0
        for r in enabled
    ):
        yield "no enabled rule expires noncurrent versions"
    if not any(
        number((r.get("abortIncompleteMultipartUpload") or {}).get("daysAfterInitiation"), 0) > 0
        for r in enabled
    ):
        yield "no enabled rule aborts incomplete multipart uploads"


def _is_everyone(principal: Any) -> bool:
    return principal == "*" or (
        isinstance(principal, Mapping) and "*" in items(principal.get("AWS"))
    )


def s3_policy_tls_only(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    policy = statements(props.get("policy"))
    for statement in policy:
        if statement.get("Effect") == "Allow" and _is_everyone(statement.get("Principal")):
            yield "a statement allows principal *"
    denials = [
        s
        for s in policy
        if s.get("Effect") == "Deny"
        and _is_everyone(s.get("Principal"))
        and set(items(s.get("Action"))) & {"s3:*", "*"}
        and str((s.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")).lower()
        == "false"
    ]
    covered = {r for s in denials for r in items(s.get("Resource"))}
    if not any(f"{arn}/*" in covered for arn in covered):
        yield "no statement denies aws:SecureTransport=false on the bucket and its objects"
    old_tls = [
        s
        for s in policy
        if s.get("Effect") == "Deny"
        and _is_everyone(s.get("Principal"))
        and set(items(s.get("Action"))) & {"s3:*", "*"}
        and float((s.get("Condition") or {}).get("NumericLessThan", {}).get("s3:TlsVersion", 0))
        >= MIN_TLS
    ]
    covered = {r for s in old_tls for r in items(s.get("Resource"))}
    if not any(f"{arn}/*" in covered for arn in covered):
        yield f"no statement denies TLS older than {MIN_TLS} on the bucket and its objects"


def s3_owner_enforced(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if resource_type == OWNERSHIP:
        ownership = (props.get("rule") or {}).get("objectOwnership")
        if ownership != "BucketOwnerEnforced":
            yield f"object ownership must be BucketOwnerEnforced; got {ownership!r}"
    elif props.get("acl") not in (None, "private"):
        yield f"public or shared ACL {props.get('acl')!r}"
    if resource_type == BUCKET_ACL:
        grants = (props.get("accessControlPolicy") or {}).get("grants")
        # Under the engine a grant is a read-only mapping proxy: read its values, not its repr.
        if any(group in json.dumps(plain(g)) for g in items(grants) for group in PUBLIC_GROUPS):
            yield "an ACL grant to AllUsers or AuthenticatedUsers"


def s3_force_destroy(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if ctx.is_prod and props.get("forceDestroy") is True:
        yield "forceDestroy must be false in prod"


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


def user_data_text(props: Mapping[str, Any]) -> str:
    """A host's user data as text: ``userData``, or ``userDataBase64`` decoded (and gunzipped:
    cloud-init unpacks gzipped user data, so a secret could hide in it)."""
    packed = props.get("userDataBase64")
    if not packed:
        return user_data_text(props)
    try:
        raw = base64.b64decode(str(packed), validate=True)
        return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    except (binascii.Error, OSError, UnicodeDecodeError, EOFError):
        return f"<undecodable userDataBase64: {str(packed)[:40]}>"


def ec2_user_data(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    text = user_data_text(props)
    if ACCESS_KEY_ID.search(text):
        yield "user data holds an AWS access key id"
    if PRIVATE_KEY in text:
        yield "user data holds a private key"
    if text and props.get("userDataReplaceOnChange") is not True:
        yield "userDataReplaceOnChange must be true so configuration changes reach the host"


def sg_no_world_ingress(
    resource_type: str, props: Mapping[str, Any], ctx: Context
) -> Iterator[str]:
    for rule in rules_of(resource_type, props):
        if rule.direction == "ingress" and any(_is_world(c) for c in rule.cidrs):
            yield f"ingress from the internet: {_describe(rule)}"
        elif rule.direction == "ingress" and rule.protocol == "-1" and rule.cidrs:
            yield f"ingress of every protocol from a CIDR: {_describe(rule)}"


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
                f"{', '.join(PRIVATE_INGRESS_RANGES)}: {_describe(rule)}"
            )


def sg_default_group_empty(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    """The VPC's default group is taken over only to empty it: nothing may use it."""
    for direction in ("ingress", "egress"):
        if items(props.get(direction)):
            yield f"the VPC's default security group has {direction} rules: leave it empty"


def sg_no_ssh(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for rule in rules_of(resource_type, props):
        if rule.direction == "ingress" and rule.covers(22):
            yield f"port 22 ingress (SSM replaces SSH): {_describe(rule)}"


def sg_service_ports(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for rule in rules_of(resource_type, props):
        if rule.direction != "ingress" or not any(rule.covers(p) for p in SERVICE_PORTS):
            continue
        unlisted = set(rule.cidrs) - ctx.service_ingress_cidrs
        if unlisted:
            yield f"MLflow/Prefect ingress from CIDRs not configured: {sorted(unlisted)}"


def sg_described(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    if resource_type == GROUP and str(props.get("description") or "").strip() in (
        "",
        "Managed by Pulumi",
    ):
        yield "the security group needs a description"
    for rule in rules_of(resource_type, props):
        if not rule.description.strip():
            yield f"undescribed rule: {_describe(rule)}"


def sg_egress_limited(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    allowed_to_groups = (DB_PORT, *SERVICE_PORTS)
    for rule in rules_of(resource_type, props):
        if rule.direction != "egress":
            continue
        port = rule.single_tcp_port
        if rule.cidrs and port != HTTPS_PORT:
            yield f"egress to CIDRs other than HTTPS: {_describe(rule)}"
        if rule.references_group and port not in allowed_to_groups:
            yield f"egress to a group on a port other than {allowed_to_groups}: {_describe(rule)}"
        if not rule.cidrs and not rule.references_group:
            yield f"egress to an unrecognised destination: {_describe(rule)}"


def _policy_documents(resource_type: str, props: Mapping[str, Any]) -> list[Any]:
    """The policy documents a resource carries: its ``policy``, or a role's inline policies."""
    if resource_type == ROLE:
        return [p.get("policy") for p in items(props.get("inlinePolicies")) if p]
    return [props.get("policy")]


def iam_no_wildcards(resource_type: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for policy in _policy_documents(resource_type, props):
        yield from _statement_problems(statements(policy))


def _statement_problems(policy: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """Invariants 28, 31 and 38 on one policy document's statements."""
    for statement in policy:
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement or "NotResource" in statement:
            yield "Allow with NotAction or NotResource"
        actions = [str(a) for a in items(statement.get("Action"))]
        resources = [str(r) for r in items(statement.get("Resource"))]
        # A wildcard anywhere in an action (s3:Get*, iam:Pass*) grants whatever AWS adds
        # under that prefix later: every action is named (invariant 38).
        wildcards = [a for a in actions if "*" in a]
        if wildcards:
            yield f"actions with a wildcard {wildcards} on {resources}: name each action"
        if any(a.startswith("s3:") for a in actions):
            for arn in resources:
                bucket = arn.removeprefix("arn:aws:s3:::").split("/", 1)[0]
                if not arn.startswith("arn:aws:s3:::") or not bucket or "*" in bucket:
                    yield f"S3 actions on {arn!r}: scope them to the bucket ARN and ARN/*"
        on_bucket = [r for r in resources if r.startswith("arn:aws:s3:::") and "/" not in r]
        changes = sorted(
            a for a in actions if a.startswith("s3:") and a not in BUCKET_LEVEL_ACTIONS
        )
        if on_bucket and changes:
            yield f"{changes} on the bucket itself {on_bucket}: hosts only list it"
        if "secretsmanager:GetSecretValue" in actions and any("*" in r for r in resources):
            yield f"GetSecretValue on wildcard resources {resources}"


def iam_trust_ec2_only(_: str, props: Mapping[str, Any], ctx: Context) -> Iterator[str]:
    for statement in statements(props.get("assumeRolePolicy")):
        principal = statement.get("Principal") or {}
        services = items(principal.get("Service")) if isinstance(principal, Mapping) else []
        others = set(principal) - {"Service"} if isinstance(principal, Mapping) else {"*"}
        expected = "ec2.amazonaws.com (or scheduler.amazonaws.com bound to aws:SourceAccount)"
        if others or items(statement.get("Action")) != ["sts:AssumeRole"]:
            yield f"trust only {expected} with sts:AssumeRole; got {dict(statement)}"
        elif services == [SCHEDULER_SERVICE]:
            condition = statement.get("Condition") or {}
            equals = condition.get("StringEquals") if isinstance(condition, Mapping) else None
            if not isinstance(equals, Mapping) or not equals.get("aws:SourceAccount"):
                yield (
                    f"{SCHEDULER_SERVICE} trusted without an aws:SourceAccount condition "
                    "(any account's schedules could use the role)"
                )
        elif services != [EC2_SERVICE]:
            yield f"trust only {expected} with sts:AssumeRole; got {dict(statement)}"


def iam_no_users_or_admin(
    resource_type: str, props: Mapping[str, Any], ctx: Context
) -> Iterator[str]:
    if resource_type in IAM_IDENTITIES:
        yield f"no IAM users, access keys or login profiles ({resource_type})"
    arns = items(props.get("policyArn")) + items(props.get("managedPolicyArns"))
    for arn in map(str, arns):
        if _privileged(arn):
            yield f"privileged managed policy {arn} attached: grant the actions the host uses"


def _privileged(arn: str) -> bool:
    """Whether a managed policy grants account-wide control of a service or of IAM (inv. 39)."""
    name = arn.rsplit("/", 1)[-1]
    return name in PRIVILEGED_MANAGED_POLICIES or name.endswith("FullAccess")


# -- stack checks (follow property dependencies) ------------------------------------------------

Finding = tuple[str, str]  # (message, urn)
StackCheck = Callable[[Sequence[PolicyResource], Context], Iterator[Finding]]


def _buckets(resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    return of_type(resources, BUCKET, BUCKET_V2)


def bucket_fully_configured(resources: Sequence[PolicyResource], ctx: Context) -> Iterator[Finding]:
    """Invariants 1-6 need one resource each per bucket: check that every bucket has them."""
    required = {
        PUBLIC_ACCESS: "a public access block",
        ENCRYPTION: "server-side encryption",
        LIFECYCLE: "a lifecycle configuration",
        BUCKET_POLICY: "a TLS-only bucket policy",
        OWNERSHIP: "ownership controls",
    }
    if ctx.environment != "ephemeral":
        required[VERSIONING] = "versioning"
    for bucket in _buckets(resources):
        for resource_type, what in required.items():
            if not configuring(resources, bucket, resource_type, "bucket"):
                yield f"bucket {bucket.name} has no {what}", bucket.urn


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


def _database_groups(resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    return [
        g for db in of_type(resources, DB) for g in of_type(deps(db, "vpcSecurityGroupIds"), GROUP)
    ]


def _group_rules(
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


def database_admits_control_group_only(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    for group in _database_groups(resources):
        for rule, declared_by in _group_rules(resources, group, "ingress"):
            if rule.cidrs or not rule.references_group or rule.single_tcp_port != DB_PORT:
                yield (
                    f"database group {group.name} admits only {DB_PORT} from the control "
                    f"host's group: {_describe(rule)}",
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


def _secret_values(resources: Sequence[PolicyResource]) -> list[str]:
    values = [str(p.props.get("result") or "") for p in of_type(resources, RANDOM_PASSWORD)]
    values += [str(v.props.get("secretString") or "") for v in of_type(resources, SECRET_VERSION)]
    return [v for v in values if len(v) >= 8]


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


def control_host_termination_protected(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    """[E] prod: the control host (the database's client) has termination protection."""
    if not ctx.is_prod:
        return
    client_groups = set()
    for group in _database_groups(resources):
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
                    f"group {group.name} has inline rule ({_describe(inline)}) and rule "
                    f"resources ({', '.join(s.name for s in separate)})",
                    group.urn,
                )


def s3_actions_on_stack_buckets(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    arns = {str(b.props.get("arn")) for b in _buckets(resources)}
    for policy in of_type(resources, *POLICY_DOCUMENTS):
        for statement in statements(policy.props.get("policy")):
            if not any(str(a).startswith("s3:") for a in items(statement.get("Action"))):
                continue
            for arn in map(str, items(statement.get("Resource"))):
                if arn not in arns and not any(arn.startswith(f"{b}/") for b in arns):
                    yield f"{policy.name}: S3 actions on {arn}, not this stack's bucket", policy.urn


def instance_roles_have_ssm_core(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    for profile in of_type(resources, INSTANCE_PROFILE):
        for role in of_type(deps(profile, "role"), ROLE):
            attached = [
                a
                for a in configuring(resources, role, ATTACHMENTS[0], "role")
                if a.props.get("policyArn") == SSM_CORE
            ]
            if not attached and SSM_CORE not in items(role.props.get("managedPolicyArns")):
                yield f"role {role.name} lacks AmazonSSMManagedInstanceCore", role.urn


def secret_reads_scoped(resources: Sequence[PolicyResource], ctx: Context) -> Iterator[Finding]:
    own = {str(s.props.get("arn")) for s in of_type(resources, SECRET)}
    for policy in of_type(resources, *POLICY_DOCUMENTS):
        for statement in statements(policy.props.get("policy")):
            if "secretsmanager:GetSecretValue" not in items(statement.get("Action")):
                continue
            foreign = set(map(str, items(statement.get("Resource")))) - own
            if foreign:
                yield (
                    f"{policy.name}: GetSecretValue on other secrets: {sorted(foreign)}",
                    policy.urn,
                )


def host_secrets_are_the_boot_steps(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    """47: a host's role reads exactly the secrets its boot step fetches (named by ARN in its
    user data): a worker's role never reads the MLflow admin password or a database password."""
    for host in of_type(resources, INSTANCE):
        text = user_data_text(host.props)
        for profile in of_type(deps(host, "iamInstanceProfile"), INSTANCE_PROFILE):
            for role in of_type(deps(profile, "role"), ROLE):
                for policy in configuring(resources, role, POLICY_DOCUMENTS[0], "role"):
                    for statement in statements(policy.props.get("policy")):
                        if "secretsmanager:GetSecretValue" not in items(statement.get("Action")):
                            continue
                        # Unknown at preview: an ARN the policy cannot see is not judged.
                        arns = [a for a in map(str, items(statement.get("Resource"))) if a]
                        extra = [arn for arn in arns if arn.startswith("arn:") and arn not in text]
                        if extra:
                            yield (
                                f"{policy.name}: {host.name}'s role reads secrets its boot step "
                                f"does not fetch: {extra}",
                                policy.urn,
                            )


_POSTGRES_URL = re.compile(r"postgresql(?:\+\w+)?://[^\s\"']+")
_CORS_ORIGINS = re.compile(r"--cors-allowed-origins\s+\"?([^\s\"]+)")


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


# -- the rules, and the pulumi-policy objects built from them ------------------------------------


@dataclass(frozen=True)
class Rule:
    """A policy: a name, the invariants it enforces, and its check."""

    name: str
    invariants: tuple[int, ...]
    description: str
    resource_types: tuple[str, ...] = ()
    check: ResourceCheck | None = None
    stack_check: StackCheck | None = None


RULES: tuple[Rule, ...] = (
    Rule(
        "s3-public-access-blocked",
        (1,),
        "Bucket public access blocked on all four switches.",
        (PUBLIC_ACCESS,),
        s3_public_access_blocked,
    ),
    Rule(
        "s3-encrypted",
        (2,),
        "Bucket encrypted with AES256 or aws:kms and a bucket key.",
        (ENCRYPTION,),
        s3_encrypted,
    ),
    Rule(
        "s3-versioned",
        (3,),
        "Bucket versioning enabled (may be suspended in ephemeral stacks).",
        (VERSIONING,),
        s3_versioned,
    ),
    Rule(
        "s3-lifecycle",
        (4,),
        "Noncurrent versions expire and incomplete uploads are aborted.",
        (LIFECYCLE,),
        s3_lifecycle,
    ),
    Rule(
        "s3-tls-only",
        (5, 6, 44),
        "Bucket policy denies non-TLS and pre-1.2 TLS requests and allows nothing to *.",
        (BUCKET_POLICY,),
        s3_policy_tls_only,
    ),
    Rule(
        "s3-owner-enforced",
        (6,),
        "Ownership controls BucketOwnerEnforced; no public ACL.",
        (OWNERSHIP, BUCKET, BUCKET_V2, BUCKET_ACL),
        s3_owner_enforced,
    ),
    Rule(
        "s3-force-destroy",
        (7,),
        "forceDestroy is never true in prod.",
        (BUCKET, BUCKET_V2),
        s3_force_destroy,
    ),
    Rule(
        "s3-bucket-complete",
        (1, 2, 3, 4, 5, 6),
        "Every bucket has its access block, encryption, versioning, lifecycle, TLS policy "
        "and ownership controls.",
        stack_check=bucket_fully_configured,
    ),
    Rule("rds-private", (8,), "The database is not publicly accessible.", (DB,), rds_private),
    Rule(
        "rds-private-subnets",
        (8,),
        "The database subnet group uses only private subnets.",
        stack_check=database_in_private_subnets,
    ),
    Rule("rds-encrypted", (9,), "Database storage encrypted.", (DB,), rds_encrypted),
    Rule(
        "rds-backups",
        (10,),
        "Backup retention set: at least 7 days in prod, 1 elsewhere.",
        (DB,),
        rds_backups,
    ),
    Rule(
        "rds-deletion-protection",
        (11,),
        "Deletion protection on in prod, off in ephemeral stacks.",
        (DB,),
        rds_deletion_protection,
    ),
    Rule(
        "rds-final-snapshot",
        (12,),
        "Prod keeps a named final snapshot; other stacks skip it.",
        (DB,),
        rds_final_snapshot,
    ),
    Rule(
        "rds-generated-password",
        (13,),
        "The master password comes from a generator, not a literal.",
        stack_check=database_password_generated,
    ),
    Rule(
        "rds-admits-control-only",
        (14,),
        "The database group admits 5432 only from a security group.",
        stack_check=database_admits_control_group_only,
    ),
    Rule(
        "rds-resilient",
        (15,),
        "Prod is multi-AZ; minor version upgrades stay on.",
        (DB,),
        rds_resilient,
    ),
    Rule(
        "rds-tls",
        (15,),
        "The parameter group forces TLS (rds.force_ssl=1).",
        stack_check=database_forces_tls,
    ),
    Rule(
        "ec2-imdsv2",
        (16,),
        "Instance metadata: IMDSv2 only, hop limit 1.",
        (INSTANCE, LAUNCH_TEMPLATE),
        ec2_imdsv2,
    ),
    Rule(
        "ec2-public-address",
        (17,),
        "Prod hosts get no public address.",
        (INSTANCE,),
        ec2_public_address,
    ),
    Rule(
        "ec2-encrypted-volumes",
        (18,),
        "Root and EBS volumes encrypted.",
        (INSTANCE, VOLUME),
        ec2_encrypted_volumes,
    ),
    Rule(
        "ec2-identity", (19,), "Instance profile set; no SSH key pair.", (INSTANCE,), ec2_identity
    ),
    Rule(
        "ec2-user-data",
        (20,),
        "User data holds no key and replaces the host when it changes.",
        (INSTANCE,),
        ec2_user_data,
    ),
    Rule(
        "ec2-user-data-secrets",
        (20,),
        "User data is not computed from, and holds no, generated secret.",
        stack_check=user_data_free_of_secrets,
    ),
    Rule(
        "ec2-termination-protection",
        (21,),
        "Prod control host has termination protection.",
        stack_check=control_host_termination_protected,
    ),
    Rule(
        "sg-no-world-ingress",
        (17, 22),
        "No ingress from 0.0.0.0/0 or ::/0; no all-protocol ingress from a CIDR.",
        RULE_TYPES,
        sg_no_world_ingress,
    ),
    Rule(
        "sg-private-ingress-only",
        (37,),
        "Ingress CIDRs only inside 10/8, 172.16/12, 192.168/16 and 100.64/10.",
        RULE_TYPES,
        sg_private_ingress_only,
    ),
    Rule(
        "sg-default-group-empty",
        (43,),
        "The VPC's default security group has no rules.",
        (DEFAULT_GROUP,),
        sg_default_group_empty,
    ),
    Rule("sg-no-ssh", (23,), "No port 22 ingress.", RULE_TYPES, sg_no_ssh),
    Rule(
        "sg-service-ports",
        (24,),
        "MLflow and Prefect admit groups and the configured CIDRs only.",
        RULE_TYPES,
        sg_service_ports,
    ),
    Rule(
        "sg-described",
        (25,),
        "Every security group and rule has a description.",
        RULE_TYPES,
        sg_described,
    ),
    Rule(
        "sg-one-rule-style",
        (26,),
        "A group with inline rules is never the target of rule resources.",
        stack_check=groups_do_not_mix_rule_styles,
    ),
    Rule(
        "sg-egress-limited",
        (27,),
        "Egress: HTTPS to CIDRs; the database and service ports to groups.",
        RULE_TYPES,
        sg_egress_limited,
    ),
    Rule(
        "iam-no-wildcards",
        (28, 31, 38, 45),
        "No action with a wildcard; S3 and secret reads scoped; the bucket itself only listed.",
        (*POLICY_DOCUMENTS, ROLE),
        iam_no_wildcards,
    ),
    Rule(
        "iam-s3-own-bucket",
        (28,),
        "S3 actions only on this stack's bucket ARN and ARN/*.",
        stack_check=s3_actions_on_stack_buckets,
    ),
    Rule(
        "iam-trust-ec2",
        (29,),
        "Roles trust only ec2.amazonaws.com (or scheduler.amazonaws.com bound to the account).",
        (ROLE,),
        iam_trust_ec2_only,
    ),
    Rule(
        "iam-no-users-or-admin",
        (30, 39),
        "No IAM users, access keys, login profiles or privileged managed policies.",
        (*IAM_IDENTITIES, *ATTACHMENTS, ROLE),
        iam_no_users_or_admin,
    ),
    Rule(
        "iam-ssm-core",
        (30,),
        "Every instance role has AmazonSSMManagedInstanceCore.",
        stack_check=instance_roles_have_ssm_core,
    ),
    Rule(
        "iam-own-secrets",
        (31,),
        "GetSecretValue only on this stack's secrets.",
        stack_check=secret_reads_scoped,
    ),
    Rule(
        "host-secrets-least",
        (47,),
        "A host's role reads only the secrets its boot step fetches.",
        stack_check=host_secrets_are_the_boot_steps,
    ),
    Rule(
        "ec2-service-transport",
        (48, 50, 52),
        "User data: database TLS verified, MLflow CORS listed, Prefect server off IMDS.",
        (INSTANCE,),
        ec2_service_transport,
    ),
    Rule(
        "ec2-hashed-installs",
        (57,),
        "Hosts install pip from the lock, then only hashed wheels; the host lock by digest.",
        (INSTANCE, LAUNCH_TEMPLATE),
        ec2_hashed_installs,
    ),
    Rule(
        "ec2-host-lock-uploaded",
        (57,),
        "The host lock a host names is uploaded first, with the digest its key names.",
        stack_check=host_lock_uploaded,
    ),
    Rule(
        "ec2-bootstrap-retried",
        (58,),
        "The bootstrap is a oneshot unit retried until it succeeds; services require it.",
        (INSTANCE, LAUNCH_TEMPLATE),
        ec2_bootstrap_retried,
    ),
    Rule(
        "ec2-migrates-before-serving",
        (72,),
        "The control host's servers start after their schema migration steps succeeded.",
        (INSTANCE, LAUNCH_TEMPLATE),
        ec2_migrates_before_serving,
    ),
    Rule(
        "ec2-boot-prerequisites",
        (59, 60, 62),
        "Hosts wait for their address reservation, role grants and subnet egress.",
        stack_check=hosts_wait_for_boot_prerequisites,
    ),
    Rule(
        "ec2-delete-before-replace",
        (61,),
        "Hosts are deleted before their replacement is created.",
        stack_check=hosts_deleted_before_replaced,
    ),
)


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
    return Context(
        environment=configured if configured in ENVIRONMENTS else STRICTEST,
        service_ingress_cidrs=frozenset(cidrs),
    )


def _label(rule: Rule) -> str:
    return "invariant " + ", ".join(str(n) for n in rule.invariants)


def _resource_policy(rule: Rule, check: ResourceCheck, read: ConfigReader) -> Policy:
    """A resource validation running ``check`` on the rule's resource types."""

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type not in rule.resource_types:
            return
        ctx = context_for(read, args.provider.props if args.provider else None)
        for message in check(args.resource_type, args.props, ctx):
            report(f"{_label(rule)}: {message}", None)

    return ResourceValidationPolicy(
        rule.name,
        f"{rule.description} ({_label(rule)})",
        validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _stack_policy(rule: Rule, check: StackCheck, read: ConfigReader) -> Policy:
    """A stack validation running ``check`` over every resource of the stack."""

    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        aws = [r for r in args.resources if r.provider and r.resource_type.startswith("aws:")]
        ctx = context_for(read, aws[0].provider.props if aws and aws[0].provider else None)
        for message, urn in check(args.resources, ctx):
            report(f"{_label(rule)}: {message}", urn)

    return StackValidationPolicy(
        rule.name,
        f"{rule.description} ({_label(rule)})",
        validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def policies(read: ConfigReader = stack_config) -> list[Policy]:
    """The pack's policies, every one mandatory."""
    built: list[Policy] = []
    for rule in RULES:
        if rule.check is not None:
            built.append(_resource_policy(rule, rule.check, read))
        if rule.stack_check is not None:
            built.append(_stack_policy(rule, rule.stack_check, read))
    return built
