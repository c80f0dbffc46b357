"""The host lock: the hashed closure of what hosts run, and the objects hosts fetch at boot.

Hosts install only wheels whose sha256 the lock names (``pip --require-hashes --only-binary
:all:``). The lock is compiled by ``make lock`` from the runtime pins of requirements.txt minus
the tools that never run on a host (:data:`LOCAL_ONLY_PACKAGES`), constrained by the dev lock
(constraints.txt), so hosts, CI and laptops run one set of versions.

Hashes do not compress and the whole lock would not fit EC2's 16 KB of user data, so the
Pulumi program uploads it to the artifact bucket under a key carrying its digest
(``hostboot.boot_objects``) and the user data carries only that key and digest, checked at boot
before the file is used. A host's user data therefore changes (and the host is replaced) when
the host lock changes, never for a dev-tool bump. The user data embeds just what the host
needs before it can read the bucket: pip itself (installed first) and boto3's closure.

``make lock`` compiles :func:`host_requirements` into the host lock.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
REQUIREMENTS = _PACKAGE_DIR.parent.parent / "requirements.txt"
HOST_LOCK = _PACKAGE_DIR / "host-lock.txt"
BOOT_PREFIX = "bootstrap/"  # the bucket prefix hosts may read at boot

# Pinned in requirements.txt but never run on a host: infrastructure as code and the S3
# emulator (requirements-dev.txt's tools are not in the host lock's input at all).
LOCAL_ONLY_PACKAGES = frozenset(
    {"pulumi", "pulumi-aws", "pulumi-random", "pulumi-policy", "pulumi-tls", "moto"}
)
# Installed from the user data before the host lock can be read from the bucket, in this
# order: pip (the version the lock was resolved and tested with), then boto3 and its closure.
PIP = "pip"
FETCH_PACKAGES = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def normalise(name: str) -> str:
    """A distribution name in PEP 503 normal form."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(path: Path = REQUIREMENTS) -> dict[str, str]:
    """The requirement lines of ``path`` by normalised name (comments and ``-r`` skipped)."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _NAME.match(line)
        if match is None or "==" not in line:
            raise ValueError(f"{path}: requirement {line!r} is not pinned with ==")
        pins[normalise(match.group(0))] = line
    return pins


def host_requirements(path: Path = REQUIREMENTS) -> str:
    """The host lock's input: every runtime pin of ``path`` a host runs (pip included)."""
    pins = pinned_requirements(path)
    if PIP not in pins:
        raise ValueError(f"{path} must pin {PIP} (hosts install it first, from the lock)")
    return "".join(line + "\n" for name, line in pins.items() if name not in LOCAL_ONLY_PACKAGES)


def lock_entries(text: str) -> dict[str, str]:
    """A hashed lock's entries by normalised name: the requirement line and its hash lines."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            if current is None or not stripped.startswith("--hash="):
                raise ValueError(f"lock line {line!r} belongs to no requirement")
            current.append(stripped.removesuffix("\\").strip())
            continue
        match = _NAME.match(stripped)
        if match is None:
            raise ValueError(f"lock line {line!r} is not a requirement")
        current = entries.setdefault(normalise(match.group(0)), [])
        current.append(stripped.removesuffix("\\").strip())
    return {name: " \\\n    ".join(lines) + "\n" for name, lines in entries.items()}


def lock_versions(text: str) -> dict[str, str]:
    """A lock's pinned version by normalised name (extras and markers dropped)."""
    versions = {}
    for name, entry in lock_entries(text).items():
        requirement = entry.split(" \\", 1)[0].split(";", 1)[0]
        versions[name] = requirement.split("==", 1)[1].strip()
    return versions


def stale_pins(requirements: str, lock_text: str) -> list[str]:
    """The pins of ``requirements`` (pinned lines) that the lock does not hold at that version."""
    locked = lock_versions(lock_text)
    stale = []
    for line in requirements.splitlines():
        match = _NAME.match(line)
        if match is None:
            continue
        name, version = normalise(match.group(0)), line.split("==", 1)[1].strip()
        if locked.get(name) != version:
            stale.append(f"{line} (locked: {locked.get(name, 'absent')})")
    return stale


@dataclass(frozen=True, kw_only=True)
class BootObject:
    """A file hosts read from the artifact bucket at boot, under a key carrying its digest."""

    name: str  # e.g. host-lock.txt; the key is bootstrap/host-lock-<sha256>.txt
    text: str

    @property
    def sha256(self) -> str:
        """The digest the user data carries and the host checks before using the file."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def key(self) -> str:
        """The bucket key: content-addressed, so a new version never overwrites a booting host's."""
        stem, dot, suffix = self.name.rpartition(".")
        return f"{BOOT_PREFIX}{stem}-{self.sha256}{dot}{suffix}"


@dataclass(frozen=True, kw_only=True)
class HostLock(BootObject):
    """The host lock's text and where hosts find it in the artifact bucket."""

    name: str = HOST_LOCK.name

    def entries(self, names: tuple[str, ...]) -> str:
        """The hashed entries for ``names``, in that order (a missing name is an error)."""
        entries = lock_entries(self.text)
        missing = [name for name in names if normalise(name) not in entries]
        if missing:
            raise ValueError(f"{HOST_LOCK.name} has no entry for {', '.join(missing)}")
        return "".join(entries[normalise(name)] for name in names)


def host_lock(path: Path = HOST_LOCK, requirements: Path = REQUIREMENTS) -> HostLock:
    """The repository's host lock, refused if it disagrees with requirements.txt."""
    lock = HostLock(text=path.read_text())
    stale = stale_pins(host_requirements(requirements), lock.text)
    if stale:
        raise ValueError(
            f"{path.name} is stale (run `make lock`): requirements.txt pins {'; '.join(stale)}"
        )
    return lock
