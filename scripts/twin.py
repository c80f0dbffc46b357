"""``mlops twin up|status|down``: the provisioned topology, on one machine, on loopback.

The twin runs what the hosts run. The control host's and a worker's services come from the
same :mod:`hostboot` plans as their systemd units, rendered with loopback addresses, free
ports and directories under the state dir (default ``.twin/``); only those, and the secrets'
values, differ. It also runs the hosts' boot script: the secrets are created in the S3
emulator's Secrets Manager (moto serves every AWS API on one port) and the script fetches
them into the env files and creates the databases, as on EC2.

What the twin adds, and why (nothing else differs from the rendered units):

- PostgreSQL is the machine's server on 127.0.0.1:5432 (superuser ``postgres``). The twin
  creates the master role and its first database as RDS would (``<name>_mlflow``); the boot
  script creates one role per service (``<name>_mlflow`` ...) owning its database. That
  server has no TLS, so the twin sets ``db_sslmode=disable`` where AWS hosts have
  ``verify-full`` (RDS forces TLS); the TLS settings are proven by tests/hosts, not here.
- The IMDS firewall (``ExecStartPre=``) is not loaded: there is no instance metadata here.
- S3 is moto's server; the services that use S3 (MLflow's artifact proxy, the worker and its
  flow runs) get ``AWS_ENDPOINT_URL_S3``/``MLFLOW_S3_ENDPOINT_URL`` and dummy credentials in
  place of the instance profile.
- Each process gets a clean environment (PATH, LANG, then the unit's), as systemd gives, so
  nothing from the caller's shell leaks in; it runs in its own session, and is stopped with
  its unit's stop signals sent to its whole process tree.

State (ports, pids, secret ARNs; no secret value) lives in ``<state dir>/state.json``; the
secrets are in the env files the boot script wrote there (mode 0600). ``down`` stops exactly
the recorded processes (checked by start time, so a recycled pid is never signalled), drops
the databases and the role, and removes the state dir but its logs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import boto3
import httpx
import psutil
import psycopg
import typer
from hostboot import (
    BootConfig,
    ControlHostSettings,
    HostLayout,
    ServiceSpec,
    WorkerHostSettings,
    control_plan,
    worker_plan,
)
from hostboot.cloudconfig import BOOT_SCRIPT
from psycopg import sql

from scripts.common import DEFAULT_ENV_FILE, REPO_ROOT, EnvFileOption, OpsError
from scripts.env import describe
from scripts.envfile import read_env_file, write_env_file

DEFAULT_STATE_DIR = REPO_ROOT / ".twin"
DEFAULT_NAME = "mlops_twin"
SERVICES = ("s3", "mlflow", "prefect-server", "prefect-worker")
WORK_POOL = "training"
ADMIN_USERNAME = "admin"
WORKER_USERNAME = "worker"
LOOPBACK = "127.0.0.1"
# The emulator accepts any credentials; these dummies stand in for the instance profile.
DUMMY_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "twin", "AWS_SECRET_ACCESS_KEY": "twin"}
_S3_SERVICES = frozenset({"mlflow", "prefect-worker"})
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_SECRET_ALPHABET = string.ascii_letters + string.digits
_READY_SECONDS = {"s3": 30.0, "mlflow": 120.0, "prefect-server": 180.0, "prefect-worker": 90.0}
_POLL_SECONDS = 0.25
_SIGNAL_GAP_SECONDS = 2.0  # how long a stop signal gets before the next one is sent
_LOG_TAIL_LINES = 30


@dataclass(frozen=True, kw_only=True)
class TwinConfig:
    """What a twin is made of; everything but the state dir has a sensible default."""

    state_dir: Path = DEFAULT_STATE_DIR
    name: str = DEFAULT_NAME  # PostgreSQL role and database prefix, emulated stack name
    region: str = "us-east-1"
    bucket: str = "mlops-twin-artifacts"
    postgres_host: str = LOOPBACK
    postgres_port: int = 5432
    postgres_superuser: str = "postgres"
    venv: Path = Path(sys.prefix)  # the virtualenv whose console scripts the services run

    def __post_init__(self) -> None:
        """Refuse a name PostgreSQL and the bucket would not take."""
        if not _NAME.fullmatch(self.name):
            raise OpsError(
                f"twin name {self.name!r} is not valid: use 1-40 lower-case letters, digits "
                "and '_', starting with a letter (it names the PostgreSQL role and databases)"
            )

    @property
    def databases(self) -> tuple[str, str, str]:
        """The MLflow, MLflow auth and Prefect databases."""
        return (f"{self.name}_mlflow", f"{self.name}_mlflow_auth", f"{self.name}_prefect")


@dataclass(kw_only=True)
class TwinState:
    """What ``up`` recorded: enough for ``status`` and ``down`` in another process."""

    config: TwinConfig
    ports: dict[str, int]
    secret_arns: dict[str, str] = field(default_factory=dict)
    # service -> [pid, create_time]: the start time tells our process from a recycled pid
    processes: dict[str, list[float]] = field(default_factory=dict)
    postgres_created: bool = False
    env_file: str = ""

    @property
    def path(self) -> Path:
        """Where the state is saved."""
        return self.config.state_dir / "state.json"

    def save(self) -> None:
        """Write the state (mode 0600; it holds no secret value, only ARNs)."""
        data = asdict(self)
        data["config"] = {**data["config"], "state_dir": str(self.config.state_dir)}
        data["config"]["venv"] = str(self.config.venv)
        write_private_json(self.path, data)

    @classmethod
    def load(cls, state_dir: Path) -> TwinState:
        """The state saved in ``state_dir``, or an OpsError if no twin is recorded there."""
        path = state_dir / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise OpsError(
                f"no twin recorded in {state_dir} (start one with `mlops twin up`)"
            ) from None
        config = data.pop("config")
        config.update(state_dir=Path(config["state_dir"]), venv=Path(config["venv"]))
        return cls(config=TwinConfig(**config), **data)


def write_private_json(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)


@dataclass(frozen=True, kw_only=True)
class Process:
    """How the twin runs one service: command line, environment, working directory."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True, kw_only=True)
class StopPolicy:
    """How a service is stopped: signals in turn, then SIGKILL after the timeout."""

    signals: tuple[str, ...] = ("SIGTERM",)
    timeout_seconds: float = 30.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def new_secret() -> str:
    """A random alphanumeric secret, as the stack's pulumi-random resources make them."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))


def wait_for(
    what: str, ready: Callable[[], bool], seconds: float, *, alive: Callable[[], str]
) -> None:
    """Poll ``ready()`` until true; fail after ``seconds`` or as soon as ``alive()`` says why."""
    deadline = time.monotonic() + seconds
    while not ready():
        problem = alive()
        if problem:
            raise OpsError(f"{what}: {problem}")
        if time.monotonic() > deadline:
            raise OpsError(f"{what}: not ready within {seconds:.0f} s")
        time.sleep(_POLL_SECONDS)


class Twin:
    """A recorded twin: its plans, its processes and the operations on them."""

    def __init__(self, state: TwinState, say: Callable[[str], None] = lambda _: None) -> None:
        self.state = state
        self.config = state.config
        self.say = say  # progress messages
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- layout and plans --------------------------------------------------------------

    def layout(self, host: str) -> HostLayout:
        """The directories standing in for ``host``'s /etc/mlops and /var/lib."""
        root = PurePosixPath(self.config.state_dir) / host
        return HostLayout(
            venv=PurePosixPath(self.config.venv),
            config_dir=root / "etc",
            state_dir=root / "var-lib",
            scripts_dir=PurePosixPath(BOOT_SCRIPT.parent),  # the repository's host scripts
            service_groups=False,
        )

    def control_settings(self) -> ControlHostSettings:
        """The control host's settings with loopback values."""
        mlflow_db, mlflow_auth_db, prefect_db = self.config.databases
        arns = self.state.secret_arns
        worker_username = self.worker_settings().mlflow_worker_username
        return ControlHostSettings(
            environment="dev",
            region=self.config.region,
            artifact_bucket=self.config.bucket,
            private_ip=LOOPBACK,
            db_host=self.config.postgres_host,
            db_port=self.config.postgres_port,
            db_username=self.config.name,
            db_password_secret_arn=arns.get("db_password", ""),
            mlflow_db_password_secret_arn=arns.get("mlflow_db_password", ""),
            mlflow_auth_db_password_secret_arn=arns.get("mlflow_auth_db_password", ""),
            prefect_db_password_secret_arn=arns.get("prefect_db_password", ""),
            mlflow_admin_username=ADMIN_USERNAME,
            mlflow_admin_password_secret_arn=arns.get("mlflow_admin_password", ""),
            mlflow_worker_username=worker_username,
            mlflow_worker_password_secret_arn=arns.get("mlflow_worker_password", ""),
            mlflow_flask_secret_key_secret_arn=arns.get("mlflow_flask_secret_key", ""),
            prefect_auth_string_secret_arn=arns.get("prefect_auth_string", ""),
            work_pool=WORK_POOL,
            db_sslmode="disable",  # the local PostgreSQL has no TLS (see module docstring)
            bind_address=LOOPBACK,
            maintenance_db="postgres",
            mlflow_port=self.state.ports["mlflow"],
            prefect_port=self.state.ports["prefect-server"],
            mlflow_db=mlflow_db,
            mlflow_auth_db=mlflow_auth_db,
            prefect_db=prefect_db,
            # The role names are the database names: unique to this twin on a shared server.
            mlflow_db_user=mlflow_db,
            mlflow_auth_db_user=mlflow_auth_db,
            prefect_db_user=prefect_db,
        )

    def worker_settings(self) -> WorkerHostSettings:
        """The worker host's settings with loopback values."""
        arns = self.state.secret_arns
        return WorkerHostSettings(
            environment="dev",
            region=self.config.region,
            artifact_bucket=self.config.bucket,
            control_private_ip=LOOPBACK,
            work_pool=WORK_POOL,
            worker_name=f"{self.config.name}-worker-0",
            mlflow_worker_username=WORKER_USERNAME,
            mlflow_worker_password_secret_arn=arns.get("mlflow_worker_password", ""),
            prefect_auth_string_secret_arn=arns.get("prefect_auth_string", ""),
            control_mlflow_port=self.state.ports["mlflow"],
            control_prefect_port=self.state.ports["prefect-server"],
        )

    def specs(self) -> dict[str, ServiceSpec]:
        """The rendered host services by twin service name."""
        control = control_plan(self.control_settings(), self.layout("control"))
        worker = worker_plan(self.worker_settings(), self.layout("worker"))
        return {spec.name: spec for spec in (*control.services, *worker.services)}

    def boot_configs(self) -> dict[str, BootConfig]:
        """Each host's boot step."""
        return {
            "control": control_plan(self.control_settings(), self.layout("control")).boot,
            "worker": worker_plan(self.worker_settings(), self.layout("worker")).boot,
        }

    @property
    def s3_url(self) -> str:
        """The emulator's endpoint."""
        return f"http://{LOOPBACK}:{self.state.ports['s3']}"

    # -- processes ---------------------------------------------------------------------

    def base_environment(self) -> dict[str, str]:
        """What systemd gives every service before the unit's own environment."""
        return {
            "PATH": f"{self.config.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }

    def emulator_environment(self) -> dict[str, str]:
        """The S3 emulator's endpoint and dummy credentials (in place of the instance profile)."""
        return {
            "AWS_ENDPOINT_URL_S3": self.s3_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            **DUMMY_AWS_CREDENTIALS,
        }

    def process(self, name: str) -> Process:
        """How service ``name`` runs in the twin."""
        if name == "s3":
            argv = (str(self.config.venv / "bin" / "moto_server"), "-H", LOOPBACK)
            return Process(
                argv=(*argv, "-p", str(self.state.ports["s3"])),
                env=self.base_environment(),
                cwd=self.config.state_dir,
            )
        spec = self.specs()[name]
        env = {
            **self.base_environment(),
            **spec.environment,
            **read_env_file(Path(spec.env_file)),
            **(self.emulator_environment() if name in _S3_SERVICES else {}),
        }
        return Process(argv=spec.argv, env=env, cwd=Path(spec.working_directory))

    def stop_policy(self, name: str) -> StopPolicy:
        """How service ``name`` is stopped: as its unit says (the emulator: one SIGTERM)."""
        if name == "s3":
            return StopPolicy()
        spec = self.specs()[name]
        return StopPolicy(signals=spec.stop_signals, timeout_seconds=spec.stop_timeout_seconds)

    def log_path(self, name: str) -> Path:
        """Where service ``name`` writes its output."""
        return self.config.state_dir / "logs" / f"{name}.log"

    def log_tail(self, name: str) -> str:
        """The last lines of service ``name``'s log, for error messages."""
        try:
            lines = self.log_path(name).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def pid(self, name: str) -> psutil.Process | None:
        """The recorded, still running process of service ``name`` (never a recycled pid)."""
        recorded = self.state.processes.get(name)
        if not recorded:
            return None
        pid, created = int(recorded[0]), recorded[1]
        child = self._children.get(name)
        if child is not None and child.poll() is not None:
            return None  # exited (and reaped)
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - created) > 0.01:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            return None
        return process

    def launch(self, name: str) -> None:
        """Start service ``name`` in its own session and record it."""
        process = self.process(name)
        process.cwd.mkdir(parents=True, exist_ok=True)
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            child = subprocess.Popen(
                process.argv,
                env=process.env,
                cwd=process.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[name] = child
        self.state.processes[name] = [child.pid, psutil.Process(child.pid).create_time()]
        self.state.save()

    def start_service(self, name: str) -> None:
        """Start service ``name`` unless it runs, and wait until it is ready.

        The emulator keeps its state in memory: after a restart the bucket is created
        again, empty.
        """
        check_service(name)
        since = 0.0
        if self.pid(name) is None:
            since = time.time()
            self.launch(name)
        self.wait_ready(name, since)
        if name == "s3":
            self.create_bucket()

    def wait_ready(self, name: str, since: float) -> None:
        """Wait until service ``name`` answers, failing early with its log if it exits."""

        def alive() -> str:
            if self.pid(name) is None:
                return (
                    f"the process exited; the end of {self.log_path(name)}:\n{self.log_tail(name)}"
                )
            return ""

        wait_for(
            f"{name} did not come up",
            lambda: self.ready(name, since),
            _READY_SECONDS[name],
            alive=alive,
        )

    def ready(self, name: str, since: float) -> bool:
        """Whether service ``name`` answers now (the worker: heartbeating since ``since``)."""
        urls = {
            "s3": self.s3_url + "/",
            "mlflow": f"http://{LOOPBACK}:{self.state.ports['mlflow']}/health",
            "prefect-server": f"http://{LOOPBACK}:{self.state.ports['prefect-server']}/api/health",
        }
        if name == "prefect-worker":
            return self.worker_heartbeat_since(since)
        try:
            return httpx.get(urls[name], timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def worker_heartbeat_since(self, since: float) -> bool:
        """Whether the twin's worker is ONLINE with a heartbeat newer than ``since``."""
        from scripts.deploy import PrefectApiError, prefect_client

        name = self.worker_settings().worker_name
        try:
            with prefect_client(self.env(), retries=0) as client:
                workers = client.read_workers_for_work_pool(WORK_POOL)
        except PrefectApiError:
            return False
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:  # the worker has not created the pool yet
                return False
            raise
        return any(
            worker.name == name
            and worker.status.value == "ONLINE"
            and worker.last_heartbeat_time is not None
            and worker.last_heartbeat_time.timestamp() >= since
            for worker in workers
        )

    def reap_children(self, seconds: float = 10.0) -> None:
        """Wait for the processes this object launched, once something has stopped them."""
        for child in self._children.values():
            child.wait(timeout=seconds)
        self._children.clear()

    def stop_service(self, name: str) -> None:
        """Stop service ``name`` with its unit's signals; SIGKILL what is left after the timeout."""
        check_service(name)
        process = self.pid(name)
        if process is None:
            self.state.processes.pop(name, None)
            return
        stop_tree(process, self.stop_policy(name))
        child = self._children.pop(name, None)
        if child is not None:
            child.wait(timeout=5)
        self.state.processes.pop(name, None)
        self.state.save()

    # -- AWS and PostgreSQL stand-ins -----------------------------------------------------

    def aws_client(self, service: str) -> Any:
        """A boto3 client of the emulator."""
        return boto3.client(
            service,
            region_name=self.config.region,
            endpoint_url=self.s3_url,
            aws_access_key_id=DUMMY_AWS_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_AWS_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self) -> None:
        """Create the artifact bucket in the emulator (its state is in memory)."""
        s3 = self.aws_client("s3")
        with suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=self.config.bucket)

    def create_secrets(self) -> dict[str, str]:
        """Generate the four secrets into the emulated Secrets Manager; return their ARNs."""
        client = self.aws_client("secretsmanager")
        return {
            name: client.create_secret(
                Name=f"{self.config.name}-{name}", SecretString=new_secret()
            )["ARN"]
            for name in self.boot_configs()["control"].secrets
        }

    @contextmanager
    def postgres(self) -> Iterator[psycopg.Connection[Any]]:
        """A superuser connection to the machine's PostgreSQL."""
        try:
            conn = psycopg.connect(
                host=self.config.postgres_host,
                port=self.config.postgres_port,
                user=self.config.postgres_superuser,
                dbname="postgres",
                connect_timeout=10,
                autocommit=True,
            )
        except psycopg.OperationalError as exc:
            raise OpsError(
                f"cannot connect to PostgreSQL at {self.config.postgres_host}:"
                f"{self.config.postgres_port} as {self.config.postgres_superuser}: "
                f"{str(exc).strip()} (the twin needs a running PostgreSQL server)"
            ) from None
        with conn:
            yield conn

    def create_role_and_first_database(self, password: str) -> None:
        """What RDS gives: the master role (may create databases and roles, is no superuser)
        and its first database."""
        role = sql.Identifier(self.config.name)
        with self.postgres() as conn:
            self.state.postgres_created = True  # from here on, down drops them
            self.state.save()
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.config.name,))
            verb = "ALTER" if exists.fetchone() else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                    role, sql.Literal(password)
                )
            )
            first = self.config.databases[0]
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (first,)
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(first), role)
                )

    def drop_role_and_databases(self) -> None:
        """Drop the twin's databases (closing their connections), its services' roles (named
        as their databases) and its master role."""
        with self.postgres() as conn:
            for database in self.config.databases:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )
            for role in (*self.config.databases, self.config.name):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    def run_boot(self, host: str) -> None:
        """Run the hosts' boot script for ``host`` against the emulated Secrets Manager."""
        layout = self.layout(host)
        config_path = Path(layout.config_dir) / "boot.json"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        boot = self.boot_configs()[host]
        write_private_json(config_path, boot.to_json_dict(layout.service_groups))
        env = {
            **self.base_environment(),
            "AWS_ENDPOINT_URL": self.s3_url,  # every AWS API the boot step calls: the emulator
            **DUMMY_AWS_CREDENTIALS,
        }
        python = str(self.config.venv / "bin" / "python")
        result = subprocess.run(
            [python, str(BOOT_SCRIPT), str(config_path)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode:
            raise OpsError(f"the {host} host's boot script failed: {result.stderr.strip()}")

    def run_post_start(self, name: str) -> None:
        """Run service ``name``'s post-start step (``ExecStartPost=``) with its environment."""
        spec = self.specs()[name]
        process = self.process(name)
        result = subprocess.run(
            spec.post_start,
            env=process.env,
            cwd=process.cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=spec.start_timeout_seconds,
        )
        if result.returncode:
            raise OpsError(f"{name}'s post-start step failed: {result.stderr.strip()}")

    # -- the environment ------------------------------------------------------------------

    def worker_secrets(self) -> dict[str, str]:
        """The secrets the worker's boot step fetched (its env file)."""
        return read_env_file(Path(self.specs()["prefect-worker"].env_file))

    def env(self) -> dict[str, str]:
        """The architecture's environment variables for this twin, as an operator's (MLflow's
        admin, as ``mlops env`` gives from the stack outputs)."""
        worker = self.worker_secrets()
        mlflow = read_env_file(Path(self.specs()["mlflow"].env_file))
        return {
            "MLFLOW_TRACKING_URI": f"http://{LOOPBACK}:{self.state.ports['mlflow']}",
            "MLFLOW_TRACKING_USERNAME": ADMIN_USERNAME,
            "MLFLOW_TRACKING_PASSWORD": mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"],
            "PREFECT_API_URL": f"http://{LOOPBACK}:{self.state.ports['prefect-server']}/api",
            "PREFECT_API_AUTH_STRING": worker["PREFECT_API_AUTH_STRING"],
            "AWS_REGION": self.config.region,
            "AWS_ENDPOINT_URL_S3": self.s3_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            **DUMMY_AWS_CREDENTIALS,
            "PIPELINE_DATA_DIR": f"s3://{self.config.bucket}/data",
        }

    # -- whole-twin operations --------------------------------------------------------------

    def bring_up(self, env_file: Path) -> None:
        """Start everything in order, waiting for each; on failure undo what was done."""
        try:
            self.say(f"S3 emulator (moto) on {self.s3_url}, bucket {self.config.bucket}")
            self.start_service("s3")
            self.state.secret_arns = self.create_secrets()
            self.state.save()
            self.say(f"PostgreSQL role {self.config.name} and its databases")
            self.create_role_and_first_database(self.database_password())
            self.say("boot steps of the control host and the worker (secrets, databases)")
            self.run_boot("control")
            self.run_boot("worker")
            self.say("MLflow server and Prefect server, as their systemd units run them")
            for name in ("mlflow", "prefect-server"):
                self.launch(name)
            for name in ("mlflow", "prefect-server"):
                self.wait_ready(name, 0)
            self.say("MLflow's post-start step: the workers' MLflow user and its permissions")
            self.run_post_start("mlflow")
            self.say(f"Prefect worker on work pool {WORK_POOL}")
            self.start_service("prefect-worker")
            write_env_file(env_file, self.env())
            self.state.env_file = str(env_file.resolve())
            self.state.save()
        except BaseException:
            # Undo what was done; the original error is the one to report.
            with suppress(OpsError):
                self.tear_down()
            raise

    def database_password(self) -> str:
        """The database password, read back from the emulated Secrets Manager."""
        client = self.aws_client("secretsmanager")
        return str(
            client.get_secret_value(SecretId=self.state.secret_arns["db_password"])["SecretString"]
        )

    def tear_down(self) -> None:
        """Stop every recorded process, drop the databases and role, remove the state.

        Every service is stopped even if one of them resists; if anything is left, the state
        stays so that ``down`` can be run again, and the error says what.
        """
        problems = []
        for name in reversed(SERVICES):
            try:
                self.stop_service(name)
            except OpsError as exc:
                problems.append(f"{name}: {exc}")
        if problems:
            raise OpsError("could not stop the twin: " + "; ".join(problems))
        if self.state.postgres_created:
            self.drop_role_and_databases()
        self.remove_env_file()
        for entry in self.config.state_dir.iterdir():
            if entry.name != "logs":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def remove_env_file(self) -> None:
        """Remove the env file ``up`` wrote, unless something else has rewritten it since."""
        if not self.state.env_file:
            return
        path = Path(self.state.env_file)
        with suppress(FileNotFoundError, ValueError):
            if read_env_file(path).get(
                "PIPELINE_DATA_DIR"
            ) == f"s3://{self.config.bucket}/data" and (
                read_env_file(path).get("AWS_ENDPOINT_URL_S3") == self.s3_url
            ):
                path.unlink()

    def status(self) -> list[tuple[str, str, str]]:
        """(service, state, detail) for each service; memory is the process tree's RSS."""
        rows = []
        for name in SERVICES:
            process = self.pid(name)
            if process is None:
                rows.append((name, "down", "not running"))
                continue
            answering = self.ready(name, 0.0)
            rss = tree_rss_bytes(process) / 2**20
            port = self.state.ports.get(name)
            where = f"port {port}, " if port else ""
            rows.append(
                (
                    name,
                    "up" if answering else "starting",
                    f"pid {process.pid}, {where}{rss:.0f} MiB RSS",
                )
            )
        return rows


def check_service(name: str) -> None:
    """Refuse a service name the twin does not run."""
    if name not in SERVICES:
        raise OpsError(f"unknown twin service {name!r}; the twin runs {', '.join(SERVICES)}")


def tree(process: psutil.Process) -> list[psutil.Process]:
    """``process`` and all its descendants."""
    with suppress(psutil.NoSuchProcess):
        return [process, *process.children(recursive=True)]
    return []


def tree_rss_bytes(process: psutil.Process) -> int:
    """Resident memory of ``process`` and its descendants."""
    total = 0
    for member in tree(process):
        with suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Wait up to ``seconds`` for ``processes`` to end; those still running."""
    deadline = time.monotonic() + seconds
    while True:
        left = [process for process in processes if running(process)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(_POLL_SECONDS)


def signal_all(processes: list[psutil.Process], signum: signal.Signals) -> None:
    """Send ``signum`` to each of ``processes`` that still exists."""
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def stop_tree(process: psutil.Process, policy: StopPolicy) -> None:
    """Stop ``process`` and its descendants as systemd stops a unit's control group.

    Every signal but the last goes to the main process (``ExecStop=``), with a short gap for
    it to act; the last (``KillSignal=``) goes to every process of the tree; whatever is left
    after the timeout is killed.
    """
    members = tree(process)
    *first, last = policy.signals
    for name in first:
        signal_all([process], signal.Signals[name])
        wait_gone([process], _SIGNAL_GAP_SECONDS)
    members += [child for child in tree(process) if child not in members]
    signal_all(members, signal.Signals[last])
    left = wait_gone(members, policy.timeout_seconds)
    signal_all(left, signal.SIGKILL)
    left = wait_gone(left, 5.0)
    if left:
        raise OpsError(f"could not stop pids {', '.join(str(p.pid) for p in left)}")


_EXECUTABLES = ("python", "moto_server", "mlflow", "prefect")


def up(config: TwinConfig, env_file: Path, say: Callable[[str], None] = lambda _: None) -> Twin:
    """Bring a twin up and write its env file; refuses if one is already recorded."""
    missing = [name for name in _EXECUTABLES if not (config.venv / "bin" / name).exists()]
    if missing:
        raise OpsError(
            f"{config.venv} lacks {', '.join(missing)}: run the twin from the project's "
            "virtualenv (`make venv`, then `.venv/bin/mlops twin up`)"
        )
    if (config.state_dir / "state.json").exists():
        raise OpsError(
            f"a twin is already recorded in {config.state_dir}: see `mlops twin status`, "
            "or stop it with `mlops twin down`"
        )
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.state_dir.chmod(0o700)
    ports = {"s3": free_port(), "mlflow": free_port(), "prefect-server": free_port()}
    twin = Twin(TwinState(config=config, ports=ports), say)
    twin.state.save()
    twin.bring_up(env_file)
    return twin


def load(state_dir: Path) -> Twin:
    """The twin recorded in ``state_dir``."""
    return Twin(TwinState.load(state_dir))


def down(state_dir: Path) -> None:
    """Stop the twin recorded in ``state_dir`` and remove what it made (but its logs)."""
    load(state_dir).tear_down()


def status_lines(state_dir: Path) -> tuple[list[str], bool]:
    """Human-readable status and whether every service is up."""
    rows = load(state_dir).status()
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{name:<{width}}  {state:<8}  {detail}" for name, state, detail in rows]
    return lines, all(state == "up" for _, state, _ in rows)


# -- command line (registered in scripts/cli.py as `mlops twin`) ------------------------------

app = typer.Typer(
    help="The local twin: the hosts' services on loopback, from their rendered units.",
    no_args_is_help=True,
)
StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir", help="Where the twin keeps its state, env files and logs.", file_okay=False
    ),
]


@app.command("up")
def up_command(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    name: Annotated[
        str, typer.Option("--name", help="PostgreSQL role and database prefix of this twin.")
    ] = DEFAULT_NAME,
) -> None:
    """Start the S3 emulator, MLflow, Prefect server and a worker; write the env file."""
    twin = up(TwinConfig(state_dir=state_dir, name=name), env_file, typer.echo)
    typer.echo(f"twin up; wrote {env_file} (mode 0600):")
    for line in describe(twin.env()):
        typer.echo(f"  {line}")


@app.command("status")
def status_command(state_dir: StateDirOption = DEFAULT_STATE_DIR) -> None:
    """Show each service of the twin: up, starting or down, pid, port and memory."""
    lines, healthy = status_lines(state_dir)
    for line in lines:
        typer.echo(line)
    if not healthy:
        raise OpsError("not every service of the twin is up")


@app.command("down")
def down_command(state_dir: StateDirOption = DEFAULT_STATE_DIR) -> None:
    """Stop every process the twin started, drop its databases and role, remove its state."""
    down(state_dir)
    typer.echo(f"twin down; logs kept in {state_dir / 'logs'}")
