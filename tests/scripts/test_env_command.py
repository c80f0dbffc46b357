"""``mlops env`` against a recorded stack output: exact variables, file mode, no secret shown."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from scripts.cli import app
from scripts.envfile import read_env_file

OUTPUT_COMMAND = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", "dev"]
SECRETS = ("Qm7vT2xP9sLk4RzW8nYcHd3F", "Zr5KpWq8Ns2Lx7Vb4MtYg6Hc")


def _env(*args: str) -> Result:
    return CliRunner().invoke(app, ["env", "--stack", "dev", *args])


def _assert_no_secret_shown(result: Result) -> None:
    for secret in SECRETS:
        assert secret not in result.stdout
        assert secret not in result.stderr


def test_env_writes_the_architecture_variables_to_a_private_file(
    fake_tools, dev_outputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools.answer(OUTPUT_COMMAND, stdout=json.dumps(dev_outputs, indent=2))
    monkeypatch.chdir(tmp_path)

    result = _env()

    assert result.exit_code == 0, result.stderr
    env_file = tmp_path / "mlops.env"
    assert read_env_file(env_file) == {
        "MLFLOW_TRACKING_URI": "http://10.42.0.10:5000",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "Qm7vT2xP9sLk4RzW8nYcHd3F",
        "PREFECT_API_URL": "http://10.42.0.10:4200/api",
        "PREFECT_API_AUTH_STRING": "Zr5KpWq8Ns2Lx7Vb4MtYg6Hc",
        "AWS_REGION": "us-east-1",
        "PIPELINE_DATA_DIR": "s3://mlops-artifacts-dev-3f9a2c1/data",
    }
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "MLFLOW_TRACKING_URI=http://10.42.0.10:5000" in result.stdout
    assert "MLFLOW_TRACKING_PASSWORD=<secret, in the file only>" in result.stdout
    _assert_no_secret_shown(result)
    assert fake_tools.calls() == [OUTPUT_COMMAND]


def test_env_via_tunnel_points_the_uris_at_the_tunnel_s_local_ends(
    fake_tools, dev_outputs, tmp_path: Path
) -> None:
    fake_tools.answer(OUTPUT_COMMAND, stdout=json.dumps(dev_outputs))
    env_file = tmp_path / "laptop.env"

    result = _env("--env-file", str(env_file), "--via-tunnel", "--mlflow-port", "15000")

    assert result.exit_code == 0, result.stderr
    values = read_env_file(env_file)
    assert values["MLFLOW_TRACKING_URI"] == "http://localhost:15000"
    assert values["PREFECT_API_URL"] == "http://localhost:4200/api"
    assert values["PIPELINE_DATA_DIR"] == "s3://mlops-artifacts-dev-3f9a2c1/data"
    assert "mlops tunnel --stack dev" in result.stdout
    _assert_no_secret_shown(result)


def test_env_names_every_missing_output_and_writes_nothing(
    fake_tools, dev_outputs, tmp_path: Path
) -> None:
    del dev_outputs["prefect_api_url"]
    dev_outputs["mlflow_admin_password"] = ""
    fake_tools.answer(OUTPUT_COMMAND, stdout=json.dumps(dev_outputs))
    env_file = tmp_path / "mlops.env"

    result = _env("--env-file", str(env_file))

    assert result.exit_code == 1
    assert "stack dev lacks the outputs prefect_api_url, mlflow_admin_password" in result.stderr
    assert "Traceback" not in result.output
    assert not env_file.exists()
    _assert_no_secret_shown(result)


def test_env_reports_pulumi_s_error_and_writes_nothing(fake_tools, tmp_path: Path) -> None:
    fake_tools.answer(OUTPUT_COMMAND, stderr="error: no stack named 'dev' found\n", exit=255)
    env_file = tmp_path / "mlops.env"

    result = _env("--env-file", str(env_file))

    assert result.exit_code == 1
    assert result.stderr == (
        "error: `pulumi stack output --json --show-secrets --stack dev` failed with exit "
        "status 255: error: no stack named 'dev' found\n"
    )
    assert not env_file.exists()


def test_env_refuses_a_malformed_stack_name_before_running_pulumi(fake_tools) -> None:
    result = CliRunner().invoke(app, ["env", "--stack", "dev; rm -rf /"])

    assert result.exit_code == 1
    assert "stack name 'dev; rm -rf /' is not valid" in result.stderr
    assert fake_tools.calls() == []


def test_env_without_pulumi_on_path_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    result = _env()

    assert result.exit_code == 1
    assert result.stderr.startswith("error: `pulumi` is not on PATH: install the Pulumi CLI")


def test_env_into_a_directory_that_does_not_exist_is_one_error_line(
    fake_tools, dev_outputs, tmp_path: Path
) -> None:
    fake_tools.answer(OUTPUT_COMMAND, stdout=json.dumps(dev_outputs))
    env_file = tmp_path / "missing" / "mlops.env"

    result = _env("--env-file", str(env_file))

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot write env file {env_file}: No such file or directory\n"
    )
    _assert_no_secret_shown(result)


@pytest.mark.parametrize("tunnel", [False, True])
def test_env_names_the_dask_cluster_only_where_it_is_reachable(
    fake_tools, dev_outputs, tmp_path: Path, tunnel: bool
) -> None:
    outputs = {**dev_outputs, "dask_scheduler_address": "tls://10.42.0.10:8786", "dask_workers": 2}
    fake_tools.answer(OUTPUT_COMMAND, stdout=json.dumps(outputs))
    env_file = tmp_path / "mlops.env"

    result = _env("--env-file", str(env_file), *(["--via-tunnel"] if tunnel else []))

    assert result.exit_code == 0, result.stderr
    values = read_env_file(env_file)
    if tunnel:  # the tunnel forwards the dashboard, not the scheduler
        assert not {k for k in values if k.startswith("MLOPS_DASK_")}
    else:
        assert values["MLOPS_DASK_SCHEDULER_ADDRESS"] == "tls://10.42.0.10:8786"
        assert values["MLOPS_DASK_WORKERS"] == "2"


@pytest.mark.parametrize("address", [None, ""])
def test_env_of_a_stack_without_dask_names_no_cluster(
    fake_tools, dev_outputs, tmp_path: Path, address: str | None
) -> None:
    """A stack deployed before Dask has no such output; one with daskWorkers 0 an empty one."""
    outputs = dict(dev_outputs)
    if address is not None:
        outputs |= {"dask_scheduler_address": address, "dask_workers": 0}
    fake_tools.answer(OUTPUT_COMMAND, stdout=json.dumps(outputs))
    env_file = tmp_path / "mlops.env"
    assert _env("--env-file", str(env_file)).exit_code == 0
    assert not {k for k in read_env_file(env_file) if k.startswith("MLOPS_DASK_")}


def test_env_of_a_cluster_without_a_worker_count_leaves_the_count_empty(
    fake_tools, dev_outputs, tmp_path: Path
) -> None:
    """An empty count, which `mlops smoke` refuses by name, not a made-up one ("None")."""
    outputs = {**dev_outputs, "dask_scheduler_address": "tls://10.42.0.10:8786"}
    fake_tools.answer(OUTPUT_COMMAND, stdout=json.dumps(outputs))
    env_file = tmp_path / "mlops.env"

    assert _env("--env-file", str(env_file)).exit_code == 0

    values = read_env_file(env_file)
    assert values["MLOPS_DASK_SCHEDULER_ADDRESS"] == "tls://10.42.0.10:8786"
    assert values["MLOPS_DASK_WORKERS"] == ""
