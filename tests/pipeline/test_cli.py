"""``python -m pipeline``: the JSON summary, and one clear error line for expected failures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from typer.testing import CliRunner

from pipeline.cli import _NoExpectedTracebacks, app
from pipeline.data import file_name
from pipeline.errors import PipelineError

if TYPE_CHECKING:  # the type only: the server itself comes as a fixture
    from tests.pipeline.conftest import RefusingServer

MONTHS = ("--train-month", "2023-01", "--val-month", "2023-02")


def run_module(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` in ``cwd``, with the test process's environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def assert_one_error_line(returncode: int, stdout: str, stderr: str, expected: str) -> None:
    """Exit status 1, no traceback, nothing on stdout, and the last stderr line is the error."""
    assert returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    assert stderr.strip().splitlines()[-1] == f"error: {expected}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--train-month", "2023-01", "--val-month", "2023-01"],
            "val_month must differ from train_month (both are 2023-01): "
            "validating on the training month would hide overfitting",
        ),
        (
            [*MONTHS, "--color", "red"],
            "--color: Input should be 'green' or 'yellow', got 'red'",
        ),
        (
            [*MONTHS, "--tlc-base-url", "ftp://mirror"],
            "tlc_base_url must be an https:// URL (the TLC site or a mirror), got ftp://mirror",
        ),
        (
            [*MONTHS, "--tlc-base-url", "http://user:secret@mirror/trip-data"],
            "tlc_base_url http://mirror/trip-data is plain http: anyone on the path can change "
            "the data. Use an https URL, or allow a plain-http mirror explicitly "
            "(allow_insecure_mirror, --allow-insecure-mirror)",
        ),
        (
            ["--train-months", "2023-03..2023-01", "--val-month", "2023-04"],
            "--train-months: month range '2023-03..2023-01' runs backwards: 2023-03 is after "
            "2023-01",
        ),
        (
            ["--train-months", "2019-01..2022-12", "--val-month", "2023-01"],
            "--train-months: month range '2019-01..2022-12' spans 48 months; at most 36 are "
            "allowed",
        ),
        (
            ["--val-month", "2023-02"],
            "give the months to train on: --train-month YYYY-MM or --train-months FROM..TO",
        ),
        (
            [*MONTHS, "--dask-workers", "2"],
            "dask_workers need engine dask; the engine is local",
        ),
        (
            [*MONTHS, "--engine", "dask", "--dask-workers", "2", "--dask-wait-seconds", "60"],
            "--dask-wait-seconds applies with --dask-address (runs on a cluster you give take "
            "turns); a local cluster is the run's own",
        ),
        (
            [
                *MONTHS,
                "--engine",
                "dask",
                "--dask-address",
                "tcp://h:8786",
                "--dask-wait-seconds",
                "-1",
            ],
            "--dask-wait-seconds: Input should be greater than or equal to 0, got -1",
        ),
    ],
)
def test_bad_arguments_give_one_error_line(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, ["train", *args])
    assert_one_error_line(result.exit_code, result.stdout, result.stderr, expected)


def test_the_module_entry_point_reports_a_bad_month_without_a_traceback(tmp_path: Path) -> None:
    result = run_module("train", "--train-month", "2023-13", "--val-month", "2023-02", cwd=tmp_path)
    assert_one_error_line(
        result.returncode,
        result.stdout,
        result.stderr,
        "--train-month: month must be YYYY-MM from 2009-01 on (TLC records start in 2009), "
        "got '2023-13'",
    )
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--train-months", "2023-03..2023-01", "--val-month", "2023-04"],
            "--train-months: month range '2023-03..2023-01' runs backwards: 2023-03 is after "
            "2023-01",
        ),
        ([*MONTHS, "--trials", "0"], "--trials: Input should be greater than or equal to 1, got 0"),
        (
            [*MONTHS, "--dask-wait-seconds", "60"],
            "--dask-wait-seconds applies with --dask-address (runs on a cluster you give take "
            "turns); a local cluster is the run's own",
        ),
        (
            [*MONTHS, "--dask-address", "tcp://h:8786", "--dask-wait-seconds", "86401"],
            "--dask-wait-seconds: Input should be less than or equal to 86400, got 86401",
        ),
    ],
)
def test_bad_tuning_arguments_give_one_error_line(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, ["tune", *args])
    assert_one_error_line(result.exit_code, result.stdout, result.stderr, expected)


def test_training_on_the_embedded_default_prints_a_json_summary(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """The README's first command: no MLflow or Prefect server, so a SQLite store in the
    working directory and Prefect's ephemeral API, started for the run and stopped after."""
    work = tmp_path / "work"
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_API_AUTH_STRING"}
    }
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", *MONTHS, "--data-dir", str(real_data_dir)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()  # the JSON summary is all there is on stdout
    summary = json.loads(line)
    assert summary["model_name"] == "trip-duration-green"
    assert summary["model_version"] == "1"
    assert summary["aliases"] == ["challenger", "champion"]
    assert (summary["train_month"], summary["val_month"]) == ("2023-01", "2023-02")
    assert summary["rmse"] <= 4.6
    assert len(summary["run_id"]) == 32
    assert (work / "mlflow.db").is_file()  # the embedded default, in the working directory
    assert "Starting temporary server on http://127.0.0.1:" in result.stderr
    assert processes_with(PREFECT_HOME=env["PREFECT_HOME"]) == []  # it went with the run


def test_a_profile_naming_the_api_runs_the_flow_there_without_a_temporary_server(
    prefect_api: None,
    data_dir_with: Callable[..., Path],
    prefect_home_naming: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    """PREFECT_API_URL set in the active profile, not the environment, as `prefect cloud login`
    leaves it: the command line starts a server process before it reads Prefect's settings, and
    that process exits unused."""
    from prefect.settings import PREFECT_API_URL

    data_dir = data_dir_with(real=("2023-02",), files={file_name("green", "2023-01"): b"corrupt"})
    home = prefect_home_naming(str(PREFECT_API_URL.value()))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", *MONTHS, "--data-dir", str(data_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # The data error comes from the flow, which ran against the profile's (the harness's) API.
    assert "is not a readable parquet file" in result.stderr.strip().splitlines()[-1]
    assert "Starting temporary server" not in result.stderr
    assert not (home / "prefect.db").exists()


def processes_with(**variables: str) -> list[int]:
    """The IDs of running processes whose environment holds all of ``variables``."""
    found = []
    for process in psutil.process_iter():
        try:
            environment = process.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if variables.items() <= environment.items():
            found.append(process.pid)
    return found


def test_a_data_error_inside_the_flow_gives_one_error_line(
    prefect_api: None, data_dir_with: Callable[..., Path], tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    data_dir = data_dir_with(real=("2023-02",), files={file_name("green", "2023-01"): b"corrupt"})
    result = run_module(
        "train",
        *MONTHS,
        "--data-dir",
        str(data_dir),
        cwd=tmp_path,
        env={
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        },
    )
    path = data_dir / file_name("green", "2023-01")
    assert_one_error_line(
        result.returncode,
        result.stdout,
        result.stderr,
        f"{path} is not a readable parquet file: Parquet file size is 7 bytes, "
        "smaller than the minimum file footer (8 bytes)",
    )


def test_a_rejected_prefect_auth_string_gives_one_error_line(
    refusing_server: Callable[[int], RefusingServer], tmp_path: Path
) -> None:
    server = refusing_server(401)
    wrong = "admin:not-the-auth-string-0123456789"
    result = run_module(
        "train",
        *MONTHS,
        cwd=tmp_path,
        env={"PREFECT_API_URL": f"{server.url}/api", "PREFECT_API_AUTH_STRING": wrong},
    )
    assert_one_error_line(
        result.returncode,
        result.stdout,
        result.stderr,
        f"the Prefect server at {server.url}/api rejected PREFECT_API_AUTH_STRING (HTTP 401)",
    )
    assert wrong not in result.stderr


def test_logged_tracebacks_are_dropped_only_for_expected_errors() -> None:
    def record(error: Exception) -> logging.LogRecord:
        return logging.LogRecord(
            "x", logging.ERROR, "f", 1, "failed", None, (type(error), error, None)
        )

    expected, unexpected = record(PipelineError("bad file")), record(KeyError("bug"))
    assert _NoExpectedTracebacks().filter(expected)
    assert expected.exc_info is None
    assert _NoExpectedTracebacks().filter(unexpected)
    assert unexpected.exc_info is not None
