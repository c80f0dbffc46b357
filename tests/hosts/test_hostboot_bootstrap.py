"""The bootstrap as a host runs it: its unit, its script under failures, the lock fetch.

The script runs for real (bash) with the rendered unit's environment pointed into a temporary
directory; ``python3.11`` is a stand-in that records each call and fails the first N pip
installs (a package index refusing), and ``sleep`` a stand-in recording the pauses. The lock
fetch runs against an in-process S3 emulator (moto).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from hostboot import fetch
from hostboot.cloudconfig import BOOTSTRAP_SCRIPT, INSTALL_DIR
from hostboot.locks import FETCH_PACKAGES, PIP, host_lock, lock_entries
from hostboot.units import BOOTSTRAP_UNIT
from moto import mock_aws

from tests.hosts.rendered_hosts import Rendered, parse_unit, unit_environment

# A python3.11 stand-in: `-m venv DIR` makes DIR/bin/python (itself); every call is logged;
# `-m pip` fails while the counter in $FAIL_PIP_FILE is above zero.
FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$CALL_LOG"
if [[ $1 == -m && $2 == venv ]]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
if [[ $1 == -m && $2 == pip ]]; then
  left=$(cat "$FAIL_PIP_FILE")
  if ((left > 0)); then
    echo $((left - 1)) > "$FAIL_PIP_FILE"
    echo "ERROR: Could not find a version that satisfies the requirement (index refused)" >&2
    exit 1
  fi
fi
exit 0
"""
FAKE_SLEEP = '#!/bin/bash\necho "$1" >> "$SLEEP_LOG"\n'


def bootstrap_unit(host: Rendered) -> dict[str, dict[str, list[str]]]:
    """The rendered bootstrap unit."""
    return parse_unit(host.units()[BOOTSTRAP_UNIT])


def test_58_bootstrap_is_a_oneshot_retried_until_it_succeeds(host: Rendered) -> None:
    unit = bootstrap_unit(host)
    service = unit["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["RemainAfterExit"] == ["yes"]
    assert service["Restart"] == ["on-failure"]
    assert service["TimeoutStartSec"] == ["infinity"]
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]  # never rate-limited into failure
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]  # a reboot runs it again
    assert service["ExecStart"] == [f"/bin/bash {INSTALL_DIR}/bootstrap.sh"]
    # Every service starts only after the bootstrap succeeded.
    for name, text in host.units().items():
        if name != BOOTSTRAP_UNIT:
            ordering = parse_unit(text)["Unit"]
            assert ordering["Requires"][0] == BOOTSTRAP_UNIT, name  # then its steps (72)
            assert BOOTSTRAP_UNIT in ordering["After"][0].split(), name
    # cloud-init only enables and starts units (without waiting for them).
    runcmd = host.document["runcmd"]
    assert all(command[0] == "systemctl" for command in runcmd), runcmd
    assert ["systemctl", "enable", *host.units()] in runcmd
    assert ["systemctl", "start", "--no-block", *host.units()] in runcmd


def test_57_user_data_pins_pip_and_boto3_with_hashes_and_names_the_host_lock(
    host: Rendered,
) -> None:
    environment = unit_environment(bootstrap_unit(host))
    lock = host_lock()
    assert environment["MLOPS_HOST_LOCK_KEY"] == lock.key
    assert environment["MLOPS_HOST_LOCK_SHA256"] == lock.sha256
    pip_lock = lock_entries(host.files[f"{INSTALL_DIR}/pip-lock.txt"])
    fetch_lock = lock_entries(host.files[f"{INSTALL_DIR}/fetch-lock.txt"])
    assert list(pip_lock) == [PIP]
    assert list(fetch_lock) == list(FETCH_PACKAGES)
    entries = lock_entries(lock.text)
    for name, entry in {**pip_lock, **fetch_lock}.items():
        assert entry == entries[name]  # the host lock's own pins and hashes
        assert "--hash=sha256:" in entry, name
    assert "python3.11-pip" not in host.document["packages"]
    # Every file the bootstrap uses is written by cloud-init (the host lock: fetched).
    for name in ("bootstrap.sh", "fetch.py"):
        assert f"{INSTALL_DIR}/{name}" in host.files, name
    assert environment["MLOPS_BOOT_CONFIG"] in host.files


@pytest.fixture
def bootstrap_env(control: Rendered, tmp_path: Path) -> dict[str, str]:
    """The rendered unit's environment with every path under ``tmp_path``, and stand-ins."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.11").write_text(FAKE_PYTHON)
    (bin_dir / "sleep").write_text(FAKE_SLEEP)
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    (tmp_path / "fail-pip").write_text("0")
    environment = unit_environment(bootstrap_unit(control))
    relocated = {
        key: str(tmp_path / value.lstrip("/")) if value.startswith("/") else value
        for key, value in environment.items()
    }
    install_dir = tmp_path / str(INSTALL_DIR).lstrip("/")
    install_dir.mkdir(parents=True)
    (install_dir / "bootstrap.sh").write_text(BOOTSTRAP_SCRIPT.read_text())
    return {
        **relocated,
        "INSTALL_DIR": str(install_dir),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALL_LOG": str(tmp_path / "calls.log"),
        "SLEEP_LOG": str(tmp_path / "sleeps.log"),
        "FAIL_PIP_FILE": str(tmp_path / "fail-pip"),
    }


def run_bootstrap(
    env: dict[str, str], failing_pip_installs: int
) -> subprocess.CompletedProcess[str]:
    """The bootstrap script with the first ``failing_pip_installs`` pip installs failing."""
    Path(env["FAIL_PIP_FILE"]).write_text(str(failing_pip_installs))
    return subprocess.run(
        ["/bin/bash", f"{env['INSTALL_DIR']}/bootstrap.sh"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def lines(path: str) -> list[str]:
    """A log's lines ([] when it was never written)."""
    return Path(path).read_text().splitlines() if Path(path).exists() else []


def test_58_bootstrap_retries_with_a_capped_doubling_pause_until_it_succeeds(
    bootstrap_env: dict[str, str],
) -> None:
    result = run_bootstrap(bootstrap_env, failing_pip_installs=8)
    assert result.returncode == 0, result.stderr
    assert lines(bootstrap_env["SLEEP_LOG"]) == ["10", "20", "40", "80", "160", "300", "300", "300"]
    assert "failed (exit 1): installing pip from" in result.stderr
    assert "attempt 8 failed; retrying in 300s" in result.stderr
    assert "bootstrapped after 9 attempt(s)" in result.stderr
    assert Path(bootstrap_env["MLOPS_DONE_MARKER"]).exists()


def test_57_bootstrap_installs_pip_first_then_only_hashed_wheels_then_boots(
    bootstrap_env: dict[str, str],
) -> None:
    result = run_bootstrap(bootstrap_env, failing_pip_installs=0)
    assert result.returncode == 0, result.stderr
    calls = lines(bootstrap_env["CALL_LOG"])
    here = bootstrap_env["INSTALL_DIR"]
    assert calls[0] == f"-m venv {bootstrap_env['MLOPS_VENV']}"
    pip_calls = [call for call in calls if call.startswith("-m pip install")]
    assert [call.rsplit(" ", 1)[1] for call in pip_calls] == [
        f"{here}/pip-lock.txt",
        f"{here}/fetch-lock.txt",
        f"{here}/host-lock.txt",
    ]
    for call in pip_calls:
        assert "--require-hashes --only-binary :all:" in call, call
    fetch_call = " ".join(
        [
            f"{here}/fetch.py",
            *(
                bootstrap_env[key]
                for key in (
                    "MLOPS_REGION",
                    "MLOPS_BUCKET",
                    "MLOPS_HOST_LOCK_KEY",
                    "MLOPS_HOST_LOCK_SHA256",
                )
            ),
            f"{here}/host-lock.txt",
        ]
    )
    fetch_boot_call = " ".join(
        [
            f"{here}/fetch.py",
            *(
                bootstrap_env[key]
                for key in (
                    "MLOPS_REGION",
                    "MLOPS_BUCKET",
                    "MLOPS_BOOT_SCRIPT_KEY",
                    "MLOPS_BOOT_SCRIPT_SHA256",
                )
            ),
            f"{here}/boot.py",
        ]
    )
    boot_call = f"{here}/boot.py {bootstrap_env['MLOPS_BOOT_CONFIG']}"
    assert calls[1:] == [
        pip_calls[0],
        pip_calls[1],
        fetch_call,
        pip_calls[2],
        fetch_boot_call,
        boot_call,
    ]


def test_58_a_completed_bootstrap_does_nothing_on_the_next_boot(
    bootstrap_env: dict[str, str],
) -> None:
    assert run_bootstrap(bootstrap_env, failing_pip_installs=0).returncode == 0
    Path(bootstrap_env["CALL_LOG"]).unlink()
    again = run_bootstrap(bootstrap_env, failing_pip_installs=0)
    assert again.returncode == 0
    assert "already bootstrapped" in again.stderr
    assert lines(bootstrap_env["CALL_LOG"]) == []


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An emulated bucket (dummy credentials, no network)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="artifacts")
        yield "artifacts"


def put(bucket: str, key: str, body: bytes) -> None:
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=bucket, Key=key, Body=body)


def test_57_fetch_keeps_the_host_lock_only_with_its_digest(bucket: str, tmp_path: Path) -> None:
    lock = host_lock()
    put(bucket, lock.key, lock.text.encode())
    dest = tmp_path / "host-lock.txt"
    argv = ["fetch.py", "us-east-1", bucket, lock.key, lock.sha256, str(dest)]
    assert fetch.main(argv) == 0
    assert dest.read_text() == lock.text


def test_57_fetch_refuses_a_tampered_host_lock_and_writes_nothing(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = host_lock()
    put(bucket, lock.key, lock.text.replace("xgboost==", "xgboost==9", 1).encode())
    dest = tmp_path / "host-lock.txt"
    assert fetch.main(["fetch.py", "us-east-1", bucket, lock.key, lock.sha256, str(dest)]) == 1
    assert f"the user data expects {lock.sha256}" in capsys.readouterr().err
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_63_exec_stop_tolerates_an_exited_main_process(worker: Rendered) -> None:
    """ExecStop runs with $MAINPID unset once the worker exited; it must succeed and do nothing."""
    (exec_stop,) = parse_unit(worker.units()["prefect-worker.service"])["Service"]["ExecStop"]
    argv = [word.replace("$$", "$") for word in shlex.split(exec_stop)]
    environment = {k: v for k, v in os.environ.items() if k != "MAINPID"}
    exited = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=10)
    assert exited.returncode == 0, exited.stderr
    main = subprocess.Popen(["sleep", "60"])
    try:
        running = subprocess.run(
            argv, env={**environment, "MAINPID": str(main.pid)}, check=False, timeout=10
        )
        assert running.returncode == 0
        assert main.wait(timeout=10) == -signal.SIGTERM
    finally:
        main.kill()
        main.wait()
