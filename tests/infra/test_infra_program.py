"""The program's behaviour beyond the example stacks, and proof that the checks can fail.

The invariant tests assert on registrations collected after the run; here a deliberately
broken resource (tampered with on its way to the mock provider) must make its invariant test
fail, and a run that registered nothing must fail instead of passing silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pulumi
import pytest
from hostboot.cloudconfig import read_user_data_base64, user_data_base64
from resource_types import (
    BUCKET,
    DB,
    EGRESS_RULE,
    INGRESS_RULE,
    INSTANCE,
    PUBLIC_ACCESS,
    ROLE_POLICY,
    SUBNET,
)

from tests.infra import test_infra_invariants as invariants
from tests.support.program import Harness, ProgramRun
from tests.support.pulumi_mocks import Mocks, Tamper

PROJECT = "mlops-platform"


def run_with(
    harness: Harness, stack: str = "dev", *, mocks: Mocks | None = None, **overrides: object
) -> ProgramRun:
    """Run the program for a stack with some keys of its configuration overridden."""
    config = harness.config(stack, {f"{PROJECT}:{k}": v for k, v in overrides.items()})
    return harness.run(stack, config, mocks)


def test_zones_without_the_host_types_are_skipped(harness: Harness) -> None:
    run = run_with(harness, mocks=harness.mocks(unoffered_zones="a"))
    zones = {s.get("availabilityZone") for s in run.of_type(SUBNET)}
    assert zones == {"us-east-1b", "us-east-1c"}


def test_a_region_without_two_zones_for_the_host_types_is_refused(harness: Harness) -> None:
    with pytest.raises(pulumi.RunError, match="controlInstanceType / mlops-platform:worker"):
        run_with(harness, mocks=harness.mocks(unoffered_zones="abcde"))


def test_a_pinned_ami_is_used_and_replaces_hosts_when_changed(harness: Harness) -> None:
    run = run_with(harness, amiId="ami-0fedcba9876543210")
    assert not [c for c in run.mocks.calls if c.token == "aws:ec2/getAmi:getAmi"]
    for host in run.of_type(INSTANCE):
        assert host.get("ami") == "ami-0fedcba9876543210"
        assert host.engine.ignore_changes == ()


def test_service_cidrs_open_only_the_service_ports(harness: Harness) -> None:
    run = run_with(harness, serviceIngressCidrs=["10.8.0.0/16"])
    from_cidrs = [r for r in invariants.rules(run, INGRESS_RULE) if r.cidr]
    assert sorted((r.cidr, r.port) for r in from_cidrs) == [
        ("10.8.0.0/16", (4200, 4200)),
        ("10.8.0.0/16", (5000, 5000)),
    ]
    invariants.test_22_no_ingress_from_anywhere(run)
    invariants.test_24_service_ports_admit_only_workers_and_configured_cidrs(run)


def test_workers_spread_over_both_zones(harness: Harness) -> None:
    run = run_with(harness, workerCount=3)
    subnets = [w.get("subnetId") for w in invariants.workers(run)]
    assert subnets[0] == subnets[2] != subnets[1]
    assert len(run.worker_settings) == 3


def test_a_named_bucket_keeps_its_name(harness: Harness) -> None:
    run = run_with(harness, artifactBucketName="acme-mlops-artifacts")
    assert run.outputs["artifact_bucket"] == "acme-mlops-artifacts"
    assert run.one(BUCKET).state["arn"] == "arn:aws:s3:::acme-mlops-artifacts"


# -- the checks catch what they are about -----------------------------------------------------


def set_inputs(resource_type: str, name_part: str, changes: dict[str, Any]) -> Tamper:
    """A tamper that overwrites some inputs of the matching resources."""

    def tamper(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if typ == resource_type and name_part in name:
            return {**inputs, **changes}
        return inputs

    return tamper


def edit_inputs(
    resource_type: str, name_part: str, edit: Callable[[dict[str, Any]], dict[str, Any]]
) -> Tamper:
    """A tamper that rewrites the matching resources' inputs with ``edit``."""

    def tamper(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return edit(dict(inputs)) if typ == resource_type and name_part in name else inputs

    return tamper


def with_leaked_key(inputs: dict[str, Any]) -> dict[str, Any]:
    text = read_user_data_base64(inputs["userDataBase64"])
    inputs["userDataBase64"] = user_data_base64(
        text + "\n# AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
    )
    return inputs


def with_admin_statement(inputs: dict[str, Any]) -> dict[str, Any]:
    policy = json.loads(inputs["policy"])
    policy["Statement"].append({"Effect": "Allow", "Action": "*", "Resource": "*"})
    inputs["policy"] = json.dumps(policy)
    return inputs


BREAKAGES: list[tuple[str, Tamper, Callable[[ProgramRun], None]]] = [
    (
        "publicly accessible database",
        set_inputs(DB, "mlops-db", {"publiclyAccessible": True}),
        invariants.test_08_database_private,
    ),
    (
        "unencrypted database",
        set_inputs(DB, "mlops-db", {"storageEncrypted": False}),
        invariants.test_09_database_storage_encrypted,
    ),
    (
        "SSH open to the world",
        set_inputs(
            INGRESS_RULE,
            "control-mlflow-from-workers",
            {
                "fromPort": 22,
                "toPort": 22,
                "cidrIpv4": "0.0.0.0/0",
                "referencedSecurityGroupId": None,
            },
        ),
        invariants.test_23_no_ssh_ingress,
    ),
    (
        "ingress from the whole internet",
        set_inputs(
            INGRESS_RULE,
            "control-prefect-from-workers",
            {"cidrIpv4": "0.0.0.0/0", "referencedSecurityGroupId": None},
        ),
        invariants.test_22_no_ingress_from_anywhere,
    ),
    (
        "IMDSv1 allowed",
        set_inputs(
            INSTANCE,
            "worker",
            {"metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 2}},
        ),
        invariants.test_16_hosts_require_imdsv2_with_hop_limit_1,
    ),
    (
        "an access key in user data",
        edit_inputs(INSTANCE, "control", with_leaked_key),
        invariants.test_20_user_data_holds_no_secret_and_replaces_on_change,
    ),
    (
        "a public bucket",
        set_inputs(PUBLIC_ACCESS, "artifacts", {"restrictPublicBuckets": False}),
        invariants.test_01_bucket_public_access_fully_blocked,
    ),
    (
        "an administrator policy",
        edit_inputs(ROLE_POLICY, "worker", with_admin_statement),
        invariants.test_28_no_wildcard_actions_and_s3_scoped_to_bucket,
    ),
    (
        "open egress",
        set_inputs(EGRESS_RULE, "worker-https", {"ipProtocol": "-1", "fromPort": -1, "toPort": -1}),
        invariants.test_27_egress_limited_to_what_hosts_need,
    ),
]


@pytest.mark.parametrize(
    ("tamper", "check"),
    [(tamper, check) for _, tamper, check in BREAKAGES],
    ids=[label for label, _, _ in BREAKAGES],
)
def test_a_broken_resource_is_caught(
    harness: Harness, tamper: Tamper, check: Callable[[ProgramRun], None]
) -> None:
    check(harness.cached("dev"))  # the check passes on the program as written...
    broken = harness.run("dev", mocks=harness.mocks(tamper=tamper))
    with pytest.raises(AssertionError):
        check(broken)  # ...and fails once one resource is broken


def test_a_run_that_registered_nothing_fails_the_checks(harness: Harness) -> None:
    with pytest.raises(AssertionError, match="registered no"):
        invariants.test_09_database_storage_encrypted(harness.empty_run())
