"""infra/config.py: every key declared once, example stacks valid, bad values refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest
import yaml
from config import KEYS, NAMESPACE, ConfigError, StackConfig, parse

from tests.support.program import Harness

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("dev", "prod", "ephemeral")


def parse_stack(harness: Harness, stack: str, **overrides: object) -> StackConfig:
    """Parse a stack's merged config with some keys overridden (short names or aws:region)."""
    named = {(k if ":" in k else f"{NAMESPACE}:{k}"): v for k, v in overrides.items()}
    return parse(harness.config(stack, named), stack=stack)


def refusal(harness: Harness, stack: str, **overrides: object) -> str:
    with pytest.raises(ConfigError) as refused:
        parse_stack(harness, stack, **overrides)
    return str(refused.value)


def test_every_key_declared_in_pulumi_yaml_with_description_and_default() -> None:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(KEYS)
    for key, spec in declared.items():
        assert spec["description"].strip(), key
        assert "default" in spec, key
        assert spec["type"] in ("string", "integer", "boolean", "array"), key


@pytest.mark.parametrize("example", ["dev", "prod"])
def test_example_stack_files_only_set_declared_keys(example: str) -> None:
    values = yaml.safe_load((ROOT / f"Pulumi.{example}.yaml").read_text())["config"]
    assert set(values) - {"aws:region"} <= {f"{NAMESPACE}:{key}" for key in KEYS}
    assert values[f"{NAMESPACE}:environment"] == example


@pytest.mark.parametrize("stack", STACKS)
def test_example_stacks_are_valid(harness: Harness, stack: str) -> None:
    config = parse(harness.config(stack), stack=stack)
    assert config.environment == stack
    assert config.is_prod is (stack == "prod")
    assert config.hosts_in_private_subnets is (stack == "prod")
    assert config.throwaway is (stack != "prod")
    assert config.deletion_protection is (stack == "prod")


def test_values_are_parsed_into_types(harness: Harness) -> None:
    config = parse_stack(
        harness,
        "dev",
        workerCount="3",
        serviceIngressCidrs='["10.8.0.0/16", "192.168.10.0/24"]',
        artifactBucketName="acme-mlops-artifacts",
        amiId="ami-0abcdef1234567890",
    )
    assert config.worker_count == 3
    assert config.service_ingress_cidrs == ("10.8.0.0/16", "192.168.10.0/24")
    assert config.artifact_bucket_name == "acme-mlops-artifacts"
    assert config.ami_id == "ami-0abcdef1234567890"
    assert parse_stack(harness, "dev").artifact_bucket_name is None
    assert parse_stack(harness, "dev").ami_id is None


BAD_VALUES = [
    # malformed CIDRs
    ("vpcCidr", "10.0.0.0/33"),
    ("vpcCidr", "10.42.0.1/16"),
    ("vpcCidr", "ten.0.0.0/16"),
    ("vpcCidr", "8.8.0.0/16"),
    ("vpcCidr", "10.0.0.0/8"),
    ("serviceIngressCidrs", '["10.0.0.0/33"]'),
    ("serviceIngressCidrs", '["0.0.0.0/0"]'),
    ("serviceIngressCidrs", '"10.0.0.0/8"'),
    ("serviceIngressCidrs", "10.0.0.0/8,"),
    # instance types not of the form family.size (or not bootable with the x86_64 image)
    ("controlInstanceType", "t3medium"),
    ("controlInstanceType", "t3."),
    ("workerInstanceType", "T3.MEDIUM"),
    ("workerInstanceType", "t4g.medium"),
    ("workerInstanceType", "m7g.large"),
    ("dbInstanceClass", "t4g.micro"),
    # worker count outside 1..20
    ("workerCount", "0"),
    ("workerCount", "21"),
    ("workerCount", "two"),
    # unknown environment kind
    ("environment", "staging"),
    ("environment", "Prod"),
    # bucket names S3 would refuse
    ("artifactBucketName", "My_Bucket"),
    ("artifactBucketName", "ab"),
    ("artifactBucketName", "a" * 64),
    ("artifactBucketName", "-artifacts"),
    ("artifactBucketName", "artifacts-"),
    ("artifactBucketName", "mlops..artifacts"),
    ("artifactBucketName", "192.168.1.10"),
    ("artifactBucketName", "xn--artifacts"),
    ("artifactBucketName", "sthree-artifacts"),
    ("artifactBucketName", "artifacts-s3alias"),
    ("artifactBucketName", "artifacts--ol-s3"),
    # the rest of the keys
    ("dbAllocatedStorageGiB", "10"),
    ("dbBackupRetentionDays", "0"),
    ("dbBackupRetentionDays", "36"),
    ("deletionProtection", "yes"),
    ("amiId", "ami-123"),
    ("amiId", "ubuntu-24.04"),
    ("aws:region", "us_east_1"),
    ("aws:region", "cn-north-1"),
    # cost guardrails and restores
    ("hostSchedule", "weekdays"),
    ("hostSchedule", "Mon-Fri 20:00-07:00 UTC"),
    ("hostSchedule", "Fri-Mon 07:00-20:00 UTC"),
    ("hostSchedule", "Mon-Fri 07:00-25:00 UTC"),
    ("hostSchedule", "Mon-Fri 07:00-20:00 Mars/Olympus"),
    ("hostSchedule", "Mon-Fun 07:00-20:00 UTC"),
    ("monthlyBudgetUsd", "-5"),
    ("monthlyBudgetUsd", "lots"),
    ("budgetAlertEmail", "ml-team"),
    ("budgetAlertEmail", "a@b@example.com"),
    ("expiresAt", "tomorrow"),
    ("expiresAt", "2026-12-01T09:00:00"),
    ("restoreFromSnapshot", "1-starts-with-a-digit"),
    ("restoreFromSnapshot", "ends-with-"),
    ("restoreFromSnapshot", "two--hyphens"),
    # the Dask cluster
    ("daskWorkers", "-1"),
    ("daskWorkers", "21"),
    ("daskWorkers", "one"),
    ("daskWorkers", "2"),  # more than workerCount (1 in dev)
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_value_refused_naming_key_allowed_values_and_what_it_got(
    harness: Harness, key: str, value: str
) -> None:
    message = refusal(harness, "dev", **{key: value})
    full_key = key if ":" in key else f"{NAMESPACE}:{key}"
    assert f"{full_key}: expected " in message
    assert f"got {value!r}" in message


PUBLIC_SPLITS = ["0.0.0.0/1", "128.0.0.0/1", "8.8.8.0/24", "172.32.0.0/16", "100.128.0.0/10"]
PRIVATE_NETWORKS = [
    "10.0.0.0/8",
    "10.8.0.0/16",
    "172.16.0.0/12",
    "172.31.255.0/24",
    "192.168.0.0/16",
    "192.168.10.0/24",
    "100.64.0.0/10",
    "100.127.0.0/16",
]


@pytest.mark.parametrize("cidr", PUBLIC_SPLITS)
def test_37_service_cidrs_outside_private_ranges_refused(harness: Harness, cidr: str) -> None:
    """Invariant 37: `["0.0.0.0/1", "128.0.0.0/1"]` is the internet without a /0."""
    value = json.dumps(["10.8.0.0/16", cidr])

    message = refusal(harness, "dev", serviceIngressCidrs=value)

    assert f"{NAMESPACE}:serviceIngressCidrs: expected " in message
    for allowed in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
        assert allowed in message
    assert f"got {value!r}" in message


def test_37_the_internet_split_in_two_refused(harness: Harness) -> None:
    message = refusal(harness, "dev", serviceIngressCidrs='["0.0.0.0/1", "128.0.0.0/1"]')
    assert "serviceIngressCidrs" in message


def test_37_service_cidrs_inside_private_ranges_accepted(harness: Harness) -> None:
    config = parse_stack(harness, "prod", serviceIngressCidrs=json.dumps(PRIVATE_NETWORKS))
    assert config.service_ingress_cidrs == tuple(PRIVATE_NETWORKS)


def test_prod_without_deletion_protection_refused(harness: Harness) -> None:
    message = refusal(harness, "prod", deletionProtection=False)
    assert "mlops-platform:deletionProtection: expected true in prod; got 'false'" in message


def test_ephemeral_with_deletion_protection_refused(harness: Harness) -> None:
    message = refusal(harness, "ephemeral", deletionProtection=True)
    assert "mlops-platform:deletionProtection: expected false in an ephemeral stack" in message


def test_prod_with_short_backups_refused(harness: Harness) -> None:
    message = refusal(harness, "prod", dbBackupRetentionDays=3)
    assert "mlops-platform:dbBackupRetentionDays: expected at least 7 in prod; got '3'" in message


def test_missing_key_says_how_to_set_it(harness: Harness) -> None:
    raw = harness.config("dev")
    del raw[f"{NAMESPACE}:workerCount"], raw["aws:region"]
    with pytest.raises(ConfigError) as refused:
        parse(raw, stack="dev")
    assert "mlops-platform:workerCount is not set" in str(refused.value)
    assert "pulumi config set aws:region <value>" in str(refused.value)


def test_every_bad_key_reported_at_once(harness: Harness) -> None:
    message = refusal(harness, "dev", workerCount="99", vpcCidr="10.0.0.0/99", environment="qa")
    for key in ("workerCount", "vpcCidr", "environment"):
        assert f"mlops-platform:{key}: expected" in message


def test_refusal_ends_the_program_cleanly_before_any_resource(harness: Harness) -> None:
    assert issubclass(ConfigError, pulumi.RunError)  # Pulumi prints the message, no traceback
    mocks = harness.mocks("prod")
    config = harness.config("prod", {f"{NAMESPACE}:deletionProtection": False})
    with pytest.raises(ConfigError, match="deletionProtection"):
        harness.run("prod", config, mocks)
    assert mocks.resources == []
    assert mocks.calls == []


def test_guardrail_settings_are_parsed(harness: Harness) -> None:
    config = parse_stack(
        harness,
        "dev",
        hostSchedule="Mon-Wed,Fri 08:15-18:45 Europe/Berlin",
        monthlyBudgetUsd="120",
        budgetAlertEmail="ml-team@example.com",
        restoreFromSnapshot="rds:mlops-db-postgres-2026-11-28-03-10",
    )
    assert config.host_schedule is not None
    assert config.host_schedule.days == (0, 1, 2, 4)
    assert (config.host_schedule.start_minute, config.host_schedule.stop_minute) == (495, 1125)
    assert config.host_schedule.zone == "Europe/Berlin"
    assert config.monthly_budget_usd == 120
    assert config.budget_alert_email == "ml-team@example.com"
    assert config.restore_from_snapshot == "rds:mlops-db-postgres-2026-11-28-03-10"
    arn = "arn:aws:rds:us-east-1:123456789012:snapshot:prod-backup-1"
    assert parse_stack(harness, "dev", restoreFromSnapshot=arn).restore_from_snapshot == arn


@pytest.mark.parametrize(("stack", "hours_per_week"), [("dev", 65.0), ("ephemeral", 65.0)])
def test_an_empty_schedule_means_working_hours_in_throwaway_stacks(
    harness: Harness, stack: str, hours_per_week: float
) -> None:
    schedule = parse_stack(harness, stack).host_schedule
    assert schedule is not None
    assert schedule.hours_per_week == hours_per_week
    assert schedule.zone == "UTC"


def test_prod_hosts_run_always_unless_scheduled(harness: Harness) -> None:
    assert parse_stack(harness, "prod").host_schedule is None
    assert parse_stack(harness, "dev", hostSchedule="always").host_schedule is None
    assert parse_stack(harness, "prod", hostSchedule="Mon-Fri 06:00-22:00 UTC").host_schedule


def test_an_ephemeral_stack_must_carry_an_expiry(harness: Harness) -> None:
    message = refusal(harness, "ephemeral", expiresAt="")
    assert "mlops-platform:expiresAt: expected a time in an ephemeral stack" in message
    when = parse_stack(harness, "ephemeral", expiresAt="2026-12-01T10:00:00+01:00").expires_at
    assert when is not None
    assert when.isoformat() == "2026-12-01T09:00:00+00:00"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_only_ephemeral_stacks_expire(harness: Harness, stack: str) -> None:
    message = refusal(harness, stack, expiresAt="2026-12-01T09:00:00Z")
    assert f"expected empty in a {stack} stack (only ephemeral stacks expire)" in message


def test_dask_workers_are_parsed_and_off_by_default(harness: Harness) -> None:
    assert parse_stack(harness, "dev").dask_workers == 0
    assert not parse_stack(harness, "dev").dask_enabled
    config = parse_stack(harness, "dev", workerCount="3", daskWorkers="2")
    assert (config.dask_workers, config.dask_enabled) == (2, True)


def test_dask_workers_beyond_the_worker_hosts_refused_naming_both_keys(harness: Harness) -> None:
    message = refusal(harness, "prod", workerCount="2", daskWorkers="3")
    assert "mlops-platform:daskWorkers: expected at most workerCount (2)" in message
    assert "got '3'" in message


def test_dask_on_worker_hosts_too_small_to_share_refused(harness: Harness) -> None:
    message = refusal(harness, "dev", workerInstanceType="t3.small", daskWorkers="1")
    assert "mlops-platform:daskWorkers: expected 0 with workerInstanceType t3.small" in message
    assert parse_stack(harness, "dev", workerInstanceType="t3.small").dask_workers == 0
