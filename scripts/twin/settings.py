"""The twin's settings and recorded state: what a twin is made of, and what ``up`` wrote down.

Shared by both modes: the process twin (services on loopback, for laptops) and the hosts twin
(the rendered hosts booted in containers, Linux as root). Nothing here starts a process.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

from hostboot.dask_cluster import worker_memory_limit

from scripts.common import REPO_ROOT, OpsError
from scripts.envfile import write_private

DEFAULT_STATE_DIR = REPO_ROOT / ".twin"
DEFAULT_NAME = "mlops_twin"
SERVICES = ("s3", "mlflow", "prefect-server", "prefect-worker")  # every twin's
DASK_SCHEDULER = "dask-scheduler"
MAX_DASK_WORKERS = 8  # processes on one machine, each ~330 MiB before any data
# A Dask worker's memory ceiling in a twin (both modes share the machine's memory): what
# the stack gives a t3.medium worker host (4 GiB less the host's reserve: 2560 MiB).
DASK_WORKER_MEMORY = worker_memory_limit("t3.medium")
WORKER_USERNAME = "worker"  # the workers' MLflow user (never the admin)
LOOPBACK = "127.0.0.1"
# The emulator accepts any credentials; these dummies stand in for the instance profile.
DUMMY_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "twin", "AWS_SECRET_ACCESS_KEY": "twin"}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_SECRET_ALPHABET = string.ascii_letters + string.digits


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
    # The stack's daskWorkers: 0, no Dask; else a TLS scheduler and this many Dask workers.
    dask_workers: int = 0

    def __post_init__(self) -> None:
        """Refuse a name PostgreSQL and the bucket would not take, a Dask worker count out of
        range."""
        if not _NAME.fullmatch(self.name):
            raise OpsError(
                f"twin name {self.name!r} is not valid: use 1-40 lower-case letters, digits "
                "and '_', starting with a letter (it names the PostgreSQL role and databases)"
            )
        if not 0 <= self.dask_workers <= MAX_DASK_WORKERS:
            raise OpsError(
                f"dask workers: use 0 (no Dask) to {MAX_DASK_WORKERS} (processes on this "
                f"machine), not {self.dask_workers}"
            )

    @property
    def services(self) -> tuple[str, ...]:
        """The twin's services in start order: with Dask, the scheduler and each Dask worker
        before the Prefect worker (whose flow runs are the cluster's clients)."""
        if not self.dask_workers:
            return SERVICES
        dask = (DASK_SCHEDULER, *(dask_worker(number) for number in range(self.dask_workers)))
        return (*SERVICES[:-1], *dask, SERVICES[-1])

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


class ControlSecretArns(TypedDict):
    """The control host settings' ``<name>_secret_arn`` fields: the secrets its boot step
    fetches, which both twin modes fill from the ARNs their emulator created. A TypedDict, so
    that ``ControlHostSettings(..., **control_secret_arns(arns))`` is type-checked by field."""

    db_password_secret_arn: str
    mlflow_db_password_secret_arn: str
    mlflow_auth_db_password_secret_arn: str
    prefect_db_password_secret_arn: str
    mlflow_admin_password_secret_arn: str
    mlflow_worker_password_secret_arn: str
    mlflow_flask_secret_key_secret_arn: str
    prefect_auth_string_secret_arn: str


def control_secret_arns(arns: Mapping[str, str]) -> ControlSecretArns:
    """The control host settings' secret ARN fields from the emulator's ARNs (keyed by the
    secret's name: ``db_password``, ...; one not created is an empty ARN)."""
    return ControlSecretArns(
        db_password_secret_arn=arns.get("db_password", ""),
        mlflow_db_password_secret_arn=arns.get("mlflow_db_password", ""),
        mlflow_auth_db_password_secret_arn=arns.get("mlflow_auth_db_password", ""),
        prefect_db_password_secret_arn=arns.get("prefect_db_password", ""),
        mlflow_admin_password_secret_arn=arns.get("mlflow_admin_password", ""),
        mlflow_worker_password_secret_arn=arns.get("mlflow_worker_password", ""),
        mlflow_flask_secret_key_secret_arn=arns.get("mlflow_flask_secret_key", ""),
        prefect_auth_string_secret_arn=arns.get("prefect_auth_string", ""),
    )


def write_private_json(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` atomically with mode 0600."""
    write_private(path, json.dumps(data, indent=1))


def new_secret() -> str:
    """A random alphanumeric secret, as the stack's pulumi-random resources make them."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))


def dask_worker(number: int) -> str:
    """The twin's service name of Dask worker ``number`` (from 0)."""
    return f"dask-worker-{number}"


def check_service(name: str, services: tuple[str, ...] = SERVICES) -> None:
    """Refuse a service name the twin does not run."""
    if name not in services:
        raise OpsError(f"unknown twin service {name!r}; the twin runs {', '.join(services)}")
