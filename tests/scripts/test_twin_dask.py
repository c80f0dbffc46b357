"""The process twin's Dask cluster (``mlops twin up --dask-workers N``) without a process:
its settings and recorded state, the command lines it renders from hostboot's specs (TLS
flags, loopback, the twin's own ports, paths under the state dir), the environment its
Prefect worker's flow runs get, the env file it writes, the identities it makes."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hostboot import worker_plan
from hostboot.dask_cluster import DaskSettings, client_environment, tls_files_object
from hostboot.names import (
    DASK_DASHBOARD_PORT,
    DASK_NANNY_PORTS,
    DASK_SCHEDULER_PORT,
    DASK_TRACKER_PORT,
    DASK_WORKER_PORTS,
)
from typer.testing import CliRunner

from scripts.cli import app
from scripts.common import OpsError
from scripts.envfile import write_env_file
from scripts.smoke import dask_checks
from scripts.twin import SERVICES, Twin, TwinConfig, TwinState
from scripts.twin.lifecycle import allocate_ports, port_names
from scripts.twin.settings import DASK_WORKER_MEMORY, check_service

PORTS = {"s3": 41001, "mlflow": 41002, "prefect-server": 41003}
DASK_PORTS = {
    "dask-scheduler": 42001,
    "dask-dashboard": 42002,
    "dask-tracker": 42003,
    "dask-worker-0": 42010,
    "dask-nanny-0": 42011,
    "dask-worker-1": 42020,
    "dask-nanny-1": 42021,
}
TLS_VARIABLES = (
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
)


def _twin(state_dir: Path, dask_workers: int = 2) -> Twin:
    """A recorded twin with ``dask_workers`` Dask workers and fixed ports; nothing runs."""
    config = TwinConfig(state_dir=state_dir, name="dask_twin", dask_workers=dask_workers)
    ports = dict(PORTS)
    for name, port in DASK_PORTS.items():
        number = name.rpartition("-")[2]
        if not number.isdigit() or int(number) < dask_workers:
            ports[name] = port
    return Twin(TwinState(config=config, ports=ports))


def _booted(twin: Twin) -> Twin:
    """``twin`` with the env files its boot steps would have written."""
    secrets = {
        "prefect-worker": {"MLFLOW_TRACKING_PASSWORD": "pw", "PREFECT_API_AUTH_STRING": "a:b"},
        "mlflow": {"MLFLOW_AUTH_ADMIN_PASSWORD": "admin-pw"},
    }
    for name, spec in twin.specs().items():
        path = Path(spec.env_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_env_file(path, secrets.get(name, {}))
    return twin


def _option(argv: tuple[str, ...], flag: str) -> str:
    """The value following ``flag`` in ``argv``."""
    return argv[argv.index(flag) + 1]


# -- settings and state ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [-1, 9])
def test_a_dask_worker_count_out_of_range_is_refused_naming_the_range(count: int) -> None:
    with pytest.raises(OpsError, match=rf"dask workers: use 0 \(no Dask\) to 8 .* not {count}"):
        TwinConfig(dask_workers=count)


def test_the_cli_refuses_a_bad_count_before_anything_is_made(tmp_path: Path) -> None:
    state_dir, env_file = tmp_path / "state", tmp_path / "mlops.env"
    args = ["twin", "up", "--dask-workers", "-1", "--state-dir", str(state_dir)]
    result = CliRunner().invoke(app, [*args, "--env-file", str(env_file)])
    assert result.exit_code != 0
    assert "error: dask workers: use 0 (no Dask) to 8" in result.output
    assert "Traceback" not in result.output
    assert not state_dir.exists()
    assert not env_file.exists()


def test_without_dask_the_twin_runs_its_four_services_and_renders_no_dask_unit(
    tmp_path: Path,
) -> None:
    twin = _twin(tmp_path, dask_workers=0)
    assert TwinConfig().dask_workers == 0  # off by default, as the stack's daskWorkers
    assert twin.config.services == SERVICES
    assert set(twin.specs()) == {"mlflow", "mlflow-migrate", "prefect-server"} | {
        "prefect-migrate",
        "prefect-worker",
    }
    assert twin.dask_settings() is None
    assert set(twin.boot_configs()) == {"control", "worker"}
    assert not any(key.startswith("DASK_") for key in twin.specs()["prefect-worker"].environment)


def test_the_dask_services_start_after_the_servers_and_before_the_prefect_worker() -> None:
    assert TwinConfig(dask_workers=2).services == (
        "s3",
        "mlflow",
        "prefect-server",
        "dask-scheduler",
        "dask-worker-0",
        "dask-worker-1",
        "prefect-worker",
    )


def test_a_dask_service_is_known_only_to_a_twin_that_runs_it(tmp_path: Path) -> None:
    check_service("dask-worker-1", TwinConfig(dask_workers=2).services)
    with pytest.raises(OpsError, match="unknown twin service 'dask-worker-1'"):
        check_service("dask-worker-1", TwinConfig(dask_workers=1).services)
    with pytest.raises(OpsError, match="unknown twin service 'dask-scheduler'"):
        _twin(tmp_path, dask_workers=0).stop_service("dask-scheduler")


def test_the_count_and_the_ports_are_recorded_with_the_state(tmp_path: Path) -> None:
    twin = _twin(tmp_path)
    twin.state.save()
    loaded = Twin(TwinState.load(tmp_path))
    assert loaded.config.dask_workers == 2
    assert loaded.state == twin.state
    assert loaded.specs() == twin.specs()


def test_a_state_recorded_before_dask_loads_as_a_twin_without_it(tmp_path: Path) -> None:
    twin = _twin(tmp_path, dask_workers=0)
    twin.state.save()
    data = json.loads(twin.state.path.read_text())
    del data["config"]["dask_workers"]
    twin.state.path.write_text(json.dumps(data))
    assert TwinState.load(tmp_path).config.dask_workers == 0


def test_each_dask_process_gets_its_own_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert port_names(0) == tuple(PORTS)
    assert port_names(2) == (*PORTS, *DASK_PORTS)
    offered = iter([5001, 5002, 5001, 5002, 5003])  # the kernel offers a port twice
    monkeypatch.setattr("scripts.twin.lifecycle.free_port", lambda: next(offered))
    assert allocate_ports(("a", "b", "c")) == {"a": 5001, "b": 5002, "c": 5003}


# -- the rendered command lines ---------------------------------------------------------------


def test_the_scheduler_runs_the_units_command_line_on_loopback_and_the_twins_ports(
    tmp_path: Path,
) -> None:
    twin = _twin(tmp_path)
    spec = twin.specs()["dask-scheduler"]
    argv = spec.argv
    assert argv[:2] == (str(twin.config.venv / "bin" / "dask"), "scheduler")
    assert _option(argv, "--protocol") == "tls"
    assert _option(argv, "--host") == "127.0.0.1"
    assert _option(argv, "--port") == str(DASK_PORTS["dask-scheduler"])
    assert _option(argv, "--dashboard-address") == f"127.0.0.1:{DASK_PORTS['dask-dashboard']}"
    tls = tmp_path / "control" / "etc" / "dask"
    assert _option(argv, "--tls-ca-file") == str(tls / "ca.pem")
    assert _option(argv, "--tls-cert") == str(tls / "cert.pem")
    assert _option(argv, "--tls-key") == str(tls / "key.pem")
    assert spec.environment["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true"
    assert Path(spec.working_directory).is_relative_to(tmp_path)
    assert twin.dask_address == f"tls://127.0.0.1:{DASK_PORTS['dask-scheduler']}"


@pytest.mark.parametrize(("number", "host"), [(0, "worker"), (1, "worker-1")])
def test_each_dask_worker_runs_the_units_command_line_with_its_own_ports_and_host(
    tmp_path: Path, number: int, host: str
) -> None:
    twin = _twin(tmp_path)
    argv = twin.specs()[f"dask-worker-{number}"].argv
    assert argv[:3] == (
        str(twin.config.venv / "bin" / "dask"),
        "worker",
        f"tls://127.0.0.1:{DASK_PORTS['dask-scheduler']}",
    )
    assert _option(argv, "--name") == f"dask_twin-worker-{number}"
    assert _option(argv, "--nworkers") == "1"
    assert _option(argv, "--memory-limit") == DASK_WORKER_MEMORY == "2560MiB"
    # One free port each: `dask worker` refuses a range of one (N:N).
    assert _option(argv, "--worker-port") == str(DASK_PORTS[f"dask-worker-{number}"])
    assert _option(argv, "--nanny-port") == str(DASK_PORTS[f"dask-nanny-{number}"])
    assert "--no-dashboard" in argv
    home = tmp_path / host / "var-lib" / "dask"
    assert _option(argv, "--local-directory") == str(home / "scratch")
    tls = tmp_path / host / "etc" / "dask"
    assert _option(argv, "--tls-ca-file") == str(tls / "ca.pem")
    assert _option(argv, "--tls-cert") == str(tls / "cert.pem")
    assert _option(argv, "--tls-key") == str(tls / "key.pem")


def test_one_prefect_worker_and_a_boot_step_per_host(tmp_path: Path) -> None:
    twin = _twin(tmp_path)
    specs = twin.specs()
    assert [name for name in specs if "prefect-worker" in name] == ["prefect-worker"]
    assert set(twin.boot_configs()) == {"control", "worker", "worker-1"}
    # Each host's boot step writes the env files of its units, the Dask ones included.
    worker_1_files = {str(file.path) for file in twin.boot_configs()["worker-1"].files}
    assert str(specs["dask-worker-1"].env_file) in worker_1_files


def test_the_stacks_command_lines_keep_their_fixed_ports(tmp_path: Path) -> None:
    """DaskSettings' ports default to the stack's: its units (and the security groups that
    open those ports) do not change."""
    twin = _twin(tmp_path)
    settings = twin.worker_settings(0)
    assert settings.dask is not None
    stack = DaskSettings(tls_secret_arn="arn", tls_script=tls_files_object(), run_worker=True)
    host = worker_plan(dataclasses.replace(settings, dask=stack))
    worker = next(spec for spec in host.services if spec.name == "dask-worker")
    assert f"tls://127.0.0.1:{DASK_SCHEDULER_PORT}" in worker.argv
    assert _option(worker.argv, "--worker-port") == "{}:{}".format(*DASK_WORKER_PORTS)
    assert _option(worker.argv, "--nanny-port") == "{}:{}".format(*DASK_NANNY_PORTS)
    client = next(spec for spec in host.services if spec.name == "prefect-worker")
    assert client.environment["MLOPS_XGBOOST_TRACKER_PORT"] == str(DASK_TRACKER_PORT)
    assert (stack.scheduler_port, stack.dashboard_port) == (8786, DASK_DASHBOARD_PORT)


# -- processes' environment -------------------------------------------------------------------


def test_the_dask_workers_read_the_bucket_through_the_emulator_the_scheduler_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAKED_FROM_THE_SHELL", "1")
    twin = _booted(_twin(tmp_path))
    for name in ("dask-scheduler", "dask-worker-0", "dask-worker-1"):
        process = twin.process(name)
        spec = twin.specs()[name]
        assert process.argv == spec.argv
        assert "LEAKED_FROM_THE_SHELL" not in process.env
        assert spec.environment.items() <= process.env.items()
        assert ("AWS_ENDPOINT_URL_S3" in process.env) == name.startswith("dask-worker-")
    assert twin.process("dask-worker-0").env["AWS_ENDPOINT_URL_S3"] == twin.s3_url


def test_the_prefect_workers_flow_runs_are_the_clusters_clients(tmp_path: Path) -> None:
    twin = _booted(_twin(tmp_path))
    env = twin.process("prefect-worker").env
    tls = tmp_path / "worker" / "etc" / "dask"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == str(tls / "ca.pem")
    assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == str(tls / "cert.pem")
    assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == str(tls / "key.pem")
    # xgboost's tracker on a port of the twin's (the stack's 8789 may be another twin's).
    assert env["MLOPS_XGBOOST_TRACKER_PORT"] == str(DASK_PORTS["dask-tracker"])
    dask = twin.dask_settings(0)
    assert dask is not None
    assert client_environment(twin.layout("worker"), dask).items() <= env.items()


# -- the env file -----------------------------------------------------------------------------


def test_the_env_file_names_the_cluster_and_the_client_identity(tmp_path: Path) -> None:
    twin = _booted(_twin(tmp_path))
    env = twin.env()
    assert env["MLOPS_DASK_SCHEDULER_ADDRESS"] == f"tls://127.0.0.1:{DASK_PORTS['dask-scheduler']}"
    assert env["MLOPS_DASK_WORKERS"] == "2"
    tls = tmp_path / "worker" / "etc" / "dask"
    assert [env[variable] for variable in TLS_VARIABLES] == [
        str(tls / "ca.pem"),
        str(tls / "cert.pem"),
        str(tls / "key.pem"),
    ]
    assert "MLOPS_XGBOOST_TRACKER_PORT" not in env  # the flow runs' own, not the operator's
    # `mlops smoke` reads it and checks the cluster with that identity.
    (check,) = dask_checks(env)
    assert check.name == "dask-cluster"


def test_without_dask_the_env_file_names_no_cluster(tmp_path: Path) -> None:
    env = _booted(_twin(tmp_path, dask_workers=0)).env()
    assert not [key for key in env if key.startswith(("MLOPS_DASK_", "DASK_"))]
    assert dask_checks(env) == []


# -- the identities ---------------------------------------------------------------------------


def _check_bundle(bundle: dict[str, str]) -> None:
    """The key is the certificate's and the CA signed it (what tls_files.py checks on a host)."""
    ca = x509.load_pem_x509_certificate(bundle["ca"].encode())
    cert = x509.load_pem_x509_certificate(bundle["cert"].encode())
    key = serialization.load_pem_private_key(bundle["key"].encode(), password=None)
    cert.verify_directly_issued_by(ca)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    assert key.public_key().public_bytes(pem, public) == cert.public_key().public_bytes(pem, public)


def test_the_identities_are_the_stacks_pair_from_one_ca_private_to_the_state_dir(
    tmp_path: Path,
) -> None:
    twin = _twin(tmp_path)
    twin.write_dask_identities()
    bundles = {}
    for host in ("control", "worker", "worker-1"):
        directory = tmp_path / host / "etc" / "dask"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        bundle = {}
        for name in ("ca", "cert", "key"):
            path = directory / f"{name}.pem"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            bundle[name] = path.read_text()
        _check_bundle(bundle)
        bundles[host] = bundle
    assert bundles["control"]["ca"] == bundles["worker"]["ca"] == bundles["worker-1"]["ca"]
    assert bundles["worker"]["cert"] == bundles["worker-1"]["cert"]  # the workers' identity
    assert bundles["control"]["cert"] != bundles["worker"]["cert"]  # the scheduler's own


def test_the_restore_drills_twin_keeps_the_sources_dask_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack restored from a snapshot keeps its config: the drill's twin, its daskWorkers."""
    from scripts import drill
    from scripts.twin import lifecycle, snapshot

    source = _twin(tmp_path / "source", dask_workers=1)
    made: list[TwinConfig] = []

    def up(config: TwinConfig, env_file: Path, restore_from: Path | None = None) -> Twin:
        made.append(config)
        raise OpsError("not here: no PostgreSQL in unit tests")

    monkeypatch.setattr(lifecycle, "load", lambda state_dir: source)
    monkeypatch.setattr(snapshot, "dump", lambda twin, directory: ["a dump"])
    monkeypatch.setattr(lifecycle, "up", up)

    report = drill.restore_drill_twin(tmp_path / "source", lambda line: None)

    (config,) = made
    assert config.dask_workers == 1
    assert config.name == "drill_dask_twin"
    outcomes = [(step.step, step.ok) for step in report.steps]
    assert outcomes == [("snapshot", True), ("create", False)]
