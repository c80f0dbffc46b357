"""The traffic matrix: three security groups and every rule between them, in one place.

Nothing accepts traffic from the internet. The database admits PostgreSQL from the control
host only; the control host admits MLflow (5000) and Prefect (4200) from the workers and from
the CIDRs listed in ``serviceIngressCidrs`` (empty by default: operators use an SSM tunnel).
Egress is what the hosts need: HTTPS anywhere (AWS APIs such as SSM, Secrets Manager and S3,
the dnf repositories, PyPI), PostgreSQL to the database (control host), and MLflow and Prefect
to the control host (workers). Rules are separate resources; the groups carry none inline.

With Dask (``daskWorkers`` above 0, :func:`dask_rules`), between the stack's own groups only:
the scheduler (8786) and xgboost's tracker (8789) on the control host from the workers; the
Dask worker and nanny port ranges on the workers from the control host and from each other;
the kernel's ephemeral ports between workers (xgboost's collective, worker to worker). The
scheduler's dashboard (8787) listens on the control host's loopback: no rule at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from hostboot.names import (
    DASK_NANNY_PORTS,
    DASK_PEER_PORTS,
    DASK_SCHEDULER_PORT,
    DASK_TRACKER_PORT,
    DASK_WORKER_PORTS,
    MLFLOW_PORT,
    POSTGRES_PORT,
    PREFECT_PORT,
)

HTTPS_PORT = 443
HTTPS_EGRESS = "HTTPS to AWS APIs (SSM, Secrets Manager, S3), dnf repositories and PyPI"
SERVICES = {"mlflow": MLFLOW_PORT, "prefect": PREFECT_PORT}


GROUPS = ("database", "control", "worker")
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One TCP rule of a security group, as data (the local hosts twin enforces the same)."""

    direction: str  # "ingress" or "egress"
    name: str  # the rule's resource name, after the firewall's own
    group: str  # one of GROUPS
    port: int
    description: str
    peer: str | None = None  # another of GROUPS
    cidr: str | None = None
    to_port: int | None = None  # a range from ``port`` to this; None: ``port`` alone

    @property
    def last_port(self) -> int:
        """The range's last port (``port`` for a single port)."""
        return self.port if self.to_port is None else self.to_port


def _between(
    name: str, port: int, to_port: int | None, description: str, *, to: str, peer: str
) -> tuple[Rule, Rule]:
    """``peer``'s egress to group ``to`` on the ports, and ``to``'s matching ingress."""
    return (
        Rule(
            direction="ingress",
            name=f"{to}-{name}-from-{peer}",
            group=to,
            port=port,
            to_port=to_port,
            description=f"{description} from the {peer} group",
            peer=peer,
        ),
        Rule(
            direction="egress",
            name=f"{peer}-to-{to}-{name}",
            group=peer,
            port=port,
            to_port=to_port,
            description=f"{description} on the {to} group",
            peer=to,
        ),
    )


def dask_rules() -> tuple[Rule, ...]:
    """The Dask cluster's rules: each between two of the stack's groups, never a CIDR."""
    worker_ranges = (
        ("dask-worker", DASK_WORKER_PORTS, "Dask worker"),
        ("dask-nanny", DASK_NANNY_PORTS, "Dask nanny"),
    )
    rules = [
        *_between(
            "dask-scheduler",
            DASK_SCHEDULER_PORT,
            None,
            "Dask scheduler (TLS)",
            to="control",
            peer="worker",
        ),
        *_between(
            "xgboost-tracker",
            DASK_TRACKER_PORT,
            None,
            "xgboost collective tracker",
            to="control",
            peer="worker",
        ),
        *_between(
            "xgboost-peers",
            *DASK_PEER_PORTS,
            "xgboost collective peers (ephemeral ports)",
            to="worker",
            peer="worker",
        ),
    ]
    for name, (first, last), description in worker_ranges:
        for peer in ("control", "worker"):
            rules += _between(name, first, last, f"{description} (TLS)", to="worker", peer=peer)
    return tuple(rules)


def traffic_matrix(
    service_ingress_cidrs: Sequence[str] = (), *, dask: bool = False
) -> tuple[Rule, ...]:
    """Every rule between the groups, and from ``service_ingress_cidrs`` to the services;
    with ``dask``, the Dask cluster's too."""
    rules = [
        Rule(
            direction="ingress",
            name="database-from-control",
            group="database",
            port=POSTGRES_PORT,
            description="PostgreSQL from the control host",
            peer="control",
        ),
        Rule(
            direction="egress",
            name="control-to-database",
            group="control",
            port=POSTGRES_PORT,
            description="PostgreSQL to the database",
            peer="database",
        ),
    ]
    rules += [
        Rule(
            direction="egress",
            name=f"{host}-https",
            group=host,
            port=HTTPS_PORT,
            description=HTTPS_EGRESS,
            cidr=ANYWHERE,
        )
        for host in ("control", "worker")
    ]
    for service, port in SERVICES.items():
        rules += [
            Rule(
                direction="ingress",
                name=f"control-{service}-from-workers",
                group="control",
                port=port,
                description=f"{service} from the workers",
                peer="worker",
            ),
            Rule(
                direction="egress",
                name=f"worker-to-{service}",
                group="worker",
                port=port,
                description=f"{service} on the control host",
                peer="control",
            ),
        ]
        rules += [
            Rule(
                direction="ingress",
                name=f"control-{service}-from-{cidr.replace('.', '-').replace('/', '-')}",
                group="control",
                port=port,
                description=f"{service} from {cidr} (serviceIngressCidrs)",
                cidr=cidr,
            )
            for cidr in service_ingress_cidrs
        ]
    if dask:
        rules += dask_rules()
    return tuple(rules)


@dataclass(frozen=True, kw_only=True)
class FirewallArgs:
    """Inputs of the firewall."""

    vpc_id: pulumi.Input[str]
    service_ingress_cidrs: Sequence[str] = ()
    dask: bool = False  # the Dask cluster's rules (daskWorkers above 0)


class Firewall(pulumi.ComponentResource):
    """Security groups of the database, the control host and the workers, and their rules."""

    database_group_id: pulumi.Output[str]
    control_group_id: pulumi.Output[str]
    worker_group_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:Firewall", name, None, opts)
        groups = {
            "database": self._group(
                f"{name}-database", args.vpc_id, "RDS PostgreSQL of the MLOps stack"
            ),
            "control": self._group(
                f"{name}-control", args.vpc_id, "MLOps control host (MLflow and Prefect servers)"
            ),
            "worker": self._group(f"{name}-worker", args.vpc_id, "MLOps Prefect worker hosts"),
        }
        kinds = {
            "ingress": aws.vpc.SecurityGroupIngressRule,
            "egress": aws.vpc.SecurityGroupEgressRule,
        }
        for rule in traffic_matrix(args.service_ingress_cidrs, dask=args.dask):
            self._rule(
                kinds[rule.direction],
                f"{name}-{rule.name}",
                groups[rule.group],
                (rule.port, rule.last_port),
                rule.description,
                peer=groups[rule.peer] if rule.peer else None,
                cidr=rule.cidr,
            )

        database, control, worker = (groups[group] for group in GROUPS)
        self.database_group_id = database.id
        self.control_group_id = control.id
        self.worker_group_id = worker.id
        self.register_outputs(
            {
                "database_group_id": self.database_group_id,
                "control_group_id": self.control_group_id,
                "worker_group_id": self.worker_group_id,
            }
        )

    def _group(
        self, name: str, vpc_id: pulumi.Input[str], description: str
    ) -> aws.ec2.SecurityGroup:
        """A security group with no inline rules (so AWS's default allow-all egress is removed)."""
        return aws.ec2.SecurityGroup(
            name,
            vpc_id=vpc_id,
            description=description,
            tags={"Name": name},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _rule(
        self,
        kind: type[aws.vpc.SecurityGroupIngressRule] | type[aws.vpc.SecurityGroupEgressRule],
        name: str,
        group: aws.ec2.SecurityGroup,
        ports: tuple[int, int],
        description: str,
        *,
        peer: aws.ec2.SecurityGroup | None = None,
        cidr: str | None = None,
    ) -> None:
        """One TCP rule of ``group`` (ingress or egress) on ``ports`` (first, last) with
        ``peer`` or ``cidr``."""
        kind(
            name,
            security_group_id=group.id,
            ip_protocol="tcp",
            from_port=ports[0],
            to_port=ports[1],
            referenced_security_group_id=peer.id if peer else None,
            cidr_ipv4=cidr,
            description=description,
            tags={"Name": name},
            opts=pulumi.ResourceOptions(parent=self),
        )
