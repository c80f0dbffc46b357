"""``mlops smoke`` for real, against the local twin (the session fixture ``twin``).

It passes on a healthy twin; a wrong credential is a verdict naming it (401), not a
traceback; with one service down, that service's check fails and the others still pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.envfile import write_env_file

pytestmark = pytest.mark.e2e

MLOPS = str(Path(sys.executable).parent / "mlops")
CHECKS = [
    "mlflow-health",
    "mlflow-auth",
    "mlflow-artifacts",
    "prefect-health",
    "prefect-auth",
    "work-pool",
    "worker",
    "dask-cluster",  # the session's twin runs the stack's Dask cluster (one worker)
]
SECRET_KEYS = ("MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")


def _smoke(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLOPS, "smoke", "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _verdicts(stdout: str) -> dict[str, tuple[str, str]]:
    """Check name -> (outcome, detail), from the verdict lines of the output."""
    verdicts = {}
    for line in stdout.splitlines():
        outcome, _, rest = line.partition("  ")
        check, _, detail = rest.strip().partition("  ")
        if outcome.strip() in {"PASS", "FAIL", "SKIP"} and check in CHECKS:
            verdicts[check] = (outcome.strip(), detail.strip())
    return verdicts


def _assert_no_secret_shown(result: subprocess.CompletedProcess[str], env: dict[str, str]) -> None:
    for key in SECRET_KEYS:
        assert env[key] not in result.stdout + result.stderr, key


def test_smoke_passes_on_the_twin(twin) -> None:
    # The worker's first heartbeat may still be on its way when the twin reports ready.
    result = _smoke(twin.env_file, "--wait", "60")

    assert result.returncode == 0, result.stdout + result.stderr
    verdicts = _verdicts(result.stdout)
    assert list(verdicts) == CHECKS
    assert {outcome for outcome, _ in verdicts.values()} == {"PASS"}
    assert "wrote and read back smoke.txt" in verdicts["mlflow-artifacts"][1]
    assert verdicts["dask-cluster"] == (
        "PASS",
        f"{twin.env['MLOPS_DASK_SCHEDULER_ADDRESS']} answers with 1 workers",
    )
    assert twin.env["MLOPS_DASK_SCHEDULER_ADDRESS"].startswith("tls://127.0.0.1:")
    assert result.stdout.rstrip().endswith("smoke test passed: 8 checks")
    _assert_no_secret_shown(result, twin.env)


def test_smoke_names_the_credentials_a_server_rejects(twin, tmp_path: Path) -> None:
    wrong = {
        **twin.env,
        "MLFLOW_TRACKING_PASSWORD": "not-the-password",
        "PREFECT_API_AUTH_STRING": "nope",
    }
    env_file = tmp_path / "wrong.env"
    write_env_file(env_file, wrong)

    result = _smoke(env_file)

    assert result.returncode == 1
    verdicts = _verdicts(result.stdout)
    assert verdicts["mlflow-health"][0] == "PASS"
    assert verdicts["mlflow-auth"] == (
        "FAIL",
        "MLflow rejected MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (HTTP 401)",
    )
    assert verdicts["prefect-auth"] == (
        "FAIL",
        "Prefect rejected PREFECT_API_AUTH_STRING (HTTP 401)",
    )
    assert result.stderr == "error: smoke test failed: mlflow-auth, prefect-auth\n"
    assert "Traceback" not in result.stdout + result.stderr
    _assert_no_secret_shown(result, twin.env)
    _assert_no_secret_shown(result, wrong)


def test_smoke_fails_naming_the_service_that_is_down(twin) -> None:
    twin.stop_service("mlflow")
    try:
        result = _smoke(twin.env_file)
    finally:
        twin.start_service("mlflow")

    assert result.returncode == 1
    verdicts = _verdicts(result.stdout)
    assert verdicts["mlflow-health"][0] == "FAIL"
    assert verdicts["mlflow-health"][1].startswith(
        f"cannot connect to {twin.env['MLFLOW_TRACKING_URI']}"
    )
    assert verdicts["mlflow-auth"] == ("SKIP", "needs mlflow-health")
    assert verdicts["mlflow-artifacts"] == ("SKIP", "needs mlflow-auth")
    for check in ("prefect-health", "prefect-auth", "work-pool", "worker", "dask-cluster"):
        assert verdicts[check][0] == "PASS", verdicts[check]
    assert result.stderr == "error: smoke test failed: mlflow-health\n"
    assert "Traceback" not in result.stdout + result.stderr
    # Back up again: the same environment passes once more.
    assert _smoke(twin.env_file, "--wait", "60").returncode == 0
