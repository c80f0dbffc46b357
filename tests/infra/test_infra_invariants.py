"""One test per invariant of SECURITY_INVARIANTS.md (1-32, 43-45) over the program's registrations.

Each test runs for the dev, prod and ephemeral stacks (the ``run`` fixture) and asserts on what
the mocked program registered, after it ran. Host-service invariants 33-35 are asserted on the
rendered files in tests/hosts; 36 (flow code) in tests/pipeline.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hostboot
import pytest
import yaml
from hostboot.cloudconfig import read_user_data_base64
from resource_types import (
    ASSOCIATION,
    AWS_PROVIDER,
    BUCKET,
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
    NAT,
    OWNERSHIP,
    PUBLIC_ACCESS,
    RANDOM_PASSWORD,
    ROLE,
    ROLE_POLICY,
    ROLE_POLICY_ATTACHMENT,
    ROUTE,
    SECRET,
    SECRET_VERSION,
    SUBNET,
    SUBNET_RESERVATION,
    TOPIC,
    VERSIONING,
    VOLUME,
    VPC,
)

from tests.support.program import ProgramRun
from tests.support.pulumi_mocks import Registered

SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
ACCESS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")
# The only actions a host may take on the bucket itself (not its objects): reading its
# listing and region. Nothing that changes or deletes its configuration (invariant 45).
BUCKET_LEVEL_ACTIONS = {"s3:ListBucket", "s3:GetBucketLocation"}


# -- reading the registrations ------------------------------------------------------------------


def bucket_parts(run: ProgramRun, resource_type: str) -> list[Registered]:
    """The resources of a type that configure the artifact bucket."""
    bucket = run.one(BUCKET)
    return [r for r in run.of_type(resource_type) if r.get("bucket") == bucket.id]


def control(run: ProgramRun) -> Registered:
    return run.by_id(run.outputs["control_instance_id"])


def workers(run: ProgramRun) -> list[Registered]:
    return [run.by_id(i) for i in run.outputs["worker_instance_ids"]]


def group_of(run: ProgramRun, host: Registered) -> str:
    (group_id,) = host.get("vpcSecurityGroupIds")
    return group_id


def database_group(run: ProgramRun) -> str:
    (group_id,) = run.one(DB).get("vpcSecurityGroupIds")
    return group_id


def public_subnet_ids(run: ProgramRun) -> set[str]:
    """Subnets whose route table sends traffic to an internet gateway."""
    to_internet = {
        r.get("routeTableId")
        for r in run.of_type(ROUTE)
        if r.get("gatewayId", "").startswith("igw-")
    }
    return {
        a.get("subnetId") for a in run.of_type(ASSOCIATION) if a.get("routeTableId") in to_internet
    }


def private_subnet_ids(run: ProgramRun) -> set[str]:
    return {s.id for s in run.of_type(SUBNET)} - public_subnet_ids(run)


@dataclass(frozen=True)
class Rule:
    group: str
    port: tuple[int, int]
    protocol: str
    cidr: str | None
    peer: str | None
    description: str


def rules(run: ProgramRun, resource_type: str) -> list[Rule]:
    return [
        Rule(
            group=r.get("securityGroupId"),
            port=(int(r.get("fromPort", -1)), int(r.get("toPort", -1))),
            protocol=str(r.get("ipProtocol")),
            cidr=r.get("cidrIpv4") or r.get("cidrIpv6"),
            peer=r.get("referencedSecurityGroupId"),
            description=r.get("description", ""),
        )
        for r in run.of_type(resource_type)
    ]


def policy_statements(run: ProgramRun) -> list[dict[str, Any]]:
    """Every statement of every inline role policy."""
    return [s for p in run.of_type(ROLE_POLICY) for s in json.loads(p.get("policy"))["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def secret_values(run: ProgramRun) -> list[str]:
    """Every generated secret value (the mocked random passwords)."""
    return [p.state["result"] for p in run.of_type(RANDOM_PASSWORD)]


def stored_secret(run: ProgramRun, name_part: str) -> Registered:
    (secret,) = [s for s in run.of_type(SECRET) if name_part in s.name]
    return secret


def user_data(host: Registered) -> str:
    """A host's #cloud-config text (the instance gets it gzipped, in ``userDataBase64``)."""
    return read_user_data_base64(host.get("userDataBase64"))


def user_data_texts(user_data: str) -> list[str]:
    """The user data, and every write_files content in it decoded (secrets could hide there)."""
    texts = [user_data]
    for item in yaml.safe_load(user_data).get("write_files", []):
        content, encoding = item.get("content", ""), item.get("encoding", "")
        if "b64" in encoding or "base64" in encoding:
            raw = base64.b64decode(content)
            texts.append((gzip.decompress(raw) if "gz" in encoding else raw).decode())
    return texts


# -- S3 ------------------------------------------------------------------------------------------


def test_01_bucket_public_access_fully_blocked(run: ProgramRun) -> None:
    (block,) = bucket_parts(run, PUBLIC_ACCESS)
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert {flag: block.get(flag) for flag in flags} == dict.fromkeys(flags, True)


def test_02_bucket_encrypted_at_rest(run: ProgramRun) -> None:
    (encryption,) = bucket_parts(run, ENCRYPTION)
    (rule,) = encryption.get("rules")
    default = rule["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "AES256" or (
        default["sseAlgorithm"] == "aws:kms" and rule.get("bucketKeyEnabled") is True
    )


def test_03_bucket_versioning(run: ProgramRun) -> None:
    (versioning,) = bucket_parts(run, VERSIONING)
    allowed = {"Enabled", "Suspended"} if run.environment == "ephemeral" else {"Enabled"}
    assert versioning.get("versioningConfiguration")["status"] in allowed


def test_04_lifecycle_expires_noncurrent_versions_and_aborts_uploads(run: ProgramRun) -> None:
    (lifecycle,) = bucket_parts(run, LIFECYCLE)
    whole_bucket = [
        r
        for r in lifecycle.get("rules")
        if r["status"] == "Enabled" and not r.get("filter", {}).get("prefix")
    ]
    assert any(r["noncurrentVersionExpiration"]["noncurrentDays"] > 0 for r in whole_bucket)
    assert any(r["abortIncompleteMultipartUpload"]["daysAfterInitiation"] > 0 for r in whole_bucket)


def test_44_bucket_policy_denies_tls_older_than_1_2(run: ProgramRun) -> None:
    """artifact_store.py: every request must use TLS 1.2 or newer."""
    bucket = run.one(BUCKET)
    (policy,) = bucket_parts(run, BUCKET_POLICY)
    (denial,) = [
        s
        for s in json.loads(policy.get("policy"))["Statement"]
        if s["Effect"] == "Deny" and "s3:TlsVersion" in s["Condition"].get("NumericLessThan", {})
    ]
    assert denial["Principal"] == "*"
    assert denial["Action"] == "s3:*"
    assert float(denial["Condition"]["NumericLessThan"]["s3:TlsVersion"]) >= 1.2
    assert set(denial["Resource"]) == {bucket.state["arn"], bucket.state["arn"] + "/*"}


def test_05_bucket_policy_denies_insecure_transport(run: ProgramRun) -> None:
    bucket = run.one(BUCKET)
    (policy,) = bucket_parts(run, BUCKET_POLICY)
    statements = json.loads(policy.get("policy"))["Statement"]
    denials = [
        s
        for s in statements
        if s["Effect"] == "Deny"
        and s["Principal"] == "*"
        and s["Action"] == "s3:*"
        and s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    (denial,) = denials
    assert set(denial["Resource"]) == {bucket.state["arn"], bucket.state["arn"] + "/*"}


def test_06_bucket_owner_enforced_no_public_acl_no_public_allow(run: ProgramRun) -> None:
    (ownership,) = bucket_parts(run, OWNERSHIP)
    assert ownership.get("rule") == {"objectOwnership": "BucketOwnerEnforced"}
    assert run.one(BUCKET).get("acl") in (None, "private")
    assert not [r for r in run.resources if r.type.startswith("aws:s3/bucketAcl")]
    for policy in run.of_type(BUCKET_POLICY):
        for statement in json.loads(policy.get("policy"))["Statement"]:
            assert not (
                statement["Effect"] == "Allow" and statement["Principal"] in ("*", {"AWS": "*"})
            )


def test_07_bucket_force_destroy_only_outside_prod(run: ProgramRun) -> None:
    assert run.one(BUCKET).get("forceDestroy", False) is (run.environment != "prod")


# -- RDS -----------------------------------------------------------------------------------------


def test_08_database_private(run: ProgramRun) -> None:
    db = run.one(DB)
    assert db.get("publiclyAccessible", False) is False
    (group,) = [g for g in run.of_type(DB_SUBNETS) if g.id == db.get("dbSubnetGroupName")]
    subnets = set(group.get("subnetIds"))
    assert len(subnets) == 2
    assert subnets <= private_subnet_ids(run)
    zones = {run.by_id(s).get("availabilityZone") for s in subnets}
    assert len(zones) == 2, "a DB subnet group needs two availability zones"


def test_09_database_storage_encrypted(run: ProgramRun) -> None:
    assert run.one(DB).get("storageEncrypted") is True


def test_10_database_backups_retained(run: ProgramRun) -> None:
    days = run.one(DB).get("backupRetentionPeriod")
    assert days is not None
    assert days >= (7 if run.environment == "prod" else 1)


def test_11_database_deletion_protection(run: ProgramRun) -> None:
    expected = {"prod": True, "ephemeral": False}.get(run.environment)
    protection = run.one(DB).get("deletionProtection")
    if expected is None:  # dev follows its configuration
        expected = run.config["mlops-platform:deletionProtection"] == "true"
    assert protection is expected


def test_12_database_final_snapshot(run: ProgramRun) -> None:
    db = run.one(DB)
    if run.environment == "prod":
        assert db.get("skipFinalSnapshot") is False
        assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", db.get("finalSnapshotIdentifier"))
    else:
        assert db.get("skipFinalSnapshot") is True


def test_13_database_password_generated_and_secret(run: ProgramRun) -> None:
    db = run.one(DB)
    assert db.is_secret("password")
    (generated,) = [p for p in run.of_type(RANDOM_PASSWORD) if "db-password" in p.name]
    assert db.get("password") == generated.state["result"]
    assert generated.get("special") is False
    assert generated.get("length") >= 16
    secret = stored_secret(run, "db-password")
    (version,) = [v for v in run.of_type(SECRET_VERSION) if v.get("secretId") == secret.id]
    assert version.is_secret("secretString")
    assert version.get("secretString") == generated.state["result"]


def test_14_database_admits_postgres_only_from_control_group(run: ProgramRun) -> None:
    db_group = database_group(run)
    admitted = [r for r in rules(run, INGRESS_RULE) if r.group == db_group]
    assert admitted == [
        Rule(
            db_group,
            (5432, 5432),
            "tcp",
            None,
            group_of(run, control(run)),
            admitted[0].description,
        )
    ]
    (group,) = [g for g in run.of_type(GROUP) if g.id == db_group]
    assert not group.get("ingress"), "no inline ingress on the database group"


def test_15_database_multi_az_minor_upgrades_and_tls(run: ProgramRun) -> None:
    db = run.one(DB)
    assert db.get("multiAz", False) is (run.environment == "prod")
    assert db.get("autoMinorVersionUpgrade") is not False
    (params,) = [p for p in run.of_type(DB_PARAMS) if p.id == db.get("parameterGroupName")]
    assert params.get("family") == "postgres16"
    assert db.get("engineVersion") == "16"
    assert {"name": "rds.force_ssl", "value": "1", "applyMethod": "immediate"} in params.get(
        "parameters"
    )
    (settings,) = run.control_settings
    # Invariant 50: the server's certificate and name are checked against AWS's RDS CAs.
    assert settings.db_sslmode == "verify-full"
    assert (
        settings.db_ca_bundle_url
        == "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
    )


# -- EC2 -----------------------------------------------------------------------------------------


def test_17_no_subnet_gives_instances_a_public_address_on_its_own(run: ProgramRun) -> None:
    """network.py: a public address comes only from the host's own setting (invariant 17)."""
    subnets = run.of_type(SUBNET)
    assert len(subnets) == 4
    assert [s.get("mapPublicIpOnLaunch") for s in subnets] == [False] * 4


def test_43_the_default_security_group_is_taken_over_and_left_empty(run: ProgramRun) -> None:
    """network.py: the VPC's default group has no rules, so nothing can use it by accident."""
    (default,) = run.of_type(DEFAULT_GROUP)
    assert default.get("vpcId") == run.one(VPC).id
    assert not default.get("ingress")
    assert not default.get("egress")


def test_16_hosts_require_imdsv2_with_hop_limit_1(run: ProgramRun) -> None:
    for host in run.of_type(INSTANCE):
        options = host.get("metadataOptions")
        assert options["httpTokens"] == "required", host.name
        assert options["httpPutResponseHopLimit"] == 1, host.name


def test_17_public_address_only_where_hosts_egress_publicly(run: ProgramRun) -> None:
    public = run.environment != "prod"
    expected_subnets = public_subnet_ids(run) if public else private_subnet_ids(run)
    for host in run.of_type(INSTANCE):
        assert host.get("associatePublicIpAddress") is public, host.name
        assert host.get("subnetId") in expected_subnets, host.name
        assert ("publicIp" in host.state) is public, host.name
    if public:
        assert not [r for r in run.resources if r.type == NAT]
    else:  # prod: private hosts reach the internet through the NAT gateway
        (nat,) = run.of_type(NAT)
        assert nat.get("subnetId") in public_subnet_ids(run)
        assert any(r.get("natGatewayId") == nat.id for r in run.of_type(ROUTE))
    host_groups = {group_of(run, h) for h in run.of_type(INSTANCE)}
    assert not [r for r in rules(run, INGRESS_RULE) if r.group in host_groups and r.cidr]


def test_18_volumes_encrypted(run: ProgramRun) -> None:
    for host in run.of_type(INSTANCE):
        assert host.get("rootBlockDevice")["encrypted"] is True, host.name
        assert all(v["encrypted"] for v in host.get("ebsBlockDevices", [])), host.name
    assert not [r for r in run.resources if r.type == VOLUME]


def test_19_hosts_have_instance_profile_and_no_key(run: ProgramRun) -> None:
    profiles = {p.id for p in run.of_type(INSTANCE_PROFILE)}
    for host in run.of_type(INSTANCE):
        assert host.get("iamInstanceProfile") in profiles, host.name
        assert host.get("keyName") is None, host.name


def test_20_user_data_holds_no_secret_and_replaces_on_change(run: ProgramRun) -> None:
    values = secret_values(run)
    assert len(values) == 8
    for host in run.of_type(INSTANCE):
        assert host.get("userDataReplaceOnChange") is True, host.name
        assert not host.is_secret("userDataBase64"), f"a secret flowed into {host.name}'s user data"
        for text in user_data_texts(user_data(host)):
            assert not [v for v in values if v in text], host.name
            assert not ACCESS_KEY_ID.search(text), host.name
            assert "PRIVATE KEY-----" not in text, host.name
    arns = {s.state["arn"] for s in run.of_type(SECRET)}
    (settings,) = run.control_settings
    assert {
        settings.db_password_secret_arn,
        settings.mlflow_db_password_secret_arn,
        settings.mlflow_auth_db_password_secret_arn,
        settings.prefect_db_password_secret_arn,
        settings.mlflow_admin_password_secret_arn,
        settings.mlflow_worker_password_secret_arn,
        settings.mlflow_flask_secret_key_secret_arn,
        settings.prefect_auth_string_secret_arn,
    } == arns
    for worker in run.worker_settings:
        assert {
            worker.mlflow_worker_password_secret_arn,
            worker.prefect_auth_string_secret_arn,
        } <= arns


def test_21_prod_control_host_termination_protected(run: ProgramRun) -> None:
    host = control(run)
    if run.environment == "prod":
        assert host.get("disableApiTermination") is True
        assert host.get("forceDestroy") is True, "pulumi-previewed replacements must still work"
    assert not any(w.get("disableApiTermination") for w in workers(run))


# -- security groups -----------------------------------------------------------------------------


def test_22_no_ingress_from_anywhere(run: ProgramRun) -> None:
    for rule in rules(run, INGRESS_RULE):
        assert rule.cidr not in ("0.0.0.0/0", "::/0"), rule
        assert not (rule.protocol == "-1" and rule.cidr), rule
        if rule.cidr:
            assert ipaddress.ip_network(rule.cidr).prefixlen > 0, rule
    assert not [g for g in run.of_type(GROUP) if g.get("ingress")]


def test_23_no_ssh_ingress(run: ProgramRun) -> None:
    for rule in rules(run, INGRESS_RULE):
        assert rule.protocol != "-1", rule
        assert not rule.port[0] <= 22 <= rule.port[1], rule


def test_24_service_ports_admit_only_workers_and_configured_cidrs(run: ProgramRun) -> None:
    worker_group = group_of(run, workers(run)[0])
    configured = set(json.loads(run.config["mlops-platform:serviceIngressCidrs"]))
    for port in (5000, 4200):
        admitted = [r for r in rules(run, INGRESS_RULE) if r.port[0] <= port <= r.port[1]]
        assert {r.peer for r in admitted if r.peer} == {worker_group}
        assert {r.cidr for r in admitted if r.cidr} == configured


def test_25_every_group_and_rule_described(run: ProgramRun) -> None:
    for group in run.of_type(GROUP):
        assert group.get("description", "").strip() not in ("", "Managed by Pulumi"), group.name
    for rule in rules(run, INGRESS_RULE) + rules(run, EGRESS_RULE):
        assert rule.description.strip(), rule


def test_26_no_group_mixes_inline_and_separate_rules(run: ProgramRun) -> None:
    targeted = {r.group for r in rules(run, INGRESS_RULE) + rules(run, EGRESS_RULE)}
    inline = {g.id for g in run.of_type(GROUP) if g.get("ingress") or g.get("egress")}
    assert not targeted & inline


def test_27_egress_limited_to_what_hosts_need(run: ProgramRun) -> None:
    control_group, worker_group = group_of(run, control(run)), group_of(run, workers(run)[0])
    db_group = database_group(run)
    egress = {(r.group, r.port, r.protocol, r.cidr, r.peer) for r in rules(run, EGRESS_RULE)}
    assert egress == {
        (control_group, (443, 443), "tcp", "0.0.0.0/0", None),
        (control_group, (5432, 5432), "tcp", None, db_group),
        (worker_group, (443, 443), "tcp", "0.0.0.0/0", None),
        (worker_group, (5000, 5000), "tcp", None, control_group),
        (worker_group, (4200, 4200), "tcp", None, control_group),
    }


# -- IAM -----------------------------------------------------------------------------------------


def test_28_no_wildcard_actions_and_s3_scoped_to_bucket(run: ProgramRun) -> None:
    bucket_arn = run.one(BUCKET).state["arn"]
    for statement in policy_statements(run):
        actions, resources = as_list(statement["Action"]), as_list(statement["Resource"])
        assert not [a for a in actions if a == "*" or a.endswith(":*")], statement
        assert "*" not in resources, statement
        if any(a.startswith("s3:") for a in actions):
            assert all(r == bucket_arn or r.startswith(bucket_arn + "/") for r in resources)


def test_29_roles_trust_only_ec2(run: ProgramRun) -> None:
    """Instance roles trust EC2; the host scheduler's role trusts EventBridge Scheduler for
    this account only (a role trusting the service without the condition could be used by
    any account's schedules)."""
    trusts = {}
    for role in run.of_type(ROLE):
        (statement,) = json.loads(role.get("assumeRolePolicy"))["Statement"]
        trusts[role.name] = statement
    scheduler = {name: s for name, s in trusts.items() if name.endswith("-scheduler")}
    account = run.of_type(INSTANCE)[0].state["arn"].split(":")[4]
    assert len(scheduler) == (1 if run.environment != "prod" else 0)
    for name, statement in trusts.items():
        if name in scheduler:
            assert statement == {
                "Effect": "Allow",
                "Principal": {"Service": "scheduler.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            }
        else:
            assert statement == {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }


def test_30_no_users_or_keys_no_admin_ssm_core_everywhere(run: ProgramRun) -> None:
    forbidden = ("aws:iam/user:", "aws:iam/accessKey:", "aws:iam/userLoginProfile:")
    assert not [r for r in run.resources if r.type.startswith(forbidden)]
    attachments = run.of_type(ROLE_POLICY_ATTACHMENT)
    assert not [a for a in attachments if a.get("policyArn").endswith("/AdministratorAccess")]
    profiled_roles = {p.get("role") for p in run.of_type(INSTANCE_PROFILE)}
    with_ssm = {a.get("role") for a in attachments if a.get("policyArn") == SSM_CORE}
    assert profiled_roles
    assert profiled_roles <= with_ssm


def test_31_secret_reads_scoped_to_own_secrets(run: ProgramRun) -> None:
    arns = {s.state["arn"]: s.name for s in run.of_type(SECRET)}
    readers = {}
    for policy in run.of_type(ROLE_POLICY):
        for statement in json.loads(policy.get("policy"))["Statement"]:
            if "secretsmanager:GetSecretValue" in as_list(statement["Action"]):
                readers[policy.get("role")] = set(as_list(statement["Resource"]))
    assert all(resources <= arns.keys() for resources in readers.values())
    by_role = {role: sorted(arns[a] for a in r) for role, r in readers.items()}
    # Invariant 47: the workers read their own MLflow user's password, never the admin's.
    assert sorted(by_role.values()) == [
        [
            "mlops-db-mlflow-auth-password",
            "mlops-db-mlflow-password",
            "mlops-db-password",
            "mlops-db-prefect-password",
            "mlops-mlflow-admin-password",
            "mlops-mlflow-flask-secret-key",
            "mlops-mlflow-worker-password",
            "mlops-prefect-auth-string",
        ],
        ["mlops-mlflow-worker-password", "mlops-prefect-auth-string"],
    ]


def test_45_hosts_only_read_the_bucket_itself(run: ProgramRun) -> None:
    """iam.py: S3 on the bucket and the prefixes a host works in; never its configuration."""
    bucket_arn = run.one(BUCKET).state["arn"]
    on_bucket = [s for s in policy_statements(run) if bucket_arn in as_list(s["Resource"])]
    assert on_bucket
    for statement in on_bucket:
        assert set(as_list(statement["Action"])) <= BUCKET_LEVEL_ACTIONS, statement


# -- secrets -------------------------------------------------------------------------------------


def test_33_every_generated_secret_is_long_and_alphanumeric(run: ProgramRun) -> None:
    """credentials.py: letters and digits only (they sit unescaped in connection strings and
    environment files), and long: the MLflow admin password needs 12 (invariant 33)."""
    generated = run.of_type(RANDOM_PASSWORD)
    assert len(generated) >= 4
    for password in generated:
        assert password.get("special") is False, password.name
        assert password.get("length") >= 16, password.name


def test_32_secrets_exported_only_as_secret_outputs(run: ProgramRun) -> None:
    assert run.secret_outputs == {"mlflow_admin_password", "prefect_api_auth_string"}
    values = secret_values(run)
    for name, value in run.outputs.items():
        if name not in run.secret_outputs:
            assert not [v for v in values if v in json.dumps(value)], name


# -- the outputs and the shape of the stack ------------------------------------------------------


def test_stack_outputs_named_as_in_architecture(run: ProgramRun) -> None:
    outputs = run.outputs
    address = control(run).state["privateIp"]
    db = run.one(DB)
    assert outputs == {
        "environment": run.environment,
        "region": "us-east-1",
        "artifact_bucket": run.one(BUCKET).id,
        "mlflow_tracking_uri": f"http://{address}:5000",
        "prefect_api_url": f"http://{address}:4200/api",
        "work_pool": "training",
        "control_instance_id": control(run).id,
        "worker_instance_ids": [w.id for w in workers(run)],
        "db_endpoint": f"{db.state['address']}:5432",
        "mlflow_admin_username": "admin",
        "mlflow_admin_password": outputs["mlflow_admin_password"],
        "prefect_api_auth_string": outputs["prefect_api_auth_string"],
        # No Dask cluster in the example stacks (daskWorkers 0): tests/infra/test_infra_dask.py
        "dask_scheduler_address": "",
        "dask_workers": 0,
        # Cost guardrails: the budget's alert topic (a budget by default), an ephemeral expiry.
        "budget_alert_topic_arn": run.one(TOPIC).state["arn"],
        **({"expires_at": "2026-12-01T09:00:00Z"} if run.environment == "ephemeral" else {}),
    }
    assert len(outputs["worker_instance_ids"]) == int(run.config["mlops-platform:workerCount"])


def test_the_outputs_table_documents_every_output(run: ProgramRun) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "infrastructure.md").read_text()
    table = page.split("## Outputs", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert set(run.outputs) <= documented
    assert documented - set(run.outputs) <= {"expires_at"}  # only ephemeral stacks have it


def test_control_host_has_the_fixed_address_everyone_uses(run: ProgramRun) -> None:
    host = control(run)
    subnet = ipaddress.ip_network(run.by_id(host.get("subnetId")).get("cidrBlock"))
    assert host.get("privateIp") == str(subnet.network_address + 10)
    assert host.engine.delete_before_replace, "a fixed address needs delete-before-replace"
    (settings,) = run.control_settings
    assert settings.private_ip == host.get("privateIp")
    assert {w.control_private_ip for w in run.worker_settings} == {host.get("privateIp")}


def test_hosts_boot_with_the_stack_settings(run: ProgramRun) -> None:
    (settings,) = run.control_settings
    db = run.one(DB)
    assert (settings.db_host, settings.db_port, settings.db_username) == (
        db.state["address"],
        5432,
        db.get("username"),
    )
    assert settings.artifact_bucket == run.one(BUCKET).id
    assert settings.instance_type == control(run).get("instanceType")
    assert (settings.environment, settings.region, settings.work_pool) == (
        run.environment,
        "us-east-1",
        "training",
    )
    names = [w.worker_name for w in run.worker_settings]
    assert len(names) == len(set(names)) == len(workers(run))
    for host in run.of_type(INSTANCE):
        # EC2 stores the gzipped document: that is what its 16 KB cap measures.
        assert len(base64.b64decode(host.get("userDataBase64"))) < 16 * 1024, host.name


def test_roles_grant_the_bucket_prefixes_the_services_use(run: ProgramRun) -> None:
    bucket = run.one(BUCKET)
    for host in run.of_type(INSTANCE):
        (profile,) = [
            p for p in run.of_type(INSTANCE_PROFILE) if p.id == host.get("iamInstanceProfile")
        ]
        granted = {
            resource
            for policy in run.of_type(ROLE_POLICY)
            if policy.get("role") == profile.get("role")
            for statement in json.loads(policy.get("policy"))["Statement"]
            for resource in as_list(statement["Resource"])
        }
        used = set(re.findall(rf"s3://{bucket.id}/([\w.-]+)", user_data(host)))
        assert used, f"{host.name} uses no prefix of the bucket"
        for prefix in used:
            assert f"{bucket.state['arn']}/{prefix}/*" in granted, (host.name, prefix)


def test_hosts_run_the_looked_up_al2023_ami_and_keep_it(run: ProgramRun) -> None:
    (lookup,) = [c for c in run.mocks.calls if c.token == "aws:ec2/getAmi:getAmi"]
    assert lookup.args["owners"] == ["amazon"]
    assert {"name": "name", "values": ["al2023-ami-2023.*-x86_64"]} in lookup.args["filters"]
    for host in run.of_type(INSTANCE):
        assert host.get("ami") == run.mocks.ami_id, host.name
        assert host.engine.ignore_changes == ("ami",), host.name


def test_stateful_resources_protected_with_deletion_protection(run: ProgramRun) -> None:
    protected = run.config["mlops-platform:deletionProtection"] == "true"
    assert run.one(DB).engine.protect is protected
    assert run.one(BUCKET).engine.protect is protected


def test_every_aws_resource_uses_the_tagging_provider(run: ProgramRun) -> None:
    provider = run.one(AWS_PROVIDER)
    tags = json.loads(provider.get("defaultTags"))["tags"]
    assert tags["Environment"] == run.environment
    assert tags["Project"] == "mlops-platform"
    aws_resources = [r for r in run.resources if r.type.startswith("aws:")]
    assert {(r.provider or "").rsplit("::", 1)[-1] for r in aws_resources} == {provider.id}


@pytest.mark.parametrize(
    ("resource_type", "count"),
    [
        (BUCKET, 1),
        (DB, 1),
        (SECRET, 8),
        (RANDOM_PASSWORD, 8),
        (GROUP, 3),
        (INSTANCE_PROFILE, 2),
        (SUBNET, 4),
    ],
)
def test_registered_inventory(run: ProgramRun, resource_type: str, count: int) -> None:
    assert len(run.of_type(resource_type)) == count
    # two instance roles, and the host scheduler's where hosts sleep (not prod by default)
    assert len(run.of_type(ROLE)) == 2 + (run.environment != "prod")
    assert len(run.of_type(INSTANCE)) == 1 + int(run.config["mlops-platform:workerCount"])


# -- host boot and supply chain (57-62) ---------------------------------------------------------


def waits_for(run: ProgramRun, host: Registered) -> list[Registered]:
    """The custom resources ``host`` is created after."""
    return [r for r in run.resources if r.engine.urn in host.engine.dependencies]


def user_data_environment(host: Registered) -> dict[str, str]:
    """The bootstrap unit's Environment= assignments in the host's user data."""
    return dict(re.findall(r'Environment="(MLOPS_[A-Z0-9_]+)=([^"]*)"', user_data(host)))


def test_57_hosts_read_the_uploaded_host_lock_by_digest(run: ProgramRun) -> None:
    """The objects the user data names by digest (host lock, boot script) are uploaded first."""
    uploads = run.of_type(BUCKET_OBJECT)
    objects = hostboot.boot_objects()
    assert {u.get("key"): u.get("content").encode() for u in uploads} == objects
    assert {u.get("bucket") for u in uploads} == {run.one(BUCKET).id}
    bucket_arn = run.one(BUCKET).state["arn"]
    for host in run.of_type(INSTANCE):
        environment = user_data_environment(host)
        assert environment["MLOPS_BUCKET"] == run.one(BUCKET).id
        for what in ("HOST_LOCK", "BOOT_SCRIPT"):
            content = objects[environment[f"MLOPS_{what}_KEY"]]
            digest = hashlib.sha256(content).hexdigest()
            assert environment[f"MLOPS_{what}_SHA256"] == digest
        for upload in uploads:
            assert upload in waits_for(run, host), (host.name, upload.name)
        (profile,) = [
            p for p in run.of_type(INSTANCE_PROFILE) if p.id == host.get("iamInstanceProfile")
        ]
        granted = [
            statement
            for policy in run.of_type(ROLE_POLICY)
            if policy.get("role") == profile.get("role")
            for statement in json.loads(policy.get("policy"))["Statement"]
        ]
        assert any(
            f"{bucket_arn}/bootstrap/*" in as_list(s["Resource"])
            and as_list(s["Action"]) == ["s3:GetObject"]
            for s in granted
        ), host.name


def test_59_control_address_reserved_before_anything_takes_it(run: ProgramRun) -> None:
    host = control(run)
    (reservation,) = run.of_type(SUBNET_RESERVATION)
    assert reservation.get("reservationType") == "explicit"
    assert reservation.get("subnetId") == host.get("subnetId")
    assert reservation.get("cidrBlock") == f"{host.get('privateIp')}/32"
    for dependent in (*run.of_type(INSTANCE), run.one(DB)):
        assert reservation in waits_for(run, dependent), dependent.name


def test_60_hosts_created_after_their_role_grants(run: ProgramRun) -> None:
    for host in run.of_type(INSTANCE):
        (profile,) = [
            p for p in run.of_type(INSTANCE_PROFILE) if p.id == host.get("iamInstanceProfile")
        ]
        grants = [
            r
            for r in (*run.of_type(ROLE_POLICY), *run.of_type(ROLE_POLICY_ATTACHMENT))
            if r.get("role") == profile.get("role")
        ]
        assert {ROLE_POLICY_ATTACHMENT, ROLE_POLICY} == {g.type for g in grants}
        for grant in (profile, *grants):
            assert grant in waits_for(run, host), (host.name, grant.name)


def test_61_hosts_replaced_delete_before_create(run: ProgramRun) -> None:
    for host in run.of_type(INSTANCE):
        assert host.engine.delete_before_replace, host.name


def test_62_hosts_created_after_their_subnet_egress(run: ProgramRun) -> None:
    for host in run.of_type(INSTANCE):
        (association,) = [
            a for a in run.of_type(ASSOCIATION) if a.get("subnetId") == host.get("subnetId")
        ]
        (default_route,) = [
            r
            for r in run.of_type(ROUTE)
            if r.get("routeTableId") == association.get("routeTableId")
            and r.get("destinationCidrBlock") == "0.0.0.0/0"
        ]
        expected_target = "natGatewayId" if run.environment == "prod" else "gatewayId"
        assert default_route.get(expected_target), default_route.name
        for needed in (association, default_route):
            assert needed in waits_for(run, host), (host.name, needed.name)
