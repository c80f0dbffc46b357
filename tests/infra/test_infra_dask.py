"""The Dask cluster on the stack (``daskWorkers`` above 0): TLS identities, firewall, hosts.

Runs the program under mocks for dev with two worker hosts, one of them a Dask worker, and
checks what exists only then; and that ``daskWorkers`` 0 (every example stack) renders
nothing of it (invariant 76).
"""

from __future__ import annotations

import json
import re

import pytest
from hostboot.dask_cluster import tls_files_object
from resource_types import (
    BUCKET_OBJECT,
    EGRESS_RULE,
    INGRESS_RULE,
    INSTANCE,
    INSTANCE_PROFILE,
    ROLE_POLICY,
    SECRET,
    SECRET_VERSION,
    TLS_CERT_REQUEST,
    TLS_LOCALLY_SIGNED_CERT,
    TLS_PRIVATE_KEY,
    TLS_SELF_SIGNED_CERT,
)

from tests.hosts.rendered_hosts import take_apart
from tests.infra import test_infra_invariants as invariants
from tests.infra.test_infra_invariants import as_list, control, group_of, rules, workers
from tests.support.program import Harness, ProgramRun
from tests.support.pulumi_mocks import Registered

PROJECT = "mlops-platform"
DASK_TYPES = (TLS_PRIVATE_KEY, TLS_SELF_SIGNED_CERT, TLS_CERT_REQUEST, TLS_LOCALLY_SIGNED_CERT)


@pytest.fixture(scope="module")
def dask_run() -> ProgramRun:
    """Dev with two worker hosts, the first of them running a Dask worker."""
    harness = Harness()
    overrides = {f"{PROJECT}:workerCount": 2, f"{PROJECT}:daskWorkers": 1}
    return harness.run("dev", harness.config("dev", overrides))


def units_of(host: Registered) -> set[str]:
    return set(re.findall(r"/etc/systemd/system/([\w-]+\.service)", invariants.user_data(host)))


def role_secrets(run: ProgramRun, host: Registered) -> set[str]:
    """The secret ARNs the host's role may read."""
    (profile,) = [
        p for p in run.of_type(INSTANCE_PROFILE) if p.id == host.get("iamInstanceProfile")
    ]
    return {
        arn
        for policy in run.of_type(ROLE_POLICY)
        if policy.get("role") == profile.get("role")
        for statement in json.loads(policy.get("policy"))["Statement"]
        if statement["Action"] == "secretsmanager:GetSecretValue"
        for arn in as_list(statement["Resource"])
    }


def tls_secret(run: ProgramRun, role: str) -> Registered:
    (secret,) = [s for s in run.of_type(SECRET) if s.name == f"mlops-dask-{role}-tls"]
    return secret


def test_a_ca_signs_the_scheduler_and_the_workers_identities(dask_run: ProgramRun) -> None:
    (ca,) = dask_run.of_type(TLS_SELF_SIGNED_CERT)
    assert ca.get("isCaCertificate") is True
    assert "cert_signing" in ca.get("allowedUses")
    assert len(dask_run.of_type(TLS_PRIVATE_KEY)) == 3  # the CA's, the scheduler's, the workers'
    for key in dask_run.of_type(TLS_PRIVATE_KEY):
        assert (key.get("algorithm"), key.get("ecdsaCurve")) == ("ECDSA", "P256")
    signed = dask_run.of_type(TLS_LOCALLY_SIGNED_CERT)
    assert len(signed) == 2
    for cert in signed:
        assert cert.get("caCertPem") == ca.state["certPem"]
        assert cert.is_secret("caPrivateKeyPem")
        assert {"server_auth", "client_auth"} <= set(cert.get("allowedUses"))
        assert 0 < cert.get("earlyRenewalHours") < cert.get("validityPeriodHours")
    requests = {r.name: r for r in dask_run.of_type(TLS_CERT_REQUEST)}
    scheduler_ip = control(dask_run).get("privateIp")
    assert requests["mlops-dask-scheduler-request"].get("ipAddresses") == [scheduler_ip]


@pytest.mark.parametrize("role", ["scheduler", "workers"])
def test_75_each_identity_is_one_secret_holding_ca_cert_and_key(
    dask_run: ProgramRun, role: str
) -> None:
    secret = tls_secret(dask_run, role)
    (version,) = [v for v in dask_run.of_type(SECRET_VERSION) if v.get("secretId") == secret.id]
    assert version.is_secret("secretString")
    bundle = json.loads(version.get("secretString"))
    assert set(bundle) == {"ca", "cert", "key"}
    assert "-----BEGIN EC PRIVATE KEY-----" in bundle["key"]
    (ca,) = dask_run.of_type(TLS_SELF_SIGNED_CERT)
    assert bundle["ca"] == ca.state["certPem"]
    assert secret.get("recoveryWindowInDays") == 0  # dev: as the stack's other secrets


def test_75_each_host_reads_only_its_own_identity(dask_run: ProgramRun) -> None:
    scheduler = tls_secret(dask_run, "scheduler").state["arn"]
    workers_identity = tls_secret(dask_run, "workers").state["arn"]
    assert scheduler in role_secrets(dask_run, control(dask_run))
    assert workers_identity not in role_secrets(dask_run, control(dask_run))
    for worker in workers(dask_run):
        assert workers_identity in role_secrets(dask_run, worker)
        assert scheduler not in role_secrets(dask_run, worker)
    assert scheduler in invariants.user_data(control(dask_run))
    assert workers_identity in invariants.user_data(workers(dask_run)[1])


def test_the_scheduler_runs_on_the_control_host_and_the_first_worker_host_runs_a_worker(
    dask_run: ProgramRun,
) -> None:
    assert "dask-scheduler.service" in units_of(control(dask_run))
    first, second = workers(dask_run)
    assert "dask-worker.service" in units_of(first)
    assert "dask-worker.service" not in units_of(second)
    for worker in (first, second):  # every worker host's flow runs may use the cluster
        text = invariants.user_data(worker)
        assert "SupplementaryGroups=dask-tls" in text
        assert "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=/etc/mlops/dask/cert.pem" in text


def test_the_tls_script_is_uploaded_and_named_by_its_digest(dask_run: ProgramRun) -> None:
    script = tls_files_object()
    (upload,) = [u for u in dask_run.of_type(BUCKET_OBJECT) if u.get("key") == script.key]
    assert upload.get("content") == script.text
    for host in (control(dask_run), *workers(dask_run)):
        assert f"{script.key} {script.sha256}" in invariants.user_data(host)
        assert upload in invariants.waits_for(dask_run, host), host.name


def test_73_the_dask_ports_admit_only_the_stacks_groups(dask_run: ProgramRun) -> None:
    control_group = group_of(dask_run, control(dask_run))
    worker_group = group_of(dask_run, workers(dask_run)[0])
    ingress = rules(dask_run, INGRESS_RULE)
    dask_ingress = {(r.group, r.port, r.peer) for r in ingress if r.port[1] >= 8786}
    assert dask_ingress == {
        (control_group, (8786, 8786), worker_group),
        (control_group, (8789, 8789), worker_group),
        (worker_group, (8790, 8799), control_group),
        (worker_group, (8790, 8799), worker_group),
        (worker_group, (8800, 8809), control_group),
        (worker_group, (8800, 8809), worker_group),
        (worker_group, (32768, 60999), worker_group),
    }
    assert not [r for r in ingress if r.port[0] <= 8787 <= r.port[1]], "the dashboard is loopback"
    assert not [r for r in ingress if r.cidr and r.port[1] >= 8786]
    invariants.test_22_no_ingress_from_anywhere(dask_run)
    invariants.test_23_no_ssh_ingress(dask_run)
    invariants.test_24_service_ports_admit_only_workers_and_configured_cidrs(dask_run)
    invariants.test_25_every_group_and_rule_described(dask_run)


def test_73_egress_adds_only_the_dask_ports_between_groups(dask_run: ProgramRun) -> None:
    control_group = group_of(dask_run, control(dask_run))
    worker_group = group_of(dask_run, workers(dask_run)[0])
    egress = {(r.group, r.port, r.cidr, r.peer) for r in rules(dask_run, EGRESS_RULE)}
    assert egress == {
        (control_group, (443, 443), "0.0.0.0/0", None),
        (control_group, (5432, 5432), None, invariants.database_group(dask_run)),
        (worker_group, (443, 443), "0.0.0.0/0", None),
        (worker_group, (5000, 5000), None, control_group),
        (worker_group, (4200, 4200), None, control_group),
        (worker_group, (8786, 8786), None, control_group),
        (worker_group, (8789, 8789), None, control_group),
        (control_group, (8790, 8799), None, worker_group),
        (worker_group, (8790, 8799), None, worker_group),
        (control_group, (8800, 8809), None, worker_group),
        (worker_group, (8800, 8809), None, worker_group),
        (worker_group, (32768, 60999), None, worker_group),
    }
    assert {r.protocol for r in rules(dask_run, EGRESS_RULE)} == {"tcp"}


def test_the_scheduler_address_and_worker_count_are_outputs(dask_run: ProgramRun) -> None:
    address = control(dask_run).get("privateIp")
    assert dask_run.outputs["dask_scheduler_address"] == f"tls://{address}:8786"
    assert dask_run.outputs["dask_workers"] == 1
    assert "dask_scheduler_address" not in dask_run.secret_outputs


def test_hosts_with_dask_still_fit_ec2s_user_data_limit(dask_run: ProgramRun) -> None:
    invariants.test_hosts_boot_with_the_stack_settings(dask_run)


@pytest.mark.parametrize("stack", ["dev", "prod", "ephemeral"])
def test_76_dask_off_creates_nothing_of_it(harness: Harness, stack: str) -> None:
    run = harness.cached(stack)
    assert run.config[f"{PROJECT}:daskWorkers"] == "0"
    assert not [r for r in run.resources if r.type in DASK_TYPES]
    assert not [r for r in run.resources if "dask" in r.name]
    for host in run.of_type(INSTANCE):
        files = take_apart(invariants.user_data(host)).files  # compressed ones unpacked
        assert not [path for path, text in files.items() if "dask" in text.lower()], host.name
    assert run.outputs["dask_scheduler_address"] == ""
    assert run.outputs["dask_workers"] == 0
