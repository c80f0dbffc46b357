"""``mlops cost``: what a stack costs a month, computed from its configuration.

The estimate reads the stack's settings the way Pulumi does (``Pulumi.yaml``'s defaults under
``Pulumi.<stack>.yaml``'s values), so it needs neither the CLI nor an AWS account, and it
prints the price table it used: the figures in docs/infrastructure.md are this module's output.
What it counts: the hosts (on-demand, for the hours ``hostSchedule`` lets them run), their root
volumes and public addresses, the database (its instance, doubled when multi-AZ, and storage),
prod's NAT gateway and the stack's secrets. Data transfer, S3 storage and requests are usage,
not size, and are left out (the output says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hostboot import schedule

from scripts.common import NAMESPACE, REPO_ROOT, OpsError, check_stack_name

HOURS_PER_MONTH = 730
ROOT_VOLUME_GIB = 30  # infra/hosts.py: every host's gp3 root volume
SECRETS = 4  # infra/credentials.py: database, MLflow admin, Flask key, Prefect auth string
KEYS = (
    "environment",
    "controlInstanceType",
    "workerInstanceType",
    "workerCount",
    "dbInstanceClass",
    "dbAllocatedStorageGiB",
    "hostSchedule",
)


@dataclass(frozen=True, kw_only=True)
class PriceTable:
    """On-demand list prices in USD (Linux, no reservations or savings plans)."""

    region: str
    as_of: str
    ec2_hourly: Mapping[str, float]
    rds_postgres_hourly: Mapping[str, float]  # single-AZ; multi-AZ costs twice as much
    ebs_gp3_gib_month: float
    rds_gp3_gib_month: float  # single-AZ; doubled when multi-AZ
    public_ipv4_hourly: float
    nat_gateway_hourly: float
    secret_month: float


US_EAST_1 = PriceTable(
    region="us-east-1",
    as_of="2026-11",
    ec2_hourly={
        "t3.micro": 0.0104,
        "t3.small": 0.0208,
        "t3.medium": 0.0416,
        "t3.large": 0.0832,
        "t3.xlarge": 0.1664,
        "t3.2xlarge": 0.3328,
        "t3a.medium": 0.0376,
        "t3a.large": 0.0752,
        "t3a.xlarge": 0.1504,
        "m5.large": 0.096,
        "m5.xlarge": 0.192,
        "m6i.large": 0.096,
        "m6i.xlarge": 0.192,
        "m6i.2xlarge": 0.384,
        "m7i.large": 0.1008,
        "m7i.xlarge": 0.2016,
        "m7i.2xlarge": 0.4032,
        "c6i.large": 0.085,
        "c6i.xlarge": 0.17,
        "r6i.large": 0.126,
        "r6i.xlarge": 0.252,
    },
    rds_postgres_hourly={
        "db.t4g.micro": 0.016,
        "db.t4g.small": 0.032,
        "db.t4g.medium": 0.065,
        "db.t4g.large": 0.129,
        "db.t3.micro": 0.018,
        "db.t3.small": 0.036,
        "db.t3.medium": 0.072,
    },
    ebs_gp3_gib_month=0.08,
    rds_gp3_gib_month=0.115,
    public_ipv4_hourly=0.005,
    nat_gateway_hourly=0.045,
    secret_month=0.40,
)


@dataclass(frozen=True, kw_only=True)
class StackSizes:
    """What the estimate needs of a stack's configuration."""

    stack: str
    region: str
    environment: str
    control_instance_type: str
    worker_instance_type: str
    worker_count: int
    db_instance_class: str
    db_storage_gib: int
    host_schedule: schedule.HostSchedule | None

    @property
    def multi_az(self) -> bool:
        """Prod's database runs in two zones (infra/__main__.py)."""
        return self.environment == "prod"

    @property
    def nat_gateway(self) -> bool:
        """Prod's hosts sit in private subnets behind a NAT gateway; the others have addresses."""
        return self.environment == "prod"


@dataclass(frozen=True)
class Line:
    """One item of the estimate."""

    item: str
    detail: str
    monthly_usd: float


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """The lines of a stack's monthly estimate and the prices they came from."""

    sizes: StackSizes
    prices: PriceTable
    lines: tuple[Line, ...] = field(default=())

    @property
    def monthly_usd(self) -> float:
        """The whole month."""
        return sum(line.monthly_usd for line in self.lines)

    @property
    def hourly_usd(self) -> float:
        """An average hour (what an ephemeral stack costs while it exists)."""
        return self.monthly_usd / HOURS_PER_MONTH


def stack_settings(stack: str, root: Path = REPO_ROOT) -> dict[str, Any]:
    """The stack's config keys: Pulumi.yaml's defaults overlaid with Pulumi.<stack>.yaml."""
    check_stack_name(stack)
    project = _yaml(root / "Pulumi.yaml")
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise OpsError(
            f"no stack configuration {path.name} in {root} (stacks here: {', '.join(known)})"
        )
    values: dict[str, Any] = {
        key: declared.get("default")
        for key, declared in (project.get("config") or {}).items()
        if isinstance(declared, dict)
    }
    for key, value in (_yaml(path).get("config") or {}).items():
        values[key.removeprefix(f"{NAMESPACE}:")] = value
    return values


def sizes_of(stack: str, settings: Mapping[str, Any]) -> StackSizes:
    """The sizes in ``settings``; a missing or malformed key is an OpsError naming it."""
    missing = [key for key in KEYS if settings.get(key) is None]
    if missing:
        raise OpsError(f"stack {stack} configuration lacks {', '.join(missing)}")
    environment = str(settings["environment"])
    try:
        host_schedule = effective_schedule(environment, str(settings["hostSchedule"]))
        worker_count = int(settings["workerCount"])
        db_storage = int(settings["dbAllocatedStorageGiB"])
    except ValueError as exc:
        raise OpsError(f"stack {stack} configuration: {exc}") from None
    return StackSizes(
        stack=stack,
        region=str(settings.get("aws:region") or US_EAST_1.region),
        environment=environment,
        control_instance_type=str(settings["controlInstanceType"]),
        worker_instance_type=str(settings["workerInstanceType"]),
        worker_count=worker_count,
        db_instance_class=str(settings["dbInstanceClass"]),
        db_storage_gib=db_storage,
        host_schedule=host_schedule,
    )


def effective_schedule(environment: str, text: str) -> schedule.HostSchedule | None:
    """``hostSchedule`` as the program applies it: empty means the environment's default."""
    return schedule.parse(text or schedule.default_for(environment))


def estimate(sizes: StackSizes, prices: PriceTable = US_EAST_1) -> Estimate:
    """The monthly estimate of ``sizes`` at ``prices``."""
    share = sizes.host_schedule.running_share if sizes.host_schedule else 1.0
    running = (
        f"{sizes.host_schedule.hours_per_week:g} of {schedule.HOURS_PER_WEEK} hours a week"
        if sizes.host_schedule
        else "always on"
    )
    hours = HOURS_PER_MONTH * share
    hosts = 1 + sizes.worker_count
    az = 2 if sizes.multi_az else 1
    lines = [
        Line(
            "control host",
            f"{sizes.control_instance_type}, {running}",
            _price(prices.ec2_hourly, sizes.control_instance_type, "EC2 type") * hours,
        ),
        Line(
            "workers",
            f"{sizes.worker_count} x {sizes.worker_instance_type}, {running}",
            sizes.worker_count
            * _price(prices.ec2_hourly, sizes.worker_instance_type, "EC2 type")
            * hours,
        ),
        Line(
            "database",
            f"{sizes.db_instance_class} {'multi-AZ' if sizes.multi_az else 'single-AZ'}"
            f" + {sizes.db_storage_gib} GiB gp3, always on",
            az
            * (
                _price(prices.rds_postgres_hourly, sizes.db_instance_class, "RDS class")
                * HOURS_PER_MONTH
                + sizes.db_storage_gib * prices.rds_gp3_gib_month
            ),
        ),
        Line(
            "host volumes",
            f"{hosts} x {ROOT_VOLUME_GIB} GiB gp3",
            hosts * ROOT_VOLUME_GIB * prices.ebs_gp3_gib_month,
        ),
    ]
    if sizes.nat_gateway:
        lines.append(
            Line(
                "NAT gateway",
                "gateway and its address, always on (+ per-GB processing)",
                (prices.nat_gateway_hourly + prices.public_ipv4_hourly) * HOURS_PER_MONTH,
            )
        )
    else:
        lines.append(
            Line(
                "public IPv4",
                f"{hosts} host addresses, while the hosts run",
                hosts * prices.public_ipv4_hourly * hours,
            )
        )
    lines.append(Line("Secrets Manager", f"{SECRETS} secrets", SECRETS * prices.secret_month))
    return Estimate(sizes=sizes, prices=prices, lines=tuple(lines))


def report(result: Estimate) -> list[str]:
    """The estimate as lines for a terminal."""
    sizes, prices = result.sizes, result.prices
    width = max(len(line.item) for line in result.lines)
    detail_width = max(len(line.detail) for line in result.lines)
    out = [
        f"monthly estimate of stack {sizes.stack} ({sizes.environment}): "
        f"{prices.region} on-demand prices of {prices.as_of}, {HOURS_PER_MONTH} hours a month"
    ]
    if sizes.region != prices.region:
        out.append(
            f"note: the stack runs in {sizes.region}; prices there differ from {prices.region}'s"
        )
    out += [
        f"  {line.item:<{width}}  {line.detail:<{detail_width}}  ${line.monthly_usd:8.2f}"
        for line in result.lines
    ]
    out.append(f"  {'total':<{width}}  {'':<{detail_width}}  ${result.monthly_usd:8.2f}")
    out.append(
        f"  (${result.hourly_usd:.3f} an hour on average; data transfer, NAT processing and "
        "S3 usage not included)"
    )
    return out


def price_table(prices: PriceTable = US_EAST_1) -> list[str]:
    """The prices the estimate uses, for ``mlops cost --prices``."""
    out = [f"{prices.region} on-demand prices of {prices.as_of} (USD)"]
    out += [f"  EC2 {name}: {usd}/hour" for name, usd in prices.ec2_hourly.items()]
    out += [
        f"  RDS PostgreSQL {name}: {usd}/hour single-AZ"
        for name, usd in prices.rds_postgres_hourly.items()
    ]
    out += [
        f"  EBS gp3: {prices.ebs_gp3_gib_month}/GiB-month",
        f"  RDS gp3 storage: {prices.rds_gp3_gib_month}/GiB-month single-AZ",
        f"  public IPv4 address: {prices.public_ipv4_hourly}/hour",
        f"  NAT gateway: {prices.nat_gateway_hourly}/hour",
        f"  Secrets Manager secret: {prices.secret_month}/month",
    ]
    return out


def _price(table: Mapping[str, float], name: str, kind: str) -> float:
    try:
        return table[name]
    except KeyError:
        raise OpsError(
            f"no price for {kind} {name!r} in the price table "
            f"(known: {', '.join(sorted(table))}); add it to scripts/cost.py"
        ) from None


def _yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OpsError(f"cannot read {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise OpsError(f"{path} is not a YAML mapping")
    return loaded
