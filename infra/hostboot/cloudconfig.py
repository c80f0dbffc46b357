"""Cloud-init user data (``#cloud-config``) for a host, from its :class:`HostPlan`.

Amazon Linux 2023: Python 3.11 from dnf, the dedicated service users, and files laid down
by ``write_files``: the pinned requirements (read from the repository's requirements.txt
and constraints.txt, so hosts, CI and laptops share one set of versions), the boot script
and its config (ARNs, no secret values), the systemd units and the bootstrap script that
``runcmd`` calls. EC2 refuses user data over 16 KB: the instance gets the document gzipped
(:func:`user_data_base64`), and the renderer checks that size.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from hostboot.services import HostLayout, HostPlan, imds_ruleset
from hostboot.units import render_unit

USER_DATA_LIMIT_BYTES = 16 * 1024
# nftables: the owner-match rule keeping some service users away from the instance metadata.
OS_PACKAGES = ("python3.11", "python3.11-pip", "nftables")

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent.parent
REQUIREMENTS = _REPO_ROOT / "requirements.txt"
CONSTRAINTS = _REPO_ROOT / "constraints.txt"
BOOT_SCRIPT = _PACKAGE_DIR / "boot.py"
MLFLOW_ACCESS_SCRIPT = _PACKAGE_DIR / "mlflow_access.py"
BOOTSTRAP_SCRIPT = _PACKAGE_DIR / "templates" / "bootstrap.sh"

# Where the bootstrap files go on a host.
INSTALL_DIR = HostLayout().scripts_dir
UNIT_DIR = PurePosixPath("/etc/systemd/system")

_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _normalise(name: str) -> str:
    """A distribution name in PEP 503 normal form."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(path: Path = REQUIREMENTS) -> dict[str, str]:
    """The requirement lines of ``path`` by normalised name (comments and ``-r`` skipped)."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _REQUIREMENT_NAME.match(line)
        if match is None or "==" not in line:
            raise ValueError(f"{path}: requirement {line!r} is not pinned with ==")
        pins[_normalise(match.group(0))] = line
    return pins


def select_requirements(names: tuple[str, ...], path: Path = REQUIREMENTS) -> str:
    """The pinned lines for ``names``, in that order; a name missing from ``path`` is an error."""
    pins = pinned_requirements(path)
    missing = [name for name in names if _normalise(name) not in pins]
    if missing:
        raise ValueError(
            f"{path} has no pin for {', '.join(missing)} (pinned: {', '.join(sorted(pins))})"
        )
    return "".join(pins[_normalise(name)] + "\n" for name in names)


def requirements_except(excluded: frozenset[str], path: Path = REQUIREMENTS) -> tuple[str, ...]:
    """Every pinned name in ``path`` except ``excluded`` (tools that never run on a host)."""
    return tuple(name for name in pinned_requirements(path) if name not in excluded)


def lock_lines(path: Path = CONSTRAINTS) -> str:
    """The full lock without its comments: pip's ``--constraint`` pins transitive versions."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return "".join(line + "\n" for line in lines if line and not line.startswith("#"))


class _Dumper(yaml.SafeDumper):
    """YAML dumper writing multi-line strings as literal blocks, for readable user data."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def _file(path: PurePosixPath, content: str, permissions: int) -> dict[str, Any]:
    """One ``write_files`` entry owned by root, in plain text."""
    return {
        "path": str(path),
        "owner": "root:root",
        "permissions": f"{permissions:04o}",
        "content": content,
    }


def _compressed_file(path: PurePosixPath, content: str, permissions: int) -> dict[str, Any]:
    """A ``write_files`` entry for a large file that is the same on every host, gzipped.

    ``mtime=0`` keeps the bytes stable, so an unchanged file never changes the user data
    (which would replace the instance: ``userDataReplaceOnChange``).
    """
    packed = base64.b64encode(gzip.compress(content.encode(), mtime=0)).decode()
    return {**_file(path, packed, permissions), "encoding": "gz+b64"}


def service_files(plan: HostPlan, layout: HostLayout) -> list[dict[str, Any]]:
    """What some services need besides their units: the IMDS firewall, the MLflow access step."""
    files = []
    blocked = plan.users_without_instance_credentials()
    if blocked:
        files.append(_file(layout.imds_firewall, imds_ruleset(blocked), 0o644))
    if any(service.post_start for service in plan.services):
        script = MLFLOW_ACCESS_SCRIPT.read_text()
        files.append(_compressed_file(layout.mlflow_access_script, script, 0o644))
    return files


def render_user_data(plan: HostPlan, *, title: str, packages: tuple[str, ...]) -> str:
    """The ``#cloud-config`` document for a host running ``plan``.

    ``packages`` names the pinned distributions the host's virtualenv needs.
    """
    layout = HostLayout()
    requirements = INSTALL_DIR / "requirements.txt"
    constraints = INSTALL_DIR / "constraints.txt"
    boot_script = INSTALL_DIR / "boot.py"
    bootstrap = INSTALL_DIR / "bootstrap.sh"
    boot_config = layout.config_dir / "boot.json"
    boot_json = json.dumps(plan.boot.to_json_dict(layout.service_groups), indent=1)
    units = [f"{service.name}.service" for service in plan.services]
    document = {
        "users": [
            "default",
            *(
                {
                    "name": user,
                    "system": True,
                    "shell": "/sbin/nologin",
                    "homedir": str(layout.home(user)),
                    "no_create_home": True,
                }
                for user in plan.users()
            ),
        ],
        "packages": list(OS_PACKAGES),
        "write_files": [
            _file(requirements, select_requirements(packages), 0o644),
            _compressed_file(constraints, lock_lines(), 0o644),
            _compressed_file(boot_script, BOOT_SCRIPT.read_text(), 0o644),
            _file(boot_config, boot_json + "\n", 0o600),
            _file(bootstrap, BOOTSTRAP_SCRIPT.read_text(), 0o755),
            *service_files(plan, layout),
            *(
                _file(UNIT_DIR / f"{service.name}.service", render_unit(service), 0o644)
                for service in plan.services
            ),
        ],
        "runcmd": [
            [
                "/bin/bash",
                str(bootstrap),
                str(layout.venv),
                str(requirements),
                str(constraints),
                str(boot_script),
                str(boot_config),
                *units,
            ]
        ],
    }
    text = f"#cloud-config\n# {title} (rendered by infra/hostboot)\n" + yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, width=100
    )
    size = len(gzip_user_data(text))
    if size >= USER_DATA_LIMIT_BYTES:
        raise ValueError(f"{title}: user data is {size} bytes gzipped; EC2 accepts less than 16384")
    return text


def gzip_user_data(text: str) -> bytes:
    """``text`` gzipped as the instance receives it (cloud-init unpacks gzipped user data).

    EC2's 16 KB cap applies to what it stores: gzipped, the whole document fits with room
    to spare. ``mtime=0`` keeps the bytes stable, so an unchanged document never replaces the
    instance.
    """
    return gzip.compress(text.encode(), mtime=0)


def user_data_base64(text: str) -> str:
    """The gzipped user data, base64-encoded: the EC2 API's ``userDataBase64``."""
    return base64.b64encode(gzip_user_data(text)).decode()


def read_user_data_base64(packed: str) -> str:
    """The ``#cloud-config`` text back from :func:`user_data_base64` (policy pack, tests)."""
    return gzip.decompress(base64.b64decode(packed)).decode()
