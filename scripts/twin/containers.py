"""Host containers: the machine's own tree under a writable overlay, booted by systemd-nspawn.

Each host is ``systemd-nspawn -b`` (systemd as PID 1) over an overlay of ``/`` whose upper
layer is the host's own directory in the state dir, so the user data can create users and
write /etc and /opt without touching the machine. cloud-init runs for real from a NoCloud
seed holding the rendered user data. Where the machine's Debian tree differs from a fresh
Amazon Linux 2023, a shim says so (:data:`SHIMS`, listed in docs/local-twin.md); nothing else
of the user data is changed.

Containers are named ``mlt-<host>`` (``-M``) and so are their overlay mounts (the mount's
source), so that ``down`` finds them after a crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from scripts.common import OpsError
from scripts.twin.hostnet import PREFIX
from scripts.twin.supervisor import POLL_SECONDS

# Units the machine's tree enables that a fresh AL2023 host would not run, found by listing
# the tree's .wants directories; these stay (cloud-init is the point, systemd's own is PID 1's).
_KEPT_UNIT_PREFIXES = ("cloud-", "systemd-", "dbus", "getty", "console-getty")
_WANTS_DIRS = ("multi-user.target.wants", "sockets.target.wants", "timers.target.wants")
_STOP_SECONDS = 30.0

# Every difference between the container and an AL2023 host, with its reason (docs/local-twin.md
# lists the same). Keys name the file each shim writes in the container, or the nspawn option.
SHIMS = {
    "/etc/cloud/cloud.cfg.d/90-mlt-twin.cfg": (
        "NoCloud is the only datasource (no EC2 metadata crawl), and the"
        " package-update-upgrade-install module is skipped: the user data asks dnf for"
        " python3.11 and nftables; the Debian tree has both (python3.11 with ensurepip), and"
        " apt has no mirror in the twin's network. The locale is C.UTF-8 (AL2023's): Debian's"
        " default en_US.UTF-8 is not generated on the tree and fails the locale module"
    ),
    "/etc/systemd/system.conf.d/90-mlt-twin.conf": (
        "DefaultEnvironment points AWS_ENDPOINT_URL (every AWS API: S3, Secrets Manager) at the"
        " emulator, as the public endpoints are out of the twin's network"
    ),
    "/etc/pip.conf": (
        "pip's index is the package-index stand-in (a wheelhouse of the host packages), as"
        " PyPI is out of the twin's network"
    ),
    "systemd-nspawn --capability=CAP_NET_ADMIN": (
        "not a file: nspawn drops CAP_NET_ADMIN, which root has on an instance; the services"
        " load an nftables table (ExecStartPre=+nft) keeping some users from the metadata"
    ),
    "/etc/systemd/system/<unit> -> /dev/null": (
        "the machine's enabled services (PostgreSQL, Redis, ...) are masked: a fresh AL2023"
        " host runs none of them"
    ),
}


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """What one host container is made of."""

    host: str  # short name; machine and namespace are mlt-<host>
    user_data: str
    aws_endpoint: str
    package_index: str  # a find-links URL
    ca_bundle: str = ""  # PEM to install as the RDS CA bundle (path given by the renderer)
    ca_bundle_path: str = ""

    @property
    def machine(self) -> str:
        """The container's (and its namespace's) name."""
        return f"{PREFIX}{self.host}"


def masked_units(tree: Path = Path("/")) -> list[str]:
    """The units the tree at ``tree`` enables that a fresh AL2023 host would not run."""
    units: set[str] = set()
    for wants in _WANTS_DIRS:
        directory = tree / "etc" / "systemd" / "system" / wants
        if directory.is_dir():
            units.update(
                entry.name
                for entry in directory.iterdir()
                if entry.name.endswith((".service", ".socket", ".timer"))
                and not entry.name.startswith(_KEPT_UNIT_PREFIXES)
            )
    return sorted(units)


def shim_files(spec: ContainerSpec) -> dict[str, str]:
    """The files each shim writes, by path in the container."""
    cloud_cfg = {
        "datasource_list": ["NoCloud"],
        "locale": "C.UTF-8",
        "cloud_final_modules": [
            "write-files-deferred",
            "scripts-per-once",
            "scripts-per-boot",
            "scripts-per-instance",
            "scripts-user",
            "final-message",
        ],
    }
    files = {
        "/etc/cloud/cloud.cfg.d/90-mlt-twin.cfg": json.dumps(cloud_cfg) + "\n",
        "/etc/systemd/system.conf.d/90-mlt-twin.conf": (
            f'[Manager]\nDefaultEnvironment="AWS_ENDPOINT_URL={spec.aws_endpoint}"\n'
        ),
        "/etc/pip.conf": (
            f"[global]\nno-index = true\nfind-links = {spec.package_index}\n"
            "trusted-host = " + spec.package_index.split("/")[2].split(":")[0] + "\n"
        ),
        "/var/lib/cloud/seed/nocloud/user-data": spec.user_data,
        "/var/lib/cloud/seed/nocloud/meta-data": (
            f"instance-id: {spec.machine}\nlocal-hostname: {spec.machine}\n"
        ),
        "/etc/hostname": spec.machine + "\n",
    }
    if spec.ca_bundle_path:
        files[spec.ca_bundle_path] = spec.ca_bundle
    return files


def mounts() -> list[str]:
    """Mount points of the twin's overlays that exist now."""
    with open("/proc/self/mounts") as table:
        rows = [line.split() for line in table]
    return [row[1] for row in rows if row[0].startswith(PREFIX) and row[2] == "overlay"]


def prepare(spec: ContainerSpec, directory: Path) -> Path:
    """Mount the host's overlay of ``/`` under ``directory`` and lay the shims down in it."""
    upper, work, root = directory / "upper", directory / "work", directory / "root"
    for path in (upper, work, root):
        path.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir=/,upperdir={upper},workdir={work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", spec.machine, "-o", options, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise OpsError(f"cannot mount the overlay of {spec.machine}: {result.stderr.strip()}")
    # A fresh instance: no cloud-init state, no pip configuration of the machine's root.
    for stale in ("var/lib/cloud", "root/.config/pip", "root/.pip", "etc/xdg/pip"):
        subprocess.run(["rm", "-rf", str(root / stale)], check=False)
    for name, content in shim_files(spec).items():
        target = root / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    unit_dir = root / "etc" / "systemd" / "system"
    for unit in masked_units():
        link = unit_dir / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    return root


def boot(spec: ContainerSpec, root: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``systemd-nspawn -b`` on ``root`` in the host's namespace."""
    argv = [
        "systemd-nspawn",
        "--register=no",
        "--keep-unit",
        "--quiet",
        f"--machine={spec.machine}",
        f"--directory={root}",
        f"--network-namespace-path=/run/netns/{spec.machine}",
        # Root on an instance may change its own firewall: the units load an nftables
        # table keeping some service users from the instance metadata (ExecStartPre=+nft).
        # nspawn drops CAP_NET_ADMIN unless asked; the namespace is the host's own.
        "--capability=CAP_NET_ADMIN",
        "--boot",
    ]
    with log.open("ab") as output:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def leader(nspawn_pid: int) -> int | None:
    """The container's PID 1 as seen from the machine (systemd, child of systemd-nspawn);
    None until nspawn's child has become systemd, or once it exited."""
    try:
        children = psutil.Process(nspawn_pid).children()
        return next((child.pid for child in children if child.name() == "systemd"), None)
    except psutil.NoSuchProcess:
        return None


def nspawn_processes() -> dict[str, psutil.Process]:
    """The running systemd-nspawn processes of the twin, by machine name."""
    found = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] != "systemd-nspawn":
            continue
        for argument in cmdline:
            if argument.startswith(f"--machine={PREFIX}"):
                found[argument.removeprefix("--machine=")] = process
    return found


def in_container(pid: int, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the container whose PID 1 is ``pid`` (all its namespaces)."""
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-a", "--", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def stop(nspawn: psutil.Process) -> None:
    """Power the container off (SIGRTMIN+4 to its PID 1); kill what is left after a while."""
    init = leader(nspawn.pid)
    if init is not None:
        os.kill(init, signal.SIGRTMIN + 4)
    deadline = time.monotonic() + _STOP_SECONDS
    while nspawn.is_running() and nspawn.status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > deadline:
            init = leader(nspawn.pid)
            if init is not None:
                os.kill(init, signal.SIGKILL)  # the container's PID namespace dies with it
            nspawn.wait(10)
            break
        time.sleep(POLL_SECONDS)


def unmount(point: str) -> None:
    """Unmount an overlay (lazily: a dying container may still hold it for a moment)."""
    subprocess.run(["umount", "-l", point], capture_output=True, check=False)
