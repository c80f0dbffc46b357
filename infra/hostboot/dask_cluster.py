"""The Dask cluster's host services, rendered only when the stack's ``daskWorkers`` is above 0.

- Control host: ``dask-scheduler`` (TLS only, on the private address; its dashboard on the
  host's loopback, reached through the SSM tunnel), as its own user ``dask``, refused the
  instance metadata like the Prefect server (it needs no AWS API).
- The first ``daskWorkers`` worker hosts: ``dask-worker``, one worker process (with its
  nanny) on fixed port ranges, memory-limited below the host's memory so that the Prefect
  worker and the flow-run process keep room. It reads training months from the bucket with
  the instance role, like the flow runs.
- Every worker host: the Prefect worker's flow runs are the cluster's clients. They inherit
  Dask's TLS settings (``DASK_DISTRIBUTED__COMM__TLS__*``: distributed's ``Security()`` reads
  them) and the tracker port xgboost's collective must use.

TLS: the Pulumi program generates one CA and two identities it signs, the scheduler's and the
workers' (the worker hosts' Dask workers and clients share it: distributed checks a peer's
certificate against the CA, not its name). Each identity is a Secrets Manager secret holding
JSON ``{"ca", "cert", "key"}`` in PEM. A unit using one fetches it as root before it starts
(``ExecStartPre=+``): ``fetch.py`` reads ``tls_files.py`` from the bucket by digest (the
control host's user data has no room for one more script), which writes ``ca.pem``,
``cert.pem`` and ``key.pem`` 0640 root:``dask-tls`` into ``/etc/mlops/dask``. The units
reading them (and only those) carry ``SupplementaryGroups=dask-tls``. The boot step is left
alone: its script's digest is in every host's user data, so a change would replace every
host of every stack, Dask or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from hostboot.locks import BootObject
from hostboot.names import (
    DASK_DASHBOARD_PORT,
    DASK_NANNY_PORTS,
    DASK_SCHEDULER_PORT,
    DASK_TRACKER_PORT,
    DASK_WORKER_PORTS,
)
from hostboot.services import HostLayout, ServiceSpec, base_environment

if TYPE_CHECKING:
    from hostboot import ControlHostSettings, WorkerHostSettings

USER = "dask"
TLS_GROUP = "dask-tls"  # may read the host's Dask TLS identity
TLS_FILES_SCRIPT = Path(__file__).resolve().parent / "tls_files.py"
# What a worker host keeps besides its Dask worker: the OS, the Prefect worker and the
# flow-run process (the driver peaks near 350 MiB: bench/results/dask-memory-*.json).
HOST_RESERVE_MIB = 1536
MIN_WORKER_MIB = 1024  # a Dask worker carries ~330 MiB of libraries before any data
# Memory of the burstable sizes; other families by GiB per vCPU of their class letter.
_BURSTABLE_MIB = {
    "nano": 512,
    "micro": 1024,
    "small": 2048,
    "medium": 4096,
    "large": 8192,
    "xlarge": 16384,
    "2xlarge": 32768,
}
_GIB_PER_VCPU = {"c": 2, "m": 4, "r": 8, "x": 16}
_TYPE = re.compile(r"(?P<family>[a-z][a-z0-9-]*)\.(?P<size>[0-9]*[a-z]+)")


@dataclass(frozen=True, kw_only=True)
class DaskSettings:
    """A host's part in the stack's Dask cluster (``None`` in a host's settings: no Dask)."""

    tls_secret_arn: str  # this host's TLS identity (JSON: ca, cert, key)
    tls_script: BootObject  # tls_files.py, read from the bucket by digest
    run_worker: bool = False  # worker hosts: run a Dask worker (the first daskWorkers hosts)
    memory_limit: str = "auto"  # the Dask worker's --memory-limit
    # The stack's fixed ports (the security groups open these); the process twin, whose
    # hosts share one machine's loopback, gives free ones so that two twins do not collide.
    scheduler_port: int = DASK_SCHEDULER_PORT
    dashboard_port: int = DASK_DASHBOARD_PORT
    tracker_port: int = DASK_TRACKER_PORT
    worker_ports: tuple[int, int] = DASK_WORKER_PORTS
    nanny_ports: tuple[int, int] = DASK_NANNY_PORTS


def tls_files_object() -> BootObject:
    """``tls_files.py`` as the program uploads it next to the host lock."""
    return BootObject(name=TLS_FILES_SCRIPT.name, text=TLS_FILES_SCRIPT.read_text())


def instance_memory_mib(instance_type: str) -> int | None:
    """The memory of ``instance_type`` where its name tells it (t*, c*, m*, r*, x*), else None."""
    match = _TYPE.fullmatch(instance_type)
    if match is None:
        return None
    family, size = match["family"], match["size"]
    if family in ("t2", "t3", "t3a"):
        return _BURSTABLE_MIB.get(size)
    per_vcpu = _GIB_PER_VCPU.get(family[0])
    vcpus = {"medium": 1, "large": 2, "xlarge": 4}.get(size)
    if size.endswith("xlarge") and size[:-6].isdigit():
        vcpus = 4 * int(size[:-6])
    if per_vcpu is None or vcpus is None:
        return None
    return per_vcpu * 1024 * vcpus


def worker_memory_limit(instance_type: str) -> str:
    """The Dask worker's ``--memory-limit``: the host's memory less ``HOST_RESERVE_MIB``.

    A type whose memory the name does not tell gets a fraction (60 %, computed by Dask from
    the host's memory). Raises ValueError, saying why, for a host too small to share.
    """
    memory = instance_memory_mib(instance_type)
    if memory is None:
        return "0.6"
    limit = memory - HOST_RESERVE_MIB
    if limit < MIN_WORKER_MIB:
        raise ValueError(
            f"{instance_type} ({memory} MiB): a Dask worker needs "
            f"{MIN_WORKER_MIB + HOST_RESERVE_MIB} MiB or more (t3.medium has 4096)"
        )
    return f"{limit}MiB"


def tls_dir(layout: HostLayout) -> PurePosixPath:
    """Where a host's Dask TLS identity is written."""
    return layout.config_dir / "dask"


def tls_paths(layout: HostLayout) -> dict[str, str]:
    """The CA, certificate and key files by role."""
    return {name: str(tls_dir(layout) / f"{name}.pem") for name in ("ca", "cert", "key")}


def tls_arguments(layout: HostLayout) -> tuple[str, ...]:
    """The ``dask scheduler`` / ``dask worker`` options naming the TLS files."""
    paths = tls_paths(layout)
    return ("--tls-ca-file", paths["ca"], "--tls-cert", paths["cert"], "--tls-key", paths["key"])


def client_environment(layout: HostLayout, dask: DaskSettings) -> dict[str, str]:
    """What the cluster's clients need: distributed's TLS settings, xgboost's tracker port."""
    paths = tls_paths(layout)
    prefix = "DASK_DISTRIBUTED__COMM__TLS__"
    return {
        f"{prefix}CA_FILE": paths["ca"],
        f"{prefix}CLIENT__CERT": paths["cert"],
        f"{prefix}CLIENT__KEY": paths["key"],
        "MLOPS_XGBOOST_TRACKER_PORT": str(dask.tracker_port),
    }


def tls_pre_start(
    dask: DaskSettings, layout: HostLayout, *, region: str, bucket: str
) -> tuple[tuple[str, ...], ...]:
    """The root steps before a unit using the identity starts: fetch the script, run it."""
    script = layout.scripts_dir / dask.tls_script.name
    python = layout.bin("python")
    fetch = (
        python,
        str(layout.scripts_dir / "fetch.py"),
        region,
        bucket,
        dask.tls_script.key,
        dask.tls_script.sha256,
        str(script),
    )
    write = (python, str(script), region, dask.tls_secret_arn, str(tls_dir(layout)), TLS_GROUP)
    return (fetch, write)


def _ports(ports: tuple[int, int]) -> str:
    """A port range as ``dask worker`` takes it (one port alone: it refuses ``N:N``)."""
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}:{ports[1]}"


def scheduler_service(
    settings: ControlHostSettings, dask: DaskSettings, layout: HostLayout
) -> ServiceSpec:
    """The scheduler on the control host's private address, TLS only."""
    home = layout.home(USER)
    return ServiceSpec(
        name="dask-scheduler",
        description="Dask scheduler (TLS only; dashboard on the host's loopback)",
        user=USER,
        argv=(
            layout.bin("dask"),
            "scheduler",
            "--protocol",
            "tls",
            "--host",
            settings.private_ip,
            "--port",
            str(dask.scheduler_port),
            "--dashboard-address",
            f"127.0.0.1:{dask.dashboard_port}",
            *tls_arguments(layout),
        ),
        environment={
            **base_environment(layout, USER, settings.region),
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true",
            "DASK_TEMPORARY_DIRECTORY": str(home / "scratch"),
        },
        secret_environment={},
        env_file=layout.config_dir / "dask-scheduler.env",
        working_directory=home,
        imds_firewall=layout.imds_firewall,  # it needs no AWS API
        supplementary_groups=(TLS_GROUP,),
        root_pre_start=tls_pre_start(
            dask, layout, region=settings.region, bucket=settings.artifact_bucket
        ),
    )


def worker_service(
    settings: WorkerHostSettings, dask: DaskSettings, layout: HostLayout
) -> ServiceSpec:
    """One Dask worker process (and its nanny) of the stack's cluster."""
    home = layout.home(USER)
    return ServiceSpec(
        name="dask-worker",
        description=f"Dask worker {settings.worker_name} (TLS only)",
        user=USER,
        argv=(
            layout.bin("dask"),
            "worker",
            f"tls://{settings.control_private_ip}:{dask.scheduler_port}",
            "--name",
            settings.worker_name,
            "--nworkers",
            "1",
            "--memory-limit",
            dask.memory_limit,
            "--worker-port",
            _ports(dask.worker_ports),
            "--nanny-port",
            _ports(dask.nanny_ports),
            "--no-dashboard",
            "--local-directory",
            str(home / "scratch"),
            *tls_arguments(layout),
        ),
        environment={
            **base_environment(layout, USER, settings.region),
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true",
        },
        secret_environment={},
        env_file=layout.config_dir / "dask-worker.env",
        working_directory=home,
        supplementary_groups=(TLS_GROUP,),
        root_pre_start=tls_pre_start(
            dask, layout, region=settings.region, bucket=settings.artifact_bucket
        ),
    )


def as_dask_client(
    prefect_worker: ServiceSpec,
    settings: WorkerHostSettings,
    dask: DaskSettings,
    layout: HostLayout,
) -> ServiceSpec:
    """The Prefect worker, whose flow runs are the cluster's clients: the TLS identity fetched
    before it starts and readable by its user, distributed's TLS settings in its environment."""
    return replace(
        prefect_worker,
        environment={**prefect_worker.environment, **client_environment(layout, dask)},
        supplementary_groups=(*prefect_worker.supplementary_groups, TLS_GROUP),
        root_pre_start=tls_pre_start(
            dask, layout, region=settings.region, bucket=settings.artifact_bucket
        ),
    )
