"""The twin's non-process logic: settings validation, recorded state, the env file it writes.

No process is started: these run in milliseconds, so a bug here is caught before the e2e
tests bring a twin up.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from scripts.common import OpsError
from scripts.env import ENV_OUTPUTS, env_from_outputs
from scripts.envfile import read_env_file, write_env_file
from scripts.twin import SERVICES, Twin, TwinConfig, TwinState, up
from scripts.twin.settings import (
    DUMMY_AWS_CREDENTIALS,
    check_service,
    control_secret_arns,
    new_secret,
    write_private_json,
)

PORTS = {"s3": 41001, "mlflow": 41002, "prefect-server": 41003}
ARNS = {
    "db_password": "arn:aws:secretsmanager:us-east-1:123456789012:secret:t-db_password-AbCd",
    "mlflow_admin_password": "arn:aws:secretsmanager:us-east-1:1:secret:t-admin-AbCd",
    "mlflow_flask_secret_key": "arn:aws:secretsmanager:us-east-1:1:secret:t-flask-AbCd",
    "prefect_auth_string": "arn:aws:secretsmanager:us-east-1:1:secret:t-auth-AbCd",
}
WORKER_SECRETS = {"MLFLOW_TRACKING_PASSWORD": "pw-123", "PREFECT_API_AUTH_STRING": "admin:s3cr3t"}
MLFLOW_SECRETS = {"MLFLOW_AUTH_ADMIN_PASSWORD": "admin-pw-456"}


def _twin(state_dir: Path, name: str = "unit_twin") -> Twin:
    """A recorded twin with fixed ports and ARNs; nothing runs."""
    state = TwinState(config=TwinConfig(state_dir=state_dir, name=name), ports=dict(PORTS))
    state.secret_arns = dict(ARNS)
    return Twin(state)


def _booted(twin: Twin) -> Twin:
    """``twin`` with the env files its boot script would have written (the worker's with
    ``WORKER_SECRETS``, MLflow's with ``MLFLOW_SECRETS``)."""
    written = {"prefect-worker": WORKER_SECRETS, "mlflow": MLFLOW_SECRETS}
    for name, spec in twin.specs().items():
        path = Path(spec.env_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_env_file(path, written.get(name, {"SECRET": "x"}))
    return twin


@pytest.mark.parametrize("name", ["", "Twin", "1twin", "twin-a", "a" * 41, "twin;drop"])
def test_a_name_postgres_would_not_take_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(OpsError) as error:
        TwinConfig(name=name)
    assert repr(name) in str(error.value)
    assert "lower-case letters, digits and '_'" in str(error.value)


def test_the_databases_are_named_after_the_twin() -> None:
    assert TwinConfig(name="abc").databases == ("abc_mlflow", "abc_mlflow_auth", "abc_prefect")


def test_an_unknown_service_is_refused_naming_the_services() -> None:
    with pytest.raises(OpsError, match="unknown twin service 'redis'") as error:
        check_service("redis")
    assert all(name in str(error.value) for name in SERVICES)


def test_the_state_round_trips_through_its_file(tmp_path: Path) -> None:
    state = TwinState(
        config=TwinConfig(state_dir=tmp_path, name="round_trip", bucket="b-1"),
        ports=dict(PORTS),
        secret_arns=dict(ARNS),
        processes={"mlflow": [1234, 1700000000.25]},
        postgres_created=True,
        env_file="/somewhere/mlops.env",
    )
    state.save()
    assert TwinState.load(tmp_path) == state


def test_the_state_file_is_private_and_holds_no_secret_value(tmp_path: Path) -> None:
    twin = _booted(_twin(tmp_path))
    twin.state.save()
    assert stat.S_IMODE(twin.state.path.stat().st_mode) == 0o600
    text = twin.state.path.read_text()
    assert all(value not in text for value in WORKER_SECRETS.values())
    assert json.loads(text)["secret_arns"] == ARNS


def test_a_stale_temp_file_does_not_lend_its_mode_to_the_state(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    stale = tmp_path / ".state.json.tmp"
    stale.write_text("{}")
    stale.chmod(0o644)
    write_private_json(target, {"a": 1})
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text()) == {"a": 1}


def test_loading_where_no_twin_is_recorded_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(OpsError, match=r"no twin recorded in .* `mlops twin up`"):
        TwinState.load(tmp_path)


def test_the_env_file_has_the_stack_variables_plus_the_emulator(tmp_path: Path) -> None:
    """Same variables as `mlops env` writes for a stack, the twin's values in them."""
    twin = _booted(_twin(tmp_path))
    env = twin.env()
    stack_keys = env_from_outputs(dict.fromkeys(ENV_OUTPUTS, "x"), tunnel=None).keys()
    assert set(env) == {*stack_keys, "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"} | set(
        DUMMY_AWS_CREDENTIALS
    )
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{PORTS['mlflow']}"
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{PORTS['prefect-server']}/api"
    # The operator is MLflow's admin (as `mlops env` gives from the stack outputs), not the
    # workers' user.
    assert env["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert env["MLFLOW_TRACKING_PASSWORD"] == MLFLOW_SECRETS["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env["PREFECT_API_AUTH_STRING"] == WORKER_SECRETS["PREFECT_API_AUTH_STRING"]
    assert env["AWS_ENDPOINT_URL_S3"] == env["MLFLOW_S3_ENDPOINT_URL"]
    assert env["AWS_ENDPOINT_URL_S3"] == f"http://127.0.0.1:{PORTS['s3']}"
    assert env["PIPELINE_DATA_DIR"] == "s3://mlops-twin-artifacts/data"


def test_the_services_get_the_recorded_ports_and_loopback(tmp_path: Path) -> None:
    twin = _twin(tmp_path)
    control, worker = twin.control_settings(), twin.worker_settings()
    assert (control.mlflow_port, control.prefect_port) == (PORTS["mlflow"], PORTS["prefect-server"])
    assert (worker.control_mlflow_port, worker.control_prefect_port) == (
        PORTS["mlflow"],
        PORTS["prefect-server"],
    )
    assert control.private_ip == control.bind_address == worker.control_private_ip == "127.0.0.1"
    assert control.db_password_secret_arn == ARNS["db_password"]
    assert worker.worker_name == "unit_twin-worker-0"


def test_each_service_runs_in_a_clean_environment_with_its_unit_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAKED_FROM_THE_SHELL", "1")
    twin = _booted(_twin(tmp_path))
    for name in ("mlflow", "prefect-worker"):
        process = twin.process(name)
        spec = twin.specs()[name]
        assert "LEAKED_FROM_THE_SHELL" not in process.env
        assert spec.environment.items() <= process.env.items()
        assert process.env["AWS_ENDPOINT_URL_S3"] == twin.s3_url
        assert process.argv == spec.argv
    assert "AWS_ENDPOINT_URL_S3" not in twin.process("prefect-server").env


def test_down_removes_the_env_file_it_wrote_and_keeps_a_rewritten_one(tmp_path: Path) -> None:
    twin = _booted(_twin(tmp_path / "state"))
    ours, theirs = tmp_path / "ours.env", tmp_path / "theirs.env"
    write_env_file(ours, twin.env())
    write_env_file(theirs, {**twin.env(), "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1"})
    for path in (ours, theirs):
        twin.state.env_file = str(path)
        twin.remove_env_file()
    assert not ours.exists()
    assert read_env_file(theirs)["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:1"


def test_up_refuses_a_second_twin_in_the_same_state_dir(tmp_path: Path) -> None:
    _twin(tmp_path).state.save()
    before = (tmp_path / "state.json").read_bytes()
    with pytest.raises(OpsError, match="already recorded"):
        up(TwinConfig(state_dir=tmp_path), tmp_path / "mlops.env")
    assert (tmp_path / "state.json").read_bytes() == before
    assert not (tmp_path / "mlops.env").exists()


def test_up_refuses_a_virtualenv_without_the_services(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    with pytest.raises(OpsError, match="lacks moto_server, mlflow, prefect"):
        up(TwinConfig(state_dir=tmp_path / "state", venv=venv), tmp_path / "mlops.env")
    assert not (tmp_path / "state").exists()
    assert os.listdir(tmp_path) == ["venv"]


def test_the_twins_worker_polls_as_the_worker_hosts_unit_does(tmp_path: Path) -> None:
    """Same query interval and prefetch on the twin's worker as in the rendered worker unit."""
    from hostboot import worker_plan
    from hostboot.services import WORKER_POLLING_ENVIRONMENT

    twin = _twin(tmp_path)
    host = worker_plan(twin.worker_settings()).services[0].environment
    twin_worker = twin.specs()["prefect-worker"].environment
    for key, value in WORKER_POLLING_ENVIRONMENT.items():
        assert host[key] == twin_worker[key] == value
    # A manually triggered run waits at most this long for a worker (Prefect's default: 10 s).
    assert float(WORKER_POLLING_ENVIRONMENT["PREFECT_WORKER_QUERY_SECONDS"]) <= 2
    assert twin_worker["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"


def test_each_control_secret_field_gets_the_arn_of_its_own_secret() -> None:
    names = [
        "db_password",
        "mlflow_db_password",
        "mlflow_auth_db_password",
        "prefect_db_password",
        "mlflow_admin_password",
        "mlflow_worker_password",
        "mlflow_flask_secret_key",
        "prefect_auth_string",
    ]
    arns = {name: f"arn:aws:secretsmanager:us-east-1:1:secret:{name}" for name in names}

    fields = control_secret_arns(arns)

    assert fields == {f"{name}_secret_arn": arns[name] for name in names}
    # A secret the emulator did not create is an empty ARN (its boot step skips it).
    assert control_secret_arns({}) == dict.fromkeys(fields, "")


def test_a_new_secret_is_32_random_letters_and_digits() -> None:
    drawn = {new_secret() for _ in range(20)}
    assert len(drawn) == 20
    for secret in drawn:
        assert len(secret) == 32
        assert secret.isascii()
        assert secret.isalnum()
