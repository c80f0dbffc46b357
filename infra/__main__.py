"""An MLOps environment on AWS, one Pulumi stack: network, artifact bucket, PostgreSQL, MLflow and
Prefect on a control host, Prefect workers; secrets generated and kept in Secrets Manager.

Read the stack configuration (validated before anything is created), build the components,
export the outputs scripts/ turns into the environment variables of docs/architecture.md.
"""

import hostboot
import pulumi
import pulumi_aws as aws
from artifact_store import ArtifactStore, ArtifactStoreArgs
from config import load
from control_host import ControlHost, ControlHostArgs
from credentials import Credentials, CredentialsArgs
from dask_tls import DaskTls, DaskTlsArgs
from database import Database, DatabaseArgs
from firewall import Firewall, FirewallArgs
from guardrails import Guardrails, GuardrailsArgs
from hostboot.dask_cluster import tls_files_object
from hostboot.names import (
    DASK_SCHEDULER_PORT,
    MLFLOW_ADMIN_USERNAME,
    MLFLOW_PORT,
    PREFECT_PORT,
    WORK_POOL,
)
from hosts import HostContext, resolve_ami, upload_boot_objects
from network import Network, NetworkArgs
from workers import Workers, WorkersArgs

MLFLOW_WORKER_USERNAME = "worker"

cfg = load()
provider = aws.Provider(
    "aws",
    region=cfg.region,
    default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.default_tags),
)
scope = pulumi.ResourceOptions(providers=[provider])

network = Network(
    "mlops",
    NetworkArgs(
        vpc_cidr=cfg.vpc_cidr,
        region=cfg.region,
        hosts_in_private_subnets=cfg.hosts_in_private_subnets,
        host_instance_types=[cfg.control_instance_type, cfg.worker_instance_type],
    ),
    scope,
)
firewall = Firewall(
    "mlops",
    FirewallArgs(
        vpc_id=network.vpc_id,
        service_ingress_cidrs=cfg.service_ingress_cidrs,
        dask=cfg.dask_enabled,
    ),
    scope,
)
store = ArtifactStore(
    "mlops-artifacts",
    ArtifactStoreArgs(
        bucket_name=cfg.artifact_bucket_name,
        force_destroy=cfg.throwaway,
        protect=cfg.deletion_protection,
    ),
    scope,
)
credentials = Credentials(
    "mlops", CredentialsArgs(recovery_window_days=cfg.secret_recovery_days), scope
)
database = Database(
    "mlops-db",
    DatabaseArgs(
        subnet_ids=network.database_subnet_ids,
        security_group_id=firewall.database_group_id,
        password=credentials.db_password.value,
        instance_class=cfg.db_instance_class,
        allocated_storage_gib=cfg.db_allocated_storage_gib,
        backup_retention_days=cfg.db_backup_retention_days,
        multi_az=cfg.is_prod,
        placed_after=network.host_prerequisites,
        deletion_protection=cfg.deletion_protection,
        throwaway=cfg.throwaway,
        restore_from_snapshot=cfg.restore_from_snapshot,
    ),
    scope,
)

# With Dask, the TLS identities, and the script that writes them on the hosts (read from the
# bucket by digest, like the host lock).
dask_tls = (
    DaskTls(
        "mlops-dask",
        DaskTlsArgs(
            scheduler_ip=network.control_private_ip,
            recovery_window_days=cfg.secret_recovery_days,
        ),
        scope,
    )
    if cfg.dask_enabled
    else None
)
objects = hostboot.boot_objects()
if dask_tls is not None:
    objects[tls_files_object().key] = tls_files_object().text.encode()
boot_objects = upload_boot_objects("mlops-boot", store.bucket_name, objects, scope)
hosts = HostContext(
    environment=cfg.environment,
    region=cfg.region,
    ami_id=resolve_ami(cfg.ami_id, pulumi.InvokeOptions(provider=provider)),
    ami_pinned=cfg.ami_id is not None,
    public_address=not cfg.hosts_in_private_subnets,
    bucket_name=store.bucket_name,
    bucket_arn=store.bucket_arn,
    credentials=credentials,
    mlflow_admin_username=MLFLOW_ADMIN_USERNAME,
    mlflow_worker_username=MLFLOW_WORKER_USERNAME,
    work_pool=WORK_POOL,
    prerequisites=[*network.host_prerequisites, *boot_objects],
)
control = ControlHost(
    "mlops-control",
    ControlHostArgs(
        context=hosts,
        instance_type=cfg.control_instance_type,
        subnet_id=network.host_subnet_ids[0],
        private_ip=network.control_private_ip,
        security_group_id=firewall.control_group_id,
        termination_protection=cfg.deletion_protection,
        db_address=database.address,
        db_port=database.port,
        db_username=database.username,
        dask_tls_secret_arn=dask_tls.scheduler.arn if dask_tls else None,
    ),
    scope,
)
workers = Workers(
    "mlops-worker",
    WorkersArgs(
        context=hosts,
        count=cfg.worker_count,
        instance_type=cfg.worker_instance_type,
        subnet_ids=network.host_subnet_ids,
        security_group_id=firewall.worker_group_id,
        control_private_ip=control.private_ip,
        dask_tls_secret_arn=dask_tls.workers.arn if dask_tls else None,
        dask_workers=cfg.dask_workers,
    ),
    scope,
)

guardrails = Guardrails(
    "mlops-cost",
    GuardrailsArgs(
        stack=cfg.stack,
        instance_ids=[control.instance_id, *workers.instance_ids],
        instance_arns=[control.instance_arn, *workers.instance_arns],
        schedule=cfg.host_schedule,
        monthly_budget_usd=cfg.monthly_budget_usd,
        alert_email=cfg.budget_alert_email,
    ),
    scope,
)

pulumi.export("environment", cfg.environment)
pulumi.export("region", cfg.region)
pulumi.export("artifact_bucket", store.bucket_name)
pulumi.export("mlflow_tracking_uri", f"http://{control.private_ip}:{MLFLOW_PORT}")
pulumi.export("prefect_api_url", f"http://{control.private_ip}:{PREFECT_PORT}/api")
pulumi.export("work_pool", WORK_POOL)
pulumi.export("control_instance_id", control.instance_id)
pulumi.export("worker_instance_ids", workers.instance_ids)
pulumi.export("db_endpoint", database.endpoint)
pulumi.export("mlflow_admin_username", MLFLOW_ADMIN_USERNAME)
pulumi.export("mlflow_admin_password", credentials.mlflow_admin_password.value)
pulumi.export("prefect_api_auth_string", credentials.prefect_auth_string.value)
pulumi.export(
    "dask_scheduler_address",
    f"tls://{control.private_ip}:{DASK_SCHEDULER_PORT}" if cfg.dask_enabled else "",
)
pulumi.export("dask_workers", cfg.dask_workers)
if cfg.expires_at:
    pulumi.export("expires_at", cfg.default_tags["ExpiresAt"])
if guardrails.alert_topic_arn is not None:
    pulumi.export("budget_alert_topic_arn", guardrails.alert_topic_arn)
