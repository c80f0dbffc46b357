"""The control host: the MLflow tracking server and the Prefect server, on a fixed address.

Its address is chosen by the network (the 10th host address of its subnet), so MLflow's
``--allowed-hosts``, the workers' settings and the stack outputs know it at preview time. The
user data comes from the shared host-bootstrap renderer (``hostboot``) and carries the
secrets' ARNs only; the boot script fetches the values with the host's role, which may read
the stack's secrets its boot step fetches, the ``mlflow/`` prefix of the bucket and the host
lock under ``bootstrap/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hostboot
import pulumi
from artifact_store import MLFLOW_PREFIX
from hostboot.dask_cluster import DaskSettings, tls_files_object
from hostboot.locks import BOOT_PREFIX
from hosts import BOOT_ACTIONS, HostContext, HostSpec, checked_user_data, host_instance
from iam import HostIdentity, HostIdentityArgs, ObjectGrant

MLFLOW_ARTIFACT_ACTIONS = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
)


@dataclass(frozen=True, kw_only=True)
class ControlHostArgs:
    """Inputs of the control host."""

    context: HostContext
    instance_type: str
    subnet_id: pulumi.Input[str]
    private_ip: str
    security_group_id: pulumi.Input[str]
    termination_protection: bool
    db_address: pulumi.Input[str]
    db_port: pulumi.Input[int]
    db_username: str
    # Set: the control host runs the Dask scheduler with this TLS identity (secret ARN).
    dask_tls_secret_arn: pulumi.Input[str] | None = None


class ControlHost(pulumi.ComponentResource):
    """The control host's identity and instance."""

    instance_id: pulumi.Output[str]
    instance_arn: pulumi.Output[str]
    private_ip: str

    def __init__(
        self, name: str, args: ControlHostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:ControlHost", name, None, opts)
        secrets = args.context.credentials
        identity = HostIdentity(
            f"{name}-identity",
            HostIdentityArgs(
                description="MLOps control host: MLflow artifacts in S3, the stack's secrets",
                bucket_arn=args.context.bucket_arn,
                object_grants=[
                    ObjectGrant(MLFLOW_PREFIX, MLFLOW_ARTIFACT_ACTIONS),
                    ObjectGrant(BOOT_PREFIX, BOOT_ACTIONS),
                ],
                secret_arns=[
                    *(secret.arn for secret in secrets.all()),
                    *([args.dask_tls_secret_arn] if args.dask_tls_secret_arn is not None else []),
                ],
            ),
            pulumi.ResourceOptions(parent=self),
        )
        instance = host_instance(
            name,
            args.context,
            HostSpec(
                instance_type=args.instance_type,
                subnet_id=args.subnet_id,
                private_ip=args.private_ip,
                security_group_id=args.security_group_id,
                instance_profile=identity.instance_profile_name,
                user_data=control_user_data(args),
                grants=identity.grants,
                termination_protection=args.termination_protection,
            ),
            parent=self,
        )

        self.instance_id = instance.id
        self.instance_arn = instance.arn
        self.private_ip = args.private_ip
        self.register_outputs({"instance_id": self.instance_id, "private_ip": self.private_ip})


def control_user_data(args: ControlHostArgs) -> pulumi.Output[str]:
    """The control host's cloud-init user data, rendered once every input is known."""
    context, secrets = args.context, args.context.credentials

    def render(values: dict[str, Any]) -> str:
        settings = hostboot.ControlHostSettings(
            environment=context.environment,
            region=context.region,
            artifact_bucket=values["bucket"],
            private_ip=args.private_ip,
            db_host=values["db_host"],
            db_port=int(values["db_port"]),
            db_username=args.db_username,
            db_password_secret_arn=values["db_password"],
            mlflow_db_password_secret_arn=values["mlflow_db_password"],
            mlflow_auth_db_password_secret_arn=values["mlflow_auth_db_password"],
            prefect_db_password_secret_arn=values["prefect_db_password"],
            mlflow_admin_username=context.mlflow_admin_username,
            mlflow_admin_password_secret_arn=values["mlflow_admin_password"],
            mlflow_worker_username=context.mlflow_worker_username,
            mlflow_worker_password_secret_arn=values["mlflow_worker_password"],
            mlflow_flask_secret_key_secret_arn=values["mlflow_flask_secret_key"],
            prefect_auth_string_secret_arn=values["prefect_auth_string"],
            work_pool=context.work_pool,
            instance_type=args.instance_type,
            dask=(
                DaskSettings(tls_secret_arn=values["dask_tls"], tls_script=tls_files_object())
                if "dask_tls" in values
                else None
            ),
        )
        return checked_user_data(hostboot.render_control_user_data(settings))

    dask = {} if args.dask_tls_secret_arn is None else {"dask_tls": args.dask_tls_secret_arn}

    return pulumi.Output.all(
        bucket=context.bucket_name,
        db_host=args.db_address,
        db_port=args.db_port,
        db_password=secrets.db_password.arn,
        mlflow_db_password=secrets.mlflow_db_password.arn,
        mlflow_auth_db_password=secrets.mlflow_auth_db_password.arn,
        prefect_db_password=secrets.prefect_db_password.arn,
        mlflow_admin_password=secrets.mlflow_admin_password.arn,
        mlflow_worker_password=secrets.mlflow_worker_password.arn,
        mlflow_flask_secret_key=secrets.mlflow_flask_secret_key.arn,
        prefect_auth_string=secrets.prefect_auth_string.arn,
        **dask,
    ).apply(render)
