"""The rendered user data, units and scripts pass the tools that would reject them on a host.

``cloud-init schema`` (Debian's cloud-init), ``systemd-analyze verify`` and ``shellcheck``
must be installed (``.ci/run`` installs them); a missing tool fails the test with its name.
systemd-analyze runs against a temporary root holding the distribution's own units (for the
targets our units order themselves after) and stub executables at every path an ``Exec*=``
line names, so it checks our files without touching the machine's /opt or /etc.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import hostboot
import pytest
from hostboot.cloudconfig import (
    BOOT_SCRIPT,
    BOOTSTRAP_SCRIPT,
    FETCH_SCRIPT,
    USER_DATA_LIMIT_BYTES,
    gzip_user_data,
)

from tests.hosts.rendered_hosts import Rendered, parse_unit, unit_environment

SYSTEM_UNITS = Path("/lib/systemd/system")


def tool(name: str) -> str:
    """The path of validator ``name``, or a failure saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed (Debian: apt-get install {name}; .ci/run does)")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a validator, capturing its output."""
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def exec_paths(unit_text: str) -> set[str]:
    """Every executable an Exec*= line of the unit names."""
    service = parse_unit(unit_text)["Service"]
    lines = [value for key, values in service.items() if key.startswith("Exec") for value in values]
    # A path may carry systemd's prefixes (+: run with full privileges, -: failure ignored ...).
    return {shlex.split(line)[0].lstrip("+-!@:") for line in lines}


def verify_unit(
    tmp_path: Path, name: str, text: str, executables: set[str]
) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of unit ``name`` in a throwaway root with ``executables``."""
    root = tmp_path / "root"
    units = root / "usr/lib/systemd/system"
    if not units.exists():
        shutil.copytree(SYSTEM_UNITS.resolve(), units, symlinks=True)
    for executable in executables:
        stub = root / executable.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    (unit_dir / name).write_text(text)
    return run(
        tool("systemd-analyze"),
        "verify",
        "--man=no",
        f"--root={root}",
        f"/etc/systemd/system/{name}",
    )


def test_user_data_passes_cloud_init_schema(host: Rendered, tmp_path: Path) -> None:
    config = tmp_path / "user-data.yaml"
    config.write_text(host.text)
    result = run(tool("cloud-init"), "schema", "--config-file", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_cloud_init_schema_rejects_a_broken_document(tmp_path: Path) -> None:
    """Guard against a silent pass: the validator does reject bad user data."""
    config = tmp_path / "user-data.yaml"
    config.write_text("#cloud-config\nruncmd: 3\n")
    result = run(tool("cloud-init"), "schema", "--config-file", str(config))
    assert result.returncode != 0


def test_user_data_fits_ec2_limit(host: Rendered) -> None:
    assert host.text.startswith("#cloud-config\n")
    # EC2 stores (and caps) the gzipped document; cloud-init unpacks it.
    assert len(gzip_user_data(host.text)) < USER_DATA_LIMIT_BYTES


def test_units_pass_systemd_analyze_verify(host: Rendered, tmp_path: Path) -> None:
    assert host.units(), "no unit rendered"
    for name, text in host.units().items():
        result = verify_unit(tmp_path, name, text, exec_paths(text))
        # verify exits 0 on mere warnings (an unknown key is "ignored"): any output fails.
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize(
    ("defect", "change"),
    [
        ("unknown key", ("Restart=on-failure", "Restart=on-failure\nRestartTypo=1")),
        ("bad time span", ("RestartSec=5", "RestartSec=five")),
        ("missing executable", ("ExecStart=/opt/mlops/venv/bin/", "ExecStart=/nonexistent/bin/")),
    ],
)
def test_systemd_analyze_verify_catches_a_broken_unit(
    control: Rendered, tmp_path: Path, defect: str, change: tuple[str, str]
) -> None:
    """Guard against a silent pass: each defect makes verification fail."""
    name = "mlflow.service"
    text = control.units()[name]
    old, new = change
    assert old in text, defect
    result = verify_unit(tmp_path, name, text.replace(old, new), exec_paths(text))
    assert result.returncode != 0 or result.stderr.strip(), defect


def test_bootstrap_script_passes_shellcheck() -> None:
    result = run(tool("shellcheck"), "--severity=style", str(BOOTSTRAP_SCRIPT))
    assert result.returncode == 0, result.stdout


def test_user_data_carries_the_repository_scripts(host: Rendered) -> None:
    """What cloud-init writes is byte for byte what is checked and tested here."""
    assert host.files["/opt/mlops/bootstrap.sh"] == BOOTSTRAP_SCRIPT.read_text()
    # The boot script comes from the bucket, under the key and digest the unit names.
    environment = unit_environment(parse_unit(host.units()["mlops-bootstrap.service"]))
    objects = hostboot.boot_objects()
    assert objects[environment["MLOPS_BOOT_SCRIPT_KEY"]] == BOOT_SCRIPT.read_bytes()
    digest = hashlib.sha256(BOOT_SCRIPT.read_bytes()).hexdigest()
    assert environment["MLOPS_BOOT_SCRIPT_SHA256"] == digest
    assert host.files["/opt/mlops/fetch.py"] == FETCH_SCRIPT.read_text()
