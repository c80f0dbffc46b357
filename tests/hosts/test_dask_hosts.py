"""The Dask cluster's host side (invariants 73-76 as the hosts see them): the units rendered
with ``daskWorkers`` above 0 pass systemd and cloud-init's validators and run TLS only; the
TLS identity is written by ``tls_files.py`` as the units run it; and with Dask off the hosts
render byte for byte what they rendered before Dask existed (no host is replaced)."""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import reduce
from pathlib import Path, PurePosixPath
from types import ModuleType

import boto3
import distributed  # noqa: F401  (its config defaults, which dask_config.set edits)
import hostboot
import pytest
import yaml
from dask import config as dask_config
from hostboot.cloudconfig import USER_DATA_LIMIT_BYTES, gzip_user_data
from hostboot.dask_cluster import (
    TLS_FILES_SCRIPT,
    DaskSettings,
    instance_memory_mib,
    scheduler_service,
    tls_dir,
    tls_files_object,
    worker_memory_limit,
    worker_service,
)
from hostboot.services import HostLayout, ServiceSpec
from moto import mock_aws

from pipeline.ports import free_port
from scripts.smoke import CheckFailed, dask_cluster
from scripts.twin.tls import authority, identity
from tests.hosts.rendered_hosts import (
    CONTROL,
    CONTROL_IP,
    WORKER,
    Rendered,
    parse_unit,
    secret_arn,
    take_apart,
    unit_environment,
)
from tests.hosts.test_hostboot_validators import exec_paths, run, tool, verify_unit
from tests.support.processes import stop_groups

SCHEDULER_TLS = secret_arn("dask-scheduler-tls")
WORKERS_TLS = secret_arn("dask-workers-tls")
# sha256 of the user data rendered with Dask off, host-lock digests and pins left out (a
# `make lock` replaces hosts knowingly): what every stack's hosts ran before Dask existed.
# If this test fails, every existing host is replaced by the next `pulumi up`; when that is
# intended, say so in the change and put the new digests here.
# The control host's changed once since, knowingly: MLflow's auth config caches a checked
# password for 60 s (invariant 77), so `pulumi up` replaces the control host once for it.
DASK_OFF_DIGESTS = {
    "control": "2367995f8ec10f53a5165832f403a9f72d1ce37ec2f7ec1eacd58e5c36ecdbaf",
    "worker": "56ea295e0c1d7f3bac6ed8792d6ec817e895b6c2a9884714e2eb91edf4925119",
}


def dask(arn: str, *, run_worker: bool = False, memory_limit: str = "auto") -> DaskSettings:
    return DaskSettings(
        tls_secret_arn=arn,
        tls_script=tls_files_object(),
        run_worker=run_worker,
        memory_limit=memory_limit,
    )


@pytest.fixture(scope="module")
def scheduler_host() -> Rendered:
    """The control host with the Dask scheduler."""
    return take_apart(
        hostboot.render_control_user_data(dataclasses.replace(CONTROL, dask=dask(SCHEDULER_TLS)))
    )


@pytest.fixture(scope="module")
def dask_worker_host() -> Rendered:
    """A worker host running a Dask worker (t3.medium's memory limit)."""
    settings = dask(WORKERS_TLS, run_worker=True, memory_limit=worker_memory_limit("t3.medium"))
    return take_apart(hostboot.render_worker_user_data(dataclasses.replace(WORKER, dask=settings)))


@pytest.fixture(scope="module")
def client_host() -> Rendered:
    """A worker host past the first daskWorkers: its flow runs are clients only."""
    return take_apart(
        hostboot.render_worker_user_data(dataclasses.replace(WORKER, dask=dask(WORKERS_TLS)))
    )


@pytest.fixture(params=["scheduler_host", "dask_worker_host", "client_host"])
def dask_host(request: pytest.FixtureRequest) -> Rendered:
    return request.getfixturevalue(request.param)


def service(host: Rendered, name: str) -> dict[str, list[str]]:
    return parse_unit(host.units()[name])["Service"]


def exec_start(host: Rendered, name: str) -> list[str]:
    (line,) = service(host, name)["ExecStart"]
    return shlex.split(line)


def option(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


# -- validators ---------------------------------------------------------------------------------


def test_dask_units_pass_systemd_analyze_verify(dask_host: Rendered, tmp_path: Path) -> None:
    for name, text in dask_host.units().items():
        result = verify_unit(tmp_path, name, text, exec_paths(text))
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == "", result.stderr


def test_dask_user_data_passes_cloud_init_schema_and_fits(
    dask_host: Rendered, tmp_path: Path
) -> None:
    config = tmp_path / "user-data.yaml"
    config.write_text(dask_host.text)
    result = run(tool("cloud-init"), "schema", "--config-file", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(gzip_user_data(dask_host.text)) < USER_DATA_LIMIT_BYTES


# -- what runs ----------------------------------------------------------------------------------


def test_74_the_scheduler_speaks_tls_only_with_its_dashboard_on_loopback(
    scheduler_host: Rendered,
) -> None:
    argv = exec_start(scheduler_host, "dask-scheduler.service")
    assert argv[:2] == ["/opt/mlops/venv/bin/dask", "scheduler"]
    assert option(argv, "--protocol") == "tls"
    assert option(argv, "--host") == CONTROL_IP
    assert option(argv, "--port") == "8786"
    assert option(argv, "--dashboard-address") == "127.0.0.1:8787"
    assert option(argv, "--tls-ca-file") == "/etc/mlops/dask/ca.pem"
    assert option(argv, "--tls-cert") == "/etc/mlops/dask/cert.pem"
    assert option(argv, "--tls-key") == "/etc/mlops/dask/key.pem"
    environment = unit_environment(parse_unit(scheduler_host.units()["dask-scheduler.service"]))
    assert environment["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true"


def test_74_the_worker_joins_over_tls_on_its_fixed_ports(dask_worker_host: Rendered) -> None:
    argv = exec_start(dask_worker_host, "dask-worker.service")
    assert argv[:3] == ["/opt/mlops/venv/bin/dask", "worker", f"tls://{CONTROL_IP}:8786"]
    assert option(argv, "--nworkers") == "1"
    assert option(argv, "--memory-limit") == "2560MiB"  # t3.medium: 4096 MiB less 1536
    assert option(argv, "--worker-port") == "8790:8799"
    assert option(argv, "--nanny-port") == "8800:8809"
    assert option(argv, "--name") == WORKER.worker_name
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert option(argv, flag).startswith("/etc/mlops/dask/")
    environment = unit_environment(parse_unit(dask_worker_host.units()["dask-worker.service"]))
    assert environment["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true"


@pytest.mark.parametrize("fixture", ["dask_worker_host", "client_host"])
def test_flow_runs_inherit_the_clients_tls_settings(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    host: Rendered = request.getfixturevalue(fixture)
    unit = parse_unit(host.units()["prefect-worker.service"])
    environment = unit_environment(unit)
    assert environment["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == "/etc/mlops/dask/ca.pem"
    assert environment["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == "/etc/mlops/dask/cert.pem"
    assert environment["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == "/etc/mlops/dask/key.pem"
    assert environment["MLOPS_XGBOOST_TRACKER_PORT"] == "8789"
    assert unit["Service"]["SupplementaryGroups"] == ["dask-tls"]
    assert ("dask-worker.service" in host.units()) is (fixture == "dask_worker_host")


def test_35_dask_units_restart_wait_for_the_network_and_run_as_dask(dask_host: Rendered) -> None:
    users = {user["name"] for user in dask_host.document["users"][1:]}
    assert dask_host.document["groups"] == ["dask-tls"]
    for name in ("dask-scheduler.service", "dask-worker.service"):
        if name not in dask_host.units():
            continue
        unit = parse_unit(dask_host.units()[name])
        assert unit["Service"]["User"] == ["dask"]
        assert "dask" in users
        assert unit["Service"]["Restart"] == ["on-failure"]
        assert "network-online.target" in unit["Unit"]["After"][0].split()
        assert unit["Service"]["SendSIGKILL"] == ["yes"]


def test_75_a_unit_using_the_identity_fetches_it_as_root_before_it_starts(
    dask_host: Rendered,
) -> None:
    script = tls_files_object()
    users = [
        s
        for s in ("dask-scheduler", "dask-worker", "prefect-worker")
        if f"{s}.service" in dask_host.units()
    ]
    for name in users:
        unit = parse_unit(dask_host.units()[f"{name}.service"])["Service"]
        fetch, write = [
            shlex.split(line[1:]) for line in unit["ExecStartPre"] if "/opt/mlops/" in line
        ]
        assert all(line.startswith("+") for line in unit["ExecStartPre"])
        assert fetch[1:] == [
            "/opt/mlops/fetch.py",
            "eu-west-1",
            CONTROL.artifact_bucket,
            script.key,
            script.sha256,
            "/opt/mlops/tls_files.py",
        ]
        arn = SCHEDULER_TLS if name == "dask-scheduler" else WORKERS_TLS
        assert write[1:] == [
            "/opt/mlops/tls_files.py",
            "eu-west-1",
            arn,
            "/etc/mlops/dask",
            "dask-tls",
        ]
        assert unit["SupplementaryGroups"] == ["dask-tls"]
    # The identity's ARN is never in the boot step's config (it checks passwords, not PEMs).
    assert "dask" not in json.dumps(dask_host.boot_config()["secrets"])


def test_75_the_scheduler_is_refused_the_instance_metadata_the_worker_is_not(
    scheduler_host: Rendered, dask_worker_host: Rendered
) -> None:
    ruleset = scheduler_host.files["/etc/mlops/imds-firewall.nft"]
    assert '"dask"' in ruleset
    assert "ExecStartPre=+/usr/sbin/nft" in scheduler_host.units()["dask-scheduler.service"]
    # The Dask worker reads training months from the bucket with the instance role.
    assert "nft" not in dask_worker_host.units()["dask-worker.service"]


@pytest.mark.parametrize(
    ("instance_type", "memory", "limit"),
    [
        ("t3.medium", 4096, "2560MiB"),
        ("t3a.xlarge", 16384, "14848MiB"),
        ("m7i.large", 8192, "6656MiB"),
        ("c7i.2xlarge", 16384, "14848MiB"),
        ("r6i.xlarge", 32768, "31232MiB"),
        ("i4i.large", None, "0.6"),  # unknown: a fraction of what Dask finds
    ],
)
def test_the_worker_memory_limit_leaves_the_host_its_reserve(
    instance_type: str, memory: int | None, limit: str
) -> None:
    assert instance_memory_mib(instance_type) == memory
    assert worker_memory_limit(instance_type) == limit


@pytest.mark.parametrize("instance_type", ["t3.micro", "t3.small", "c7i.medium"])
def test_hosts_too_small_to_share_are_refused(instance_type: str) -> None:
    with pytest.raises(ValueError, match="a Dask worker needs 2560 MiB or more"):
        worker_memory_limit(instance_type)


# -- Dask off: nothing changes (invariant 76) ---------------------------------------------------


def normalised(text: str) -> str:
    """The user data with what `make lock` changes left out: the host lock's key and digest,
    and the hashed pins of pip and boto3 (written from the lock)."""
    document = yaml.safe_load(text)
    for entry in document["write_files"]:
        if entry["path"].endswith(("pip-lock.txt", "fetch-lock.txt")):
            entry["content"] = "<from the host lock>"
        entry["content"] = re.sub(
            r"MLOPS_HOST_LOCK_(KEY|SHA256)=[^\"]*", r"MLOPS_HOST_LOCK_\1=<lock>", entry["content"]
        )
    return json.dumps(document, sort_keys=True)


@pytest.mark.parametrize("host", ["control", "worker"])
def test_76_dask_off_renders_what_hosts_ran_before(host: str) -> None:
    rendered = (
        hostboot.render_control_user_data(CONTROL)
        if host == "control"
        else hostboot.render_worker_user_data(WORKER)
    )
    parts = take_apart(rendered)
    assert "dask" not in json.dumps([parts.files, parts.document["users"]]).lower()
    assert "groups" not in parts.document
    digest = hashlib.sha256(normalised(rendered).encode()).hexdigest()
    assert digest == DASK_OFF_DIGESTS[host], (
        f"the {host} host's user data changed: every existing host would be replaced"
    )


# -- tls_files.py, as the units run it ----------------------------------------------------------


@pytest.fixture
def tls_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The script imported as the host runs it: beside boot.py, which it imports as ``boot``."""
    monkeypatch.syspath_prepend(str(TLS_FILES_SCRIPT.parent))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    import tls_files as module

    with mock_aws():
        yield module
    sys.modules.pop("tls_files", None)


def store(value: str) -> str:
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    return str(client.create_secret(Name="dask-tls", SecretString=value)["ARN"])


def test_75_tls_files_writes_the_identity_0640_root_and_the_group(
    tls_files: ModuleType, tmp_path: Path
) -> None:
    bundle = identity(authority(), "workers").bundle()
    group = grp.getgrgid(os.getgid()).gr_name
    target = tmp_path / "etc/mlops/dask"
    code = tls_files.main(
        ["tls_files.py", "eu-west-1", store(json.dumps(bundle)), str(target), group]
    )
    assert code == 0
    for name in ("ca", "cert", "key"):
        path = target / f"{name}.pem"
        assert path.read_text() == bundle[name]
        status = path.stat()
        assert stat.S_IMODE(status.st_mode) == 0o640
        assert (status.st_uid, status.st_gid) == (0, os.getgid())


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("not json", "not JSON"),
        (json.dumps({"ca": "x", "cert": "y"}), "lacks a PEM ca, cert, key"),
        ("key of another certificate", "the Dask TLS key is not the certificate's"),
        ("signed by another CA", "not signed by its CA"),
    ],
)
def test_75_tls_files_refuses_a_broken_identity_and_writes_nothing(
    tls_files: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    broken: str,
    message: str,
) -> None:
    ca = authority()
    good = identity(ca).bundle()
    if broken == "key of another certificate":
        broken = json.dumps({**good, "key": identity(ca).key})
    elif broken == "signed by another CA":
        broken = json.dumps({**good, "ca": authority("another CA").pem})
    target = tmp_path / "dask"
    code = tls_files.main(["tls_files.py", "eu-west-1", store(broken), str(target), "root"])
    assert code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("tls_files: ")
    assert message in line
    assert not target.exists()


# -- the rendered command lines, run -------------------------------------------------------------


def _run_spec(spec: ServiceSpec, ports: dict[str, str]) -> subprocess.Popen[bytes]:
    """A service's command line and environment, as its unit runs them, with ``ports``
    (rendered -> free) substituted so that the test binds only free ports on loopback."""
    argv = [reduce(lambda word, p: word.replace(*p), ports.items(), word) for word in spec.argv]
    environment = {**os.environ, **spec.environment}
    Path(spec.working_directory).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        argv, env=environment, cwd=spec.working_directory, start_new_session=True
    )


def test_74_the_rendered_scheduler_and_worker_form_a_tls_cluster(tmp_path: Path) -> None:
    """The units' very command lines (TLS flags, tls:// address, memory limit, options) make
    a cluster that a client with the workers' identity reaches, and that refuses plain TCP."""
    layout = HostLayout(
        venv=PurePosixPath(Path(sys.executable).parent.parent),
        config_dir=PurePosixPath(tmp_path / "etc"),
        state_dir=PurePosixPath(tmp_path / "var"),
        scripts_dir=PurePosixPath(tmp_path / "opt"),
        service_groups=False,
    )
    paths = identity(authority(), "cluster").write(Path(tls_dir(layout)))
    control = dataclasses.replace(CONTROL, private_ip="127.0.0.1", dask=dask(SCHEDULER_TLS))
    worker = dataclasses.replace(
        WORKER, control_private_ip="127.0.0.1", dask=dask(WORKERS_TLS, run_worker=True)
    )
    assert control.dask is not None
    assert worker.dask is not None
    port = str(free_port())
    ports = {"8786": port, "127.0.0.1:8787": "127.0.0.1:0", "8790:8799": "0", "8800:8809": "0"}
    processes = [
        _run_spec(scheduler_service(control, control.dask, layout), ports),
        _run_spec(worker_service(worker, worker.dask, layout), ports),
    ]
    address = f"tls://127.0.0.1:{port}"
    settings = {
        "distributed.comm.tls.ca-file": paths["ca"],
        "distributed.comm.tls.client.cert": paths["cert"],
        "distributed.comm.tls.client.key": paths["key"],
    }
    try:
        deadline = time.monotonic() + 90
        verdict = ""
        with dask_config.set(settings):
            while not verdict:
                try:
                    verdict = dask_cluster(address, "1")
                except CheckFailed:
                    assert time.monotonic() < deadline, "no TLS cluster of 1 worker in 90 s"
                    assert all(p.poll() is None for p in processes), "a Dask process exited"
                    time.sleep(0.5)
        assert verdict == f"{address} answers with 1 workers"
        with pytest.raises(CheckFailed, match="cannot reach"):
            dask_cluster(f"tcp://127.0.0.1:{port}", "1")  # plain TCP: refused
    finally:
        stop_groups(processes)
