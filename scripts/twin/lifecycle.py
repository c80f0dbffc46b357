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
- A service's steps (its oneshot units: the schema migrations) run to completion before it
  starts, and a failing one keeps it from starting, as ``Requires=``/``After=`` do.
- S3 is moto's server; the services that use S3 (MLflow's artifact proxy, the worker and its
  flow runs) get ``AWS_ENDPOINT_URL_S3``/``MLFLOW_S3_ENDPOINT_URL`` and dummy credentials in
  place of the instance profile.
- Each process gets a clean environment (PATH, LANG, then the unit's), as systemd gives, so
  nothing from the caller's shell leaks in; it runs in its own session, and is stopped with
  its unit's stop signals sent to its whole process tree.
- With ``--dask-workers N`` (the stack's ``daskWorkers``): the control host's Dask scheduler
  and N worker hosts' Dask workers, from the same specs as their units, on free ports in
  place of the stack's fixed ones (two twins share a machine's loopback). Their TLS identities
  (a CA, the scheduler's and the workers' certificates, as the stack's) are made by the twin
  and written 0600 into each host's ``etc/dask`` under the state dir: the units' root steps
  that fetch them from Secrets Manager (``ExecStartPre=+``) are not run. Dask worker 0 is on
  the Prefect worker's host, as on the stack; worker N > 0 on a host ``worker-N`` of its own.

State (ports, pids, secret ARNs; no secret value) lives in ``<state dir>/state.json``; the
secrets are in the env files the boot script wrote there (mode 0600). ``down`` stops exactly
the recorded processes (checked by start time, so a recycled pid is never signalled), drops
the databases and the role, and removes the state dir but its logs.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import psutil
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
from hostboot.dask_cluster import DaskSettings, client_environment, tls_dir, tls_files_object
from hostboot.names import MLFLOW_ADMIN_USERNAME as ADMIN_USERNAME
from hostboot.names import WORK_POOL

from pipeline.ports import free_port
from scripts.common import OpsError
from scripts.env import dask_variables, env_from_outputs
from scripts.envfile import read_env_file, write_env_file
from scripts.twin import snapshot, standins, supervisor, tls
from scripts.twin.settings import (
    DASK_SCHEDULER,
    DASK_WORKER_MEMORY,
    DUMMY_AWS_CREDENTIALS,
    LOOPBACK,
    WORKER_USERNAME,
    TwinConfig,
    TwinState,
    check_service,
    control_secret_arns,
    dask_worker,
    write_private_json,
)
from scripts.twin.supervisor import Process, StopPolicy, tree_rss_bytes, wait_for

_S3_SERVICES = frozenset({"mlflow", "prefect-worker"})  # and every Dask worker
_READY_SECONDS = {"s3": 30.0, "mlflow": 120.0, "prefect-server": 180.0, "prefect-worker": 90.0}
_DASK_READY_SECONDS = 120.0
_DASK_TLS_DAYS = 30  # the twin's identities; `up` makes new ones
_DASK_PROBE_SECONDS = 3  # one readiness probe's connection to the scheduler


def port_names(dask_workers: int) -> tuple[str, ...]:
    """What takes a port of its own (the state's keys): the emulator, the two servers, and
    with Dask, in place of the stack's fixed ports, the scheduler, its dashboard, xgboost's
    tracker, each Dask worker and its nanny."""
    names = ["s3", "mlflow", "prefect-server"]
    if dask_workers:
        names += [DASK_SCHEDULER, "dask-dashboard", "dask-tracker"]
    for number in range(dask_workers):
        names += [dask_worker(number), f"dask-nanny-{number}"]
    return tuple(names)


def allocate_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A free loopback port for each of ``names``, no two the same."""
    ports: dict[str, int] = {}
    for name in names:
        port = free_port()
        while port in ports.values():  # the kernel may offer a port it just offered
            port = free_port()
        ports[name] = port
    return ports


def worker_host(number: int) -> str:
    """The twin's worker host ``number``: 0 runs the Prefect worker (and Dask worker 0)."""
    return "worker" if number == 0 else f"worker-{number}"


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
            mlflow_admin_username=ADMIN_USERNAME,
            mlflow_worker_username=worker_username,
            **control_secret_arns(arns),
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
            dask=self.dask_settings(),
        )

    def worker_settings(self, number: int = 0) -> WorkerHostSettings:
        """Worker host ``number``'s settings with loopback values (0: the Prefect worker's)."""
        arns = self.state.secret_arns
        return WorkerHostSettings(
            environment="dev",
            region=self.config.region,
            artifact_bucket=self.config.bucket,
            control_private_ip=LOOPBACK,
            work_pool=WORK_POOL,
            worker_name=f"{self.config.name}-worker-{number}",
            mlflow_worker_username=WORKER_USERNAME,
            mlflow_worker_password_secret_arn=arns.get("mlflow_worker_password", ""),
            prefect_auth_string_secret_arn=arns.get("prefect_auth_string", ""),
            control_mlflow_port=self.state.ports["mlflow"],
            control_prefect_port=self.state.ports["prefect-server"],
            dask=self.dask_settings(number),
        )

    def dask_settings(self, worker: int | None = None) -> DaskSettings | None:
        """A host's part in the Dask cluster (None without Dask): the control host's
        (``worker`` None) or worker host ``worker``'s, with the twin's ports.

        No secret ARN: the twin writes the identities itself (:meth:`write_dask_identities`)
        and does not run the units' root steps that would fetch them.
        """
        if not self.config.dask_workers:
            return None
        ports = self.state.ports
        own = None  # this host's Dask worker's and nanny's ports, if it runs one
        if worker is not None and worker < self.config.dask_workers:
            own = (ports[dask_worker(worker)], ports[f"dask-nanny-{worker}"])
        return DaskSettings(
            tls_secret_arn="",
            tls_script=tls_files_object(),
            run_worker=own is not None,
            memory_limit=DASK_WORKER_MEMORY,
            scheduler_port=ports[DASK_SCHEDULER],
            dashboard_port=ports["dask-dashboard"],
            tracker_port=ports["dask-tracker"],
            # One port each (a range of one): the twin chose them free.
            **({"worker_ports": (own[0], own[0]), "nanny_ports": (own[1], own[1])} if own else {}),
        )

    @property
    def worker_hosts(self) -> tuple[int, ...]:
        """The twin's worker hosts: 0 (the Prefect worker's), and one per Dask worker past 0."""
        return tuple(range(max(1, self.config.dask_workers)))

    def specs(self) -> dict[str, ServiceSpec]:
        """The rendered host services by twin service name (each Dask worker by its own)."""
        control = control_plan(self.control_settings(), self.layout("control"))
        specs = {spec.name: spec for spec in control.services}
        for number in self.worker_hosts:
            worker = worker_plan(self.worker_settings(number), self.layout(worker_host(number)))
            for spec in worker.services:
                if spec.name == "dask-worker":
                    specs[dask_worker(number)] = spec
                elif number == 0:  # one Prefect worker (a stack runs one per worker host)
                    specs[spec.name] = spec
        return specs

    def boot_configs(self) -> dict[str, BootConfig]:
        """Each host's boot step."""
        configs = {"control": control_plan(self.control_settings(), self.layout("control")).boot}
        for number in self.worker_hosts:
            host = worker_host(number)
            configs[host] = worker_plan(self.worker_settings(number), self.layout(host)).boot
        return configs

    @property
    def dask_address(self) -> str:
        """The scheduler's address (``""`` without Dask)."""
        if not self.config.dask_workers:
            return ""
        return f"tls://{LOOPBACK}:{self.state.ports[DASK_SCHEDULER]}"

    def dask_client_environment(self) -> dict[str, str]:
        """Dask's TLS settings with the workers' identity, as the flow runs have them (none
        without Dask)."""
        settings = self.dask_settings(0)
        if settings is None:
            return {}
        environment = client_environment(self.layout(worker_host(0)), settings)
        return {key: value for key, value in environment.items() if key.startswith("DASK_")}

    def write_dask_identities(self) -> None:
        """The cluster's CA and the identities it signs, as the stack's (infra/dask_tls.py):
        the scheduler's for the control host, the workers' (shared by the Dask workers and the
        flow runs, the clients) for each worker host; files 0600 in directories 0700."""
        ca = tls.authority(f"{self.config.name} Dask CA", days=_DASK_TLS_DAYS)
        scheduler = tls.identity(ca, "dask-scheduler", LOOPBACK, days=_DASK_TLS_DAYS)
        workers = tls.identity(ca, "dask-workers", LOOPBACK, days=_DASK_TLS_DAYS)
        scheduler.write(Path(tls_dir(self.layout("control"))))
        for number in self.worker_hosts:
            workers.write(Path(tls_dir(self.layout(worker_host(number)))))

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
            **(self.emulator_environment() if self.uses_s3(name) else {}),
        }
        return Process(argv=spec.argv, env=env, cwd=Path(spec.working_directory))

    @staticmethod
    def uses_s3(name: str) -> bool:
        """Whether service ``name`` reads or writes the bucket (it gets the emulator's endpoint
        in place of the instance profile): MLflow, the Prefect worker, the Dask workers."""
        return name in _S3_SERVICES or name.startswith("dask-worker-")

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
        return supervisor.log_tail(self.log_path(name))

    def running_process(self, name: str) -> psutil.Process | None:
        """The recorded, still running process of service ``name`` (never a recycled pid)."""
        child = self._children.get(name)
        if child is not None and child.poll() is not None:
            return None  # exited (and reaped)
        return supervisor.recorded_process(self.state.processes.get(name))

    def launch(self, name: str) -> None:
        """Start service ``name`` in its own session and record it."""
        child = supervisor.launch(self.process(name), self.log_path(name))
        self._children[name] = child
        self.state.processes[name] = supervisor.record(child.pid)
        self.state.save()

    def start_service(self, name: str) -> None:
        """Start service ``name`` unless it runs, and wait until it is ready.

        As systemd starts a unit: its steps first (the schema migrations), and not at all if
        one fails. The emulator keeps its state in memory: after a restart the bucket is
        created again, empty.
        """
        check_service(name, self.config.services)
        since = 0.0
        if self.running_process(name) is None:
            self.run_steps(name)
            since = time.time()
            self.launch(name)
        self.wait_ready(name, since)
        if name == "s3":
            self.create_bucket()

    def wait_ready(self, name: str, since: float) -> None:
        """Wait until service ``name`` answers, failing early with its log if it exits."""

        def alive() -> str:
            if self.running_process(name) is None:
                return (
                    f"the process exited; the end of {self.log_path(name)}:\n{self.log_tail(name)}"
                )
            return ""

        wait_for(
            f"{name} did not come up",
            lambda: self.ready(name, since),
            _READY_SECONDS.get(name, _DASK_READY_SECONDS),
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
        if name == DASK_SCHEDULER:
            return self.dask_workers_seen() is not None
        if name.startswith("dask-worker-"):
            number = int(name.removeprefix("dask-worker-"))
            return self.worker_settings(number).worker_name in (self.dask_workers_seen() or ())
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

    def dask_workers_seen(self) -> set[str] | None:
        """The names of the workers the scheduler knows, with the workers' identity (as a
        flow run connects); None when it does not answer."""
        import dask.config
        from distributed import Client
        from distributed.security import Security

        from pipeline.dask_engine import TLS_SETTINGS

        env = self.dask_client_environment()
        with dask.config.set({key: env[variable] for key, variable in TLS_SETTINGS.items()}):
            try:
                with Client(
                    self.dask_address,
                    timeout=_DASK_PROBE_SECONDS,
                    set_as_default=False,
                    security=Security(require_encryption=True),
                ) as client:
                    workers = client.scheduler_info(n_workers=-1)["workers"].values()
            except (OSError, TimeoutError):
                return None
        return {str(worker.get("name")) for worker in workers}

    def reap_children(self, seconds: float = 10.0) -> None:
        """Wait for the processes this object launched, once something has stopped them."""
        for child in self._children.values():
            child.wait(timeout=seconds)
        self._children.clear()

    def stop_service(self, name: str) -> None:
        """Stop service ``name`` with its unit's signals; SIGKILL what is left after the timeout."""
        check_service(name, self.config.services)
        process = self.running_process(name)
        if process is None:
            self.state.processes.pop(name, None)
            return
        supervisor.stop_tree(process, self.stop_policy(name))
        child = self._children.pop(name, None)
        if child is not None:
            child.wait(timeout=5)
        self.state.processes.pop(name, None)
        self.state.save()

    # -- AWS and PostgreSQL stand-ins -----------------------------------------------------

    def aws_client(self, service: str) -> Any:
        """A boto3 client of the emulator."""
        return standins.aws_client(self.config, self.s3_url, service)

    def create_bucket(self) -> None:
        """Create the artifact bucket in the emulator (its state is in memory)."""
        standins.create_bucket(self.aws_client("s3"), self.config.bucket)

    def create_secrets(self) -> dict[str, str]:
        """Generate the four secrets into the emulated Secrets Manager; return their ARNs."""
        names = tuple(self.boot_configs()["control"].secrets)
        return standins.create_secrets(self.aws_client("secretsmanager"), self.config.name, names)

    def create_role_and_first_database(self, password: str) -> None:
        """What RDS gives: the master role (may create databases and roles, is no superuser)
        and its first database."""
        with standins.postgres(self.config) as conn:
            self.state.postgres_created = True  # from here on, down drops them
            self.state.save()
            standins.create_role_and_first_database(
                conn, self.config, password, self.config.databases[0]
            )

    def drop_role_and_databases(self) -> None:
        """Drop the twin's databases (closing their connections), its services' roles and its
        master role."""
        with standins.postgres(self.config) as conn:
            standins.drop_role_and_databases(conn, self.config)

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

    def steps(self, name: str) -> list[ServiceSpec]:
        """The steps (oneshot units) service ``name`` requires, in order."""
        return [spec for spec in self.specs().values() if spec.prepares == name]

    def run_steps(self, name: str) -> list[str]:
        """Run service ``name``'s steps as their units do; their log lines (``from -> to``).

        A failing step is an OpsError with its last line (naming the database), and the
        service is not started, as systemd does not start a unit whose requirement failed.
        """
        lines = []
        for step in self.steps(name):
            log = self.log_path(step.name)
            log.parent.mkdir(parents=True, exist_ok=True)
            result = self.run_in_unit(step.name, step.argv, step.start_timeout_seconds)
            with log.open("a") as handle:
                handle.write(result.stderr)
            said = [line for line in result.stderr.splitlines() if line.startswith("migrate: ")]
            if result.returncode:
                last = said[-1] if said else result.stderr.strip()[-2000:]
                raise OpsError(f"{step.name} failed, {name} not started: {last} (log: {log})")
            lines += said
        for line in lines:
            self.say(line)
        return lines

    def run_post_start(self, name: str) -> None:
        """Run service ``name``'s post-start step (``ExecStartPost=``) with its environment."""
        spec = self.specs()[name]
        result = self.run_in_unit(name, spec.post_start, spec.start_timeout_seconds)
        if result.returncode:
            raise OpsError(f"{name}'s post-start step failed: {result.stderr.strip()}")

    def run_in_unit(
        self, name: str, argv: Sequence[str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to its end as a command of unit ``name`` runs: its environment and
        working directory (created, as systemd's ``StateDirectory=``), output captured."""
        process = self.process(name)
        process.cwd.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            list(argv),
            env=process.env,
            cwd=process.cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    # -- the environment ------------------------------------------------------------------

    def worker_secrets(self) -> dict[str, str]:
        """The secrets the worker's boot step fetched (its env file)."""
        return read_env_file(Path(self.specs()["prefect-worker"].env_file))

    def env(self) -> dict[str, str]:
        """The architecture's environment variables for this twin, as an operator's (MLflow's
        admin, as ``mlops env`` writes them for a stack), plus the emulator's endpoint and dummy
        credentials."""
        worker = self.worker_secrets()
        mlflow = read_env_file(Path(self.specs()["mlflow"].env_file))
        outputs = {
            "region": self.config.region,
            "artifact_bucket": self.config.bucket,
            "mlflow_tracking_uri": f"http://{LOOPBACK}:{self.state.ports['mlflow']}",
            "prefect_api_url": f"http://{LOOPBACK}:{self.state.ports['prefect-server']}/api",
            "mlflow_admin_username": ADMIN_USERNAME,
            "mlflow_admin_password": mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"],
            "prefect_api_auth_string": worker["PREFECT_API_AUTH_STRING"],
        }
        dask = {}
        if self.config.dask_workers:
            cluster = {
                "dask_scheduler_address": self.dask_address,
                "dask_workers": str(self.config.dask_workers),
            }
            # The operator here shares the machine with the cluster: it gets the workers'
            # identity, so that `mlops smoke` checks the scheduler (on a stack it is skipped).
            dask = {**dask_variables(cluster, tunnel=None), **self.dask_client_environment()}
        return {
            **env_from_outputs(outputs, tunnel=None),
            "AWS_ENDPOINT_URL_S3": self.s3_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            **DUMMY_AWS_CREDENTIALS,
            **dask,
        }

    # -- whole-twin operations --------------------------------------------------------------

    def bring_up(self, env_file: Path, restore_from: Path | None = None) -> None:
        """Start everything in order, waiting for each; on failure undo what was done.

        With ``restore_from`` (a directory of database dumps: :mod:`.snapshot`), the databases
        the boot step made are loaded from it before the migrations and servers run, as a
        stack restored from a snapshot boots on the snapshot's data.
        """
        try:
            self.say(f"S3 emulator (moto) on {self.s3_url}, bucket {self.config.bucket}")
            self.start_service("s3")
            self.state.secret_arns = self.create_secrets()
            self.state.save()
            self.say(f"PostgreSQL role {self.config.name} and its databases")
            self.create_role_and_first_database(self.database_password())
            self.say("boot steps of the control host and the worker (secrets, databases)")
            for host in self.boot_configs():
                self.run_boot(host)
            if restore_from is not None:
                self.say(f"databases restored from the dumps in {restore_from}")
                snapshot.restore(self, restore_from)
            self.say("schema migrations of the MLflow and Prefect databases (their oneshot units)")
            for name in ("mlflow", "prefect-server"):
                self.run_steps(name)
            self.say("MLflow server and Prefect server, as their systemd units run them")
            for name in ("mlflow", "prefect-server"):
                self.launch(name)
            dask = self.dask_services()
            if dask:
                self.say(
                    f"Dask scheduler on {self.dask_address} and {len(dask) - 1} Dask worker(s), "
                    "TLS only, with identities from the twin's CA"
                )
                self.write_dask_identities()
                for name in dask:
                    self.launch(name)
            for name in ("mlflow", "prefect-server"):
                self.wait_ready(name, 0)
            self.say("MLflow's post-start step: the workers' MLflow user and its permissions")
            self.run_post_start("mlflow")
            for name in dask:
                self.wait_ready(name, 0)
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

    def dask_services(self) -> tuple[str, ...]:
        """The Dask cluster's services in start order (none without Dask)."""
        return tuple(name for name in self.config.services if name.startswith("dask-"))

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
        for name in reversed(self.config.services):
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
        for name in self.config.services:
            process = self.running_process(name)
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


_EXECUTABLES = ("python", "moto_server", "mlflow", "prefect")


def up(
    config: TwinConfig,
    env_file: Path,
    say: Callable[[str], None] = lambda _: None,
    restore_from: Path | None = None,
) -> Twin:
    """Bring a twin up and write its env file; refuses if one is already recorded.

    ``restore_from``: a directory of database dumps (:func:`snapshot.dump`) to start from.
    """
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
    ports = allocate_ports(port_names(config.dask_workers))
    twin = Twin(TwinState(config=config, ports=ports), say)
    twin.state.save()
    twin.bring_up(env_file, restore_from)
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
