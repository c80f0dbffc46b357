"""IAM: named actions on this stack's own bucket and secrets, roles trusted by EC2 (or the
account's scheduler) only, no users or privileged managed policies, SSM on every host role, and
a host's secrets exactly those its boot step reads (invariants 28-31, 38, 39, 45, 47)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from properties import (
    Context,
    Finding,
    configuring,
    deps,
    items,
    of_type,
    statements,
    user_data_text,
)
from pulumi_policy.policy import PolicyResource
from resource_types import (
    IAM_IDENTITIES,
    INSTANCE,
    INSTANCE_PROFILE,
    POLICY_DOCUMENTS,
    ROLE,
    ROLE_POLICY,
    ROLE_POLICY_ATTACHMENT,
    SECRET,
)
from s3_checks import buckets

SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"

# What a host may do to the bucket itself, as opposed to its objects: list it (invariant 45).
BUCKET_LEVEL_ACTIONS = frozenset(
    {
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:ListBucketVersions",
        "s3:ListBucketMultipartUploads",
    }
)

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

EC2_SERVICE = "ec2.amazonaws.com"
SCHEDULER_SERVICE = "scheduler.amazonaws.com"


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


def s3_actions_on_stack_buckets(
    resources: Sequence[PolicyResource], ctx: Context
) -> Iterator[Finding]:
    arns = {str(b.props.get("arn")) for b in buckets(resources)}
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
                for a in configuring(resources, role, ROLE_POLICY_ATTACHMENT, "role")
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
                for policy in configuring(resources, role, ROLE_POLICY, "role"):
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
