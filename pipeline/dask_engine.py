"""The Dask engine: a training window read, featurised and trained on by a Dask cluster.

No Prefect imports, like every stage module: the flow's ``train-on-dask`` task wires it.

- **Cluster**: an existing scheduler (``dask_address``, ``tcp://`` or ``tls://``), or a
  ``LocalCluster`` of ``dask_workers`` processes started for the run and stopped after it.
  A ``tls://`` scheduler is reached with distributed's ``Security`` from Dask's
  configuration, which a stack's worker hosts set for their flow runs
  (``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``, ``..._CLIENT__CERT``, ``..._CLIENT__KEY``: the
  host's identity in ``/etc/mlops/dask``); their ``MLOPS_XGBOOST_TRACKER_PORT`` is the one
  port their firewall opens for xgboost's tracker on the scheduler's host. The workers of an
  existing cluster get this run's ``pipeline`` when theirs differs (:func:`share_pipeline`).
- **Turns**: runs on an existing cluster take turns (:func:`cluster_turn`, one lease of a
  ``distributed.Semaphore`` named ``mlops-cluster``), from before :func:`share_pipeline`
  (which may restart the workers) until their work on the cluster ends: xgboost's tracker
  port and the workers' imported ``pipeline`` are the cluster's, one run's at a time. A
  local cluster started for the run is its own and takes no turn.
- **Data**: each training month is one partition, loaded on a worker by the same
  :func:`pipeline.data.load_month` as the local engine (cache, download, checksum and schema
  checks included), from a local directory the workers share or from ``s3://``. The driver
  receives only each month's :class:`~pipeline.data.MonthSummary` (rows, digest) for MLflow.
- **Features**: :func:`pipeline.features.labeled_frame` per partition (``map_partitions``);
  the zones keep the fixed categorical 1..265, so every partition's categories are known.
- **Training**: ``xgboost.dask.train`` with the :class:`~pipeline.train.TrainConfig`'s
  parameters and early stopping on the validation month, which the driver loaded (one month)
  and ships to the cluster. The booster returned is the plain ``xgboost.Booster`` the local
  engine logs, cut to its best round.
- **Evaluation**: predictions and the baseline's zone-pair means are computed on the
  cluster; only a month of predictions and at most 265 x 265 means come back.

Dask and xgboost are imported when a run uses this engine: the local engine never pays for them.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.data import MonthData, MonthSummary, load_month
from pipeline.errors import PipelineError
from pipeline.evaluate import Evaluation, baseline_from_means, evaluation_of, zone_pair_key
from pipeline.features import (
    FEATURES,
    MAX_MINUTES,
    MIN_MINUTES,
    TARGET,
    ZONE_DTYPE,
    LabeledSet,
    labeled_frame,
    make_features,
)
from pipeline.parameters import TrainingParameters
from pipeline.schema import DROPOFF_ZONE, PICKUP_ZONE
from pipeline.train import TrainConfig

# Imported here, at the top of the module a Dask worker imports to run the engine's first task
# (loading a month), so that the workers import XGBoost without scikit-learn as the driver
# does (pipeline.xgb: some 60 MiB less in every worker process).
from pipeline.xgb import xgboost as _xgboost  # noqa: F401

if TYPE_CHECKING:
    import xgboost as xgb
    from distributed import Client, Semaphore
    from distributed.security import Security
    from xgboost.collective import Config as CollectiveConfig

# Long enough for a scheduler on another host to answer; short enough that a wrong address
# fails the run at once rather than after training would have started.
CONNECT_TIMEOUT_SECONDS = 20
_PAIR = "zone_pair"
# Dask's TLS settings a client needs (config key -> the environment variable that sets it).
TLS_SETTINGS = {
    "distributed.comm.tls.ca-file": "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
    "distributed.comm.tls.client.cert": "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
    "distributed.comm.tls.client.key": "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
}
TRACKER_PORT_VARIABLE = "MLOPS_XGBOOST_TRACKER_PORT"
# The scheduler's semaphore (one lease) that runs on a cluster they were given take in turns,
# and the scheduler metadata key where the run holding it says who it is.
CLUSTER_TURN = "mlops-cluster"
HOLDER_KEY = "mlops-cluster-holder"
# A waiting run asks the scheduler for the turn this long at a time, then checks who holds it.
_WAIT_SLICE_SECONDS = 30.0
# How long a run waits for the fixed tracker port to be free on the scheduler's host (the
# previous run's tracker closes it as its training ends) before it fails naming the port.
TRACKER_PORT_WAIT_SECONDS = 60.0

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DaskResult:
    """What the cluster produced: the booster, its evaluation and the months it trained on."""

    booster: xgb.Booster
    evaluation: Evaluation
    months: list[MonthSummary]


@contextmanager
def connect(
    parameters: TrainingParameters,
    *,
    holder: str = "a training run",
    log: Callable[[str], None] | None = None,
) -> Iterator[Client]:
    """A client of the run's cluster: ``dask_address``'s, its turn taken and this run's
    ``pipeline`` on its workers (:func:`shared_cluster`); or a local one started for the run.

    ``holder`` says who this run is to a run waiting for the cluster; ``log`` (default: this
    module's logger) receives the lines about waiting.
    """
    from distributed import Client, LocalCluster

    if parameters.dask_address is not None:
        with shared_cluster(
            parameters.dask_address,
            holder=holder,
            wait_seconds=parameters.dask_wait_seconds,
            log=log,
        ) as client:
            yield client
        return
    workers = parameters.dask_workers or 1
    memory_limit = parameters.dask_memory_limit or "auto"
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=max(1, (os.cpu_count() or 1) // workers),
        memory_limit=memory_limit,
        processes=True,
        dashboard_address=None,  # no dashboard for a cluster that lives as long as one run
    )
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


@contextmanager
def shared_cluster(
    address: str,
    *,
    holder: str,
    wait_seconds: float,
    log: Callable[[str], None] | None = None,
) -> Iterator[Client]:
    """A client of the existing cluster at ``address``, holding its turn (:func:`cluster_turn`,
    waiting up to ``wait_seconds`` for it), its workers running this process's ``pipeline``
    (:func:`share_pipeline`, under the turn: it may restart them)."""
    from distributed import Client

    security = tls_security(address)
    try:
        client = Client(
            address,
            timeout=CONNECT_TIMEOUT_SECONDS,
            set_as_default=False,
            security=security,
        )
    except (OSError, TimeoutError) as exc:
        raise PipelineError(
            f"cannot reach the Dask scheduler at {address} (dask_address) within "
            f"{CONNECT_TIMEOUT_SECONDS} s: {exc}"
        ) from exc
    with client, cluster_turn(client, address, holder=holder, wait_seconds=wait_seconds, log=log):
        share_pipeline(client)
        yield client


@contextmanager
def cluster_turn(
    client: Client,
    address: str,
    *,
    holder: str,
    wait_seconds: float,
    log: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the cluster's one turn: the lease of the scheduler's semaphore :data:`CLUSTER_TURN`.

    When another run holds it, log one line naming that run (it wrote who it is in the
    scheduler's metadata, :data:`HOLDER_KEY`) and wait, up to ``wait_seconds``; past them,
    a PipelineError names the address and the wait. The lease is released when the block
    ends, however it ends. A process killed while holding it cannot release it: the client
    refreshes the lease every fifth of ``distributed.scheduler.locks.lease-timeout`` (30 s by
    default), and the scheduler frees a lease not refreshed for that long (checking every
    ``lease-validation-interval``, 10 s): the next run then gets the turn.

    A Semaphore of one lease rather than ``distributed.Lock``: the same mechanism (Lock is
    such a Semaphore), named for what it is; both free a dead holder's lease by its timeout.
    """
    from distributed import Semaphore

    say = log or _logger.info
    turn = Semaphore(
        max_leases=1, name=CLUSTER_TURN, scheduler_rpc=client.scheduler, loop=client.loop
    )
    try:
        waited = _take_turn(turn, client, address, wait_seconds, say)
        me = (
            f"{holder} (host {socket.gethostname()}, pid {os.getpid()}, since "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)"
        )
        if waited is not None:
            say(f"the Dask cluster at {address} is this run's after {waited:.0f} s of waiting")
        previous = client.get_metadata(HOLDER_KEY, None)
        if previous:  # a holder gives the turn back with its record cleared
            released = client.run_on_scheduler(release_xgboost_locks)
            say(
                f"the previous holder of the Dask cluster at {address}, {previous}, did not give "
                "its turn back (killed, or cut off from the scheduler): its lease expired, work "
                "it left on the workers may still be running, and the xgboost locks it held on "
                f"them ({released}) are released"
            )
        try:
            client.set_metadata(HOLDER_KEY, me)
            yield
        finally:
            _release_turn(turn, client, me)
    finally:
        refresh = getattr(turn, "refresh_callback", None)  # absent with an infinite lease
        if refresh is not None and client.loop is not None:
            client.loop.add_callback(refresh.stop)


def _release_xgboost_locks() -> Callable[..., int]:
    """:func:`release_xgboost_locks`, made inside a function so that it travels to the
    scheduler by value (as :func:`_digest_of_pipeline`)."""

    def release_xgboost_locks(dask_scheduler: Any) -> int:
        # xgboost.dask.train holds a distributed.MultiLock on its workers for the training;
        # it has no lease: a client killed holding it leaves it held for good, and every
        # later training waits for it forever. Under the cluster's turn, a lock held is such
        # an orphan. The extension's own release handler frees it (and wakes any waiter).
        extension = dask_scheduler.extensions.get("multi_locks")
        if extension is None:
            return 0
        held = [
            holder
            for holder, left in list(extension.requests_left.items())
            if left == 0 and holder not in extension.events
        ]
        for holder in held:
            extension.release(id=holder)
        return len(held)

    return release_xgboost_locks


# Release the xgboost.dask locks a killed run left on the scheduler: their number.
release_xgboost_locks = _release_xgboost_locks()


def _take_turn(
    turn: Semaphore,
    client: Client,
    address: str,
    wait_seconds: float,
    say: Callable[[str], None],
) -> float | None:
    """Acquire ``turn``: None at once, else the seconds waited; an error past the deadline."""
    if turn.acquire(timeout=0):
        return None
    started = time.monotonic()
    deadline = started + wait_seconds
    waiting_for = None
    while True:
        current = client.get_metadata(HOLDER_KEY, None) or "another run (it did not say which)"
        if current != waiting_for:
            say(
                f"the Dask cluster at {address} is in use by {current}: waiting up to "
                f"{wait_seconds:.0f} s (dask_wait_seconds) for its turn"
            )
            waiting_for = current
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PipelineError(
                f"the Dask cluster at {address} was still in use by {current} after waiting "
                f"{wait_seconds:.0f} s (dask_wait_seconds): runs on a cluster you give take "
                "turns; run again later, or with a longer wait"
            )
        if turn.acquire(timeout=min(remaining, _WAIT_SLICE_SECONDS)):
            return time.monotonic() - started


def _release_turn(turn: Semaphore, client: Client, me: str) -> None:
    """Give the turn back; if the scheduler cannot be told, its lease expires by itself."""
    try:
        if client.get_metadata(HOLDER_KEY, None) == me:
            client.set_metadata(HOLDER_KEY, None)
    except Exception as exc:  # the cluster's state is not this run's result
        _logger.warning("could not clear the Dask cluster's holder record: %s", exc)
    try:
        turn.release()
    except Exception as exc:
        _logger.warning(
            "could not release the Dask cluster's turn (its lease expires by itself): %s", exc
        )


def _digest_of_pipeline() -> Callable[[], str | None]:
    """:func:`pipeline_digest`, made inside a function so that it travels to the workers by
    value (cloudpickle pickles a module-level function by name, and a worker without
    ``pipeline`` could not import it)."""

    def digest_of_pipeline() -> str | None:
        import hashlib
        import pkgutil

        try:
            import pipeline
        except ImportError:
            return None
        digest = hashlib.sha256()
        names = ["__init__", *sorted(m.name for m in pkgutil.iter_modules(pipeline.__path__))]
        for name in names:
            source = pkgutil.get_data("pipeline", f"{name}.py") or b""
            digest.update(name.encode() + b"\0" + source)
        return digest.hexdigest()

    return digest_of_pipeline


# sha256 of the ``pipeline`` package the calling process imports (every module's source, by
# name), None when it cannot import it; run on the workers with ``client.run``.
pipeline_digest = _digest_of_pipeline()


def share_pipeline(client: Client) -> None:
    """Make the cluster's workers run this run's ``pipeline``.

    A cluster of our own (the stack's: long-lived, its hosts install no project code) may not
    have it, or have another version from an earlier run: then the package is uploaded as a
    zip named by its digest (``client.upload_file``: new workers get it too) and the workers
    restarted, so that no module of another version stays imported. Refused when the workers
    still differ afterwards.
    """
    import tempfile

    local = pipeline_digest()
    if local is None:
        raise PipelineError("this process cannot import pipeline: nothing to share with Dask")
    if set(client.run(pipeline_digest).values()) <= {local}:
        return
    with tempfile.TemporaryDirectory() as directory:
        archive = _pipeline_archive(Path(directory) / f"pipeline-{local[:16]}.zip")
        client.upload_file(str(archive), load=True)
    client.restart()
    found = client.run(pipeline_digest)
    stale = sorted(worker for worker, digest in found.items() if digest != local)
    if stale:
        raise PipelineError(
            f"the Dask workers {', '.join(stale)} still run another version of pipeline after "
            "it was uploaded and they were restarted"
        )


def _pipeline_archive(path: Path) -> Path:
    """A zip of the ``pipeline`` package's modules (importable from the zip itself)."""
    import zipfile

    import pipeline

    package = Path(pipeline.__file__).parent
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for module in sorted(package.glob("*.py")):
            archive.write(module, f"pipeline/{module.name}")
    return path


def tls_security(address: str) -> Security | None:
    """distributed's ``Security`` for a ``tls://`` scheduler, from Dask's configuration (on a
    stack's worker host, the identity its flow runs inherit); None for ``tcp://``.

    Refuses, naming the variables, when a setting is missing or names an unreadable file:
    the connection would otherwise fail later with a bare TLS error.
    """
    if not address.startswith("tls://"):
        return None
    import dask.config
    from distributed.security import Security

    missing = [var for key, var in TLS_SETTINGS.items() if not dask.config.get(key, None)]
    if missing:
        raise PipelineError(
            f"{address} is a TLS scheduler: the client's CA, certificate and key must be set "
            f"({', '.join(missing)} unset; a stack's worker hosts set them for their flow runs)"
        )
    unreadable = [
        f"{var}={path}"
        for key, var in TLS_SETTINGS.items()
        if not os.access(path := str(dask.config.get(key)), os.R_OK)
    ]
    if unreadable:
        raise PipelineError(f"cannot read the Dask TLS files: {', '.join(unreadable)}")
    return Security(require_encryption=True)


def collective_config(scheduler_address: str) -> CollectiveConfig | None:
    """xgboost's collective settings: the tracker on the scheduler's host (xgboost runs it
    in the scheduler's process) at the port ``MLOPS_XGBOOST_TRACKER_PORT`` names (the one a
    stack's firewall opens there), else xgboost's choice of port.

    Both are given: xgboost takes the port only with a host (``get_address_from_user``); a
    port alone is ignored and the tracker listens on a random one, which a firewall closes.
    """
    port = os.environ.get(TRACKER_PORT_VARIABLE)
    if not port:
        return None
    from distributed.comm import get_address_host
    from xgboost.collective import Config

    if not port.isdigit():
        raise PipelineError(f"{TRACKER_PORT_VARIABLE} must be a port number, got {port!r}")
    return Config(tracker_host_ip=get_address_host(scheduler_address), tracker_port=int(port))


def tracker_config(client: Client) -> CollectiveConfig | None:
    """:func:`collective_config` for a cluster given by address (its firewall opens the fixed
    port; runs on it take turns, so one tracker at a time holds it); None for a local cluster
    started for the run: its tracker takes a free port, and such runs on one host never
    collide, whatever ``MLOPS_XGBOOST_TRACKER_PORT`` says."""
    if client.cluster is not None:
        return None
    return collective_config(client.scheduler_info()["address"])


def _port_is_free() -> Callable[[str, int], bool]:
    """:func:`port_is_free`, made inside a function so that it travels to the scheduler by
    value (as :func:`_digest_of_pipeline`)."""

    def port_is_free(host: str, port: int) -> bool:
        import socket

        with socket.socket() as probe:  # a plain bind, as a new listener's
            try:
                probe.bind((host, port))
            except OSError:
                return False
        return True

    return port_is_free


# Whether a listener could bind (host, port) in the calling process's host; run on the
# scheduler with ``client.run_on_scheduler``.
port_is_free = _port_is_free()


def wait_for_the_tracker_port(client: Client, tracker: CollectiveConfig) -> None:
    """Wait until xgboost's tracker can bind its fixed port on the scheduler's host.

    xgboost.dask would otherwise fall back to a random port, which a stack's firewall closes:
    the training would hang until xgboost's timeout. The port is held by the tracker of the
    run before (until its training ends) or, for good, by that of a run killed mid-training
    (its tracker waits in the scheduler's process for workers that are gone).
    """
    host, port = str(tracker.tracker_host_ip), int(tracker.tracker_port or 0)
    deadline = time.monotonic() + TRACKER_PORT_WAIT_SECONDS
    while not client.run_on_scheduler(port_is_free, host, port):
        if time.monotonic() >= deadline:
            raise PipelineError(
                f"xgboost's tracker port {host}:{port} ({TRACKER_PORT_VARIABLE}) on the Dask "
                f"scheduler's host is still taken after {TRACKER_PORT_WAIT_SECONDS:.0f} s: most "
                "likely by the tracker of a run killed mid-training, which keeps it until the "
                "scheduler restarts. Restart the scheduler (on the stack: systemctl restart "
                "dask-scheduler on the control host), then run again"
            )
        time.sleep(1.0)


def describe(client: Client) -> str:
    """The cluster in one line: its scheduler, workers, threads and memory limits."""
    info = client.scheduler_info(n_workers=-1)
    workers = info["workers"].values()
    limits = sorted({worker.get("memory_limit", 0) for worker in workers})
    shown = ", ".join(f"{limit / 2**20:.0f} MiB" for limit in limits) or "none"
    threads = sum(worker.get("nthreads", 0) for worker in workers)
    return f"{info['address']}: {len(workers)} workers, {threads} threads, memory limit {shown}"


def train_and_evaluate(
    client: Client,
    data_dir: str,
    months: Sequence[str],
    val_set: LabeledSet,
    *,
    color: str,
    config: TrainConfig,
    base_url: str,
    allow_insecure_mirror: bool,
) -> DaskResult:
    """Train on ``months`` (one partition each, on the workers), validate on ``val_set``."""
    import xgboost.dask as dxgb
    from dask import delayed

    # The client is not the process's default (a flow may run several): make it the current
    # one for every collection and helper used here.
    with client.as_current(), _lost_workers_fail_the_run(client):
        features, summaries = _training_frame(
            client,
            data_dir,
            months,
            color=color,
            base_url=base_url,
            allow_insecure_mirror=allow_insecure_mirror,
        )
        val = _validation_frame(client, val_set)
        train_matrix = dxgb.DaskQuantileDMatrix(
            client,
            features.features,
            features.target,
            enable_categorical=True,
            max_bin=config.max_bin,
        )
        val_matrix = dxgb.DaskQuantileDMatrix(
            client,
            val.features,
            val.target,
            enable_categorical=True,
            max_bin=config.max_bin,
            ref=train_matrix,
        )
        tracker = tracker_config(client)
        if tracker is not None:
            wait_for_the_tracker_port(client, tracker)
        output = dxgb.train(
            client,
            _dask_params(config),
            train_matrix,
            num_boost_round=config.num_boost_round,
            evals=[(val_matrix, "validation")],
            early_stopping_rounds=config.early_stopping_rounds,
            verbose_eval=False,
            coll_cfg=tracker,
        )
        del train_matrix, val_matrix
        booster: xgb.Booster = output["booster"]
        booster = booster[: booster.best_iteration + 1]
        # One task per validation partition copies it and predicts: a partition moved between
        # workers on its way to a separate predict task could arrive misaligned (see _own_copy).
        predicted = [delayed(_predict_part)(booster, part) for part in val.features.to_delayed()]
        pairs = features.frame.map_partitions(_zone_pairs, meta=_zone_pairs(features.frame._meta))
        means, overall = client.compute(
            [pairs.groupby(_PAIR)[TARGET].mean(), features.target.mean()], sync=True
        )
        raw_parts = client.compute(predicted, sync=True)
        predictions = np.clip(np.concatenate(raw_parts), MIN_MINUTES, MAX_MINUTES)
        baseline = baseline_from_means(means, float(overall), val_set)
        return DaskResult(
            booster=booster,
            evaluation=evaluation_of(val_set, predictions, baseline),
            months=summaries,
        )


@contextmanager
def _lost_workers_fail_the_run(client: Client) -> Iterator[None]:
    """Turn a worker lost meanwhile into one clear PipelineError (see :func:`lost_a_worker`)."""
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    try:
        yield
    except Exception as exc:
        gone = workers - set(client.scheduler_info(n_workers=-1)["workers"])
        if not gone and not lost_a_worker(exc):
            raise
        raise PipelineError(
            f"the Dask cluster lost a worker during the run ({type(exc).__name__}: {exc}); "
            "XGBoost's Dask training cannot go on without one of its workers, so the run "
            "failed and nothing was registered. See the workers' logs (a worker above its "
            "memory limit is restarted), then run again"
        ) from exc


def lost_a_worker(exc: BaseException) -> bool:
    """Whether ``exc`` is how Dask or xgboost.dask report a worker gone mid-computation: its
    results cancelled or lost, the worker killed, its connection closed, or (xgboost.dask)
    a training task re-run on a worker that replaced it. (A worker's peers may instead fail
    in xgboost's collective, a broken pipe: the run then sees the worker gone from the
    scheduler.)"""
    from distributed.client import FutureCancelledError
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    if isinstance(exc, FutureCancelledError | KilledWorker | CommClosedError):
        return True
    return isinstance(exc, ValueError) and "Invalid worker address" in str(exc)


def _training_frame(
    client: Client,
    data_dir: str,
    months: Sequence[str],
    *,
    color: str,
    base_url: str,
    allow_insecure_mirror: bool,
) -> tuple[_Pinned, list[MonthSummary]]:
    """The window's features and target, persisted on the workers; and each month's summary."""
    import dask.dataframe as dd
    from dask import delayed
    from distributed import wait

    run = uuid.uuid4().hex[:8]  # keys of this run's months, never shared with another run's
    workers = _workers(client)
    # Month i is read by worker i mod n: the window is spread at once, none of it moves.
    loaded = [
        client.submit(
            load_month,
            data_dir,
            color,
            month,
            base_url=base_url,
            allow_insecure_mirror=allow_insecure_mirror,
            key=f"load-month-{color}-{month}-{run}",
            workers=[workers[i % len(workers)]],
            allow_other_workers=False,
        )
        for i, month in enumerate(months)
    ]
    summaries = client.gather(client.map(MonthSummary.of, loaded, key=f"summary-{run}"))
    trips = [
        client.submit(_trips_of, month, key=f"trips-{run}-{i}") for i, month in enumerate(loaded)
    ]
    meta = client.submit(_empty_like, trips[0], key=f"meta-{run}").result()
    raw = dd.from_delayed(trips, meta=meta, verify_meta=False)
    labeled = raw.map_partitions(_labeled, tuple(months), meta=_labeled_meta(meta))
    # At least one partition per worker: xgboost.dask refuses a worker without rows when
    # features are categorical (it cannot infer their categories from nothing).
    labeled = labeled.repartition(npartitions=max(len(months), len(workers)))
    computed = client.persist(labeled)
    wait(computed)
    del raw, trips, loaded  # the raw months are released: only their features stay
    placed = [
        client.compute(
            delayed(_own_copy)(part), workers=[workers[i % len(workers)]], allow_other_workers=False
        )
        for i, part in enumerate(computed.to_delayed())
    ]
    wait(placed)
    del computed  # the parts not yet placed are released
    return _Pinned.of(client, placed, labeled._meta), list(summaries)


@dataclass(frozen=True)
class _Pinned:
    """Partitions of features and target, each part held by one worker with its X and y.

    xgboost.dask gathers a partition's X and y on one worker; a part that travelled between
    processes may be unaligned in memory, which XGBoost refuses ("Input pointer
    misalignment"). So each part's X and y are cut on the worker that holds it, never moved.
    """

    frame: Any
    features: Any
    target: Any

    @classmethod
    def of(cls, client: Client, parts: list[Any], meta: pd.DataFrame) -> _Pinned:
        import dask.dataframe as dd

        def pinned(function: Any, part: Any) -> Any:
            where = list(client.who_has([part])[part.key])
            return client.submit(function, part, workers=where, allow_other_workers=False)

        return cls(
            frame=dd.from_delayed(parts, meta=meta, verify_meta=False),
            features=dd.from_delayed(
                [pinned(_features_of, part) for part in parts],
                meta=_features_of(meta),
                verify_meta=False,
            ),
            target=dd.from_delayed(
                [pinned(_target_of, part) for part in parts],
                meta=_target_of(meta),
                verify_meta=False,
            ),
        )


def _features_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns of a features-and-target part."""
    return frame[list(FEATURES)]


def _target_of(frame: pd.DataFrame) -> pd.Series:
    """The target of a features-and-target part."""
    return frame[TARGET]


def _validation_frame(client: Client, val_set: LabeledSet) -> _Pinned:
    """The validation month (features and target) on the workers, a part each, in row order."""
    from distributed import wait

    frame = val_set.features.assign(**{TARGET: val_set.target})
    workers = _workers(client)
    parts = [
        client.submit(
            _own_copy,
            client.scatter(part, workers=[worker], direct=True),
            workers=[worker],
            allow_other_workers=False,
        )
        for part, worker in zip(_split(frame, len(workers)), workers, strict=True)
    ]
    wait(parts)
    return _Pinned.of(client, parts, frame.iloc[:0])


def _workers(client: Client) -> list[str]:
    """The addresses of the cluster's workers, in a stable order; an error if there are none."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise PipelineError(
            f"the Dask cluster at {client.scheduler_info()['address']} has no workers"
        )
    return workers


def _predict_part(booster: xgb.Booster, part: pd.DataFrame) -> np.ndarray:
    """The booster's predictions for one partition, made in the task that copied it."""
    return np.asarray(booster.inplace_predict(_own_copy(part)))


def _own_copy(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` in memory of this worker's own allocation.

    A partition received from another process may sit at any offset of the message buffer,
    the zone categories' index included; XGBoost refuses arrays that are not aligned to their
    type ("Input pointer misalignment"). So the values are copied and the zones re-coded
    against this process's own :data:`~pipeline.features.ZONE_DTYPE`.
    """
    copied = frame.copy(deep=True)
    for zone in (PICKUP_ZONE, DROPOFF_ZONE):
        codes = copied[zone].cat.codes.to_numpy(copy=True)
        copied[zone] = pd.Categorical.from_codes(codes, dtype=ZONE_DTYPE)
    return copied


def _split(frame: pd.DataFrame, count: int) -> list[pd.DataFrame]:
    """``frame`` cut into ``count`` consecutive parts of about equal length."""
    bounds = np.linspace(0, len(frame), count + 1).astype(int)
    return [frame.iloc[start:end] for start, end in itertools.pairwise(bounds)]


def _dask_params(config: TrainConfig) -> dict[str, object]:
    """The booster parameters; each worker uses its own threads unless nthread is set."""
    params = config.xgboost_params()
    if config.nthread == 0:
        del params["nthread"]
    return params


def _trips_of(month: MonthData) -> pd.DataFrame:
    """A loaded month's trips (a partition)."""
    return month.trips


def _empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s columns and types without its rows: a Dask frame's meta."""
    return frame.iloc[:0]


def _labeled(
    trips: pd.DataFrame, months: tuple[str, ...], partition_info: dict[str, Any] | None = None
) -> pd.DataFrame:
    """One month's partition as features and target; errors name the month."""
    number = None if partition_info is None else partition_info.get("number")
    label = months[number] if isinstance(number, int) and number < len(months) else "a month"
    return labeled_frame(trips, label=label)


def _labeled_meta(raw_meta: pd.DataFrame) -> pd.DataFrame:
    """The features-and-target frame's columns and types (zone categories included)."""
    return make_features(raw_meta).assign(**{TARGET: pd.Series(dtype="float64")})


def _zone_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """The target beside its zone-pair key (as the baseline groups it)."""
    return pd.DataFrame(
        {_PAIR: zone_pair_key(frame), TARGET: frame[TARGET].to_numpy()}, index=frame.index
    )
