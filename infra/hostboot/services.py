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
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hostboot import ControlHostSettings, WorkerHostSettings

# The secrets the boot script fetches, by the placeholder name the templates use.
# (Names, not values: the S105 "hard-coded password" check does not apply.)
DB_PASSWORD = "db_password"  # noqa: S105  (the RDS master user's: the boot step only)
MLFLOW_DB_PASSWORD = "mlflow_db_password"  # noqa: S105
MLFLOW_AUTH_DB_PASSWORD = "mlflow_auth_db_password"  # noqa: S105
PREFECT_DB_PASSWORD = "prefect_db_password"  # noqa: S105
MLFLOW_ADMIN_PASSWORD = "mlflow_admin_password"  # noqa: S105
MLFLOW_WORKER_PASSWORD = "mlflow_worker_password"  # noqa: S105
MLFLOW_FLASK_SECRET_KEY = "mlflow_flask_secret_key"  # noqa: S105
PREFECT_AUTH_STRING = "prefect_auth_string"

# The instance metadata service (IPv4, and IPv6 on Nitro): the instance role's credentials.
IMDS_ADDRESSES = ("169.254.169.254", "fd00:ec2::254")
NFT = "/usr/sbin/nft"

# Environment every service gets: unbuffered logs for journald, no usage telemetry (the
# services talk only to the stack's own endpoints).
_COMMON_ENVIRONMENT = {
    "PYTHONUNBUFFERED": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
# How a worker polls its pool. A run triggered by hand waits up to one query interval before a
# worker picks it up (Prefect's default 10 s: 5 s on average); 2 s costs the Prefect server one
# small request (a read of the pool's scheduled runs, a write of its last-polled time) per worker
# every 2 s: 5 requests a second with 10 workers. Prefetch starts a scheduled run's process that
# long ahead (it waits, pending, for its time), so that code pull and imports, about 5 s and
# up to 15 s on a busy 2-core host, end before the scheduled start.
WORKER_POLLING_ENVIRONMENT = {
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_WORKER_PREFETCH_SECONDS": "15",
}
# Instance sizes on which the MLflow server runs one uvicorn worker (~0.5 GB); bigger ones two.
_SMALL_SIZES = frozenset({"nano", "micro", "small", "medium", "large"})
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.([0-9]*[a-z]+)")
_HOST_VENV = PurePosixPath("/opt/mlops/venv")
_HOST_CONFIG_DIR = PurePosixPath("/etc/mlops")
_HOST_STATE_DIR = PurePosixPath("/var/lib")
_HOST_SCRIPTS_DIR = PurePosixPath("/opt/mlops")
# How long a unit may take to start, post-start steps included (MLflow's first start migrates
# its databases, then provisions the workers' MLflow user).
_START_TIMEOUT_SECONDS = 600
# A large database's migrations may take long (migrate.py bounds each upgrade at an hour).
_MIGRATE_TIMEOUT_SECONDS = 4200


@dataclass(frozen=True, kw_only=True)
class HostLayout:
    """Where things live on a host; the twin substitutes its own directories."""

    venv: PurePosixPath = _HOST_VENV
    config_dir: PurePosixPath = _HOST_CONFIG_DIR  # env files, MLflow auth config
    state_dir: PurePosixPath = _HOST_STATE_DIR  # one StateDirectory per service user
    scripts_dir: PurePosixPath = _HOST_SCRIPTS_DIR  # boot.py and the services' helper scripts
    service_groups: bool = True  # chgrp service-readable files to the service's group

    def bin(self, name: str) -> str:
        """The path of console script ``name`` in the virtualenv."""
        return str(self.venv / "bin" / name)

    def home(self, user: str) -> PurePosixPath:
        """The state directory (and home) of service user ``user``."""
        return self.state_dir / user

    @property
    def imds_firewall(self) -> PurePosixPath:
        """The nftables ruleset keeping some service users away from the instance metadata."""
        return self.config_dir / "imds-firewall.nft"

    @property
    def migrate_script(self) -> PurePosixPath:
        """The schema migration step's script (shipped beside boot.py)."""
        return self.scripts_dir / "migrate.py"

    @property
    def mlflow_access_script(self) -> PurePosixPath:
        """The script that provisions the workers' MLflow user (shipped beside boot.py)."""
        return self.scripts_dir / "mlflow_access.py"


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
    # Set: the service user is refused the instance metadata (and so the instance role's
    # credentials) by this nftables ruleset (an owner match), loaded before the service starts.
    imds_firewall: PurePosixPath | None = None
    # Run as the service, with its environment, once it started (systemd: ExecStartPost=);
    # the unit counts as started, and the twin as ready, only when it succeeded.
    post_start: tuple[str, ...] = ()
    start_timeout_seconds: int = _START_TIMEOUT_SECONDS
    # Set: not a service but a step (systemd Type=oneshot) that must succeed before the
    # service of that name starts, as that service's user with its env file (the databases'
    # schema migrations); run again whenever the service is (re)started, never retried on its own.
    prepares: str | None = None
    # Units this one needs to have started (a step: succeeded) before it starts.
    requires: tuple[str, ...] = ()
    # Groups the service user also belongs to while it runs (files it may read, such as the
    # Dask TLS identity's).
    supplementary_groups: tuple[str, ...] = ()
    # Commands run as root before it starts, in order (systemd: ExecStartPre=+), after the
    # IMDS firewall: fetching what only root may read (the Dask TLS identity).
    root_pre_start: tuple[tuple[str, ...], ...] = ()

    def env_file_template(self) -> str:
        """The env file's content before secrets are substituted."""
        return "".join(f"{key}={value}\n" for key, value in self.secret_environment.items())

    def secret_files(self) -> tuple[SecretFile, ...]:
        """The env file and any other file with secrets that this service reads."""
        env_file = SecretFile(path=self.env_file, template=self.env_file_template())
        return (env_file, *self.extra_files)


@dataclass(frozen=True, kw_only=True)
class ServiceDatabase:
    """A service's database and the role that owns it (and may use nothing else)."""

    name: str
    owner: str
    password_secret: str  # placeholder name of the owner's password


@dataclass(frozen=True, kw_only=True)
class DatabaseBoot:
    """What the control host's boot step does, as the master user, through the maintenance
    database: one role per service, owning its database and nothing else."""

    host: str
    port: int
    user: str  # the RDS master user; its password stays with the boot step
    sslmode: str
    sslrootcert: str | None  # the CA bundle verify-full checks the server against
    maintenance_db: str
    databases: tuple[ServiceDatabase, ...]
    password_secret: str = DB_PASSWORD


@dataclass(frozen=True, kw_only=True)
class CaBundle:
    """A CA bundle the boot step fetches over HTTPS and installs (world-readable)."""

    url: str
    path: str
    sha256: str | None = None  # checked when set


@dataclass(frozen=True, kw_only=True)
class BootConfig:
    """What the boot script does on one host (serialised to JSON; no secret values)."""

    region: str
    secrets: Mapping[str, str]  # placeholder name -> Secrets Manager ARN
    files: tuple[SecretFile, ...]
    database: DatabaseBoot | None = None
    ca_bundle: CaBundle | None = None
    min_secret_length: int = 12

    def to_json_dict(self, service_groups: bool) -> dict[str, object]:
        """The config as the boot script reads it."""
        database = None
        if self.database is not None:
            database = {
                **self.database.__dict__,
                "databases": [db.__dict__ for db in self.database.databases],
            }
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
            "ca_bundle": None if self.ca_bundle is None else self.ca_bundle.__dict__,
        }


@dataclass(frozen=True, kw_only=True)
class HostPlan:
    """Everything a host runs: its services and its boot step."""

    services: tuple[ServiceSpec, ...]
    boot: BootConfig

    def users(self) -> tuple[str, ...]:
        """The dedicated service users, in order of first use."""
        return tuple(dict.fromkeys(service.user for service in self.services))

    def groups(self) -> tuple[str, ...]:
        """The groups the services join besides their users' own (created before the users)."""
        return tuple(dict.fromkeys(g for s in self.services for g in s.supplementary_groups))

    def users_without_instance_credentials(self) -> tuple[str, ...]:
        """The service users refused the instance metadata service."""
        return tuple(dict.fromkeys(s.user for s in self.services if s.imds_firewall))


def mlflow_workers(instance_type: str) -> int:
    """Uvicorn workers for the MLflow server: one on small hosts (each takes ~0.5 GB)."""
    match = _INSTANCE_TYPE.fullmatch(instance_type)
    if match is None:
        raise ValueError(
            f"instance type {instance_type!r} is not of the form family.size (e.g. t3.medium)"
        )
    return 1 if match.group(1) in _SMALL_SIZES else 2


# How long the MLflow server trusts a checked password: each check costs tens of milliseconds
# of scrypt by design, and every request of a run (about 60) would pay it, 0.3 s each on a busy
# 2-core host. Mutations through the auth API reach a worker's cache at once; another uvicorn
# worker, or a change made in the database directly, after at most this long.
MLFLOW_AUTH_CACHE_SECONDS = 60


def mlflow_allowed_hosts(settings: ControlHostSettings) -> str:
    """MLflow's ``--allowed-hosts``: the control host's private address, and localhost.

    ``localhost`` on any port is the SSM tunnel's local end (its port is the operator's
    choice); a DNS-rebinding attacker's name is never ``localhost``. Never ``*``.
    """
    return f"{settings.private_ip}:{settings.mlflow_port},localhost:*"


def mlflow_cors_origins(settings: ControlHostSettings) -> str:
    """MLflow's ``--cors-allowed-origins``: the UI on the private address or through the tunnel.

    MLflow refuses POST/PUT/DELETE/PATCH from any other origin, and its UI searches with POST.
    (Localhost origins on any port pass MLflow's check anyway; listed for the record.) Never ``*``.
    """
    port = settings.mlflow_port
    return ",".join(
        f"http://{host}:{port}" for host in (settings.private_ip, "localhost", "127.0.0.1")
    )


def prefect_cors_origins(settings: ControlHostSettings) -> str:
    """Prefect's CORS origins: the UI as reached on the private address or through the tunnel."""
    return f"http://{settings.private_ip}:{settings.prefect_port},http://localhost:{settings.prefect_port}"


def placeholder(secret: str) -> str:
    """The ``${secret}`` placeholder the boot script substitutes with the fetched value."""
    return "${" + secret + "}"


def _postgres_url(
    settings: ControlHostSettings, scheme: str, database: ServiceDatabase, query: str
) -> str:
    """A connection URL template for ``database``, as its owner, password as a placeholder."""
    url = (
        f"{scheme}://{database.owner}:{placeholder(database.password_secret)}"
        f"@{settings.db_host}:{settings.db_port}/{database.name}"
    )
    return f"{url}?{query}" if query else url


def libpq_tls_query(settings: ControlHostSettings) -> str:
    """psycopg's (libpq's) TLS parameters: verify-full checks the server against the CA."""
    if settings.db_sslmode == "disable":
        return "sslmode=disable"
    return f"sslmode={settings.db_sslmode}&sslrootcert={settings.db_ca_file}"


def prefect_tls_environment(settings: ControlHostSettings) -> dict[str, str]:
    """Prefect's asyncpg TLS settings (an ``ssl`` URL parameter would not check the server)."""
    if settings.db_sslmode == "disable":
        return {}
    prefix = "PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_"
    return {
        f"{prefix}ENABLED": "true",
        f"{prefix}CA_FILE": settings.db_ca_file,
        f"{prefix}CHECK_HOSTNAME": "true",
    }


def service_databases(settings: ControlHostSettings) -> tuple[ServiceDatabase, ...]:
    """MLflow tracking, MLflow auth and Prefect: one database and one owner role each."""
    return (
        ServiceDatabase(
            name=settings.mlflow_db,
            owner=settings.mlflow_db_user,
            password_secret=MLFLOW_DB_PASSWORD,
        ),
        ServiceDatabase(
            name=settings.mlflow_auth_db,
            owner=settings.mlflow_auth_db_user,
            password_secret=MLFLOW_AUTH_DB_PASSWORD,
        ),
        ServiceDatabase(
            name=settings.prefect_db,
            owner=settings.prefect_db_user,
            password_secret=PREFECT_DB_PASSWORD,
        ),
    )


def base_environment(layout: HostLayout, user: str, region: str) -> dict[str, str]:
    """What every service gets: HOME (its state directory), the region, no telemetry."""
    return {
        **_COMMON_ENVIRONMENT,
        "HOME": str(layout.home(user)),
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,  # the variable boto3 reads
    }


def mlflow_access_argv(settings: ControlHostSettings, layout: HostLayout) -> tuple[str, ...]:
    """The post-start step giving the workers' MLflow user exactly what training needs."""
    argv = [
        layout.bin("python"),
        str(layout.mlflow_access_script),
        "--tracking-uri",
        f"http://localhost:{settings.mlflow_port}",
        "--admin",
        settings.mlflow_admin_username,
        "--worker",
        settings.mlflow_worker_username,
    ]
    for experiment in settings.worker_experiments:
        argv += ["--experiment", experiment]
    for model in settings.worker_models:
        argv += ["--model", model]
    return tuple(argv)


def mlflow_service(settings: ControlHostSettings, layout: HostLayout) -> ServiceSpec:
    """The MLflow tracking server: basic-auth app, artifacts proxied to the bucket."""
    user = "mlflow"
    tracking_db, auth_db, _ = service_databases(settings)
    auth_config = layout.config_dir / "mlflow-auth.ini"
    tls = libpq_tls_query(settings)
    auth_ini = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {_postgres_url(settings, 'postgresql+psycopg', auth_db, tls)}\n"
        f"admin_username = {settings.mlflow_admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {MLFLOW_AUTH_CACHE_SECONDS}\n"
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
            "--cors-allowed-origins",
            mlflow_cors_origins(settings),
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{settings.artifact_bucket}/mlflow",
        ),
        environment={
            **base_environment(layout, user, settings.region),
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        },
        secret_environment={
            "MLFLOW_BACKEND_STORE_URI": _postgres_url(
                settings, "postgresql+psycopg", tracking_db, tls
            ),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": placeholder(MLFLOW_FLASK_SECRET_KEY),
            "MLFLOW_AUTH_ADMIN_PASSWORD": placeholder(MLFLOW_ADMIN_PASSWORD),
            # For the post-start step only: the workers' user is (re)created with it.
            "MLFLOW_WORKER_PASSWORD": placeholder(MLFLOW_WORKER_PASSWORD),
        },
        env_file=layout.config_dir / "mlflow.env",
        extra_files=(SecretFile(path=auth_config, template=auth_ini, mode=0o640, group=user),),
        working_directory=layout.home(user),
        # The artifact proxy writes to S3 with the instance role: MLflow keeps the metadata.
        post_start=mlflow_access_argv(settings, layout),
    )


def prefect_server_service(settings: ControlHostSettings, layout: HostLayout) -> ServiceSpec:
    """The self-hosted Prefect server: PostgreSQL over verified TLS, API auth string, CSRF on."""
    user = "prefect"
    *_, prefect_db = service_databases(settings)
    home = layout.home(user)
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
            **base_environment(layout, user, settings.region),
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
            # Only the prefect-migrate step changes the schema (logged, refusing on failure).
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": prefect_cors_origins(settings),
            # The UI calls the API on whatever address the browser used (private IP or tunnel).
            "PREFECT_UI_API_URL": "/api",
            # The server copies its UI builds (v1 and v2) somewhere writable before serving
            # them; by default into site-packages, which is root's: no UI at all.
            "PREFECT_UI_STATIC_DIRECTORY": str(home / "ui"),
            **prefect_tls_environment(settings),
        },
        secret_environment={
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": _postgres_url(
                settings, "postgresql+asyncpg", prefect_db, ""
            ),
            "PREFECT_SERVER_API_AUTH_STRING": placeholder(PREFECT_AUTH_STRING),
        },
        env_file=layout.config_dir / "prefect-server.env",
        working_directory=home,
        # It needs no AWS API: the instance role's credentials are not its business.
        imds_firewall=layout.imds_firewall,
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
            **base_environment(layout, user, settings.region),
            "PREFECT_HOME": str(layout.home(user) / "prefect"),
            **WORKER_POLLING_ENVIRONMENT,
            # MLflow reads a run back only to print its link when it ends: the flow publishes
            # that link in its metrics artifact already, so spare each run the request.
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            "PREFECT_API_URL": f"http://{control}:{settings.control_prefect_port}/api",
            "MLFLOW_TRACKING_URI": f"http://{control}:{settings.control_mlflow_port}",
            # Not the admin: a user with EDIT on the experiments and MANAGE on the models.
            "MLFLOW_TRACKING_USERNAME": settings.mlflow_worker_username,
            "PIPELINE_DATA_DIR": f"s3://{settings.artifact_bucket}/data",
        },
        secret_environment={
            "PREFECT_API_AUTH_STRING": placeholder(PREFECT_AUTH_STRING),
            "MLFLOW_TRACKING_PASSWORD": placeholder(MLFLOW_WORKER_PASSWORD),
        },
        env_file=layout.config_dir / "prefect-worker.env",
        working_directory=layout.home(user),
        # First SIGTERM: the worker only announces it; the second makes it exit.
        stop_signals=("SIGTERM", "SIGTERM"),
    )


def migration_step(service: ServiceSpec, layout: HostLayout, databases_of: str) -> ServiceSpec:
    """The oneshot that migrates ``service``'s databases before it starts (``migrate.py``).

    Same user, environment and env file as the service: it reaches exactly the databases the
    service does, with the service's own role.
    """
    return replace(
        service,
        name=f"{databases_of}-migrate",
        description=f"Schema migrations of {service.name}'s databases (before it starts)",
        argv=(layout.bin("python"), str(layout.migrate_script), databases_of),
        secret_environment={},  # the service's env file, written once for the service
        extra_files=(),
        post_start=(),
        prepares=service.name,
        start_timeout_seconds=_MIGRATE_TIMEOUT_SECONDS,
    )


def with_migrations(
    service: ServiceSpec, layout: HostLayout, databases_of: str
) -> tuple[ServiceSpec, ServiceSpec]:
    """``service`` requiring its migration step, and the step."""
    step = migration_step(service, layout, databases_of)
    return replace(service, requires=(*service.requires, f"{step.name}.service")), step


def _all_secret_files(services: tuple[ServiceSpec, ...]) -> tuple[SecretFile, ...]:
    """Every file with secrets the given services read (a step reads its service's)."""
    return tuple(f for s in services if s.prepares is None for f in s.secret_files())


def control_plan(settings: ControlHostSettings, layout: HostLayout = HOST_LAYOUT) -> HostPlan:
    """The control host: MLflow server and Prefect server, their databases and roles."""
    mlflow, mlflow_migrate = with_migrations(mlflow_service(settings, layout), layout, "mlflow")
    prefect, prefect_migrate = with_migrations(
        prefect_server_service(settings, layout), layout, "prefect"
    )
    services: tuple[ServiceSpec, ...] = (mlflow_migrate, mlflow, prefect_migrate, prefect)
    if settings.dask is not None:
        from hostboot.dask_cluster import scheduler_service  # it builds on this module

        services += (scheduler_service(settings, settings.dask, layout),)
    verified = settings.db_sslmode != "disable"
    boot = BootConfig(
        region=settings.region,
        secrets={
            DB_PASSWORD: settings.db_password_secret_arn,
            MLFLOW_DB_PASSWORD: settings.mlflow_db_password_secret_arn,
            MLFLOW_AUTH_DB_PASSWORD: settings.mlflow_auth_db_password_secret_arn,
            PREFECT_DB_PASSWORD: settings.prefect_db_password_secret_arn,
            MLFLOW_ADMIN_PASSWORD: settings.mlflow_admin_password_secret_arn,
            MLFLOW_WORKER_PASSWORD: settings.mlflow_worker_password_secret_arn,
            MLFLOW_FLASK_SECRET_KEY: settings.mlflow_flask_secret_key_secret_arn,
            PREFECT_AUTH_STRING: settings.prefect_auth_string_secret_arn,
        },
        files=_all_secret_files(services),
        database=DatabaseBoot(
            host=settings.db_host,
            port=settings.db_port,
            user=settings.db_username,
            sslmode=settings.db_sslmode,
            sslrootcert=settings.db_ca_file if verified else None,
            maintenance_db=settings.maintenance_db,
            databases=service_databases(settings),
        ),
        ca_bundle=(
            CaBundle(
                url=settings.db_ca_bundle_url,
                path=settings.db_ca_file,
                sha256=settings.db_ca_bundle_sha256,
            )
            if verified and settings.db_ca_bundle_url
            else None
        ),
    )
    return HostPlan(services=services, boot=boot)


def worker_plan(settings: WorkerHostSettings, layout: HostLayout = HOST_LAYOUT) -> HostPlan:
    """A worker host: one Prefect process worker (with Dask, a client of the cluster, and the
    first daskWorkers hosts a Dask worker); it reads only two secrets, neither an admin's."""
    services: tuple[ServiceSpec, ...] = (prefect_worker_service(settings, layout),)
    if settings.dask is not None:
        from hostboot.dask_cluster import as_dask_client, worker_service  # they build on this

        services = (as_dask_client(services[0], settings, settings.dask, layout),)
        if settings.dask.run_worker:
            services += (worker_service(settings, settings.dask, layout),)
    boot = BootConfig(
        region=settings.region,
        secrets={
            MLFLOW_WORKER_PASSWORD: settings.mlflow_worker_password_secret_arn,
            PREFECT_AUTH_STRING: settings.prefect_auth_string_secret_arn,
        },
        files=_all_secret_files(services),
    )
    return HostPlan(services=services, boot=boot)


def imds_ruleset(users: tuple[str, ...]) -> str:
    """An nftables ruleset refusing ``users``' packets to the instance metadata service.

    Loaded (``nft -f``) before each such service starts: the first two lines make reloading
    it replace the table instead of adding rules twice. ``reject`` rather than ``drop``, so
    an SDK that tries the metadata service fails at once instead of waiting for a timeout.
    """
    owners = ", ".join(f'"{user}"' for user in users)
    ipv4, ipv6 = IMDS_ADDRESSES
    return (
        "# Rendered by infra/hostboot: these service users may not reach the instance\n"
        "# metadata service, so they never hold the instance role's credentials.\n"
        "table inet mlops_imds\n"
        "delete table inet mlops_imds\n"
        "table inet mlops_imds {\n"
        "\tchain output {\n"
        "\t\ttype filter hook output priority filter; policy accept;\n"
        f"\t\tmeta skuid {{ {owners} }} ip daddr {ipv4} counter reject\n"
        f"\t\tmeta skuid {{ {owners} }} ip6 daddr {ipv6} counter reject\n"
        "\t}\n"
        "}\n"
    )
