"""The virtualenv of the previous minor versions (previous-requirements.txt), built once.

Everything else is kept at the dev lock's versions where the older servers allow it.
Kept in ``$MLOPS_CACHE_DIR`` (default ``~/.cache/mlops-platform``) under a name carrying the
requirements' and constraints' digest: a change builds a new one, an unchanged one is reused (uv's
own cache makes even a rebuild take seconds). A marker written last tells a finished build
from an interrupted one, which is built again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("previous-requirements.txt")
DEV_LOCK = Path(__file__).resolve().parents[2] / "constraints.txt"
# What differs from the dev lock: the two servers' own distributions.
_UPGRADED = ("mlflow", "mlflow-skinny", "mlflow-tracing", "prefect")
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.MULTILINE)


def lock_constraints() -> str:
    """Every other distribution at the dev lock's version (unhashed), as uv's preferences.

    Left free, the resolver takes today's newest releases, which the older servers may not
    run on (Prefect 3.8 does not start on FastAPI 0.165); the upgrade should change MLflow and
    Prefect, and only what they need besides.
    """
    pins = _PIN.findall(DEV_LOCK.read_text())
    return "".join(f"{name}=={version}\n" for name, version in pins if name not in _UPGRADED)


def cache_dir() -> Path:
    """Where built virtualenvs are kept."""
    default = Path.home() / ".cache" / "mlops-platform"
    return Path(os.environ.get("MLOPS_CACHE_DIR", default))


def previous_venv() -> Path:
    """The previous versions' virtualenv, built if this requirements file has none yet."""
    constraints = lock_constraints()
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + constraints.encode()).hexdigest()[:16]
    venv = cache_dir() / f"previous-venv-{digest}"
    complete = venv / ".complete"
    if complete.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # an interrupted build
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The same interpreter as this one (the dev lock's), and uv from this virtualenv.
    subprocess.run([str(Path(sys.executable).resolve()), "-m", "venv", str(venv)], check=True)
    # uv keeps the versions already in an output file where the requirements allow: seeded
    # with the dev lock's, only what the previous servers need differs.
    lock = venv / "previous-lock.txt"
    lock.write_text(constraints)
    uv = str(Path(sys.executable).with_name("uv"))
    subprocess.run(
        [uv, "pip", "compile", "--quiet", "--python-version", "3.11", "--output-file", str(lock),
         str(REQUIREMENTS)],
        check=True,
        timeout=600,
    )  # fmt: skip
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         "--requirement", str(lock)],
        check=True,
        timeout=1200,
    )  # fmt: skip
    complete.write_text(REQUIREMENTS.read_text())
    # Builds for other requirements are stale (about 1 GB each): only the newest is kept.
    for stale in venv.parent.glob("previous-venv-*"):
        if stale != venv:
            shutil.rmtree(stale, ignore_errors=True)
    return venv
