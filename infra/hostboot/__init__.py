"""Pure host-bootstrap renderer, shared by the Pulumi program and the local twin.

No pulumi import: the Pulumi program resolves its Outputs and calls the ``render_*``
functions inside an ``apply``; the local twin calls :func:`control_plan` and
:func:`worker_plan` with loopback settings and its own :class:`HostLayout`, and runs the
services' command lines and environments directly (see :mod:`hostboot.services`).

Hosts run Amazon Linux 2023 (dnf repositories over HTTPS, so HTTPS is the only egress the
hosts need besides the database port and the control host's service ports). Every host
installs one virtualenv from the hashed host lock (:mod:`hostboot.locks`); the program uploads
it and the boot script to the bucket (:func:`boot_objects`: key -> bytes; the twin uploads the
same), and the user data names them by digest.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostboot.cloudconfig import boot_objects, render_user_data
from hostboot.dask_cluster import DaskSettings
from hostboot.names import MLFLOW_PORT, PREFECT_PORT, WORK_POOL
from hostboot.services import (
    HOST_LAYOUT,
    BootConfig,
    HostLayout,
    HostPlan,
    ServiceSpec,
    control_plan,
    imds_ruleset,
    worker_plan,
)
from hostboot.units import render_unit

__all__ = [
    "HOST_LAYOUT",
    "BootConfig",
    "ControlHostSettings",
    "DaskSettings",
    "HostLayout",
    "HostPlan",
    "ServiceSpec",
    "WorkerHostSettings",
    "boot_objects",
    "control_plan",
    "imds_ruleset",
    "render_control_user_data",
    "render_unit",
    "render_worker_user_data",
    "worker_plan",
]

# AWS's bundle of the RDS certificate authorities (every region), fetched at boot over HTTPS;
# the services check the database's certificate against it (verify-full).
RDS_CA_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
RDS_CA_FILE = "/etc/mlops/rds-ca-bundle.pem"
# What the workers' MLflow user gets at boot: EDIT on the training experiment, MANAGE on the
# models the flow registers (its defaults: tests/hosts checks them against pipeline/).
WORKER_EXPERIMENTS = ("trip-duration",)
WORKER_MODELS = ("trip-duration-green", "trip-duration-yellow")


@dataclass(frozen=True, kw_only=True)
class ControlHostSettings:
    """Everything the control host (MLflow server + Prefect server) needs at boot.

    No secret values: only the ARNs of the Secrets Manager secrets the boot script fetches.
    """

    environment: str  # dev | prod | ephemeral
    region: str
    artifact_bucket: str
    private_ip: str  # the control host's fixed private address (MLflow --allowed-hosts)
    db_host: str
    db_port: int
    db_username: str  # the RDS master user: used by the boot step only
    db_password_secret_arn: str  # the master password
    mlflow_db_password_secret_arn: str
    mlflow_auth_db_password_secret_arn: str
    prefect_db_password_secret_arn: str
    mlflow_admin_username: str
    mlflow_admin_password_secret_arn: str
    mlflow_worker_username: str
    mlflow_worker_password_secret_arn: str
    mlflow_flask_secret_key_secret_arn: str
    prefect_auth_string_secret_arn: str
    work_pool: str = WORK_POOL
    instance_type: str = "t3.medium"  # used to size the MLflow server's workers
    # libpq sslmode. RDS forces TLS (rds.force_ssl) and hosts verify the server's certificate
    # and name against db_ca_file; the local twin's PostgreSQL has no TLS ("disable").
    db_sslmode: str = "verify-full"
    db_ca_file: str = RDS_CA_FILE
    db_ca_bundle_url: str | None = RDS_CA_BUNDLE_URL  # None: db_ca_file is already in place
    db_ca_bundle_sha256: str | None = None
    # All interfaces: the security groups decide who reaches the ports (S104 is the point).
    bind_address: str = "0.0.0.0"  # noqa: S104
    mlflow_port: int = MLFLOW_PORT
    prefect_port: int = PREFECT_PORT
    maintenance_db: str = "postgres"  # where the boot step connects as the master user
    mlflow_db: str = "mlflow"  # created by RDS (the master user's); its owner changed at boot
    mlflow_auth_db: str = "mlflow_auth"  # created at boot
    prefect_db: str = "prefect"  # created at boot
    # One role per database, created at boot, owning it and nothing else.
    mlflow_db_user: str = "mlflow"
    mlflow_auth_db_user: str = "mlflow_auth"
    prefect_db_user: str = "prefect"
    worker_experiments: tuple[str, ...] = WORKER_EXPERIMENTS
    worker_models: tuple[str, ...] = WORKER_MODELS
    dask: DaskSettings | None = None  # None: no Dask scheduler (daskWorkers 0)


@dataclass(frozen=True, kw_only=True)
class WorkerHostSettings:
    """Everything a worker host (one Prefect process worker) needs at boot."""

    environment: str
    region: str
    artifact_bucket: str
    control_private_ip: str  # MLFLOW_TRACKING_URI / PREFECT_API_URL point here
    work_pool: str
    worker_name: str
    mlflow_worker_username: str
    mlflow_worker_password_secret_arn: str
    prefect_auth_string_secret_arn: str
    control_mlflow_port: int = MLFLOW_PORT
    control_prefect_port: int = PREFECT_PORT
    dask: DaskSettings | None = None  # None: no Dask on this host (daskWorkers 0)


def render_control_user_data(settings: ControlHostSettings) -> str:
    """Cloud-init user data (``#cloud-config``) for the control host."""
    return render_user_data(
        control_plan(settings),
        title=f"mlops-platform control host ({settings.environment})",
        bucket=settings.artifact_bucket,
    )


def render_worker_user_data(settings: WorkerHostSettings) -> str:
    """Cloud-init user data (``#cloud-config``) for a worker host."""
    return render_user_data(
        worker_plan(settings),
        title=f"mlops-platform worker {settings.worker_name} ({settings.environment})",
        bucket=settings.artifact_bucket,
    )
