"""The stack configuration, read once into a frozen object and validated before anything exists.

Every key is declared, with its description and default, in ``Pulumi.yaml``; the Pulumi CLI
applies those defaults, so this module only parses and validates. A bad value stops the program
at preview time with one message naming every bad key, the values it allows and what it got.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import pulumi
from hostboot import schedule
from hostboot.dask_cluster import worker_memory_limit
from hostboot.names import ENVIRONMENTS

NAMESPACE = "mlops-platform"
REGION_KEY = "aws:region"
KEYS = (
    "environment",
    "vpcCidr",
    "controlInstanceType",
    "workerInstanceType",
    "workerCount",
    "dbInstanceClass",
    "dbAllocatedStorageGiB",
    "dbBackupRetentionDays",
    "deletionProtection",
    "serviceIngressCidrs",
    "artifactBucketName",
    "amiId",
    "hostSchedule",
    "monthlyBudgetUsd",
    "budgetAlertEmail",
    "expiresAt",
    "restoreFromSnapshot",
    "daskWorkers",
)
MAX_WORKERS = 20
MAX_BUDGET_USD = 1_000_000
PROD_MIN_BACKUP_DAYS = 7
# The only networks MLflow and Prefect may admit besides the workers (invariant 37): RFC 1918
# private space and RFC 6598 carrier-grade NAT space, which VPNs and peered VPCs use. Anything
# else, however it is split (0.0.0.0/1 plus 128.0.0.0/1 is the whole internet), is refused.
# policy/sg_checks.py holds the same list for the pack; tests/policy checks they agree.
PRIVATE_INGRESS_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")

_REGION = re.compile(r"^(?!cn-)[a-z]{2}-[a-z]+-\d{1,2}$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_DB_INSTANCE_CLASS = re.compile(r"^db\.[a-z][a-z0-9-]*\.[a-z0-9]+$")
# Graviton families (a1, t4g, m7g, c7gn, r8gd, ...) cannot boot the hosts' x86_64 AMI.
_ARM_FAMILY = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)$")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
# An RDS snapshot identifier (1-255 letters, digits, hyphens; starts with a letter; the
# automated ones are prefixed rds:) or a snapshot ARN (to restore from another account).
_SNAPSHOT = re.compile(
    r"(?:rds:)?[A-Za-z](?:-?[A-Za-z0-9])*|arn:aws[a-z-]*:rds:[a-z0-9-]+:\d{12}:snapshot:\S+"
)
_AMI_ID = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")

T = TypeVar("T")


class ConfigError(pulumi.RunError):
    """The stack configuration was refused; the message names every bad key.

    A ``RunError`` ends the Pulumi program with its message and no traceback.
    """


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """The validated stack configuration, and the settings the environment kind implies."""

    project: str
    stack: str
    environment: str
    region: str
    vpc_cidr: str
    control_instance_type: str
    worker_instance_type: str
    worker_count: int
    db_instance_class: str
    db_allocated_storage_gib: int
    db_backup_retention_days: int
    deletion_protection: bool
    service_ingress_cidrs: tuple[str, ...]
    artifact_bucket_name: str | None
    ami_id: str | None
    host_schedule: schedule.HostSchedule | None  # None: hosts always on
    monthly_budget_usd: int  # 0: no budget
    budget_alert_email: str | None
    expires_at: datetime | None  # ephemeral stacks only
    restore_from_snapshot: str | None
    dask_workers: int  # 0: no Dask cluster; else the first N worker hosts run a Dask worker

    @property
    def dask_enabled(self) -> bool:
        """A Dask scheduler on the control host and workers on the first ``dask_workers``
        worker hosts; off (0), the stack renders exactly what it did before Dask existed."""
        return self.dask_workers > 0

    @property
    def is_prod(self) -> bool:
        """Production: private hosts behind NAT, multi-AZ database, nothing force-deleted."""
        return self.environment == "prod"

    @property
    def hosts_in_private_subnets(self) -> bool:
        """Only prod pays for a NAT gateway; elsewhere hosts egress through a public address."""
        return self.is_prod

    @property
    def throwaway(self) -> bool:
        """Dev and ephemeral stacks are destroyed whole: bucket emptied, no final snapshot."""
        return not self.is_prod

    @property
    def secret_recovery_days(self) -> int:
        """Secrets Manager recovery window on deletion (0: deleted at once, nothing left)."""
        return 30 if self.is_prod else 0

    @property
    def default_tags(self) -> dict[str, str]:
        """Tags the provider puts on every AWS resource (the policy pack reads ``Environment``;
        ``Stack`` is the cost allocation tag the budget filters on)."""
        tags = {
            "Project": self.project,
            "Stack": self.stack,
            "Environment": self.environment,
            "ManagedBy": "pulumi",
        }
        if self.expires_at:
            tags["ExpiresAt"] = _iso(self.expires_at)
        return tags


class _Reader:
    """Parses raw config strings, collecting one message per bad key (not only the first)."""

    def __init__(self, raw: Mapping[str, str | None]) -> None:
        self._raw = raw
        self.errors: list[str] = []

    def refuse(self, key: str, allowed: str, got: object) -> None:
        """Record that ``key`` holds ``got`` where ``allowed`` was expected."""
        self.errors.append(f"{_full(key)}: expected {allowed}; got {got!r}")

    def checked(self, key: str, allowed: str, parse: Callable[[str], T], fallback: T) -> T:
        """``parse`` of the raw string, or ``fallback`` with ``key`` reported missing or refused."""
        value = self._raw.get(_full(key))
        if value is None:
            self.errors.append(_missing(key))
            return fallback
        try:
            return parse(value)
        except ValueError:
            self.refuse(key, allowed, value)
            return fallback

    def integer(self, key: str, low: int, high: int) -> int:
        """An integer from ``low`` to ``high`` inclusive."""
        return self.checked(key, f"an integer from {low} to {high}", _int_in(low, high), low)

    def boolean(self, key: str) -> bool:
        """``true`` or ``false``."""
        return self.checked(key, "true or false", _bool, False)

    def one_of(self, key: str, allowed: tuple[str, ...]) -> str:
        """One of ``allowed``."""
        return self.checked(key, f"one of {', '.join(allowed)}", _member(allowed), allowed[0])


def _full(key: str) -> str:
    """The namespaced name of a key, as `pulumi config` shows it."""
    return key if ":" in key else f"{NAMESPACE}:{key}"


def _missing(key: str) -> str:
    """Why a key has no value, and how to give it one."""
    hint = f"set it with `pulumi config set {_full(key)} <value>`"
    if _full(key).startswith(f"{NAMESPACE}:"):
        hint += " (Pulumi.yaml declares its default, which Pulumi CLI 3.44 or newer applies)"
    return f"{_full(key)} is not set; {hint}"


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(text)
    return lowered == "true"


def _member(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(text)
        return text

    return parse


def _matching(pattern: re.Pattern[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise ValueError(text)
        return text

    return parse


def _host_instance_type(text: str) -> str:
    """An EC2 type of the form family.size that boots an x86_64 image."""
    _matching(_INSTANCE_TYPE)(text)
    if _ARM_FAMILY.fullmatch(text.split(".", 1)[0]):
        raise ValueError(text)
    return text


def _vpc_cidr(text: str) -> str:
    """A private IPv4 network, /16 to /24, with no host bits set."""
    network = ipaddress.IPv4Network(text.strip(), strict=True)
    if not (16 <= network.prefixlen <= 24 and network.is_private):
        raise ValueError(text)
    return str(network)


def _ingress_cidrs(text: str) -> tuple[str, ...]:
    """A JSON list of IPv4 CIDRs, each inside one of the private ``PRIVATE_INGRESS_RANGES``."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(text) from error
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(text)
    networks = [ipaddress.IPv4Network(v.strip(), strict=True) for v in values]
    if not all(_inside_private_ranges(n) for n in networks):
        raise ValueError(text)
    return tuple(str(n) for n in networks)


def _inside_private_ranges(network: ipaddress.IPv4Network) -> bool:
    """Whether ``network`` lies wholly inside one of ``PRIVATE_INGRESS_RANGES``."""
    return any(network.subnet_of(ipaddress.IPv4Network(r)) for r in PRIVATE_INGRESS_RANGES)


def _optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """Empty means "not set" (Pulumi.yaml's default); anything else must parse."""

    def parse_optional(text: str) -> T | None:
        return parse(text) if text else None

    return parse_optional


def _utc_time(text: str) -> datetime:
    """An ISO 8601 time with an explicit UTC offset, such as 2026-12-01T09:00:00Z."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        raise ValueError(text)
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bucket_name(text: str) -> str:
    """A name S3 accepts for a general purpose bucket."""
    if (
        not _BUCKET_CHARS.fullmatch(text)
        or ".." in text
        or text.startswith(_BUCKET_PREFIXES)
        or text.endswith(_BUCKET_SUFFIXES)
        or _is_ip_address(text)
    ):
        raise ValueError(text)
    return text


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def parse(raw: Mapping[str, str | None], *, project: str = NAMESPACE, stack: str) -> StackConfig:
    """Validate raw config strings (keys as `pulumi config` names them) into a StackConfig.

    Raises ConfigError listing every bad key, the values it allows and what it got.
    """
    read = _Reader(raw)
    environment = read.one_of("environment", ENVIRONMENTS)
    region = read.checked(
        REGION_KEY, "a commercial AWS region such as us-east-1", _matching(_REGION), ""
    )
    instance_type = "an EC2 type family.size of an x86_64 family, such as t3.medium"
    config = StackConfig(
        project=project,
        stack=stack,
        environment=environment,
        region=region,
        vpc_cidr=read.checked(
            "vpcCidr", "a private IPv4 CIDR from /16 to /24, such as 10.42.0.0/16", _vpc_cidr, ""
        ),
        control_instance_type=read.checked(
            "controlInstanceType", instance_type, _host_instance_type, ""
        ),
        worker_instance_type=read.checked(
            "workerInstanceType", instance_type, _host_instance_type, ""
        ),
        worker_count=read.integer("workerCount", 1, MAX_WORKERS),
        db_instance_class=read.checked(
            "dbInstanceClass",
            "an RDS class db.family.size, such as db.t4g.micro",
            _matching(_DB_INSTANCE_CLASS),
            "",
        ),
        db_allocated_storage_gib=read.integer("dbAllocatedStorageGiB", 20, 16384),
        db_backup_retention_days=read.integer("dbBackupRetentionDays", 1, 35),
        deletion_protection=read.boolean("deletionProtection"),
        service_ingress_cidrs=read.checked(
            "serviceIngressCidrs",
            "a JSON list of IPv4 CIDRs, each inside a private range "
            f"({', '.join(PRIVATE_INGRESS_RANGES)}: RFC 1918 and RFC 6598)",
            _ingress_cidrs,
            (),
        ),
        artifact_bucket_name=read.checked(
            "artifactBucketName",
            "empty (Pulumi names the bucket) or a valid S3 bucket name: 3-63 lowercase "
            "letters, digits, dots and hyphens, starting and ending with a letter or digit",
            _optional(_bucket_name),
            None,
        ),
        ami_id=read.checked(
            "amiId",
            "empty (newest Amazon Linux 2023) or an AMI id ami-...",
            _optional(_matching(_AMI_ID)),
            None,
        ),
        host_schedule=None,  # depends on the environment: see _with_schedule
        monthly_budget_usd=read.integer("monthlyBudgetUsd", 0, MAX_BUDGET_USD),
        budget_alert_email=read.checked(
            "budgetAlertEmail",
            "empty or an e-mail address",
            _optional(_matching(_EMAIL)),
            None,
        ),
        expires_at=read.checked(
            "expiresAt",
            "empty or an ISO 8601 time with its UTC offset, such as 2026-12-01T09:00:00Z",
            _optional(_utc_time),
            None,
        ),
        restore_from_snapshot=read.checked(
            "restoreFromSnapshot",
            "empty or an RDS snapshot identifier or ARN",
            _optional(_matching(_SNAPSHOT)),
            None,
        ),
        dask_workers=read.integer("daskWorkers", 0, MAX_WORKERS),
    )
    if not read.errors:  # rules between keys only make sense once each key is valid
        config = _with_schedule(config, read, raw.get(_full("hostSchedule")) or "")
        _check_environment_rules(config, read)
        _check_dask(config, read)
    if read.errors:
        raise ConfigError(
            "stack configuration refused:\n" + "\n".join(f"  - {e}" for e in read.errors)
        )
    return config


def _with_schedule(config: StackConfig, read: _Reader, text: str) -> StackConfig:
    """``config`` with ``hostSchedule`` parsed; empty means the environment's default."""
    try:
        parsed = schedule.parse(text or schedule.default_for(config.environment))
    except ValueError as exc:
        read.refuse("hostSchedule", f"{schedule.FORMAT} ({exc})", text)
        return config
    return dataclasses.replace(config, host_schedule=parsed)


def _check_environment_rules(config: StackConfig, read: _Reader) -> None:
    """Rules that tie a value to the environment kind."""
    if config.environment == "prod" and not config.deletion_protection:
        read.refuse("deletionProtection", "true in prod", "false")
    if config.environment == "ephemeral" and config.deletion_protection:
        read.refuse(
            "deletionProtection", "false in an ephemeral stack (it exists to be destroyed)", "true"
        )
    if config.environment == "ephemeral" and config.expires_at is None:
        read.refuse(
            "expiresAt", "a time in an ephemeral stack (`mlops ephemeral create` sets it)", ""
        )
    if config.environment != "ephemeral" and config.expires_at is not None:
        read.refuse(
            "expiresAt",
            f"empty in a {config.environment} stack (only ephemeral stacks expire)",
            _iso(config.expires_at),
        )
    if config.environment == "prod" and config.db_backup_retention_days < PROD_MIN_BACKUP_DAYS:
        read.refuse(
            "dbBackupRetentionDays",
            f"at least {PROD_MIN_BACKUP_DAYS} in prod",
            str(config.db_backup_retention_days),
        )


def _check_dask(config: StackConfig, read: _Reader) -> None:
    """Each Dask worker runs on a worker host of its own, which must have memory to spare."""
    if config.dask_workers > config.worker_count:
        read.refuse(
            "daskWorkers",
            f"at most workerCount ({config.worker_count}): each Dask worker runs on a worker "
            "host of its own",
            str(config.dask_workers),
        )
    if config.dask_enabled:
        try:
            worker_memory_limit(config.worker_instance_type)
        except ValueError as exc:
            read.refuse("daskWorkers", f"0 with workerInstanceType {exc}", str(config.dask_workers))


def load() -> StackConfig:
    """Read and validate the current stack's configuration."""
    project, provider = pulumi.Config(NAMESPACE), pulumi.Config("aws")
    raw: dict[str, str | None] = {_full(key): project.get(key) for key in KEYS}
    raw[REGION_KEY] = provider.get("region")
    return parse(raw, project=pulumi.get_project(), stack=pulumi.get_stack())
