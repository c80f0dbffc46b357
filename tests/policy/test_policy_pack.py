"""The policy pack passes the program's resources and reports each deliberately bad one."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from collections.abc import Callable

import invariant_checks as checks
import pytest
from hostboot.cloudconfig import read_user_data_base64, user_data_base64
from pack_harness import ROOT, Stack, evaluate, policy_names, program_stack


def test_the_program_passes_every_policy(stack: Stack) -> None:
    assert evaluate(stack) == []


def test_the_policies_cover_invariants_1_to_31() -> None:
    covered = {n for rule in checks.RULES for n in rule.invariants}
    # 32 (secret outputs) is asserted in tests/infra; 49, 51 and 53 in tests/hosts and tests/infra.
    assert set(range(1, 32)) | {47, 48, 50, 52} <= covered


def test_environment_falls_back_to_the_provider_tag_then_to_prod() -> None:
    prod = program_stack("prod")
    assert evaluate(prod, read=lambda key: None) == []  # the provider's tag says prod
    provider = prod.find("pulumi:providers:aws")
    provider.inputs.pop("defaultTags")
    assert checks.context_for(lambda key: None, provider.inputs).environment == "prod"
    dev = program_stack("dev")  # a dev stack judged by prod's rules fails them
    dev.find("pulumi:providers:aws").inputs.pop("defaultTags")
    assert "rds-final-snapshot" in policy_names(evaluate(dev, read=lambda key: None))


def test_configured_service_cidrs_are_allowed_and_others_reported() -> None:
    stack = program_stack("dev")
    rule = stack.find(checks.INGRESS_RULE, "control-mlflow-from-workers")
    rule.set(cidrIpv4="10.8.0.0/16", referencedSecurityGroupId=None)
    rule.deps.pop("referencedSecurityGroupId")
    assert "sg-service-ports" in policy_names(evaluate(stack))
    stack.config[f"{checks.NAMESPACE}:serviceIngressCidrs"] = json.dumps(["10.8.0.0/16"])
    assert evaluate(stack) == []


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
        policy = stack.find(checks.POLICY_DOCUMENTS[0], "worker")
        document = json.loads(policy.inputs["policy"])
        document["Statement"].append(statement)
        policy.set(policy=json.dumps(document))

    return breakage


def database_in_public_subnets(stack: Stack) -> None:
    group = stack.find("aws:rds/subnetGroup:SubnetGroup")
    group.deps["subnetIds"] = [s.urn for s in stack.of_type(checks.SUBNET) if "public" in s.name]


def typed_password(stack: Stack) -> None:
    stack.find(checks.DB).deps.pop("password")


def database_open_to_a_cidr(stack: Stack) -> None:
    rule = stack.find(checks.INGRESS_RULE, "database-from-control")
    rule.set(cidrIpv4="10.0.0.0/8", referencedSecurityGroupId=None)
    rule.deps.pop("referencedSecurityGroupId")


def no_tls_parameter(stack: Stack) -> None:
    stack.find(checks.DB_PARAMS).set(parameters=[])


def secret_in_user_data(stack: Stack) -> None:
    host = stack.find(checks.INSTANCE, "control")
    password = stack.find(checks.RANDOM_PASSWORD, "mlflow-admin")
    text = read_user_data_base64(host.inputs["userDataBase64"])
    line = f"\nMLFLOW_AUTH_ADMIN_PASSWORD={password.outputs['result']}\n"
    host.set(userDataBase64=user_data_base64(text + line))
    host.deps.setdefault("userDataBase64", []).append(password.urn)


def worker_reads_admin_password(stack: Stack) -> None:
    """Invariant 47 broken: the workers' role may read the MLflow admin password again."""
    admin = stack.find(checks.SECRET, "mlflow-admin").outputs["arn"]
    statement = {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": admin}
    add_policy_statement(statement)(stack)


def rewrite_user_data(name_part: str, old: str, new: str) -> Breakage:
    """A host's user data with ``old`` replaced by ``new`` (it must occur)."""

    def breakage(stack: Stack) -> None:
        host = stack.find(checks.INSTANCE, name_part)
        text = read_user_data_base64(host.inputs["userDataBase64"])
        assert old in text, old
        host.set(userDataBase64=user_data_base64(text.replace(old, new)))

    return breakage


def inline_and_separate_rules(stack: Stack) -> None:
    stack.find(checks.GROUP, "control").set(
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
            for r in stack.of_type(checks.ATTACHMENTS[0])
            if "worker" in r.name and r.inputs["policyArn"] == checks.SSM_CORE
        )
    )


BREAKAGES: list[tuple[str, str, Breakage]] = [
    ("dev", "s3-public-access-blocked", set_on(checks.PUBLIC_ACCESS, blockPublicPolicy=False)),
    (
        "dev",
        "s3-encrypted",
        set_on(
            checks.ENCRYPTION,
            rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
        ),
    ),
    (
        "prod",
        "s3-versioned",
        set_on(checks.VERSIONING, versioningConfiguration={"status": "Suspended"}),
    ),
    ("dev", "s3-lifecycle", set_on(checks.LIFECYCLE, rules=[{"id": "x", "status": "Enabled"}])),
    ("dev", "s3-tls-only", set_on(checks.BUCKET_POLICY, policy=json.dumps({"Statement": []}))),
    (
        "dev",
        "s3-tls-only",
        set_on(
            checks.BUCKET_POLICY,
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
        set_on(checks.OWNERSHIP, rule={"objectOwnership": "ObjectWriter"}),
    ),
    ("dev", "s3-owner-enforced", set_on(checks.BUCKET, acl="public-read")),
    ("prod", "s3-force-destroy", set_on(checks.BUCKET, forceDestroy=True)),
    ("dev", "s3-bucket-complete", remove(checks.PUBLIC_ACCESS)),
    ("dev", "rds-private", set_on(checks.DB, publiclyAccessible=True)),
    ("dev", "rds-private-subnets", database_in_public_subnets),
    ("dev", "rds-encrypted", set_on(checks.DB, storageEncrypted=False)),
    ("prod", "rds-backups", set_on(checks.DB, backupRetentionPeriod=3)),
    ("dev", "rds-backups", set_on(checks.DB, backupRetentionPeriod=None)),
    ("prod", "rds-deletion-protection", set_on(checks.DB, deletionProtection=False)),
    ("ephemeral", "rds-deletion-protection", set_on(checks.DB, deletionProtection=True)),
    ("prod", "rds-final-snapshot", set_on(checks.DB, skipFinalSnapshot=True)),
    ("ephemeral", "rds-final-snapshot", set_on(checks.DB, skipFinalSnapshot=False)),
    ("dev", "rds-generated-password", typed_password),
    ("dev", "rds-admits-control-only", database_open_to_a_cidr),
    ("prod", "rds-resilient", set_on(checks.DB, multiAz=False)),
    ("dev", "rds-resilient", set_on(checks.DB, autoMinorVersionUpgrade=False)),
    ("dev", "rds-tls", no_tls_parameter),
    (
        "dev",
        "ec2-imdsv2",
        set_on(checks.INSTANCE, "worker", metadataOptions={"httpTokens": "optional"}),
    ),
    (
        "dev",
        "ec2-imdsv2",
        set_on(
            checks.INSTANCE,
            "control",
            metadataOptions={"httpTokens": "required", "httpPutResponseHopLimit": 2},
        ),
    ),
    (
        "prod",
        "ec2-public-address",
        set_on(checks.INSTANCE, "control", associatePublicIpAddress=True),
    ),
    (
        "dev",
        "ec2-encrypted-volumes",
        set_on(checks.INSTANCE, "control", rootBlockDevice={"encrypted": False}),
    ),
    ("dev", "ec2-identity", set_on(checks.INSTANCE, "worker", keyName="ops-laptop")),
    ("dev", "ec2-identity", set_on(checks.INSTANCE, "worker", iamInstanceProfile=None)),
    ("dev", "ec2-user-data", set_on(checks.INSTANCE, "control", userDataReplaceOnChange=False)),
    (
        "dev",
        "ec2-user-data",
        set_on(
            checks.INSTANCE,
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
        set_on(checks.INSTANCE, "control", disableApiTermination=False),
    ),
    (
        "dev",
        "sg-no-world-ingress",
        set_on(checks.INGRESS_RULE, "mlflow-from-workers", cidrIpv4="0.0.0.0/0"),
    ),
    (
        "dev",
        "sg-no-world-ingress",
        set_on(checks.INGRESS_RULE, "mlflow-from-workers", ipProtocol="-1", cidrIpv4="10.0.0.0/8"),
    ),
    (
        "dev",
        "sg-no-ssh",
        set_on(checks.INGRESS_RULE, "prefect-from-workers", fromPort=22, toPort=22),
    ),
    (
        "dev",
        "sg-service-ports",
        set_on(checks.INGRESS_RULE, "prefect-from-workers", cidrIpv4="192.168.0.0/16"),
    ),
    ("dev", "sg-described", set_on(checks.EGRESS_RULE, "worker-https", description="")),
    ("dev", "sg-described", set_on(checks.GROUP, "worker", description="Managed by Pulumi")),
    ("dev", "sg-one-rule-style", inline_and_separate_rules),
    ("dev", "sg-egress-limited", set_on(checks.EGRESS_RULE, "worker-https", ipProtocol="-1")),
    (
        "dev",
        "sg-egress-limited",
        set_on(checks.EGRESS_RULE, "control-https", fromPort=80, toPort=80),
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
            checks.ROLE,
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
            checks.ROLE,
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
            checks.ATTACHMENTS[0],
            "control-identity-ssm",
            policyArn="arn:aws:iam::aws:policy/AdministratorAccess",
        ),
    ),
    ("dev", "iam-ssm-core", role_without_ssm),
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
    assert {policy for _, policy, _ in BREAKAGES} == {rule.name for rule in checks.RULES}


def test_a_refreshed_group_listing_its_rule_resources_is_not_mixing_styles() -> None:
    """After `pulumi refresh` a group's outputs list the rules its rule resources created."""
    stack = program_stack("dev")
    group = stack.find(checks.GROUP, "control")
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
    role = stack.find(checks.ROLE, "worker")
    stack.resources.append(
        type(role)(
            type="aws:iam/accessKey:AccessKey",
            name="ci-key",
            urn="urn:ci-key",
            inputs={"user": "ci"},
            outputs={},
        )
    )
    assert "iam-no-users-or-admin" in policy_names(evaluate(stack))


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
