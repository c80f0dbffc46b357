"""Pure host-bootstrap renderer, shared by the Pulumi program and the local twin.

No pulumi import: the Pulumi program resolves its Outputs and calls these functions inside
an ``apply``; the local twin calls the same functions with loopback values and runs the
services' command lines directly.

Hosts run Amazon Linux 2023 (dnf repositories over HTTPS, so HTTPS is the only egress the
hosts need besides the database port and the control host's service ports).

STUB: the settings below are the contract with infra/; the renderer is filled in by the
local-twin work.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ControlHostSettings",
    "WorkerHostSettings",
    "render_control_user_data",
    "render_worker_user_data",
]


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
    db_username: str
    db_password_secret_arn: str
    mlflow_admin_username: str
    mlflow_admin_password_secret_arn: str
    mlflow_flask_secret_key_secret_arn: str
    prefect_auth_string_secret_arn: str
    work_pool: str = "training"
    instance_type: str = "t3.medium"  # used to size the MLflow server's workers
    db_sslmode: str = "require"


@dataclass(frozen=True, kw_only=True)
class WorkerHostSettings:
    """Everything a worker host (one Prefect process worker) needs at boot."""

    environment: str
    region: str
    artifact_bucket: str
    control_private_ip: str  # MLFLOW_TRACKING_URI / PREFECT_API_URL point here
    work_pool: str
    worker_name: str
    mlflow_admin_username: str
    mlflow_admin_password_secret_arn: str
    prefect_auth_string_secret_arn: str


def render_control_user_data(settings: ControlHostSettings) -> str:
    """Cloud-init user data (``#cloud-config``) for the control host."""
    return "#cloud-config\n"


def render_worker_user_data(settings: WorkerHostSettings) -> str:
    """Cloud-init user data (``#cloud-config``) for a worker host."""
    return "#cloud-config\n"
