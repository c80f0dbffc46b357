"""The workers: ``workerCount`` hosts, each running one Prefect process worker on the pool.

Workers spread over the host subnets of both zones. They reach MLflow and Prefect on the
control host's fixed address, read flow code from ``flow-code/``, read and cache training
data under ``data/`` and read the host lock under ``bootstrap/`` in the bucket, and may read
two secrets: the Prefect auth string and the password of the workers' MLflow user (EDIT on the
training experiment, MANAGE on its models; never the admin's, which stays on the control host
and with operators).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hostboot
import pulumi
from artifact_store import DATA_PREFIX, FLOW_CODE_PREFIX
from hostboot.dask_cluster import DaskSettings, tls_files_object, worker_memory_limit
from hostboot.locks import BOOT_PREFIX
from hosts import BOOT_ACTIONS, HostContext, HostSpec, checked_user_data, host_instance
from iam import HostIdentity, HostIdentityArgs, ObjectGrant

FLOW_CODE_ACTIONS = ("s3:GetObject",)
DATA_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")


@dataclass(frozen=True, kw_only=True)
class WorkersArgs:
    """Inputs of the workers."""

    context: HostContext
    count: int
    instance_type: str
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    control_private_ip: str
    # Set: the workers are clients of the stack's Dask cluster with this TLS identity (secret
    # ARN), and the first ``dask_workers`` of them run a Dask worker.
    dask_tls_secret_arn: pulumi.Input[str] | None = None
    dask_workers: int = 0


class Workers(pulumi.ComponentResource):
    """The workers' shared identity and their instances."""

    instance_ids: list[pulumi.Output[str]]
    instance_arns: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: WorkersArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:Workers", name, None, opts)
        secrets = args.context.credentials
        identity = HostIdentity(
            f"{name}-identity",
            HostIdentityArgs(
                description="MLOps Prefect workers: flow code and data in S3, two secrets",
                bucket_arn=args.context.bucket_arn,
                object_grants=[
                    ObjectGrant(FLOW_CODE_PREFIX, FLOW_CODE_ACTIONS),
                    ObjectGrant(DATA_PREFIX, DATA_ACTIONS),
                    ObjectGrant(BOOT_PREFIX, BOOT_ACTIONS),
                ],
                secret_arns=[
                    secrets.prefect_auth_string.arn,
                    secrets.mlflow_worker_password.arn,
                    *([args.dask_tls_secret_arn] if args.dask_tls_secret_arn is not None else []),
                ],
            ),
            pulumi.ResourceOptions(parent=self),
        )
        instances = [
            host_instance(
                f"{name}-{number}",
                args.context,
                HostSpec(
                    instance_type=args.instance_type,
                    subnet_id=args.subnet_ids[(number - 1) % len(args.subnet_ids)],
                    security_group_id=args.security_group_id,
                    instance_profile=identity.instance_profile_name,
                    user_data=worker_user_data(
                        args, worker_name=f"{name}-{number}", runs_dask=number <= args.dask_workers
                    ),
                    grants=identity.grants,
                ),
                parent=self,
            )
            for number in range(1, args.count + 1)
        ]

        self.instance_ids = [instance.id for instance in instances]
        self.instance_arns = [instance.arn for instance in instances]
        self.register_outputs({"instance_ids": self.instance_ids})


def worker_user_data(args: WorkersArgs, *, worker_name: str, runs_dask: bool) -> pulumi.Output[str]:
    """One worker's cloud-init user data, rendered once every input is known."""
    context, secrets = args.context, args.context.credentials

    def dask_settings(values: dict[str, Any]) -> DaskSettings | None:
        """The host's part in the Dask cluster: a client, and a worker if ``runs_dask``."""
        if "dask_tls" not in values:
            return None
        return DaskSettings(
            tls_secret_arn=values["dask_tls"],
            tls_script=tls_files_object(),
            run_worker=runs_dask,
            memory_limit=worker_memory_limit(args.instance_type),
        )

    def render(values: dict[str, Any]) -> str:
        settings = hostboot.WorkerHostSettings(
            environment=context.environment,
            region=context.region,
            artifact_bucket=values["bucket"],
            control_private_ip=args.control_private_ip,
            work_pool=context.work_pool,
            worker_name=worker_name,
            mlflow_worker_username=context.mlflow_worker_username,
            mlflow_worker_password_secret_arn=values["mlflow_worker_password"],
            prefect_auth_string_secret_arn=values["prefect_auth_string"],
            dask=dask_settings(values),
        )
        return checked_user_data(hostboot.render_worker_user_data(settings))

    dask = {} if args.dask_tls_secret_arn is None else {"dask_tls": args.dask_tls_secret_arn}
    return pulumi.Output.all(
        bucket=context.bucket_name,
        mlflow_worker_password=secrets.mlflow_worker_password.arn,
        prefect_auth_string=secrets.prefect_auth_string.arn,
        **dask,
    ).apply(render)
