"""Cloud-init user data (``#cloud-config``) for a host, from its :class:`HostPlan`.

Amazon Linux 2023: Python 3.11 from dnf, the dedicated service users, and files laid down
by ``write_files``: pip's and boto3's hashed pins and the fetch script (the host lock and the boot
script are read from the bucket by digest: :func:`boot_objects`), the boot config (ARNs, no
secret values), the bootstrap script and its unit, the services' units and what some services
need besides (:func:`service_files`). ``runcmd`` only enables and starts the units: the
bootstrap unit retries until it succeeds and the services start after it. EC2 refuses user
data over 16 KB: the instance gets the document gzipped (:func:`user_data_base64`), and the
renderer checks that size.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from hostboot.locks import FETCH_PACKAGES, PIP, BootObject, HostLock, host_lock
from hostboot.services import HostLayout, HostPlan, imds_ruleset
from hostboot.units import BOOTSTRAP_UNIT, render_bootstrap_unit, render_unit

USER_DATA_LIMIT_BYTES = 16 * 1024
# pip comes from the lock, never from the distribution; nftables: the owner-match rule keeping
# some service users away from the instance metadata.
OS_PACKAGES = ("python3.11", "nftables")
PYTHON = "python3.11"

_PACKAGE_DIR = Path(__file__).resolve().parent
BOOT_SCRIPT = _PACKAGE_DIR / "boot.py"
MLFLOW_ACCESS_SCRIPT = _PACKAGE_DIR / "mlflow_access.py"
MIGRATE_SCRIPT = _PACKAGE_DIR / "migrate.py"
FETCH_SCRIPT = _PACKAGE_DIR / "fetch.py"
BOOTSTRAP_SCRIPT = _PACKAGE_DIR / "templates" / "bootstrap.sh"

# Where the bootstrap files go on a host.
INSTALL_DIR = HostLayout().scripts_dir
UNIT_DIR = PurePosixPath("/etc/systemd/system")
DONE_MARKER = PurePosixPath("/var/lib/mlops/bootstrap.done")


def boot_script() -> BootObject:
    """The boot script, fetched at boot by digest (it grows with the services; user data cannot)."""
    return BootObject(name=BOOT_SCRIPT.name, text=BOOT_SCRIPT.read_text())


def boot_objects() -> dict[str, bytes]:
    """The objects hosts read from the artifact bucket at boot, by key.

    The Pulumi program uploads exactly these; the local twin puts the same into its emulator.
    """
    return {item.key: item.text.encode() for item in (host_lock(), boot_script())}


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
    """What some services need besides their units: the IMDS firewall, the MLflow access step,
    the schema migration step."""
    files = []
    blocked = plan.users_without_instance_credentials()
    if blocked:
        files.append(_file(layout.imds_firewall, imds_ruleset(blocked), 0o644))
    if any(service.post_start for service in plan.services):
        script = MLFLOW_ACCESS_SCRIPT.read_text()
        files.append(_compressed_file(layout.mlflow_access_script, script, 0o644))
    if any(service.prepares for service in plan.services):
        script = MIGRATE_SCRIPT.read_text()
        files.append(_compressed_file(layout.migrate_script, script, 0o644))
    return files


def _bootstrap_unit(layout: HostLayout, *, region: str, bucket: str, lock: HostLock) -> str:
    """The bootstrap unit; the script finds its pin files and scripts beside itself."""
    environment = {
        "MLOPS_VENV": str(layout.venv),
        "MLOPS_PYTHON": PYTHON,
        "MLOPS_REGION": region,
        "MLOPS_BUCKET": bucket,
        "MLOPS_HOST_LOCK_KEY": lock.key,
        "MLOPS_HOST_LOCK_SHA256": lock.sha256,
        "MLOPS_BOOT_SCRIPT_KEY": boot_script().key,
        "MLOPS_BOOT_SCRIPT_SHA256": boot_script().sha256,
        "MLOPS_BOOT_CONFIG": str(layout.config_dir / "boot.json"),
        "MLOPS_DONE_MARKER": str(DONE_MARKER),
    }
    return render_bootstrap_unit(("/bin/bash", str(INSTALL_DIR / "bootstrap.sh")), environment)


def render_user_data(plan: HostPlan, *, title: str, bucket: str) -> str:
    """The ``#cloud-config`` document for a host running ``plan``, reading ``bucket`` at boot."""
    layout = HostLayout()
    lock = host_lock()
    boot_json = json.dumps(plan.boot.to_json_dict(layout.service_groups), indent=1)
    bootstrap_unit = _bootstrap_unit(layout, region=plan.boot.region, bucket=bucket, lock=lock)
    units = [BOOTSTRAP_UNIT, *(f"{service.name}.service" for service in plan.services)]
    document: dict[str, Any] = {"groups": list(plan.groups())} if plan.groups() else {}
    document |= {
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
            _file(INSTALL_DIR / "pip-lock.txt", lock.entries((PIP,)), 0o644),
            _file(INSTALL_DIR / "fetch-lock.txt", lock.entries(FETCH_PACKAGES), 0o644),
            _compressed_file(INSTALL_DIR / "fetch.py", FETCH_SCRIPT.read_text(), 0o644),
            _file(layout.config_dir / "boot.json", boot_json + "\n", 0o600),
            _compressed_file(INSTALL_DIR / "bootstrap.sh", BOOTSTRAP_SCRIPT.read_text(), 0o755),
            _file(UNIT_DIR / BOOTSTRAP_UNIT, bootstrap_unit, 0o644),
            *service_files(plan, layout),
            *(
                _file(UNIT_DIR / f"{service.name}.service", render_unit(service), 0o644)
                for service in plan.services
            ),
        ],
        # Enabled: a reboot before the bootstrap completed runs it again. Not waited for:
        # cloud-init finishes, and the unit's journal tells how the bootstrap goes.
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", *units],
            ["systemctl", "start", "--no-block", *units],
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
