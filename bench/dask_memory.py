"""Data bigger than a process: the local engine's peak against two memory-limited Dask workers.

``python -m bench.dask_memory [--copies N] [--fraction F]`` (``$PIPELINE_DATA_DIR`` must hold
green 2022-01..2022-12 and 2023-02):

1. builds a window of ``12 * N`` months in a scratch directory: the twelve real months of
   2022 and, before them, the same months again with their timestamps moved back by whole
   years (the loader keeps only trips within the month a file is named for) to 2009, then on
   from 2024 (:func:`window_years`); the engines' functions are called, not ``--train-months``
   with its 36 months;
2. trains on that window, validating on 2023-02, with the local engine in a child process,
   sampling its resident memory every 20 ms: the **local peak**;
3. trains on the same window with the Dask engine, a LocalCluster of 2 workers each limited
   to ``F`` times the local peak (default 0.8; spilling and pausing off, so the limit is a
   ceiling), in a child process, sampling every process of
   its tree apart: each worker's peak must stay below the local peak, and the RMSE within
   0.02 of the local engine's.

It prints one JSON document and writes it to ``bench/results/dask-memory-<date>.json``.
``tests/pipeline/test_dask_memory.py`` runs it on three years (``--copies 3``) as a test (issue 11,
item 5): at that size the data, not the libraries a worker process carries (about 330 MiB),
decide the peaks, so the margins are wide.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
REAL_YEAR = 2022
VAL_MONTH = "2023-02"
COLOR = "green"
SAMPLE_SECONDS = 0.02
RMSE_TOLERANCE = 0.02
# A bounded number of rounds: the bench compares memory and agreement, not the best model.
CONFIG = {"num_boost_round": 60, "early_stopping_rounds": 10}


# TLC records start in 2009 (the loader refuses earlier months), and 2023 holds the validation
# month: copies of 2022 go back by whole years to 2009, then on from 2024.
FIRST_YEAR = 2009
SKIPPED_YEAR = 2023


def window_years(copies: int) -> list[int]:
    """The years of a window of ``copies`` copies of 2022, nearest to the real year first."""
    back = list(range(REAL_YEAR, FIRST_YEAR - 1, -1))
    on = range(SKIPPED_YEAR + 1, SKIPPED_YEAR + 1 + max(0, copies - len(back)))
    return [*back, *on][:copies]


def build_window(source: Path, target: Path, months: int) -> tuple[str, ...]:
    """A window of ``months`` months written into ``target`` (the validation month beside
    them), in order.

    The real months of 2022 end it (the last ``months`` of them for a shorter window); beyond a
    year come the same months again with their timestamps moved by whole years
    (:func:`window_years`): the loader keeps only trips within the month a file is named for.
    """
    import pandas as pd

    if months < 1:
        raise ValueError(f"a window has at least one month, got {months}")
    copies = -(-months // 12)
    wanted = [(year, month) for year in window_years(copies) for month in range(12, 0, -1)][:months]
    for year, month in wanted:
        frame = pd.read_parquet(source / f"{COLOR}_tripdata_{REAL_YEAR}-{month:02d}.parquet")
        for column in ("lpep_pickup_datetime", "lpep_dropoff_datetime"):
            frame[column] = frame[column] + pd.DateOffset(years=year - REAL_YEAR)
        frame.to_parquet(target / f"{COLOR}_tripdata_{year}-{month:02d}.parquet", index=False)
    val = f"{COLOR}_tripdata_{VAL_MONTH}.parquet"
    (target / val).write_bytes((source / val).read_bytes())
    return tuple(f"{year}-{month:02d}" for year, month in sorted(wanted))


def train_local(data_dir: str, months: list[str]) -> dict[str, Any]:
    """Child: the local engine's stages on the window (as the flow runs them)."""
    from pipeline.data import load_month
    from pipeline.evaluate import evaluate
    from pipeline.features import combine, make_labeled_set
    from pipeline.train import TrainConfig, train_model

    started = time.perf_counter()
    sets = [
        make_labeled_set(load_month(data_dir, COLOR, month).trips, label=month) for month in months
    ]
    train = combine(sets)
    del sets
    val = make_labeled_set(load_month(data_dir, COLOR, VAL_MONTH).trips, label=VAL_MONTH)
    booster = train_model(train, val, TrainConfig(**CONFIG))
    evaluation = evaluate(booster, train, val)
    return {
        "rmse": evaluation.rmse,
        "rows": len(train.target),
        "seconds": time.perf_counter() - started,
    }


def train_dask(data_dir: str, months: list[str], memory_limit: str) -> dict[str, Any]:
    """Child: the Dask engine on the window, 2 workers with ``memory_limit`` each."""
    from pipeline import dask_engine
    from pipeline.data import load_month
    from pipeline.features import make_labeled_set
    from pipeline.parameters import TrainingParameters
    from pipeline.train import TrainConfig

    parameters = TrainingParameters(engine="dask", dask_workers=2, dask_memory_limit=memory_limit)
    started = time.perf_counter()
    val = make_labeled_set(load_month(data_dir, COLOR, VAL_MONTH).trips, label=VAL_MONTH)
    with dask_engine.connect(parameters) as client:
        cluster = dask_engine.describe(client)
        result = dask_engine.train_and_evaluate(
            client,
            data_dir,
            months,
            val,
            color=COLOR,
            config=TrainConfig(**CONFIG),
            base_url="https://d37ci6vzurychx.cloudfront.net/trip-data",
            allow_insecure_mirror=False,
        )
    return {
        "rmse": result.evaluation.rmse,
        "rows": sum(month.rows for month in result.months),
        "seconds": time.perf_counter() - started,
        "cluster": cluster,
    }


# The limit is a ceiling, not a hint: no spilling to disk and no pausing (a paused worker
# holds up xgboost's collective for good); a worker above 95 % of it is restarted, and the
# training fails.
HARD_LIMIT = {
    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False",
}


@dataclass(frozen=True)
class Measured:
    """One child process: its JSON result, each process's peak resident set, its wall time."""

    result: dict[str, Any]
    peaks: dict[str, int]
    wall_seconds: float
    stderr: str

    @property
    def largest(self) -> tuple[str, int]:
        """The process of the tree with the largest peak (``pid:role``) and that peak."""
        return max(self.peaks.items(), key=lambda item: item[1])


def measure(
    argv: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Measured:
    """Run ``argv`` in ``env`` (default: ours with :data:`HARD_LIMIT`), sampling each process
    of its tree apart."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **HARD_LIMIT} if env is None else env,
            cwd=cwd,
        )
        peaks = _sample_tree(child)
        out, _ = child.communicate()
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if child.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv[:6])} failed with status {child.returncode}:\n{stderr[-3000:]}"
        )
    return Measured(json.loads(out.decode().strip().splitlines()[-1]), peaks, wall, stderr)


def _sample_tree(child: subprocess.Popen[bytes]) -> dict[str, int]:
    """The peak resident set of each process of ``child``'s tree (``pid:role``) until it ends.

    Standard output is read after the end: the children print one JSON line, which a pipe holds.
    """
    peaks: dict[int, int] = {}
    roles: dict[int, str] = {}
    root = psutil.Process(child.pid)
    while child.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for process in tree:
            try:
                rss = process.memory_info().rss
                # The last role seen: a child read between fork and exec still shows its parent's
                # command line; the root is the driver in any case.
                roles[process.pid] = "driver" if process is root else _role(process)
            except psutil.Error:
                continue
            peaks[process.pid] = max(peaks.get(process.pid, 0), rss)
        time.sleep(SAMPLE_SECONDS)
    return {f"{pid}:{roles[pid]}": peak for pid, peak in peaks.items()}


def _role(process: psutil.Process) -> str:
    """driver, worker (a Dask worker process) or the name of another helper process.

    Dask renames its worker processes (``dask worker [tcp://...]``) once they start.
    """
    command = " ".join(process.cmdline())
    if "bench.dask_memory" in command or "pipeline tune" in command:
        return "driver"
    if "resource_tracker" in command:
        return "tracker"
    if "spawn_main" in command or "dask worker" in command:
        return "worker"
    return process.name()


def mib(value: float) -> float:
    return round(value / 2**20, 1)


def run(copies: int, fraction: float, reuse_local: bool) -> dict[str, Any]:
    source = os.environ.get("PIPELINE_DATA_DIR")
    if not source:
        raise SystemExit("PIPELINE_DATA_DIR must hold green 2022-01..2022-12 and 2023-02")
    with tempfile.TemporaryDirectory(prefix="dask-memory-") as scratch:
        months = build_window(Path(source), Path(scratch), 12 * copies)
        me = [sys.executable, "-m", "bench.dask_memory"]
        measured = Path(tempfile.gettempdir()) / f"bench-dask-memory-local-{copies}.json"
        if reuse_local and measured.is_file():  # the local engine's run takes minutes here
            local, local_peak = json.loads(measured.read_text())
        else:
            measured_local = measure([*me, "--child", "local", scratch, *months])
            local, local_peak = measured_local.result, measured_local.largest[1]
            measured.write_text(json.dumps([local, local_peak]) + "\n")
        limit = int(local_peak * fraction)
        print(f"local: {local}, peak {mib(local_peak)} MiB", file=sys.stderr, flush=True)
        measured_dask = measure([*me, "--child", "dask", scratch, f"{limit}B", *months])
        dask, dask_peaks = measured_dask.result, measured_dask.peaks
    workers = {k: v for k, v in dask_peaks.items() if k.endswith(":worker")}
    largest_worker = max(workers.values())
    return {
        "date": date.today().isoformat(),
        "months": f"{months[0]}..{months[-1]} ({len(months)})",
        "rows": local["rows"],
        "local": {"peak_mib": mib(local_peak), "rmse": local["rmse"], "seconds": local["seconds"]},
        "dask": {
            "worker_memory_limit_mib": mib(limit),
            "largest_worker_peak_mib": mib(largest_worker),
            "driver_peak_mib": mib(max(v for k, v in dask_peaks.items() if k.endswith("driver"))),
            "processes_mib": {k: mib(v) for k, v in sorted(dask_peaks.items())},
            "rmse": dask["rmse"],
            "seconds": dask["seconds"],
            "cluster": dask["cluster"],
        },
        "worker_below_local_peak": largest_worker < local_peak,
        "rmse_within_tolerance": abs(dask["rmse"] - local["rmse"]) < RMSE_TOLERANCE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--copies", type=int, default=1, help="years in the window (12 months each; default 1)"
    )
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument(
        "--reuse-local",
        action="store_true",
        help="take the local engine's figures from its last run on the same window",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.copies < 1:
        parser.error(f"--copies must be at least 1, got {arguments.copies}")
    if arguments.child:
        kind, data_dir, *rest = arguments.child
        if kind == "local":
            result = train_local(data_dir, rest)
        else:
            result = train_dask(data_dir, rest[1:], rest[0])
        print(json.dumps(result))
        return
    document = run(arguments.copies, arguments.fraction, arguments.reuse_local)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"dask-memory-{document['date']}-{arguments.copies}x12.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
