"""``mlops restore-drill --stack NAME``: prove that a stack's newest backup restores and serves.

A backup is only as good as the last restore. The drill, step by step, each timed and reported:

1. **snapshot**: the stack's newest available manual snapshot (``mlops backup``), or the one
   given with ``--snapshot``;
2. **create**: an ephemeral stack ``drill-<stack>-<time>`` from dev's configuration with
   ``restoreFromSnapshot`` set (and the snapshot's storage size, which a restore cannot shrink),
   expiring after six hours in case the drill itself is killed;
3. **artifacts**: the source bucket's ``mlflow/`` copied into the new bucket (the restored
   registry points at artifacts by their path under the bucket's ``mlflow/``);
4. **tunnel**: ``mlops tunnel`` to the new control host on local ports of its own;
5. **smoke**: ``mlops smoke``'s checks, waiting while the hosts boot;
6. **champion**: the registry's champion loads and predicts on its logged input example;
7. **destroy**: the drill stack destroyed, whatever happened before (unless ``--keep``).

Any failing step stops the ones after it (but never the destroy); the command then fails.

``mlops restore-drill --twin DIR`` runs the same drill on a process twin, with
``pg_dump``/``pg_restore`` standing in for the snapshot (:mod:`scripts.twin.snapshot`):
**snapshot** dumps the twin's databases; **create** brings up a second twin whose boot is
followed by loading the dumps (before its migration steps and servers, as a restored stack
boots); **artifacts** copies the bucket's ``mlflow/``; **inventory** compares the MLflow runs,
model versions and aliases and the Prefect flow runs and deployments with the source's, which
must be the same (before the smoke test writes a run of its own); **smoke** as above;
**champion** also asks the source twin's champion, and the two must be the same version
predicting the same values on the same rows; **destroy** takes the drill's twin down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from hostboot.names import WORK_POOL

from scripts import backup, ephemeral
from scripts.common import OpsError, stack_outputs, string_outputs
from scripts.env import ENV_OUTPUTS, env_from_outputs
from scripts.smoke import failures, smoke_until
from scripts.tunnel import LocalPorts

DRILL_TTL = timedelta(hours=6)
DRILL_PORTS = LocalPorts(mlflow=15000, prefect=14200)
SMOKE_WAIT_SECONDS = 1200.0  # hosts boot (packages, migrations) after `pulumi up` returns
TUNNEL_WAIT_SECONDS = 120.0
DEFAULT_MODEL = "trip-duration-green"


@dataclass(frozen=True)
class StepReport:
    """How one step went."""

    step: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class DrillReport:
    """Every step that ran, in order."""

    steps: list[StepReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every step ran and succeeded."""
        return bool(self.steps) and all(step.ok for step in self.steps)

    def run(self, step: str, action: Callable[[], str], announce: Callable[[str], None]) -> bool:
        """Run ``action``, record its outcome and time; an OpsError fails the step."""
        announce(f"[{step}] ...")
        started = time.monotonic()
        try:
            detail, ok = action(), True
        except OpsError as exc:
            detail, ok = str(exc), False
        report = StepReport(step, ok, time.monotonic() - started, detail)
        self.steps.append(report)
        announce(f"[{step}] {'ok' if ok else 'FAILED'} in {report.seconds:.0f} s: {detail}")
        return ok


def drill_name(source: str) -> str:
    """``drill-<source>-<MMDDHHMM>``, short enough for an ephemeral stack name."""
    base = source.rsplit("/", 1)[-1].lower()
    name = f"drill-{base[:14]}-{ephemeral.clock():%m%d%H%M}".replace("--", "-")
    return ephemeral.check_name(name)


def restore_drill(
    source: str,
    announce: Callable[[str], None],
    *,
    snapshot_id: str | None = None,
    model_name: str = DEFAULT_MODEL,
    keep: bool = False,
    ports: LocalPorts = DRILL_PORTS,
) -> DrillReport:
    """Run the drill against stack ``source``; the report says which steps passed."""
    report = DrillReport()
    name = drill_name(source)
    chosen: list[backup.Snapshot] = []
    created = False
    try:
        if not report.run("snapshot", lambda: _pick(source, snapshot_id, chosen), announce):
            return report
        created = True  # from here on a (partial) stack may exist: always destroy it
        steps: list[tuple[str, Callable[[], str]]] = [
            ("create", lambda: _create(name, chosen[0], announce)),
            ("artifacts", lambda: _copy_artifacts(source, name)),
        ]
        for step, action in steps:
            if not report.run(step, action, announce):
                return report
        with _tunnel(name, ports) as opened:
            if not report.run("tunnel", opened, announce):
                return report
            env = env_from_outputs(
                string_outputs(name, stack_outputs(name, show_secrets=True), ENV_OUTPUTS), ports
            )
            if not report.run("smoke", lambda: _smoke(env, announce), announce):
                return report
            report.run("champion", lambda: champion(env, model_name), announce)
        return report
    finally:
        if created and not keep:
            report.run("destroy", lambda: _destroy(name, announce), announce)
        elif created:
            announce(f"kept stack {name}: `mlops ephemeral destroy {name}` when done")


def restore_drill_twin(
    source_state_dir: Path,
    announce: Callable[[str], None],
    *,
    model_name: str = DEFAULT_MODEL,
    keep: bool = False,
) -> DrillReport:
    """The drill on the process twin recorded in ``source_state_dir`` (see the module doc)."""
    from scripts.twin import lifecycle, snapshot
    from scripts.twin.settings import TwinConfig

    source = lifecycle.load(source_state_dir)
    stamp = f"{ephemeral.clock():%Y%m%d-%H%M%S}"
    dumps = source_state_dir / "snapshots" / stamp
    drill_dir = source_state_dir / "drills" / stamp
    config = TwinConfig(
        state_dir=drill_dir,
        name=f"drill_{source.config.name}"[:40],
        bucket=source.config.bucket,
        venv=source.config.venv,
        dask_workers=source.config.dask_workers,  # a restored stack keeps its daskWorkers
    )
    report = DrillReport()
    created: list[lifecycle.Twin] = []

    def create() -> str:
        # The drill twin is a new twin from the snapshot: its own secrets, roles, ports.
        created.append(lifecycle.up(config, drill_dir / "mlops.env", restore_from=dumps))
        return f"twin {config.name} in {drill_dir}, databases from {dumps}"

    def smoke() -> str:
        return _smoke(created[0].env(), announce)

    def inventory() -> str:
        ours, theirs = twin_inventory(created[0].env()), twin_inventory(source.env())
        differing = [kind for kind in theirs if ours[kind] != theirs[kind]]
        if differing:
            raise OpsError(
                f"the restored twin differs from the source in its {', '.join(differing)}"
            )
        return ", ".join(f"{len(items)} {kind}" for kind, items in ours.items()) + ", as the source"

    def champions() -> str:
        ours = champion_predictions(created[0].env(), model_name)
        theirs = champion_predictions(source.env(), model_name)
        if ours != theirs:
            raise OpsError(f"the restored champion differs: {ours} against the source's {theirs}")
        return (
            f"{model_name} version {ours['version']} (run {ours['run_id']}) predicts "
            f"{ours['predictions']}, as the source's does"
        )

    try:
        steps: list[tuple[str, Callable[[], str]]] = [
            (
                "snapshot",
                lambda: f"{len(snapshot.dump(source, dumps))} databases dumped to {dumps}",
            ),
            ("create", create),
            ("artifacts", lambda: _copy_twin_artifacts(source, created[0])),
            # Before the smoke test, which writes a run of its own.
            ("inventory", inventory),
            ("smoke", smoke),
            ("champion", champions),
        ]
        for step, action in steps:
            if not report.run(step, action, announce):
                break
        return report
    finally:
        if created and not keep:
            report.run("destroy", lambda: _down(created[0]), announce)
        elif created:
            announce(f"kept twin {config.name}: `mlops twin down --state-dir {drill_dir}`")


def _copy_twin_artifacts(source: Any, drill: Any) -> str:
    """Copy the source twin's ``mlflow/`` objects into the drill twin's emulator."""
    bucket = source.config.bucket
    reader, writer = source.aws_client("s3"), drill.aws_client("s3")
    copied = 0
    for page in reader.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="mlflow/"):
        for item in page.get("Contents", []):
            body = reader.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            writer.put_object(Bucket=drill.config.bucket, Key=item["Key"], Body=body)
            copied += 1
    return f"{copied} objects of s3://{bucket}/mlflow/ copied to the drill's emulator"


def _down(twin: Any) -> str:
    twin.tear_down()
    twin.reap_children()
    return f"drill twin {twin.config.name} down, its databases dropped"


def twin_inventory(env: dict[str, str]) -> dict[str, list[tuple[str, ...]]]:
    """What a restore must keep: MLflow runs, model versions and aliases, and the Prefect flow
    runs that ran and deployments (the first 1000 of each in MLflow, 200 in Prefect)."""
    from scripts.deploy import prefect_client

    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    with httpx.Client(base_url=env["MLFLOW_TRACKING_URI"], auth=auth, timeout=60) as http:

        def call(method: str, path: str, **kwargs: Any) -> Any:
            response = http.request(method, f"/api/2.0/mlflow/{path}", **kwargs)
            if response.is_error:
                raise OpsError(f"MLflow {path} answered {response.status_code}: {response.text}")
            return response.json()

        found = call("POST", "experiments/search", json={"max_results": 1000})
        ids = [e["experiment_id"] for e in found.get("experiments", [])]
        body = {"experiment_ids": ids, "max_results": 1000}
        runs = call("POST", "runs/search", json=body).get("runs", []) if ids else []
        models = call("GET", "registered-models/search", params={"max_results": 1000})
        versions = call("GET", "model-versions/search", params={"max_results": 1000})
    try:
        with prefect_client(env) as client:  # the server answers at most 200 a call
            flow_runs = client.read_flow_runs(limit=200)
            deployments = client.read_deployments(limit=200)
    except httpx.HTTPError as exc:
        raise OpsError(f"Prefect did not list its flow runs and deployments: {exc}") from exc
    return {
        "runs": sorted((r["info"]["run_id"], r["info"]["status"]) for r in runs),
        "model versions": sorted(
            (v["name"], v["version"], v.get("run_id", ""))
            for v in versions.get("model_versions", [])
        ),
        "aliases": sorted(
            (m["name"], a["alias"], a["version"])
            for m in models.get("registered_models", [])
            for a in m.get("aliases", [])
        ),
        # Runs Prefect's scheduler makes ahead change with the clock, not with a restore.
        "flow runs": sorted(
            (str(f.id), str(f.state_type))
            for f in flow_runs
            if "SCHEDULED" not in str(f.state_type)
        ),
        "deployments": sorted((str(d.id), d.name) for d in deployments),
    }


def champion_predictions(env: dict[str, str], model_name: str) -> dict[str, Any]:
    """What ``python -m scripts.champion`` prints: version, run id, predictions."""
    result = subprocess.run(
        [sys.executable, "-m", "scripts.champion", model_name],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise OpsError(result.stderr.strip().splitlines()[-1] if result.stderr else "no output")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def champion(env: dict[str, str], model_name: str) -> str:
    """The champion's version and predictions, from ``python -m scripts.champion``."""
    answer = champion_predictions(env, model_name)
    return (
        f"{model_name} version {answer['version']} (run {answer['run_id']}) predicts "
        f"{answer['predictions']}"
    )


def _pick(source: str, snapshot_id: str | None, chosen: list[backup.Snapshot]) -> str:
    available = [s for s in backup.snapshots(source) if s.status == "available"]
    if snapshot_id:
        available = [s for s in available if s.identifier == snapshot_id]
    if not available:
        wanted = f"snapshot {snapshot_id}" if snapshot_id else "manual snapshot"
        raise OpsError(f"stack {source} has no available {wanted}: take one with `mlops backup`")
    chosen.append(available[0])
    return f"{available[0].identifier} of {available[0].created}"


def _create(name: str, snapshot: backup.Snapshot, announce: Callable[[str], None]) -> str:
    settings = {"restoreFromSnapshot": snapshot.identifier}
    if snapshot.allocated_storage_gib:
        settings["dbAllocatedStorageGiB"] = str(snapshot.allocated_storage_gib)
    ephemeral.create(name, announce, DRILL_TTL, settings)
    return f"stack {name} restored from {snapshot.identifier}"


def _copy_artifacts(source: str, name: str) -> str:
    buckets = [
        string_outputs(stack, stack_outputs(stack), ("artifact_bucket", "region"))
        for stack in (source, name)
    ]
    backup.aws(
        "s3", "sync", f"s3://{buckets[0]['artifact_bucket']}/mlflow/",
        f"s3://{buckets[1]['artifact_bucket']}/mlflow/",
        "--only-show-errors", "--region", buckets[1]["region"],
    )  # fmt: skip
    return f"s3://{buckets[0]['artifact_bucket']}/mlflow/ -> s3://{buckets[1]['artifact_bucket']}/mlflow/"


@contextmanager
def _tunnel(name: str, ports: LocalPorts) -> Iterator[Callable[[], str]]:
    """``mlops tunnel`` in the background; yields the step that waits for its local ends."""
    command = [
        sys.executable, "-c", "from scripts.cli import main; main()",
        "tunnel", "--stack", name,
        "--mlflow-port", str(ports.mlflow), "--prefect-port", str(ports.prefect),
    ]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True)

    def opened() -> str:
        deadline = time.monotonic() + TUNNEL_WAIT_SECONDS
        while not all(_accepts(port) for port in (ports.mlflow, ports.prefect)):
            if process.poll() is not None:
                raise OpsError(f"`mlops tunnel` exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise OpsError(f"the tunnel did not open within {TUNNEL_WAIT_SECONDS:.0f} s")
            time.sleep(0.5)
        return f"localhost:{ports.mlflow} (MLflow), localhost:{ports.prefect} (Prefect)"

    try:
        yield opened
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _smoke(env: dict[str, str], announce: Callable[[str], None]) -> str:
    verdicts = smoke_until(env, WORK_POOL, SMOKE_WAIT_SECONDS, announce)
    if failures(verdicts):
        raise OpsError(f"smoke test failed: {', '.join(failures(verdicts))}")
    return f"{len(verdicts)} checks passed"


def _destroy(name: str, announce: Callable[[str], None]) -> str:
    ephemeral.destroy(name, announce)
    return f"stack {name} destroyed"
