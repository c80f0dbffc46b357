"""The host services as data: one :class:`ServiceSpec` per systemd unit.

A spec is the service's command line, its environment, the root-only env file holding its
secrets (as templates with ``${secret}`` placeholders, filled in by the boot script), its
dedicated user and how it is stopped. The systemd unit is rendered from the spec
(:mod:`hostboot.units`), and the local twin launches the very same argv and environment with
only addresses, ports, paths and secrets substituted: both come out of the functions below,
called with the host's settings and :data:`HOST_LAYOUT`, or with loopback settings and the
twin's layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hostboot import ControlHostSettings, WorkerHostSettings

# The secrets the boot script fetches, by the placeholder name the templates use.
# (Names, not values: the S105 "hard-coded password" check does not apply.)
DB_PASSWORD = "db_password"  # noqa: S105
MLFLOW_ADMIN_PASSWORD = "mlflow_admin_password"  # noqa: S105
MLFLOW_FLASK_SECRET_KEY = "mlflow_flask_secret_key"  # noqa: S105
PREFECT_AUTH_STRING = "prefect_auth_string"

# Environment every service gets: unbuffered logs for journald, no usage telemetry (the
# services talk only to the stack's own endpoints).
_COMMON_ENVIRONMENT = {
    "PYTHONUNBUFFERED": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
# Instance sizes on which the MLflow server runs one uvicorn worker (~0.5 GB); bigger ones two.
_SMALL_SIZES = frozenset({"nano", "micro", "small", "medium", "large"})
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.([0-9]*[a-z]+)")
_HOST_VENV = PurePosixPath("/opt/mlops/venv")
_HOST_CONFIG_DIR = PurePosixPath("/etc/mlops")
_HOST_STATE_DIR = PurePosixPath("/var/lib")


@dataclass(frozen=True, kw_only=True)
class HostLayout:
    """Where things live on a host; the twin substitutes its own directories."""

    venv: PurePosixPath = _HOST_VENV
    config_dir: PurePosixPath = _HOST_CONFIG_DIR  # env files, MLflow auth config
    state_dir: PurePosixPath = _HOST_STATE_DIR  # one StateDirectory per service user
    service_groups: bool = True  # chgrp service-readable files to the service's group

    def bin(self, name: str) -> str:
        """The path of console script ``name`` in the virtualenv."""
        return str(self.venv / "bin" / name)

    def home(self, user: str) -> PurePosixPath:
        """The state directory (and home) of service user ``user``."""
        return self.state_dir / user


HOST_LAYOUT = HostLayout()


@dataclass(frozen=True, kw_only=True)
class SecretFile:
    """A file the boot script writes: ``template`` with ``${secret}`` placeholders substituted."""

    path: PurePosixPath
    template: str
    mode: int = 0o600
    group: str | None = None  # None: root only


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """One host service: the single source of its systemd unit and of the twin's process."""

    name: str  # unit name without ".service"
    description: str
    user: str
    argv: tuple[str, ...]
    environment: Mapping[str, str]  # non-secret: written into the unit
    secret_environment: Mapping[str, str]  # KEY -> template; lands in the root-only env_file
    env_file: PurePosixPath
    extra_files: tuple[SecretFile, ...] = ()
    working_directory: PurePosixPath
    # Signals sent in turn to stop it; the Prefect worker ignores its first SIGTERM.
    stop_signals: tuple[str, ...] = ("SIGTERM",)
    stop_timeout_seconds: int = 30  # then SIGKILL for whatever is left of the service
    restart_seconds: int = 5

    def env_file_template(self) -> str:
        """The env file's content before secrets are substituted."""
        return "".join(f"{key}={value}\n" for key, value in self.secret_environment.items())

    def secret_files(self) -> tuple[SecretFile, ...]:
        """The env file and any other file with secrets that this service reads."""
        env_file = SecretFile(path=self.env_file, template=self.env_file_template())
        return (env_file, *self.extra_files)


@dataclass(frozen=True, kw_only=True)
class DatabaseBoot:
    """The databases the control host creates at boot through the maintenance database."""

    host: str
    port: int
    user: str
    sslmode: str
    maintenance_db: str
    create: tuple[str, ...]
    password_secret: str = DB_PASSWORD


@dataclass(frozen=True, kw_only=True)
class BootConfig:
    """What the boot script does on one host (serialised to JSON; no secret values)."""

    region: str
    secrets: Mapping[str, str]  # placeholder name -> Secrets Manager ARN
    files: tuple[SecretFile, ...]
    database: DatabaseBoot | None = None
    min_secret_length: int = 12

    def to_json_dict(self, service_groups: bool) -> dict[str, object]:
        """The config as the boot script reads it."""
        database = None
        if self.database is not None:
            database = {**self.database.__dict__, "create": list(self.database.create)}
        return {
            "region": self.region,
            "secrets": dict(self.secrets),
            "min_secret_length": self.min_secret_length,
            "files": [
                {
                    "path": str(f.path),
                    "template": f.template,
                    "mode": f"{f.mode:04o}",
                    "group": f.group if service_groups else None,
                }
                for f in self.files
            ],
            "database": database,
        }


@dataclass(frozen=True, kw_only=True)
class HostPlan:
    """Everything a host runs: its services and its boot step."""

    services: tuple[ServiceSpec, ...]
    boot: BootConfig

    def users(self) -> tuple[str, ...]:
        """The dedicated service users, in order of first use."""
        return tuple(dict.fromkeys(service.user for service in self.services))


def mlflow_workers(instance_type: str) -> int:
    """Uvicorn workers for the MLflow server: one on small hosts (each takes ~0.5 GB)."""
    match = _INSTANCE_TYPE.fullmatch(instance_type)
    if match is None:
        raise ValueError(
            f"instance type {instance_type!r} is not of the form family.size (e.g. t3.medium)"
        )
    return 1 if match.group(1) in _SMALL_SIZES else 2


def mlflow_allowed_hosts(settings: ControlHostSettings) -> str:
    """MLflow's ``--allowed-hosts``: the control host's private address, and localhost.

    ``localhost`` on any port is the SSM tunnel's local end (its port is the operator's
    choice); a DNS-rebinding attacker's name is never ``localhost``. Never ``*``.
    """
    return f"{settings.private_ip}:{settings.mlflow_port},localhost:*"


def prefect_cors_origins(settings: ControlHostSettings) -> str:
    """Prefect's CORS origins: the UI as reached on the private address or through the tunnel."""
    return f"http://{settings.private_ip}:{settings.prefect_port},http://localhost:{settings.prefect_port}"


def placeholder(secret: str) -> str:
    """The ``${secret}`` placeholder the boot script substitutes with the fetched value."""
    return "${" + secret + "}"


def _postgres_url(settings: ControlHostSettings, scheme: str, database: str, ssl_param: str) -> str:
    """A connection URL template for ``database`` with the password as a placeholder."""
    return (
        f"{scheme}://{settings.db_username}:{placeholder(DB_PASSWORD)}"
        f"@{settings.db_host}:{settings.db_port}"
        f"/{database}?{ssl_param}={settings.db_sslmode}"
    )


def _base_environment(layout: HostLayout, user: str, region: str) -> dict[str, str]:
    """What every service gets: HOME (its state directory), the region, no telemetry."""
    return {
        **_COMMON_ENVIRONMENT,
        "HOME": str(layout.home(user)),
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,  # the variable boto3 reads
    }


def mlflow_service(settings: ControlHostSettings, layout: HostLayout) -> ServiceSpec:
    """The MLflow tracking server: basic-auth app, artifacts proxied to the bucket."""
    user = "mlflow"
    auth_config = layout.config_dir / "mlflow-auth.ini"
    auth_db_url = _postgres_url(settings, "postgresql+psycopg", settings.mlflow_auth_db, "sslmode")
    auth_ini = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {auth_db_url}\n"
        f"admin_username = {settings.mlflow_admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return ServiceSpec(
        name="mlflow",
        description="MLflow tracking server (basic auth, artifacts proxied to S3)",
        user=user,
        argv=(
            layout.bin("mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--host",
            settings.bind_address,
            "--port",
            str(settings.mlflow_port),
            "--workers",
            str(mlflow_workers(settings.instance_type)),
            "--allowed-hosts",
            mlflow_allowed_hosts(settings),
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{settings.artifact_bucket}/mlflow",
        ),
        environment={
            **_base_environment(layout, user, settings.region),
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        },
        secret_environment={
            "MLFLOW_BACKEND_STORE_URI": _postgres_url(
                settings, "postgresql+psycopg", settings.mlflow_db, "sslmode"
            ),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": placeholder(MLFLOW_FLASK_SECRET_KEY),
            "MLFLOW_AUTH_ADMIN_PASSWORD": placeholder(MLFLOW_ADMIN_PASSWORD),
        },
        env_file=layout.config_dir / "mlflow.env",
        extra_files=(SecretFile(path=auth_config, template=auth_ini, mode=0o640, group=user),),
        working_directory=layout.home(user),
    )


def prefect_server_service(settings: ControlHostSettings, layout: HostLayout) -> ServiceSpec:
    """The self-hosted Prefect server: PostgreSQL over TLS, API auth string, CSRF on."""
    user = "prefect"
    return ServiceSpec(
        name="prefect-server",
        description="Prefect server (PostgreSQL backend, API auth string)",
        user=user,
        argv=(
            layout.bin("prefect"),
            "server",
            "start",
            "--host",
            settings.bind_address,
            "--port",
            str(settings.prefect_port),
        ),
        environment={
            **_base_environment(layout, user, settings.region),
            "PREFECT_HOME": str(layout.home(user) / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": prefect_cors_origins(settings),
            # The UI calls the API on whatever address the browser used (private IP or tunnel).
            "PREFECT_UI_API_URL": "/api",
        },
        secret_environment={
            # asyncpg's ``ssl`` takes libpq's sslmode values (require: TLS, no CA check).
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": _postgres_url(
                settings, "postgresql+asyncpg", settings.prefect_db, "ssl"
            ),
            "PREFECT_SERVER_API_AUTH_STRING": placeholder(PREFECT_AUTH_STRING),
        },
        env_file=layout.config_dir / "prefect-server.env",
        working_directory=layout.home(user),
    )


def prefect_worker_service(settings: WorkerHostSettings, layout: HostLayout) -> ServiceSpec:
    """One Prefect process worker on the work pool; flow runs inherit its environment."""
    user = "prefect"
    control = settings.control_private_ip
    return ServiceSpec(
        name="prefect-worker",
        description=f"Prefect process worker on work pool {settings.work_pool}",
        user=user,
        argv=(
            layout.bin("prefect"),
            "worker",
            "start",
            "--pool",
            settings.work_pool,
            "--type",
            "process",
            "--name",
            settings.worker_name,
            "--limit",
            "1",
            "--install-policy",
            "never",
        ),
        environment={
            **_base_environment(layout, user, settings.region),
            "PREFECT_HOME": str(layout.home(user) / "prefect"),
            "PREFECT_API_URL": f"http://{control}:{settings.control_prefect_port}/api",
            "MLFLOW_TRACKING_URI": f"http://{control}:{settings.control_mlflow_port}",
            "MLFLOW_TRACKING_USERNAME": settings.mlflow_admin_username,
            "PIPELINE_DATA_DIR": f"s3://{settings.artifact_bucket}/data",
        },
        secret_environment={
            "PREFECT_API_AUTH_STRING": placeholder(PREFECT_AUTH_STRING),
            "MLFLOW_TRACKING_PASSWORD": placeholder(MLFLOW_ADMIN_PASSWORD),
        },
        env_file=layout.config_dir / "prefect-worker.env",
        working_directory=layout.home(user),
        # First SIGTERM: the worker only announces it; the second makes it exit.
        stop_signals=("SIGTERM", "SIGTERM"),
    )


def _all_secret_files(services: tuple[ServiceSpec, ...]) -> tuple[SecretFile, ...]:
    """Every file with secrets the given services read."""
    return tuple(f for service in services for f in service.secret_files())


def control_plan(settings: ControlHostSettings, layout: HostLayout = HOST_LAYOUT) -> HostPlan:
    """The control host: MLflow server and Prefect server, and the databases they need."""
    services = (mlflow_service(settings, layout), prefect_server_service(settings, layout))
    boot = BootConfig(
        region=settings.region,
        secrets={
            DB_PASSWORD: settings.db_password_secret_arn,
            MLFLOW_ADMIN_PASSWORD: settings.mlflow_admin_password_secret_arn,
            MLFLOW_FLASK_SECRET_KEY: settings.mlflow_flask_secret_key_secret_arn,
            PREFECT_AUTH_STRING: settings.prefect_auth_string_secret_arn,
        },
        files=_all_secret_files(services),
        database=DatabaseBoot(
            host=settings.db_host,
            port=settings.db_port,
            user=settings.db_username,
            sslmode=settings.db_sslmode,
            maintenance_db=settings.mlflow_db,
            create=(settings.mlflow_auth_db, settings.prefect_db),
        ),
    )
    return HostPlan(services=services, boot=boot)


def worker_plan(settings: WorkerHostSettings, layout: HostLayout = HOST_LAYOUT) -> HostPlan:
    """A worker host: one Prefect process worker; it reads only two secrets."""
    services = (prefect_worker_service(settings, layout),)
    boot = BootConfig(
        region=settings.region,
        secrets={
            MLFLOW_ADMIN_PASSWORD: settings.mlflow_admin_password_secret_arn,
            PREFECT_AUTH_STRING: settings.prefect_auth_string_secret_arn,
        },
        files=_all_secret_files(services),
    )
    return HostPlan(services=services, boot=boot)
