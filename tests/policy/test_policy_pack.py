"""The policy pack passes the program's resources and reports each deliberately bad one."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from collections.abc import Callable

import config as infra_config  # infra/config.py (tests/conftest.py puts infra/ on the path)
import pytest
from hostboot.cloudconfig import read_user_data_base64, user_data_base64
from iam_checks import SSM_CORE
from properties import NAMESPACE, context_for
from resource_types import (
    ACCESS_KEY,
    ASSOCIATION,
    AWS_PROVIDER,
    BUCKET,
    BUCKET_ACL,
    BUCKET_OBJECT,
    BUCKET_POLICY,
    DB,
    DB_PARAMS,
    DB_SUBNETS,
    DEFAULT_GROUP,
    EGRESS_RULE,
    ENCRYPTION,
    GROUP,
    INGRESS_RULE,
    INSTANCE,
    INSTANCE_PROFILE,
    LIFECYCLE,
    OWNERSHIP,
    PUBLIC_ACCESS,
    RANDOM_PASSWORD,
    ROLE,
    ROLE_POLICY,
    ROLE_POLICY_ATTACHMENT,
    ROUTE,
    SECRET,
    SUBNET,
    SUBNET_RESERVATION,
    VERSIONING,
)
from rules import RULES
from sg_checks import PRIVATE_INGRESS_RANGES

from tests.support.policy_pack import (
    DASK_STACK,
    Declared,
    Stack,
    evaluate,
    policy_names,
    program_stack,
)
from tests.support.program import ROOT


def test_the_program_passes_every_policy(stack: Stack) -> None:
    assert evaluate(stack) == []


def test_the_policies_cover_invariants_1_to_31_37_to_39_43_to_45_47_48_50_52_57_to_62_72_74() -> (
    None
):
    covered = {n for rule in RULES for n in rule.invariants}
    # 32 (secret outputs) is asserted in tests/infra; 33-36 are about the hosts' services,
    # 40-42 about the CI workflows (tests/scripts/test_workflows.py), 49, 51 and 53 in tests/hosts
    # and tests/infra, 63-64 in tests/hosts; 72 in tests/hosts too, and here; 75-76 (the Dask
    # TLS files, Dask off renders nothing) in tests/hosts and tests/infra.
    assert covered == set(range(1, 32)) | {37, 38, 39, 43, 44, 45} | {47, 48, 50, 52} | set(
        range(57, 63)
    ) | {72, 73, 74}


def test_a_stack_with_a_dask_cluster_passes_every_policy() -> None:
    assert evaluate(program_stack(DASK_STACK)) == []


def test_environment_falls_back_to_the_provider_tag_then_to_prod() -> None:
    prod = program_stack("prod")
    assert evaluate(prod, read=lambda key: None) == []  # the provider's tag says prod
    provider = prod.find(AWS_PROVIDER)
    provider.inputs.pop("defaultTags")
    assert context_for(lambda key: None, provider.inputs).environment == "prod"
    dev = program_stack("dev")  # a dev stack judged by prod's rules fails them
    dev.find(AWS_PROVIDER).inputs.pop("defaultTags")
    assert "rds-final-snapshot" in policy_names(evaluate(dev, read=lambda key: None))


def test_configured_service_cidrs_are_allowed_and_others_reported() -> None:
    stack = program_stack("dev")
    rule = stack.find(INGRESS_RULE, "control-mlflow-from-workers")
    rule.set(cidrIpv4="10.8.0.0/16", referencedSecurityGroupId=None)
    rule.deps.pop("referencedSecurityGroupId")
    assert "sg-service-ports" in policy_names(evaluate(stack))
    stack.config[f"{NAMESPACE}:serviceIngressCidrs"] = json.dumps(["10.8.0.0/16"])
    assert evaluate(stack) == []


PUBLIC_SPLITS = ["0.0.0.0/1", "128.0.0.0/1", "8.8.8.0/24", "172.32.0.0/16", "2001:db8::/32"]
PRIVATE_NETWORKS = [
    "10.0.0.0/8",
    "10.8.0.0/16",
    "172.16.0.0/12",
    "192.168.10.0/24",
    "100.64.0.0/10",
]


def service_ingress_from(cidr: str) -> Stack:
    """Dev with MLflow open to ``cidr``, listed in serviceIngressCidrs as the program would."""
    stack = program_stack("dev")
    rule = stack.find(INGRESS_RULE, "control-mlflow-from-workers")
    rule.set(cidrIpv4=cidr, referencedSecurityGroupId=None)
    rule.deps.pop("referencedSecurityGroupId")
    stack.config[f"{NAMESPACE}:serviceIngressCidrs"] = json.dumps([cidr])
    return stack


@pytest.mark.parametrize("cidr", PUBLIC_SPLITS)
def test_37_ingress_outside_private_ranges_reported_even_if_configured(cidr: str) -> None:
    """Invariant 37: 0.0.0.0/1 + 128.0.0.0/1 is the internet though neither is a /0."""
    violations = evaluate(service_ingress_from(cidr))

    assert policy_names(violations) == {"sg-private-ingress-only"}, violations
    (violation,) = violations
    assert cidr in violation.message
    assert "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10" in violation.message


@pytest.mark.parametrize("cidr", PRIVATE_NETWORKS)
def test_37_ingress_inside_private_ranges_passes(cidr: str) -> None:
    assert evaluate(service_ingress_from(cidr)) == []


def test_37_the_pack_and_the_config_allow_the_same_ranges() -> None:
    assert PRIVATE_INGRESS_RANGES == infra_config.PRIVATE_INGRESS_RANGES


# -- deliberately bad resources -----------------------------------------------------------------

Breakage = Callable[[Stack], None]


def set_on(resource_type: str, name_part: str = "", **changes: object) -> Breakage:
    def breakage(stack: Stack) -> None:
        stack.find(resource_type, name_part).set(**changes)

    return breakage


def remove(resource_type: str) -> Breakage:
    def breakage(stack: Stack) -> None:
        stack.resources.remove(stack.find(resource_type))

    return breakage


def add_policy_statement(statement: dict[str, object]) -> Breakage:
    def breakage(stack: Stack) -> None:
        policy = stack.find(ROLE_POLICY, "worker")
        document = json.loads(policy.inputs["policy"])
        document["Statement"].append(statement)
        policy.set(policy=json.dumps(document))

    return breakage


def database_in_public_subnets(stack: Stack) -> None:
    group = stack.find(DB_SUBNETS)
    group.deps["subnetIds"] = [s.urn for s in stack.of_type(SUBNET) if "public" in s.name]


def typed_password(stack: Stack) -> None:
    stack.find(DB).deps.pop("password")


def database_open_to_a_cidr(stack: Stack) -> None:
    rule = stack.find(INGRESS_RULE, "database-from-control")
    rule.set(cidrIpv4="10.0.0.0/8", referencedSecurityGroupId=None)
    rule.deps.pop("referencedSecurityGroupId")


def no_tls_parameter(stack: Stack) -> None:
    stack.find(DB_PARAMS).set(parameters=[])


def secret_in_user_data(stack: Stack) -> None:
    host = stack.find(INSTANCE, "control")
    password = stack.find(RANDOM_PASSWORD, "mlflow-admin")
    text = read_user_data_base64(host.inputs["userDataBase64"])
    line = f"\nMLFLOW_AUTH_ADMIN_PASSWORD={password.outputs['result']}\n"
    host.set(userDataBase64=user_data_base64(text + line))
    host.deps.setdefault("userDataBase64", []).append(password.urn)


def worker_reads_admin_password(stack: Stack) -> None:
    """Invariant 47 broken: the workers' role may read the MLflow admin password again."""
    admin = stack.find(SECRET, "mlflow-admin").outputs["arn"]
    statement = {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": admin}
    add_policy_statement(statement)(stack)


def rewrite_user_data(name_part: str, old: str, new: str) -> Breakage:
    """A host's user data with ``old`` replaced by ``new`` (it must occur)."""

    def breakage(stack: Stack) -> None:
        host = stack.find(INSTANCE, name_part)
        text = read_user_data_base64(host.inputs["userDataBase64"])
        assert old in text, old
        host.set(userDataBase64=user_data_base64(text.replace(old, new)))

    return breakage


def inline_and_separate_rules(stack: Stack) -> None:
    stack.find(GROUP, "control").set(
        ingress=[
            {
                "protocol": "tcp",
                "fromPort": 8080,
                "toPort": 8080,
                "securityGroups": ["sg-0123456789abcdef0"],
                "description": "an inline rule beside the rule resources",
            }
        ]
    )


def role_without_ssm(stack: Stack) -> None:
    stack.resources.remove(
        next(
            r
            for r in stack.of_type(ROLE_POLICY_ATTACHMENT)
            if "worker" in r.name and r.inputs["policyArn"] == SSM_CORE
        )
    )


def tls_1_0_allowed(stack: Stack) -> None:
    policy = stack.find(BUCKET_POLICY)
    document = json.loads(policy.inputs["policy"])
    for statement in document["Statement"]:
        if "NumericLessThan" in statement["Condition"]:
            statement["Condition"]["NumericLessThan"]["s3:TlsVersion"] = "1.0"
    policy.set(policy=json.dumps(document))


def bucket_acl_to_everyone(stack: Stack) -> None:
    bucket = stack.find(BUCKET)
    acl = Declared(
        type=BUCKET_ACL,
        name="artifacts-acl",
        urn="urn:artifacts-acl",
        inputs={
            "bucket": bucket.outputs["bucket"],
            "accessControlPolicy": {
                "grants": [
                    {
                        "grantee": {
                            "type": "Group",
                            "uri": "http://acs.amazonaws.com/groups/global/AllUsers",
                        },
                        "permission": "READ",
                    }
                ],
                "owner": {"id": "owner"},
            },
        },
        outputs={},
        provider=bucket.provider,
    )
    stack.resources.append(acl)


def public_subnet_for_the_database(stack: Stack) -> None:
    """A private subnet that hands out public addresses is not private (invariant 8)."""
    group = stack.find(DB_SUBNETS)
    subnet = next(s for s in stack.of_type(SUBNET) if s.urn in group.deps["subnetIds"])
    subnet.set(mapPublicIpOnLaunch=True)


def allow_everyone_beside_the_tls_denial(stack: Stack) -> None:
    policy = stack.find(BUCKET_POLICY)
    document = json.loads(policy.inputs["policy"])
    document["Statement"].append(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:GetObject", "Resource": "*"}
    )
    policy.set(policy=json.dumps(document))


def trust_beyond_ec2(stack: Stack) -> None:
    stack.find(ROLE, "worker").set(
        assumeRolePolicy=json.dumps(
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {
                            "Service": "ec2.amazonaws.com",
                            "AWS": "arn:aws:iam::123456789012:root",
                        },
                        "Action": "sts:AssumeRole",
                    }
                ]
            }
        )
    )


def drop_dependency(name_part: str, resource_type: str, dependency_part: str = "") -> Breakage:
    """The host ``name_part`` no longer waits for a resource of ``resource_type``."""

    def breakage(stack: Stack) -> None:
        host = stack.find(INSTANCE, name_part)
        dropped = {r.urn for r in stack.of_type(resource_type) if dependency_part in r.name} & set(
            host.dependencies
        )
        assert dropped, (name_part, resource_type)
        host.dependencies = [urn for urn in host.dependencies if urn not in dropped]

    return breakage


def replaced_create_first(stack: Stack) -> None:
    stack.find(INSTANCE, "worker-1").delete_before_replace = False


def tampered_host_lock(stack: Stack) -> None:
    lock = stack.find(BUCKET_OBJECT, "host-lock")
    lock.set(content=lock.inputs["content"].replace("xgboost==", "xgboost==9", 1))


BREAKAGES: list[tuple[str, str, Breakage]] = [
    (
        "dev",
        "ec2-hashed-installs",
        rewrite_user_data("worker-1", "--hash=sha256:", ""),
    ),
    (
        "dev",
        "ec2-hashed-installs",
        rewrite_user_data("control", "- python3.11\n", "- python3.11\n- python3.11-pip\n"),
    ),
    ("dev", "ec2-host-lock-uploaded", tampered_host_lock),
    (
        DASK_STACK,
        "sg-dask-ports",
        set_on(
            INGRESS_RULE,
            "dask-scheduler-from-worker",
            cidrIpv4="10.42.0.0/16",
            referencedSecurityGroupId=None,
        ),
    ),
    (
        DASK_STACK,
        "sg-dask-ports",
        set_on(INGRESS_RULE, "dask-nanny-from-control", fromPort=8787),
    ),
    (
        DASK_STACK,
        "sg-egress-limited",
        set_on(EGRESS_RULE, "to-control-dask-scheduler", toPort=9000),
    ),
    (
        DASK_STACK,
        "ec2-dask-tls",
        rewrite_user_data("worker-1", "worker tls://", "worker tcp://"),
    ),
    (
        DASK_STACK,
        "ec2-dask-tls",
        rewrite_user_data("control", "--protocol tls", "--protocol tcp"),
    ),
    (
        DASK_STACK,
        "ec2-dask-tls",
        rewrite_user_data(
            "control", "--dashboard-address 127.0.0.1:8787", "--dashboard-address :8787"
        ),
    ),
    (
        DASK_STACK,
        "ec2-dask-tls",
        rewrite_user_data("worker-1", " --tls-key /etc/mlops/dask/key.pem", ""),
    ),
    ("dev", "ec2-host-lock-uploaded", drop_dependency("control", BUCKET_OBJECT)),
    ("dev", "ec2-bootstrap-retried", rewrite_user_data("control", "Type=oneshot", "Type=simple")),
    (
        "dev",
        "ec2-bootstrap-retried",
        rewrite_user_data("worker-1", "Requires=mlops-bootstrap.service", "Wants=nothing"),
    ),
    (
        "dev",
        "ec2-migrates-before-serving",
        rewrite_user_data(
            "control", "Requires=mlflow-migrate.service", "Wants=mlflow-migrate.service"
        ),
    ),
    (
        "prod",
        "ec2-migrates-before-serving",
        rewrite_user_data("control", "_MIGRATE_ON_START=false", "_MIGRATE_ON_START=true"),
    ),
    (
        "prod",
        "ec2-boot-prerequisites",
        drop_dependency("control", SUBNET_RESERVATION),
    ),
    (
        "dev",
        "ec2-boot-prerequisites",
        set_on(SUBNET_RESERVATION, reservationType="prefix"),
    ),
    ("dev", "ec2-boot-prerequisites", drop_dependency("worker-1", ROLE_POLICY)),
    ("dev", "ec2-boot-prerequisites", drop_dependency("control", ROLE_POLICY_ATTACHMENT)),
    ("dev", "ec2-boot-prerequisites", drop_dependency("control", INSTANCE_PROFILE)),
    ("prod", "ec2-boot-prerequisites", drop_dependency("worker-1", ROUTE, "default")),
    ("prod", "ec2-boot-prerequisites", drop_dependency("worker-2", ASSOCIATION)),
    ("dev", "ec2-delete-before-replace", replaced_create_first),
    ("dev", "s3-public-access-blocked", set_on(PUBLIC_ACCESS, blockPublicPolicy=False)),
    (
        "dev",
        "s3-encrypted",
        set_on(
            ENCRYPTION,
            rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
        ),
    ),
    (
        "prod",
        "s3-versioned",
        set_on(VERSIONING, versioningConfiguration={"status": "Suspended"}),
    ),
    ("dev", "s3-lifecycle", set_on(LIFECYCLE, rules=[{"id": "x", "status": "Enabled"}])),
    ("dev", "s3-tls-only", set_on(BUCKET_POLICY, policy=json.dumps({"Statement": []}))),
    (
        "dev",
        "s3-tls-only",
        set_on(
            BUCKET_POLICY,
            policy=json.dumps(
                {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "s3:GetObject",
                            "Resource": "*",
                        }
                    ]
                }
            ),
        ),
    ),
    (
        "dev",
        "s3-owner-enforced",
        set_on(OWNERSHIP, rule={"objectOwnership": "ObjectWriter"}),
    ),
    ("dev", "s3-owner-enforced", set_on(BUCKET, acl="public-read")),
    ("prod", "s3-force-destroy", set_on(BUCKET, forceDestroy=True)),
    ("dev", "s3-bucket-complete", remove(PUBLIC_ACCESS)),
    ("dev", "rds-private", set_on(DB, publiclyAccessible=True)),
    ("dev", "rds-private-subnets", database_in_public_subnets),
    ("dev", "rds-encrypted", set_on(DB, storageEncrypted=False)),
    ("prod", "rds-backups", set_on(DB, backupRetentionPeriod=3)),
    ("dev", "rds-backups", set_on(DB, backupRetentionPeriod=None)),
    ("prod", "rds-deletion-protection", set_on(DB, deletionProtection=False)),
    ("ephemeral", "rds-deletion-protection", set_on(DB, deletionProtection=True)),
    ("prod", "rds-final-snapshot", set_on(DB, skipFinalSnapshot=True)),
    ("ephemeral", "rds-final-snapshot", set_on(DB, skipFinalSnapshot=False)),
    ("dev", "rds-generated-password", typed_password),
    ("dev", "rds-admits-control-only", database_open_to_a_cidr),
    ("prod", "rds-resilient", set_on(DB, multiAz=False)),
    ("dev", "rds-resilient", set_on(DB, autoMinorVersionUpgrade=False)),
    ("dev", "rds-tls", no_tls_parameter),
    (
        "dev",
        "ec2-imdsv2",
        set_on(INSTANCE, "worker", metadataOptions={"httpTokens": "optional"}),
    ),
    (
        "dev",
        "ec2-imdsv2",
        set_on(
            INSTANCE,
            "control",
            metadataOptions={"httpTokens": "required", "httpPutResponseHopLimit": 2},
        ),
    ),
    (
        "prod",
        "ec2-public-address",
        set_on(INSTANCE, "control", associatePublicIpAddress=True),
    ),
    (
        "dev",
        "ec2-encrypted-volumes",
        set_on(INSTANCE, "control", rootBlockDevice={"encrypted": False}),
    ),
    ("dev", "ec2-identity", set_on(INSTANCE, "worker", keyName="ops-laptop")),
    ("dev", "ec2-identity", set_on(INSTANCE, "worker", iamInstanceProfile=None)),
    ("dev", "ec2-user-data", set_on(INSTANCE, "control", userDataReplaceOnChange=False)),
    (
        "dev",
        "ec2-user-data",
        set_on(
            INSTANCE,
            "control",
            userDataBase64=user_data_base64("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"),
        ),
    ),
    ("dev", "ec2-user-data-secrets", secret_in_user_data),
    ("dev", "host-secrets-least", worker_reads_admin_password),
    (
        "dev",
        "ec2-service-transport",
        rewrite_user_data("control", "sslmode=verify-full", "sslmode=require"),
    ),
    (
        "dev",
        "ec2-service-transport",
        rewrite_user_data("control", "TLS_CHECK_HOSTNAME=true", "TLS_CHECK_HOSTNAME=false"),
    ),
    ("dev", "ec2-service-transport", rewrite_user_data("control", "--cors-allowed-origins", "--x")),
    ("dev", "ec2-service-transport", rewrite_user_data("control", "meta skuid", "meta mark")),
    (
        "prod",
        "ec2-termination-protection",
        set_on(INSTANCE, "control", disableApiTermination=False),
    ),
    (
        "dev",
        "sg-no-world-ingress",
        set_on(INGRESS_RULE, "mlflow-from-workers", cidrIpv4="0.0.0.0/0"),
    ),
    (
        "dev",
        "sg-no-world-ingress",
        set_on(INGRESS_RULE, "mlflow-from-workers", ipProtocol="-1", cidrIpv4="10.0.0.0/8"),
    ),
    (
        "dev",
        "sg-no-ssh",
        set_on(INGRESS_RULE, "prefect-from-workers", fromPort=22, toPort=22),
    ),
    (
        "dev",
        "sg-service-ports",
        set_on(INGRESS_RULE, "prefect-from-workers", cidrIpv4="192.168.0.0/16"),
    ),
    ("dev", "sg-described", set_on(EGRESS_RULE, "worker-https", description="")),
    ("dev", "sg-described", set_on(GROUP, "worker", description="Managed by Pulumi")),
    ("dev", "sg-one-rule-style", inline_and_separate_rules),
    ("dev", "sg-egress-limited", set_on(EGRESS_RULE, "worker-https", ipProtocol="-1")),
    (
        "dev",
        "sg-egress-limited",
        set_on(EGRESS_RULE, "control-https", fromPort=80, toPort=80),
    ),
    (
        "dev",
        "iam-no-wildcards",
        add_policy_statement({"Effect": "Allow", "Action": "*", "Resource": "*"}),
    ),
    (
        "dev",
        "iam-no-wildcards",
        add_policy_statement(
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"}
        ),
    ),
    (
        "dev",
        "iam-s3-own-bucket",
        add_policy_statement(
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::someone-elses-bucket/*",
            }
        ),
    ),
    (
        "dev",
        "iam-trust-ec2",
        set_on(
            ROLE,
            "worker",
            assumeRolePolicy=json.dumps(
                {
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
                    ]
                }
            ),
        ),
    ),
    (
        "dev",
        "iam-trust-ec2",
        set_on(
            ROLE,
            "scheduler",
            assumeRolePolicy=json.dumps(
                {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "scheduler.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ]
                }
            ),
        ),
    ),
    (
        "dev",
        "iam-no-users-or-admin",
        set_on(
            ROLE_POLICY_ATTACHMENT,
            "control-identity-ssm",
            policyArn="arn:aws:iam::aws:policy/AdministratorAccess",
        ),
    ),
    ("dev", "iam-ssm-core", role_without_ssm),
    (
        "dev",
        "sg-private-ingress-only",
        set_on(INGRESS_RULE, "prefect-from-workers", cidrIpv4="0.0.0.0/1"),
    ),
    ("dev", "sg-default-group-empty", set_on(DEFAULT_GROUP, egress=[{"protocol": "-1"}])),
    ("dev", "s3-tls-only", tls_1_0_allowed),
    (
        "dev",
        "iam-no-wildcards",
        add_policy_statement(
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:PutBucketPolicy"],
                "Resource": "arn:aws:s3:::mlops-artifacts",
            }
        ),
    ),
    # each condition a check states, broken alone (issue 10, finding 14)
    ("dev", "s3-tls-only", allow_everyone_beside_the_tls_denial),
    ("dev", "s3-owner-enforced", bucket_acl_to_everyone),
    ("dev", "rds-private-subnets", public_subnet_for_the_database),
    ("dev", "iam-trust-ec2", trust_beyond_ec2),
    (
        "dev",
        "ec2-user-data",
        set_on(
            INSTANCE,
            "worker",
            userDataBase64=user_data_base64(
                "#cloud-config\n# -----BEGIN OPENSSH PRIVATE KEY-----\n"
            ),
        ),
    ),
    (
        "dev",
        "sg-egress-limited",
        set_on(EGRESS_RULE, "worker-to-mlflow", fromPort=22, toPort=22),
    ),
    (
        "dev",
        "iam-no-wildcards",
        add_policy_statement(
            {"Effect": "Allow", "NotAction": "iam:CreateUser", "Resource": "arn:aws:s3:::x"}
        ),
    ),
    (
        "dev",
        "iam-no-wildcards",
        add_policy_statement(
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "arn:aws:secretsmanager:us-east-1:123456789012:secret:mlops-*",
            }
        ),
    ),
    (
        "dev",
        "sg-no-world-ingress",
        set_on(INGRESS_RULE, "mlflow-from-workers", cidrIpv4=None, cidrIpv6="::/0"),
    ),
    (
        "dev",
        "ec2-encrypted-volumes",
        set_on(
            INSTANCE,
            "worker",
            ebsBlockDevices=[{"deviceName": "/dev/sdf", "encrypted": False}],
        ),
    ),
    (
        "dev",
        "iam-own-secrets",
        add_policy_statement(
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-AbCdEf",
            }
        ),
    ),
]


@pytest.mark.parametrize(
    ("stack_name", "policy", "breakage"),
    BREAKAGES,
    ids=[f"{policy}[{stack_name}]-{n}" for n, (stack_name, policy, _) in enumerate(BREAKAGES)],
)
def test_a_bad_resource_is_reported(stack_name: str, policy: str, breakage: Breakage) -> None:
    stack = program_stack(stack_name)
    breakage(stack)
    violations = evaluate(stack)
    assert policy in policy_names(violations), violations
    assert all(v.message.startswith("invariant ") for v in violations)


def test_every_policy_has_a_bad_resource_it_reports() -> None:
    assert {policy for _, policy, _ in BREAKAGES} == {rule.name for rule in RULES}


def test_a_refreshed_group_listing_its_rule_resources_is_not_mixing_styles() -> None:
    """After `pulumi refresh` a group's outputs list the rules its rule resources created."""
    stack = program_stack("dev")
    group = stack.find(GROUP, "control")
    group.outputs["ingress"] = [
        {
            "protocol": "tcp",
            "fromPort": port,
            "toPort": port,
            "securityGroups": ["sg-1"],
            "description": "x",
        }
        for port in (5000, 4200)
    ]
    group.outputs["egress"] = [
        {
            "protocol": "tcp",
            "fromPort": 443,
            "toPort": 443,
            "cidrBlocks": ["0.0.0.0/0"],
            "description": "x",
        },
        {
            "protocol": "tcp",
            "fromPort": 5432,
            "toPort": 5432,
            "securityGroups": ["sg-2"],
            "description": "x",
        },
    ]
    assert evaluate(stack) == []


def test_an_iam_user_is_reported() -> None:
    stack = program_stack("dev")
    role = stack.find(ROLE, "worker")
    stack.resources.append(
        type(role)(
            type=ACCESS_KEY,
            name="ci-key",
            urn="urn:ci-key",
            inputs={"user": "ci"},
            outputs={},
        )
    )
    assert "iam-no-users-or-admin" in policy_names(evaluate(stack))


def test_20_user_data_given_as_text_is_judged() -> None:
    """A host with plain ``userData`` (no ``userDataBase64``) is judged on that text."""
    stack = program_stack("dev")
    stack.find(INSTANCE, "control").set(
        userDataBase64=None, userData="export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"
    )
    assert "ec2-user-data" in policy_names(evaluate(stack))


def test_the_pack_entry_point_starts_the_analyzer() -> None:
    """policy/__main__.py builds the pack: it serves on a port, which it prints, and waits."""
    with subprocess.Popen(
        [sys.executable, "-u", "__main__.py"],
        cwd=ROOT / "policy",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], 30)
            port = process.stdout.readline().strip() if ready else ""
        finally:
            process.kill()
            _, stderr = process.communicate(timeout=10)
    assert port.isdigit(), f"the pack printed no port within 30 s; stderr: {stderr}"


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("s3:Get*", "arn:aws:s3:::{bucket}/data/*"),
        ("s3:*Object", "arn:aws:s3:::{bucket}/data/*"),
        ("iam:Pass*", "arn:aws:iam::123456789012:role/worker"),
        ("secretsmanager:*", "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf"),
        ("ec2:Describe*", "*"),
        ("*", "arn:aws:s3:::{bucket}"),
    ],
)
def test_38_an_action_with_a_wildcard_is_reported_whatever_its_resource(
    action: str, resource: str
) -> None:
    stack = program_stack("dev")
    bucket = stack.find(BUCKET).outputs["bucket"]
    add_policy_statement(
        {"Effect": "Allow", "Action": [action], "Resource": resource.format(bucket=bucket)}
    )(stack)

    violations = evaluate(stack)

    assert "iam-no-wildcards" in policy_names(violations), violations
    assert any(action in v.message and "invariant 28, 31, 38" in v.message for v in violations)


def test_38_a_wildcard_in_a_role_inline_policy_is_reported() -> None:
    stack = program_stack("dev")
    statement = {"Effect": "Allow", "Action": "iam:Pass*", "Resource": "*"}
    stack.find(ROLE, "worker").set(
        inlinePolicies=[{"name": "extra", "policy": json.dumps({"Statement": [statement]})}]
    )
    assert "iam-no-wildcards" in policy_names(evaluate(stack))


def test_38_a_wildcard_in_a_deny_is_not_a_grant() -> None:
    """The bucket policy denies s3:* without TLS; a Deny with a wildcard narrows, never widens."""
    stack = program_stack("dev")
    objects = stack.find(BUCKET).outputs["arn"] + "/*"
    add_policy_statement({"Effect": "Deny", "Action": "s3:Delete*", "Resource": objects})(stack)
    assert evaluate(stack) == []


PRIVILEGED = [
    "AdministratorAccess",
    "PowerUserAccess",
    "IAMFullAccess",
    "AmazonEC2FullAccess",
    "AmazonS3FullAccess",
    "SecretsManagerReadWrite",
    "AmazonSSMFullAccess",
    "AmazonEC2RoleforSSM",
    "job-function/SystemAdministrator",
]


@pytest.mark.parametrize("name", PRIVILEGED)
def test_39_a_privileged_managed_policy_attached_is_reported(name: str) -> None:
    stack = program_stack("dev")
    attachment = stack.find(ROLE_POLICY_ATTACHMENT, "worker-identity-ssm")
    attachment.set(policyArn=f"arn:aws:iam::aws:policy/{name}")

    violations = evaluate(stack)

    assert "iam-no-users-or-admin" in policy_names(violations), violations
    assert any(name in v.message and "invariant 30, 39" in v.message for v in violations)


@pytest.mark.parametrize("name", ["PowerUserAccess", "AmazonS3FullAccess"])
def test_39_a_privileged_policy_in_a_role_managed_policy_arns_is_reported(name: str) -> None:
    stack = program_stack("dev")
    stack.find(ROLE, "control").set(managedPolicyArns=[f"arn:aws:iam::aws:policy/{name}"])
    assert "iam-no-users-or-admin" in policy_names(evaluate(stack))
