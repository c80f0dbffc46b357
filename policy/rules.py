"""The pack's rules: which policy enforces which of SECURITY_INVARIANTS.md's invariants, with
which check, on which resource types. Read this table first; the checks live beside their
service (``s3_checks``, ``rds_checks``, ``ec2_checks``, ``sg_checks``, ``iam_checks``), the
readers they share in ``properties`` and ``sg_rules``, the type tokens in ``resource_types``.

The pack covers invariants 1-31, 37-39, 43-45, 47-52, 57-62 and 72-74 (those a policy can
see).
Importing this module builds nothing and starts nothing: ``policies()`` returns the
pulumi-policy ``Policy`` objects that ``__main__.py`` hands to ``PolicyPack`` (and that the
tests call directly, without the Pulumi CLI).

Rules marked [E] depend on the environment kind: the stack's ``mlops-platform:environment``
config, else the ``Environment`` default tag of the resource's AWS provider, else ``prod``
(the strictest). Invariant 32 (secret stack outputs) is asserted by tests/infra only: the
policy SDK hands policies secret values already unwrapped, so it cannot tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from ec2_checks import (
    control_host_termination_protected,
    ec2_bootstrap_retried,
    ec2_dask_tls,
    ec2_encrypted_volumes,
    ec2_hashed_installs,
    ec2_identity,
    ec2_imdsv2,
    ec2_migrates_before_serving,
    ec2_public_address,
    ec2_service_transport,
    ec2_user_data,
    host_lock_uploaded,
    hosts_deleted_before_replaced,
    hosts_wait_for_boot_prerequisites,
    user_data_free_of_secrets,
)
from iam_checks import (
    host_secrets_are_the_boot_steps,
    iam_no_users_or_admin,
    iam_no_wildcards,
    iam_trust_ec2_only,
    instance_roles_have_ssm_core,
    s3_actions_on_stack_buckets,
    secret_reads_scoped,
)
from properties import ConfigReader, ResourceCheck, StackCheck, context_for, stack_config
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from rds_checks import (
    database_admits_control_group_only,
    database_forces_tls,
    database_in_private_subnets,
    database_password_generated,
    rds_backups,
    rds_deletion_protection,
    rds_encrypted,
    rds_final_snapshot,
    rds_private,
    rds_resilient,
)
from resource_types import (
    ATTACHMENTS,
    BUCKET,
    BUCKET_ACL,
    BUCKET_POLICY,
    BUCKET_V2,
    DB,
    DEFAULT_GROUP,
    ENCRYPTION,
    IAM_IDENTITIES,
    INSTANCE,
    LAUNCH_TEMPLATE,
    LIFECYCLE,
    OWNERSHIP,
    POLICY_DOCUMENTS,
    PUBLIC_ACCESS,
    ROLE,
    VERSIONING,
    VOLUME,
)
from s3_checks import (
    bucket_fully_configured,
    s3_encrypted,
    s3_force_destroy,
    s3_lifecycle,
    s3_owner_enforced,
    s3_policy_tls_only,
    s3_public_access_blocked,
    s3_versioned,
)
from sg_checks import (
    groups_do_not_mix_rule_styles,
    sg_dask_ports,
    sg_default_group_empty,
    sg_described,
    sg_egress_limited,
    sg_no_ssh,
    sg_no_world_ingress,
    sg_private_ingress_only,
    sg_service_ports,
)
from sg_rules import RULE_TYPES


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
        "sg-dask-ports",
        (73,),
        "The Dask ports admit only the stack's groups; the dashboard port is never opened.",
        RULE_TYPES,
        sg_dask_ports,
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
        "Egress: HTTPS to CIDRs; the database, service and Dask ports to groups.",
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
        "ec2-dask-tls",
        (74,),
        "User data: the Dask scheduler and workers speak TLS only (tls://, --tls-* files).",
        (INSTANCE, LAUNCH_TEMPLATE),
        ec2_dask_tls,
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
