"""The hosts twin's logic that needs no container: addresses, firewall rules, shims, IMDS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import hostboot
import hostboot.locks
import httpx
import pytest

from scripts.common import OpsError
from scripts.twin import containers, imds
from scripts.twin.hostnet import ingress_ruleset
from scripts.twin.hosts import (
    DATABASE,
    MOTO_PORT,
    OPERATOR,
    STANDINS,
    HostsConfig,
    host_packages,
    ingress_rules,
    memory_by_unit,
    topology,
)


def _by_name(config: HostsConfig) -> dict[str, str]:
    return {node.name: node.address for node in topology(config)}


def test_the_hosts_sit_at_their_stack_addresses() -> None:
    addresses = _by_name(HostsConfig(workers=2))
    assert addresses["control"] == "10.42.0.10"  # the 10th address of public a
    assert addresses["worker-1"] == "10.42.0.11"
    assert addresses["worker-2"] == "10.42.64.11"  # workers alternate between the zones
    assert addresses[DATABASE].startswith("10.42.128.")  # private a
    assert len(set(addresses.values())) == len(addresses)


def test_another_vpc_range_moves_every_address() -> None:
    addresses = _by_name(HostsConfig(vpc_cidr="10.7.0.0/16"))
    assert addresses["control"] == "10.7.0.10"
    assert all(address.startswith("10.7.") for address in addresses.values())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("vpc_cidr", "10.42.0.0/33", "is not an IPv4 network"),
        ("vpc_cidr", "10.0.0.0/8", "use a prefix from /16 to /24"),
        ("workers", 0, "use 1 to 4 worker hosts, not 0"),
        ("dask_workers", 2, "dask workers: use 0 to 1 \\(one per worker host\\), not 2"),
        ("dask_workers", -1, "not -1"),
        ("name", "Bad-Name", "is not valid"),
    ],
)
def test_a_config_the_stack_would_not_take_is_refused(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(OpsError, match=message):
        HostsConfig(**{field: value})  # type: ignore[arg-type]


def _rules_for(name: str, *, dask: bool = False) -> str:
    config = HostsConfig(workers=2)
    nodes = topology(config)
    node = next(node for node in nodes if node.name == name)
    return ingress_ruleset(node, nodes, ingress_rules(nodes, dask=dask))


def _accepts(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if "dport" in line]


def test_the_database_admits_postgres_from_the_control_host_only() -> None:
    addresses = _by_name(HostsConfig())
    script = _rules_for(DATABASE)
    assert "policy drop;" in script
    accepts = _accepts(script)
    assert accepts == [f"ip saddr {{ {addresses['control']} }} tcp dport 5432 accept"]


def test_the_control_host_admits_its_ports_from_workers_and_the_operator_only() -> None:
    addresses = _by_name(HostsConfig(workers=2))
    accepts = _accepts(_rules_for("control"))
    peers = f"{addresses['worker-1']}, {addresses['worker-2']}"
    assert f"ip saddr {{ {peers} }} tcp dport 5000 accept" in accepts
    assert f"ip saddr {{ {peers} }} tcp dport 4200 accept" in accepts
    assert f"ip saddr {{ {addresses[OPERATOR]} }} tcp dport 5000 accept" in accepts
    assert len(accepts) == 4
    assert not _accepts(_rules_for("worker-1"))


def test_with_dask_the_cluster_ports_open_between_the_stacks_hosts_only() -> None:
    addresses = _by_name(HostsConfig(workers=2))
    workers = f"{addresses['worker-1']}, {addresses['worker-2']}"
    control = _accepts(_rules_for("control", dask=True))
    assert f"ip saddr {{ {workers} }} tcp dport 8786 accept" in control  # the scheduler
    assert f"ip saddr {{ {workers} }} tcp dport 8789 accept" in control  # xgboost's tracker
    assert not [line for line in control if addresses[OPERATOR] in line and "878" in line]
    worker = _accepts(_rules_for("worker-1", dask=True))
    assert f"ip saddr {{ {addresses['control']} }} tcp dport 8790-8799 accept" in worker
    assert f"ip saddr {{ {workers} }} tcp dport 32768-60999 accept" in worker
    assert not [line for line in worker if addresses[OPERATOR] in line]
    assert not _accepts(_rules_for(DATABASE, dask=True))[1:]  # still PostgreSQL alone


def test_every_host_reaches_the_aws_stand_ins() -> None:
    script = _rules_for(STANDINS)
    addresses = _by_name(HostsConfig())
    lines = "".join(line for line in script.splitlines() if f"dport {MOTO_PORT}" in line)
    assert addresses["control"] in lines
    assert addresses["worker-1"] in lines
    assert addresses[DATABASE] not in lines


def test_the_shims_point_the_host_at_the_stand_ins_and_seed_the_user_data() -> None:
    spec = containers.ContainerSpec(
        host="control",
        user_data="#cloud-config\n{}\n",
        aws_endpoint="http://10.42.192.10:4566",
        package_index="http://10.42.192.10:8080/",
    )
    files = containers.shim_files(spec)
    assert files["/var/lib/cloud/seed/nocloud/user-data"] == spec.user_data
    assert "instance-id: mlt-control" in files["/var/lib/cloud/seed/nocloud/meta-data"]
    assert (
        "AWS_ENDPOINT_URL=http://10.42.192.10:4566"
        in files["/etc/systemd/system.conf.d/90-mlt-twin.conf"]
    )
    assert "find-links = http://10.42.192.10:8080/" in files["/etc/pip.conf"]
    not_files = {
        "/etc/systemd/system/<unit> -> /dev/null",
        "systemd-nspawn --capability=CAP_NET_ADMIN",
    }
    assert set(containers.SHIMS) - not_files <= set(files)


def test_the_machine_s_enabled_services_are_masked_but_cloud_init(tmp_path: Path) -> None:
    wants = tmp_path / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    for unit in ("postgresql.service", "redis-server.service", "cloud-init.service", "x.target"):
        (wants / unit).touch()
    assert containers.masked_units(tmp_path) == ["postgresql.service", "redis-server.service"]


def test_the_host_packages_are_read_from_the_rendered_user_data() -> None:
    settings = hostboot.ControlHostSettings(
        environment="dev", region="us-east-1", artifact_bucket="b", private_ip="10.42.0.10",
        db_host="10.42.128.10", db_port=5432, db_username="u", db_password_secret_arn="a1",
        mlflow_db_password_secret_arn="a5", mlflow_auth_db_password_secret_arn="a6",
        prefect_db_password_secret_arn="a7", mlflow_admin_username="admin",
        mlflow_admin_password_secret_arn="a2", mlflow_worker_username="worker",
        mlflow_worker_password_secret_arn="a8", mlflow_flask_secret_key_secret_arn="a3",
        prefect_auth_string_secret_arn="a4",
    )  # fmt: skip
    pip, fetch, host = host_packages(hostboot.render_control_user_data(settings))
    # The bootstrap's order: pip, boto3's closure (both from the user data), the host lock.
    assert pip.startswith("pip==")
    assert "--hash=sha256:" in pip
    assert "boto3==" in fetch
    assert "--hash=sha256:" in fetch
    assert host == hostboot.locks.host_lock().text
    assert "mlflow==" in host


@pytest.fixture
def metadata() -> Iterator[str]:
    """The IMDS stand-in on a loopback port."""
    served = imds.documents("the-role", "eu-west-1", "i-123")
    server = ThreadingHTTPServer(("127.0.0.1", 0), imds.handler(served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_imds_answers_only_with_a_token(metadata: str) -> None:
    path = "/latest/meta-data/iam/security-credentials/the-role"
    assert httpx.get(metadata + path).status_code == 401
    token = httpx.put(
        metadata + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    ).text
    answer = httpx.get(metadata + path, headers={"X-aws-ec2-metadata-token": token})
    assert answer.status_code == 200
    assert answer.json()["AccessKeyId"]
    region = httpx.get(
        metadata + "/latest/meta-data/placement/region",
        headers={"X-aws-ec2-metadata-token": token},
    )
    assert region.text == "eu-west-1"


def test_each_units_resident_memory_is_the_sum_of_its_processes() -> None:
    shown = """init.scope                      12108
mlflow.service                  290288
prefect-server.service          252424
mlflow.service                  320344
-                                4832
"""
    assert memory_by_unit(shown) == {
        "init.scope": 12108 / 1024,
        "mlflow.service": (290288 + 320344) / 1024,
        "prefect-server.service": 252424 / 1024,
    }
