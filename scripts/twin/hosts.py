"""``mlops twin up --hosts``: the rendered hosts booted under cloud-init and systemd, at their
stack addresses (Linux, as root).

Each host is a ``systemd-nspawn`` container (systemd as PID 1, :mod:`.containers`) in its own
network namespace at the address the stack gives it, on one bridge (:mod:`.hostnet`); the
security groups' ingress rules (``infra/firewall.py``'s traffic matrix) are enforced in each
namespace with nftables. Its user data is what ``hostboot`` renders for the Pulumi program,
with the twin's addresses and ARNs, and cloud-init runs it from a NoCloud seed.

Stand-ins, each reached the way a host reaches the real thing:

- ``mlt-aws``: moto (S3 and Secrets Manager; hosts get its URL as ``AWS_ENDPOINT_URL``) and
  the package index (the host packages' wheelhouse, as pip ``find-links``; it can refuse
  connections for the first N seconds);
- ``mlt-db``: a throwaway PostgreSQL cluster with TLS from a test CA, at a private-subnet
  address, with the master role and first database RDS would create;
- ``169.254.169.254`` in every host namespace: the IMDSv2 stand-in (:mod:`.imds`);
- ``mlt-operator``: where the operator's commands run (``ip netns exec mlt-operator ...``),
  at an address the twin's stack lists in ``serviceIngressCidrs``, as a VPN client would be.

State (addresses, ARNs, pids; no secret value) is in ``<state dir>/state.json``; every
object is named ``mlt-...`` so that ``down`` also finds what a crashed ``up`` left.
"""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import hostboot
import hostboot.locks
import httpx
import yaml
from hostboot.dask_cluster import DaskSettings, tls_files_object
from hostboot.names import MLFLOW_ADMIN_USERNAME as ADMIN_USERNAME
from hostboot.names import POSTGRES_PORT, WORK_POOL

from scripts.common import REPO_ROOT, OpsError
from scripts.env import env_from_outputs
from scripts.envfile import write_env_file
from scripts.twin import containers, hostnet, standins, supervisor, tls
from scripts.twin.hostnet import Ingress, Node
from scripts.twin.settings import (
    DASK_WORKER_MEMORY,
    DUMMY_AWS_CREDENTIALS,
    WORKER_USERNAME,
    TwinConfig,
    control_secret_arns,
    write_private_json,
)

DEFAULT_HOSTS_STATE_DIR = REPO_ROOT / ".twin-hosts"
DEFAULT_WHEELHOUSE = Path.home() / ".cache" / "mlops-twin" / "wheelhouse"
MOTO_PORT = 4566
INDEX_PORT = 8080
STANDINS = "aws"
DATABASE = "db"
OPERATOR = "operator"
_READY_SECONDS = 900.0  # a host's boot is mostly pip installing the lock
_STAND_IN_SECONDS = 60.0
# The Dask cluster's two identities (secret names, as infra/dask_tls.py's roles).
DASK_SCHEDULER_TLS = "dask_tls_scheduler"
DASK_WORKERS_TLS = "dask_tls_workers"
_INFRA = REPO_ROOT / "infra"
CONTAINER_PYTHON = "/usr/bin/python3.11"  # what the user data's `python3.11 -m venv` finds


def infra_module(name: str) -> ModuleType:
    """A module of the Pulumi program, imported as ``pulumi up`` does (infra/ on the path)."""
    if str(_INFRA) not in sys.path:
        sys.path.append(str(_INFRA))
    return importlib.import_module(name)


@dataclass(frozen=True, kw_only=True)
class HostsConfig:
    """What a hosts twin is made of."""

    state_dir: Path = DEFAULT_HOSTS_STATE_DIR
    name: str = "mlops_twin"  # the emulated stack: secret names, worker names
    vpc_cidr: str = "10.42.0.0/16"
    workers: int = 1
    region: str = "us-east-1"
    bucket: str = "mlops-twin-artifacts"
    wheelhouse: Path = DEFAULT_WHEELHOUSE
    index_refuse_seconds: float = 0.0  # the package index refuses connections this long
    dask_workers: int = 0  # the stack's daskWorkers: a scheduler, and a Dask worker per host

    def __post_init__(self) -> None:
        """Refuse a VPC range or a worker count the stack would not take."""
        TwinConfig(name=self.name)  # the same rule as the process twin's name
        try:
            network = ipaddress.IPv4Network(self.vpc_cidr)
        except ValueError:
            raise OpsError(
                f"vpcCidr {self.vpc_cidr!r} is not an IPv4 network such as 10.42.0.0/16"
            ) from None
        if not 16 <= network.prefixlen <= 24:
            raise OpsError(f"vpcCidr {self.vpc_cidr!r}: use a prefix from /16 to /24")
        if not 1 <= self.workers <= 4:
            raise OpsError(f"workers: use 1 to 4 worker hosts, not {self.workers}")
        if not 0 <= self.dask_workers <= self.workers:
            raise OpsError(
                f"dask workers: use 0 to {self.workers} (one per worker host), "
                f"not {self.dask_workers}"
            )

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The VPC range."""
        return ipaddress.IPv4Network(self.vpc_cidr)


def topology(config: HostsConfig) -> list[Node]:
    """Every namespace of the twin at its stack address (infra/network.py's plan).

    Hosts go in the public subnets as in a dev stack; the control host at its fixed address,
    workers at the next ones of the host subnets in turn, the database and the AWS stand-ins
    in the private subnets, the operator at an address of its own.
    """
    network = infra_module("network")
    plan = network.plan_subnets(config.vpc_cidr)
    first = network.CONTROL_HOST_INDEX
    nodes = [
        Node(name="control", address=network.fixed_host_address(plan.public[0]), group="control")
    ]
    nodes += [
        Node(
            name=f"worker-{number}",
            address=network.fixed_host_address(
                plan.public[(number - 1) % 2], first + 1 + (number - 1) // 2
            ),
            group="worker",
        )
        for number in range(1, config.workers + 1)
    ]
    nodes += [
        Node(name=DATABASE, address=network.fixed_host_address(plan.private[0]), group="database"),
        Node(name=STANDINS, address=network.fixed_host_address(plan.private[1]), group=""),
        Node(name=OPERATOR, address=network.fixed_host_address(plan.public[1], 50), group=OPERATOR),
    ]
    return nodes


def ingress_rules(nodes: list[Node], *, dask: bool = False) -> list[Ingress]:
    """The stack's ingress rules between groups (with ``dask``, the Dask cluster's too); CIDR
    rules become the group they contain.

    The twin's stack lists the operator's address in ``serviceIngressCidrs``.
    """
    firewall = infra_module("firewall")
    operator = next(node for node in nodes if node.name == OPERATOR)
    rules = []
    for rule in firewall.traffic_matrix([f"{operator.address}/32"], dask=dask):
        if rule.direction != "ingress":
            continue
        peer = rule.peer or (OPERATOR if rule.cidr == f"{operator.address}/32" else None)
        if peer is not None:
            rules.append(
                Ingress(group=rule.group, port=rule.port, peer=peer, last_port=rule.last_port)
            )
    # The stand-ins are the AWS endpoints and PyPI: every host may reach them (HTTPS egress).
    rules += [
        Ingress(group="", port=port, peer=group)
        for port in (MOTO_PORT, INDEX_PORT)
        for group in ("control", "worker", OPERATOR)
    ]
    return rules


@dataclass(kw_only=True)
class HostsState:
    """What ``up`` recorded for ``status`` and ``down``."""

    config: dict[str, Any]
    nodes: list[dict[str, str]] = field(default_factory=list)
    secret_arns: dict[str, str] = field(default_factory=dict)
    processes: dict[str, list[float]] = field(default_factory=dict)  # name -> [pid, created]
    boot_seconds: dict[str, float] = field(default_factory=dict)
    env_file: str = ""

    @staticmethod
    def path(state_dir: Path) -> Path:
        """Where the state is saved."""
        return state_dir / "state.json"

    def save(self, state_dir: Path) -> None:
        """Write the state (mode 0600; ARNs, never a secret value)."""
        write_private_json(self.path(state_dir), asdict(self))

    @classmethod
    def load(cls, state_dir: Path) -> HostsState:
        """The state in ``state_dir``; an OpsError if none is recorded there."""
        try:
            return cls(**json.loads(cls.path(state_dir).read_text()))
        except FileNotFoundError:
            raise OpsError(
                f"no hosts twin recorded in {state_dir} (start one with `mlops twin up --hosts`)"
            ) from None


def host_packages(user_data: str) -> tuple[str, ...]:
    """The hashed pin files a host installs, in its bootstrap's order: pip and boto3's
    closure from its rendered user data, then the host lock it reads from the bucket."""
    document = yaml.safe_load(user_data)
    files = {entry["path"]: entry for entry in document["write_files"]}

    def content(path: str) -> str:
        entry = files[path]
        if entry.get("encoding") == "gz+b64":
            import base64
            import gzip

            return gzip.decompress(base64.b64decode(entry["content"])).decode()
        return str(entry["content"])

    install = hostboot.cloudconfig.INSTALL_DIR
    return (
        content(str(install / "pip-lock.txt")),
        content(str(install / "fetch-lock.txt")),
        hostboot.locks.host_lock().text,
    )


def downloader(wheelhouse: Path) -> Path:
    """A virtualenv of the containers' own interpreter (the tree's python3.11), whose pip
    downloads what that interpreter will install: environment markers such as
    ``python_full_version < "3.11.3"`` are evaluated for it, not for this process's Python."""
    venv = wheelhouse.parent / "downloader"
    python = venv / "bin" / "python"
    if not python.exists():
        result = subprocess.run(
            [CONTAINER_PYTHON, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
        )
        if result.returncode:
            raise OpsError(f"cannot make {venv} with {CONTAINER_PYTHON}: {result.stderr.strip()}")
    return python


def fill_wheelhouse(wheelhouse: Path, user_data: list[str], say: Callable[[str], None]) -> None:
    """Download the wheels every host installs, once per lock (a stamp names the locks done)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    python = downloader(wheelhouse)
    version = subprocess.run(
        [str(python), "--version"], capture_output=True, text=True, check=True
    ).stdout
    for text in user_data:
        locks = host_packages(text)
        digest = hashlib.sha256("".join((version, *locks)).encode()).hexdigest()[:16]
        stamp = wheelhouse / f".done-{digest}"
        if stamp.exists():
            continue
        say(f"wheelhouse {wheelhouse}: pip download of the host's {len(locks)} hashed locks")
        for number, lock in enumerate(locks):
            path = wheelhouse / f"lock-{digest}-{number}.txt"
            path.write_text(lock)
            result = subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--require-hashes",
                    # Each lock is a hashed closure: its wheels, exactly, nothing to resolve.
                    # Resolving, the downloader's pip (the container Python's bundled 23.2)
                    # took prefect's httpx[http2] for a requirement of its own and picked
                    # httpx 0.29.0 over the lock's 0.28.1, which --require-hashes refused.
                    "--no-deps",
                    "--only-binary=:all:",
                    "--dest",
                    str(wheelhouse),
                    "--requirement",
                    str(path),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode:
                raise OpsError(f"cannot fill the wheelhouse {wheelhouse}: {result.stderr.strip()}")
        stamp.touch()


class HostsTwin:
    """A recorded hosts twin and the operations on it."""

    def __init__(self, config: HostsConfig, state: HostsState, say: Callable[[str], None]) -> None:
        self.config = config
        self.state = state
        self.say = say
        self.nodes = topology(config)
        # What this object started (the processes `up` started belong to the `up` command).
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def node(self, name: str) -> Node:
        """The namespace ``name`` (control, worker-N, db, aws, operator)."""
        return next(node for node in self.nodes if node.name == name)

    @property
    def hosts(self) -> list[Node]:
        """The control host and the workers."""
        return [node for node in self.nodes if node.group in ("control", "worker")]

    @property
    def aws_endpoint(self) -> str:
        """moto's URL, as the hosts reach it."""
        return f"http://{self.node(STANDINS).address}:{MOTO_PORT}"

    def save(self) -> None:
        """Record the state."""
        self.state.save(self.config.state_dir)

    # -- stand-ins ----------------------------------------------------------------------

    def launch(self, name: str, namespace: str, argv: list[str]) -> None:
        """Start ``argv`` in ``namespace`` as a supervised process named ``name``."""
        process = supervisor.Process(
            argv=("ip", "netns", "exec", namespace, *argv),
            env={
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8",
                "PYTHONPATH": str(REPO_ROOT),
            },
            cwd=self.config.state_dir,
        )
        self.started(name, supervisor.launch(process, self.logs / f"{name}.log"))

    @property
    def logs(self) -> Path:
        """Where the stand-ins' and the containers' output goes."""
        return self.config.state_dir / "logs"

    def started(self, name: str, child: subprocess.Popen[bytes]) -> None:
        """Record ``child`` as the process ``name``."""
        self._children[name] = child
        self.state.processes[name] = supervisor.record(child.pid)
        self.save()

    def stopped(self, name: str) -> None:
        """Forget the process ``name``, once something stopped it (reaped if it is ours)."""
        child = self._children.pop(name, None)
        if child is not None:
            child.wait(timeout=10)
        self.state.processes.pop(name, None)
        self.save()

    def reap_children(self) -> None:
        """Wait for the processes this object started, once ``down`` has stopped them."""
        for child in self._children.values():
            child.wait(timeout=10)
        self._children.clear()

    def aws(self, service: str) -> Any:
        """A boto3 client of moto (its calls must run inside the stand-ins' namespace)."""
        return standins.aws_client(
            TwinConfig(name=self.config.name, region=self.config.region),
            self.aws_endpoint,
            service,
        )

    def start_aws(self) -> None:
        """moto and the package index in ``mlt-aws``; the bucket and the secrets in moto."""
        node = self.node(STANDINS)
        venv_bin = Path(sys.prefix) / "bin"
        self.launch(
            "moto",
            node.namespace,
            [str(venv_bin / "moto_server"), "-H", node.address, "-p", str(MOTO_PORT)],
        )
        self.start_package_index(self.config.index_refuse_seconds)

        def ready() -> bool:
            try:
                return httpx.get(self.aws_endpoint + "/", timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        self.wait("moto", "moto", lambda: hostnet.inside(node.namespace, ready), _STAND_IN_SECONDS)

        def seed() -> dict[str, str]:
            standins.create_bucket(self.aws("s3"), self.config.bucket)
            names = tuple(hostboot.control_plan(self.control_settings({})).boot.secrets)
            secretsmanager = self.aws("secretsmanager")
            arns = standins.create_secrets(secretsmanager, self.config.name, names)
            return arns | (self.create_dask_identities(secretsmanager) if self.dask else {})

        self.state.secret_arns = hostnet.inside(node.namespace, seed)
        self.save()

    @property
    def dask(self) -> bool:
        """Whether the twin's stack runs a Dask cluster (``daskWorkers`` above 0)."""
        return self.config.dask_workers > 0

    def create_dask_identities(self, secretsmanager: Any) -> dict[str, str]:
        """The Dask cluster's CA and two identities it signs, the scheduler's and the workers',
        each a secret holding JSON ``{ca, cert, key}`` as infra/dask_tls.py stores them."""
        ca = tls.authority("mlops-twin Dask CA")
        identities = {
            DASK_SCHEDULER_TLS: tls.identity(ca, "dask-scheduler", self.node("control").address),
            DASK_WORKERS_TLS: tls.identity(ca, "dask-workers"),
        }
        return {
            name: secretsmanager.create_secret(
                Name=f"{self.config.name}-{name}", SecretString=json.dumps(identity.bundle())
            )["ARN"]
            for name, identity in identities.items()
        }

    def start_package_index(self, refuse_seconds: float) -> None:
        """The package index in ``mlt-aws``, refusing connections for its first
        ``refuse_seconds``."""
        node = self.node(STANDINS)
        self.launch(
            "package-index",
            node.namespace,
            [
                sys.executable,
                "-m",
                "scripts.twin.pkgindex",
                node.address,
                str(INDEX_PORT),
                str(self.config.wheelhouse),
                str(refuse_seconds),
            ],
        )

    def secret(self, name: str) -> str:
        """A secret's value, read from moto."""
        arn = self.state.secret_arns[name]
        client = self.aws("secretsmanager")
        return str(
            hostnet.inside(
                self.node(STANDINS).namespace,
                lambda: client.get_secret_value(SecretId=arn)["SecretString"],
            )
        )

    def start_database(self) -> None:
        """A throwaway PostgreSQL cluster with TLS from a test CA, as RDS: role + first db."""
        make_test_ca(self.ca_dir, self.node(DATABASE).address)
        init_cluster(self.database_dir)
        self.run_database()
        config = TwinConfig(
            name=self.config.name, postgres_host=str(self.database_dir), postgres_port=POSTGRES_PORT
        )
        with standins.postgres(config) as conn:
            first = self.control_settings(self.state.secret_arns).mlflow_db  # RDS's db_name
            standins.create_role_and_first_database(conn, config, self.secret("db_password"), first)

    @property
    def ca_dir(self) -> Path:
        """The test CA and the database stand-in's certificate."""
        return self.config.state_dir / "ca"

    @property
    def database_dir(self) -> Path:
        """The database stand-in's cluster and socket."""
        return self.config.state_dir / "db"

    def run_database(self) -> None:
        """The database stand-in's server, on its cluster as it is; return once it answers."""
        node = self.node(DATABASE)
        self.launch(
            "postgres",
            node.namespace,
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                postgres_binary(),
                "-D",
                str(self.database_dir / "data"),
                "-c",
                f"listen_addresses={node.address}",
                "-c",
                f"port={POSTGRES_PORT}",
                "-c",
                f"unix_socket_directories={self.database_dir}",
                "-c",
                "ssl=on",
                "-c",
                f"ssl_cert_file={self.ca_dir / 'server.crt'}",
                "-c",
                f"ssl_key_file={self.ca_dir / 'server.key'}",
            ],
        )
        self.wait("PostgreSQL", "postgres", lambda: pg_ready(self.database_dir), _STAND_IN_SECONDS)

    def stop_database(self) -> None:
        """Take the database stand-in down: connections to it are refused (a fault: RDS
        rebooting, or still creating when a host boots). Its data stays."""
        self.stop_stand_in("postgres")

    def hide_secret(self, name: str) -> None:
        """Make Secrets Manager refuse to read the secret ``name`` (a fault): it is marked for
        deletion, as a secret deleted by mistake is, so GetSecretValue answers an error."""
        arn = self.state.secret_arns[name]
        client = self.aws("secretsmanager")
        hostnet.inside(
            self.node(STANDINS).namespace,
            lambda: client.delete_secret(SecretId=arn, RecoveryWindowInDays=7),
        )

    def restore_secret(self, name: str) -> None:
        """Undo :meth:`hide_secret`: the same ARN and value answer again."""
        arn = self.state.secret_arns[name]
        client = self.aws("secretsmanager")
        hostnet.inside(self.node(STANDINS).namespace, lambda: client.restore_secret(SecretId=arn))

    # -- hosts ------------------------------------------------------------------------------

    def control_settings(self, arns: dict[str, str]) -> hostboot.ControlHostSettings:
        """The control host's settings, as infra/control_host.py fills them for this stack."""
        return hostboot.ControlHostSettings(
            environment="dev",
            region=self.config.region,
            artifact_bucket=self.config.bucket,
            private_ip=self.node("control").address,
            db_host=self.node(DATABASE).address,
            db_port=POSTGRES_PORT,
            db_username=self.config.name,
            mlflow_admin_username=ADMIN_USERNAME,
            mlflow_worker_username=WORKER_USERNAME,
            **control_secret_arns(arns),
            work_pool=WORK_POOL,
            # verify-full against the stand-in's test CA, which the container gets at the
            # bundle's path (container_spec) in place of AWS's bundle fetched over HTTPS.
            db_ca_bundle_url=None,
            dask=(
                DaskSettings(tls_secret_arn=arns[DASK_SCHEDULER_TLS], tls_script=tls_files_object())
                if DASK_SCHEDULER_TLS in arns
                else None
            ),
        )

    def worker_settings(self, number: int) -> hostboot.WorkerHostSettings:
        """Worker ``number``'s settings, as infra/workers.py fills them."""
        arns = self.state.secret_arns
        return hostboot.WorkerHostSettings(
            environment="dev",
            region=self.config.region,
            artifact_bucket=self.config.bucket,
            control_private_ip=self.node("control").address,
            work_pool=WORK_POOL,
            worker_name=f"{self.config.name}-worker-{number}",
            mlflow_worker_username=WORKER_USERNAME,
            mlflow_worker_password_secret_arn=arns["mlflow_worker_password"],
            prefect_auth_string_secret_arn=arns["prefect_auth_string"],
            dask=(
                DaskSettings(
                    tls_secret_arn=arns[DASK_WORKERS_TLS],
                    tls_script=tls_files_object(),
                    run_worker=number <= self.config.dask_workers,
                    memory_limit=DASK_WORKER_MEMORY,
                )
                if self.dask
                else None
            ),
        )

    def user_data(self) -> dict[str, str]:
        """Each host's rendered user data, by host name."""
        rendered = {
            "control": hostboot.render_control_user_data(
                self.control_settings(self.state.secret_arns)
            )
        }
        for number in range(1, self.config.workers + 1):
            rendered[f"worker-{number}"] = hostboot.render_worker_user_data(
                self.worker_settings(number)
            )
        return rendered

    def container_spec(self, host: str, user_data: str) -> containers.ContainerSpec:
        """What ``host``'s container is made of."""
        ca_file = self.control_settings(self.state.secret_arns).db_ca_file
        return containers.ContainerSpec(
            host=host,
            user_data=user_data,
            aws_endpoint=self.aws_endpoint,
            package_index=f"http://{self.node(STANDINS).address}:{INDEX_PORT}/",
            ca_bundle=(self.ca_dir / "ca.crt").read_text(),
            ca_bundle_path=ca_file,
        )

    def boot_hosts(self) -> None:
        """Prepare and boot every host container; start its IMDS stand-in first."""
        for host, text in self.user_data().items():
            node = self.node(host)
            self.launch(
                f"imds-{host}",
                node.namespace,
                [sys.executable, "-m", "scripts.twin.imds", f"mlops-twin-{host}",
                 self.config.region, f"i-{host}"],
            )  # fmt: skip
            spec = self.container_spec(host, text)
            self.boot_container(spec, containers.prepare(spec, self.host_dir(host)))

    def host_dir(self, host: str) -> Path:
        """Where ``host``'s disk (its overlay) lives."""
        return self.config.state_dir / "hosts" / host

    def boot_container(self, spec: containers.ContainerSpec, root: Path) -> None:
        """Boot ``spec``'s container on ``root``; return once its systemd runs."""
        name = f"host-{spec.host}"
        self.started(name, containers.boot(spec, root, self.logs / f"{spec.host}.log"))

        def problem() -> str:
            if supervisor.recorded_process(self.state.processes[name]) is not None:
                return ""
            log = supervisor.log_tail(self.logs / f"{spec.host}.log")
            return f"systemd-nspawn exited; the end of its log:\n{log}"

        supervisor.wait_for(
            f"the container of {spec.host} did not start",
            lambda: self.container_init(spec.host) is not None,
            _STAND_IN_SECONDS,
            alive=problem,
        )

    def stop_container(self, host: str) -> None:
        """Power ``host``'s container off (if it runs)."""
        name = f"host-{host}"
        recorded = supervisor.recorded_process(self.state.processes.get(name))
        if recorded is not None:
            containers.stop(recorded)
        self.stopped(name)

    def container_init(self, host: str) -> int | None:
        """PID 1 of ``host``'s container as the machine sees it, None if it does not run."""
        process = supervisor.recorded_process(self.state.processes.get(f"host-{host}"))
        return containers.leader(process.pid) if process else None

    def leader(self, host: str) -> int:
        """PID 1 of ``host``'s container, as the machine sees it."""
        init = self.container_init(host)
        if init is None:
            raise OpsError(f"the container of {host} is not running")
        return init

    def units(self, host: str) -> dict[str, str]:
        """The host's rendered service units and their ActiveState."""
        shown = self.unit_properties(host, "ActiveState")
        return {name: props.get("ActiveState", "unknown") for name, props in shown.items()}

    def unit_properties(self, host: str, *properties: str) -> dict[str, dict[str, str]]:
        """``properties`` of each of ``host``'s rendered service units (``systemctl show``)."""
        names = [f"{spec.name}.service" for spec in self.plan_services(host)]
        shown = containers.in_container(
            self.leader(host), "systemctl", "show", f"--property=Id,{','.join(properties)}", *names
        )
        found = {}
        for block in shown.stdout.strip().split("\n\n"):
            fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if "Id" in fields:
                found[fields.pop("Id")] = fields
        return {name: found.get(name, {}) for name in names}

    def resident_memory(self, host: str) -> dict[str, float]:
        """Resident memory (MiB) of each unit running on ``host``."""
        shown = containers.in_container(self.leader(host), "ps", "-e", "-o", "unit=,rss=")
        return memory_by_unit(shown.stdout)

    def upload(self, path: Path, key: str) -> None:
        """Put a local file into the twin's bucket (from the stand-ins' namespace)."""
        s3 = self.aws("s3")
        hostnet.inside(
            self.node(STANDINS).namespace,
            lambda: s3.upload_file(str(path), self.config.bucket, key),
        )

    def upload_boot_objects(self) -> None:
        """What the Pulumi program uploads for the hosts to fetch by digest (host lock, boot
        script), into the twin's bucket under the same keys."""
        s3 = self.aws("s3")

        objects = hostboot.boot_objects()
        if self.dask:  # as infra/__main__.py adds it
            objects[tls_files_object().key] = tls_files_object().text.encode()

        def put_all() -> None:
            for key, body in objects.items():
                s3.put_object(Bucket=self.config.bucket, Key=key, Body=body)

        hostnet.inside(self.node(STANDINS).namespace, put_all)

    def reboot(self, host: str) -> None:
        """Power ``host`` off and boot it again on the same disk (its overlay), as a reboot of
        the instance; wait until its units are active again."""
        self.stop_container(host)
        self.boot_container(
            self.container_spec(host, self.user_data()[host]), self.host_dir(host) / "root"
        )
        self.wait_hosts(time.monotonic(), only=(host,))

    def replace(self, host: str, *, wait: bool = True) -> None:
        """Replace ``host`` by a fresh instance from the same user data (a new, empty disk),
        as a replaced EC2 instance boots; wait until its units are active unless told not to."""
        self.stop_container(host)
        containers.unmount(str(self.host_dir(host) / "root"))
        remove_tree(self.host_dir(host))
        spec = self.container_spec(host, self.user_data()[host])
        self.boot_container(spec, containers.prepare(spec, self.host_dir(host)))
        if wait:
            self.wait_hosts(time.monotonic(), only=(host,))

    def stop_package_index(self) -> None:
        """Take the package index down: connections to it are refused (a fault)."""
        self.stop_stand_in("package-index")

    def stop_stand_in(self, name: str) -> None:
        """Stop the stand-in process ``name`` (and its children), if it runs."""
        recorded = supervisor.recorded_process(self.state.processes.get(name))
        if recorded is not None:
            supervisor.stop_tree(recorded, supervisor.StopPolicy(timeout_seconds=10.0))
        self.stopped(name)

    def plan_services(self, host: str) -> tuple[hostboot.ServiceSpec, ...]:
        """The services ``host`` runs."""
        if host == "control":
            return hostboot.control_plan(self.control_settings(self.state.secret_arns)).services
        return hostboot.worker_plan(self.worker_settings(int(host.split("-")[1]))).services

    def wait_hosts(self, started: float, only: tuple[str, ...] = ()) -> None:
        """Wait until every host (or those in ``only``) has all its units active; record each
        one's boot time."""
        pending = set(only) or {node.name for node in self.hosts}
        deadline = time.monotonic() + _READY_SECONDS
        while pending:
            for host in sorted(pending):
                states = self.units(host)
                failed = [unit for unit, state in states.items() if state == "failed"]
                if failed:
                    raise OpsError(
                        f"{host}: {', '.join(failed)} failed (see `mlops twin status --hosts`)"
                    )
                if all(state == "active" for state in states.values()):
                    self.state.boot_seconds[host] = round(time.monotonic() - started, 1)
                    self.say(f"{host}: all units active after {self.state.boot_seconds[host]} s")
                    pending.discard(host)
            if pending and time.monotonic() > deadline:
                raise OpsError(
                    f"{', '.join(sorted(pending))}: not all units active in {_READY_SECONDS:.0f} s"
                )
            time.sleep(2.0)
        self.save()

    def wait(self, what: str, process: str, ready: Callable[[], bool], seconds: float) -> None:
        """Wait for a stand-in; fail early, with its log, if its process exits."""
        log = self.config.state_dir / "logs" / f"{process}.log"

        def alive() -> str:
            if supervisor.recorded_process(self.state.processes.get(process)) is None:
                return f"the process exited; the end of {log}:\n{supervisor.log_tail(log)}"
            return ""

        supervisor.wait_for(f"{what} did not come up", ready, seconds, alive=alive)

    def env(self) -> dict[str, str]:
        """The operator's variables: as ``mlops env`` writes them, plus moto's endpoint."""
        control = self.node("control").address
        outputs = {
            "region": self.config.region,
            "artifact_bucket": self.config.bucket,
            "mlflow_tracking_uri": f"http://{control}:5000",
            "prefect_api_url": f"http://{control}:4200/api",
            "mlflow_admin_username": ADMIN_USERNAME,
            "mlflow_admin_password": self.secret("mlflow_admin_password"),
            "prefect_api_auth_string": self.secret("prefect_auth_string"),
        }
        return {
            **env_from_outputs(outputs, tunnel=None),
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            **DUMMY_AWS_CREDENTIALS,
        }

    def bring_up(self, env_file: Path) -> None:
        """Network, stand-ins, hosts; the env file once every host serves."""
        started = time.monotonic()
        self.say(
            f"network: {len(self.nodes)} namespaces on {hostnet.BRIDGE}, "
            "security groups in nftables"
        )
        hostnet.create_bridge()
        for node in self.nodes:
            hostnet.attach(node, self.config.network)
        rules = ingress_rules(self.nodes, dask=self.dask)
        for node in self.nodes:
            hostnet.enforce(node, hostnet.ingress_ruleset(node, self.nodes, rules))
        self.say("stand-ins: moto, the package index, PostgreSQL with TLS")
        self.start_aws()
        self.upload_boot_objects()
        fill_wheelhouse(self.config.wheelhouse, list(self.user_data().values()), self.say)
        self.start_database()
        self.say(
            f"hosts: {', '.join(node.name for node in self.hosts)} booting from their user data"
        )
        self.boot_hosts()
        self.wait_hosts(started)
        write_env_file(env_file, self.env())
        self.state.env_file = str(env_file.resolve())
        self.save()


def make_test_ca(directory: Path, address: str) -> dict[str, Path]:
    """A test CA and a server certificate for ``address`` (openssl), readable by postgres."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        name: directory / name
        for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    }
    commands = [
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=mlops-twin test CA",
            "-keyout",
            str(paths["ca.key"]),
            "-out",
            str(paths["ca.crt"]),
        ],
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={address}",
            "-addext",
            f"subjectAltName=IP:{address}",
            "-keyout",
            str(paths["server.key"]),
            "-out",
            str(paths["server.csr"]),
        ],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(paths["server.csr"]),
            "-CA",
            str(paths["ca.crt"]),
            "-CAkey",
            str(paths["ca.key"]),
            "-CAcreateserial",
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-out",
            str(paths["server.crt"]),
        ],
    ]
    for argv in commands:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode:
            raise OpsError(f"openssl failed making the test CA: {result.stderr.strip()}")
    shutil.chown(paths["server.key"], "postgres", "postgres")
    paths["server.key"].chmod(0o600)
    return paths


def postgres_binary() -> str:
    """The machine's ``postgres`` server binary."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise OpsError(
            "no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)"
        )
    return str(found[-1])


def init_cluster(directory: Path) -> None:
    """``initdb`` a cluster owned by postgres: TLS only from outside (hostssl), trust on its
    socket (the certificate paths go on the server's command line)."""
    data = directory / "data"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.chown(directory, "postgres", "postgres")
    initdb = Path(postgres_binary()).with_name("initdb")
    result = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(initdb),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=reject",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise OpsError(f"initdb failed: {result.stderr.strip()}")
    hba = data / "pg_hba.conf"
    hba.write_text(
        "local all postgres trust\n"
        "hostssl all all 0.0.0.0/0 scram-sha-256\n"  # RDS forces TLS: plain TCP is refused
    )


def pg_ready(directory: Path) -> bool:
    """Whether the cluster accepts connections on its socket."""
    pg_isready = Path(postgres_binary()).with_name("pg_isready")
    return (
        subprocess.run([str(pg_isready), "-q", "-h", str(directory)], check=False).returncode == 0
    )


def up(
    config: HostsConfig, env_file: Path, say: Callable[[str], None] = lambda _: None
) -> HostsTwin:
    """Bring a hosts twin up; on failure, remove everything it made."""
    if HostsState.path(config.state_dir).exists() or hostnet.namespaces():
        raise OpsError(
            f"a hosts twin is already recorded in {config.state_dir} or mlt- namespaces exist: "
            "stop it with `mlops twin down --hosts`"
        )
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.state_dir.chmod(0o711)  # postgres (another user) reads its cluster below it
    state = HostsState(
        config={
            **asdict(config),
            "state_dir": str(config.state_dir),
            "wheelhouse": str(config.wheelhouse),
        }
    )
    twin = HostsTwin(config, state, say)
    twin.save()
    try:
        twin.bring_up(env_file)
    except BaseException:
        with suppress(OpsError):
            down(config.state_dir)
        raise
    return twin


def load(state_dir: Path, say: Callable[[str], None] = lambda _: None) -> HostsTwin:
    """The hosts twin recorded in ``state_dir``."""
    state = HostsState.load(state_dir)
    fields = {
        **state.config,
        "state_dir": Path(state.config["state_dir"]),
        "wheelhouse": Path(state.config["wheelhouse"]),
    }
    return HostsTwin(HostsConfig(**fields), state, say)


def down(state_dir: Path) -> list[str]:
    """Remove every container, mount, namespace (with its links and rules) and process of
    the twin: those recorded in ``state_dir`` and any other ``mlt-`` one (after a crash)."""
    removed = []
    for machine, process in containers.nspawn_processes().items():
        containers.stop(process)
        removed.append(f"container {machine}")
    with suppress(OpsError):
        state = HostsState.load(state_dir)
        for name, recorded in state.processes.items():
            process = supervisor.recorded_process(recorded)
            if process is not None:
                supervisor.stop_tree(process, supervisor.StopPolicy(timeout_seconds=10.0))
                removed.append(f"process {name}")
    for point in containers.mounts():
        containers.unmount(point)
        removed.append(f"mount {point}")
    removed += [f"namespace {ns}" for ns in hostnet.remove_all()]
    for entry in ("state.json", "hosts", "db", "ca"):
        path = state_dir / entry
        if path.is_dir():
            remove_tree(path)
        else:
            path.unlink(missing_ok=True)
    return removed


def remove_tree(path: Path) -> None:
    """Delete ``path`` and what is under it, never crossing into another file system (an
    overlay still mounted). ``rm``: a host's disk is tens of thousands of files (its
    virtualenv), which Python's rmtree takes minutes to walk on a busy machine."""
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


def status(state_dir: Path) -> tuple[list[str], bool]:
    """Each host's units and their state; whether all are active."""
    twin = load(state_dir)
    lines, healthy = [], True
    for node in twin.hosts:
        try:
            units = twin.units(node.name)
            memory = twin.resident_memory(node.name)
        except OpsError as exc:
            lines.append(f"{node.name} ({node.address}): {exc}")
            healthy = False
            continue
        for unit, state in units.items():
            shown = f"{memory[unit]:.0f} MiB" if unit in memory else "-"
            lines.append(f"{node.name} ({node.address})  {unit:<24} {state:<10} {shown}")
            healthy = healthy and state == "active"
    return lines, healthy


def memory_by_unit(ps_output: str) -> dict[str, float]:
    """Resident memory in MiB per systemd unit, from ``ps -e -o unit=,rss=`` (RSS in KiB;
    processes of no unit, ``-``, left out). Summed over each unit's processes: a service's
    workers are its own. (The containers get no memory controller, so systemd's
    ``MemoryCurrent`` is not set there.)"""
    memory: dict[str, float] = {}
    for line in ps_output.splitlines():
        unit, _, rss = line.strip().rpartition(" ")
        unit = unit.strip()
        if unit and unit != "-" and rss.isdigit():
            memory[unit] = memory.get(unit, 0.0) + int(rss) / 1024
    return memory
