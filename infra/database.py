"""The database: RDS PostgreSQL 16 in the private subnets, encrypted, backed up, TLS only.

It holds three databases: ``mlflow`` (created here) and ``mlflow_auth`` and ``prefect``, which
the control host creates idempotently at boot (nothing outside the VPC can reach the server),
each owned by its service's own role (created at boot too); the master user is the boot step's.
A parameter group sets ``rds.force_ssl=1`` so every connection must use TLS; the services ask
for ``sslmode=verify-full`` against AWS's RDS CA bundle. Prod runs multi-AZ and keeps a final
snapshot; dev and ephemeral stacks are destroyed without one. Deletion protection also sets
Pulumi's ``protect``, so a protected stack's ``pulumi destroy`` fails at preview instead of
half-way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random
from hostboot.names import POSTGRES_PORT

ENGINE = "postgres"
ENGINE_VERSION = "16"  # the newest 16.x; minor upgrades follow in the maintenance window
PARAMETER_GROUP_FAMILY = "postgres16"
MASTER_USERNAME = "mlops"
INITIAL_DATABASE = "mlflow"
STORAGE_GROWTH_FACTOR = 4  # storage autoscaling may grow the volume up to 4x its initial size
CA_CERTIFICATE = "rds-ca-rsa2048-g1"


@dataclass(frozen=True, kw_only=True)
class DatabaseArgs:
    """Inputs of the database."""

    subnet_ids: Sequence[pulumi.Input[str]]  # private subnets in two zones
    security_group_id: pulumi.Input[str]
    password: pulumi.Input[str]  # a Pulumi secret
    instance_class: str
    allocated_storage_gib: int
    backup_retention_days: int
    multi_az: bool
    deletion_protection: (
        bool  # also Pulumi `protect`: `pulumi destroy` stops before deleting anything
    )
    throwaway: bool  # dev/ephemeral: no final snapshot, changes applied at once
    restore_from_snapshot: str | None = None  # start from this snapshot instead of empty
    # Created first: in prod the database shares the hosts' subnets, and its interface must
    # not take the control host's address before the network reserved it.
    placed_after: Sequence[pulumi.Resource] = ()


class Database(pulumi.ComponentResource):
    """The RDS instance, its subnet group and its TLS-forcing parameter group."""

    address: pulumi.Output[str]
    port: pulumi.Output[int]
    endpoint: pulumi.Output[str]
    username: str

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        subnets = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=list(args.subnet_ids),
            description="Private subnets of the MLOps database",
            tags={"Name": f"{name}-subnets"},
            opts=child,
        )
        parameters = aws.rds.ParameterGroup(
            f"{name}-params",
            family=PARAMETER_GROUP_FAMILY,
            description="PostgreSQL 16, TLS required",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(
                    name="rds.force_ssl", value="1", apply_method="immediate"
                )
            ],
            tags={"Name": f"{name}-params"},
            opts=child,
        )
        instance = aws.rds.Instance(
            f"{name}-postgres",
            engine=ENGINE,
            engine_version=ENGINE_VERSION,
            instance_class=args.instance_class,
            allocated_storage=args.allocated_storage_gib,
            max_allocated_storage=args.allocated_storage_gib * STORAGE_GROWTH_FACTOR,
            storage_type="gp3",
            storage_encrypted=True,
            # A restored instance takes its databases and master user name from the snapshot
            # (the provider then sets this stack's generated password on it).
            snapshot_identifier=args.restore_from_snapshot,
            db_name=None if args.restore_from_snapshot else INITIAL_DATABASE,
            username=None if args.restore_from_snapshot else MASTER_USERNAME,
            password=args.password,
            port=POSTGRES_PORT,
            db_subnet_group_name=subnets.name,
            parameter_group_name=parameters.name,
            vpc_security_group_ids=[args.security_group_id],
            publicly_accessible=False,
            multi_az=args.multi_az,
            ca_cert_identifier=CA_CERTIFICATE,
            backup_retention_period=args.backup_retention_days,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=args.throwaway,
            final_snapshot_identifier=None if args.throwaway else self._final_snapshot_name(name),
            apply_immediately=args.throwaway,
            tags={"Name": f"{name}-postgres"},
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.deletion_protection, depends_on=list(args.placed_after)
            ),
        )

        self.address = instance.address
        self.port = instance.port
        self.endpoint = instance.endpoint
        self.username = MASTER_USERNAME
        self.register_outputs(
            {"address": self.address, "port": self.port, "endpoint": self.endpoint}
        )

    def _final_snapshot_name(self, name: str) -> pulumi.Output[str]:
        """A final snapshot name unique to this stack, so a later teardown never collides."""
        suffix = random.RandomId(
            f"{name}-final-snapshot-suffix", byte_length=4, opts=pulumi.ResourceOptions(parent=self)
        )
        return pulumi.Output.concat(name, "-final-", suffix.hex)
