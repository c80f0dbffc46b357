"""Local engine against the Dask engine as the data grows, and the tuning flow's throughput.

``python -m bench.dask_scale [--scales 1,12,192] [--trials 8] [--parallel 1 2]``
(``$PIPELINE_DATA_DIR`` must hold green 2022-01..2022-12, 2023-01 and 2023-02). Issue 11's bench:

1. **scale**: for each window of ``--scales`` months (1: 2022-12; 12: the year 2022; 192 and
   768: 16x and 64x that year, the real months again moved by whole years, built by
   :func:`bench.dask_memory.build_window` in a scratch directory under the system's temporary
   directory and deleted after; TLC records start in 2009, so past 14 years the copies go on
   from 2024, 2023 holding the validation month), trains with the local engine, then with the
   Dask engine on a LocalCluster of 2 workers at Dask's defaults (memory limit ``auto``,
   spilling on), each in a child process whose every process is sampled apart: the wall time
   and the **largest single process's peak resident set**, the figure that decides whether the
   data fits a machine.
   Windows over 36 months are beyond ``--train-months``' limit: the children call the engines'
   functions (:func:`bench.dask_memory.train_local`, :func:`bench.dask_memory.train_dask`), as
   :mod:`bench.dask_memory` does, not the command line;
2. **tuning**: ``python -m pipeline tune`` on one month (train 2023-01, validate 2023-02,
   ``--trials`` trials, seed 0) for each ``--parallel`` K, as a process on the embedded default:
   trials per minute from the first batch's results to the last (the search's steady rate) and
   over the whole process (start-up included).

Unless measured, 768 months are extrapolated on the line through the two largest windows
measured, and labelled so. On 2 cores shared with other work, times are indicative; the memory
figures are the result. Writes ``bench/results/dask-scale-<date>.{json,md}`` after each
measurement, so an interrupted run keeps what it measured, merged into the day's earlier
results (a scale or K measured again replaces its entry).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.dask_memory import (
    CONFIG,
    SKIPPED_YEAR,
    VAL_MONTH,
    Measured,
    build_window,
    measure,
    mib,
)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SCALES = (1, 12, 192)
ALLOWED_SCALES = (1, 12, 192, 768)
LARGEST = 768
TUNING_MONTH = "2023-01"
DASK_WORKERS = 2
_TRIAL_LOG = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) .*\btrial (\d+): RMSE")


def _label(months: int) -> str:
    """A scale as the issue names it."""
    return "1 month" if months == 1 else f"{months // 12}x12 months" if months > 12 else "12 months"


def _load() -> float:
    """The machine's 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def measure_scale(source: Path, months: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Both engines on a window of ``months`` months."""
    with tempfile.TemporaryDirectory(prefix="dask-scale-") as scratch:
        say(f"{_label(months)}: building the window in {scratch}")
        window = build_window(source, Path(scratch), months)
        me = [sys.executable, "-m", "bench.dask_memory", "--child"]
        engines: dict[str, Any] = {}
        for engine, argv in (
            ("local", [*me, "local", scratch, *window]),
            ("dask", [*me, "dask", scratch, "auto", *window]),
        ):
            say(f"{_label(months)}: {engine} engine")
            before = _load()
            measured = measure(argv, env=dict(os.environ))  # Dask's defaults
            engines[engine] = _engine_figures(measured, before)
            say(f"  {engines[engine]['seconds']:.0f} s, largest {engines[engine]['largest']}")
    return {
        "months": months,
        "label": _label(months),
        "window": _window_label(window),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": engines["local"]["rows"],
        **engines,
        "largest_dask_over_local": round(
            engines["dask"]["largest_process_mib"] / engines["local"]["largest_process_mib"], 3
        ),
    }


def _window_label(window: tuple[str, ...]) -> str:
    """``FROM..TO``, naming the year a window longer than 14 years leaves out."""
    skipped = f", without {SKIPPED_YEAR}" if window[-1] > f"{SKIPPED_YEAR}" else ""
    return f"{window[0]}..{window[-1]}{skipped}"


def _engine_figures(measured: Measured, load_before: float) -> dict[str, Any]:
    """What the tables show of one engine's run."""
    name, peak = measured.largest
    figures: dict[str, Any] = {
        "seconds": round(measured.result["seconds"], 1),
        "process_seconds": round(measured.wall_seconds, 1),
        "largest_process_mib": mib(peak),
        "largest": f"{name.split(':')[1]}, {mib(peak)} MiB",
        "processes_mib": {key: mib(value) for key, value in sorted(measured.peaks.items())},
        "rmse": round(measured.result["rmse"], 4),
        "rows": measured.result["rows"],
        "load_1min": [load_before, _load()],
    }
    if "cluster" in measured.result:
        figures["cluster"] = measured.result["cluster"]
    return figures


def measure_tuning(
    source: Path, trials: int, parallel: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """``pipeline tune`` on one month, ``parallel`` trials at a time, on the embedded default."""
    from bench.__main__ import embedded_env

    with tempfile.TemporaryDirectory(prefix="dask-scale-tune-") as home:
        say(f"tuning: {trials} trials, --parallel {parallel}")
        argv = [
            sys.executable, "-m", "pipeline", "tune",
            "--train-month", TUNING_MONTH, "--val-month", VAL_MONTH,
            "--trials", str(trials), "--parallel", str(parallel), "--seed", "0",
            "--color", "green", "--data-dir", str(source),
        ]  # fmt: skip
        before = _load()
        env = embedded_env(Path(home))
        env["PREFECT_LOGGING_LEVEL"] = "INFO"  # the trials' log lines time the search
        # The embedded MLflow store and Prefect's home live in the scratch directory.
        measured = measure(argv, env=env, cwd=Path(home))
    reported = _trial_times(measured.stderr)
    steady = _steady_rate(reported, trials, parallel)
    name, peak = measured.largest
    summary = {
        "parallel": parallel,
        "trials": trials,
        "trials_per_minute_search": steady,
        "trials_per_minute_process": round(trials * 60 / measured.wall_seconds, 2),
        "process_seconds": round(measured.wall_seconds, 1),
        "largest_process_mib": mib(peak),
        "largest": f"{name.split(':')[1]}, {mib(peak)} MiB",
        "best_rmse": round(measured.result["best_rmse"], 4),
        "load_1min": [before, _load()],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    say(f"  {summary['trials_per_minute_search']} trials/min (search), {summary['largest']}")
    return summary


def _trial_times(log: str) -> list[float]:
    """Seconds of the day at which each trial's result was logged, in order."""
    times = []
    for line in log.splitlines():
        match = _TRIAL_LOG.match(line)
        if match:
            hours, minutes, seconds = match.group(1, 2, 3)
            times.append(int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    return times


def _steady_rate(times: list[float], trials: int, parallel: int) -> float | None:
    """Trials per minute from the first batch's results to the last trial's.

    The first batch carries the cluster's and the trials' start-up; the rate after it is the
    search's own. None when the log does not show every trial (the log format changed).
    """
    if len(times) != trials or trials <= parallel:
        return None
    span = (times[-1] - times[parallel - 1]) % 86400  # a search over midnight
    return round((trials - parallel) * 60 / span, 2) if span else None


def extrapolate(scales: list[dict[str, Any]]) -> dict[str, Any] | None:
    """768 months, on the line through the two largest measured windows (12 months and more).

    A line, not a power law: a process's memory is its libraries (about 300 MiB) plus a cost
    per row, and the hist method's time also grows with the rows; a power law fitted where the
    libraries still weigh would bend the 64x figure down.
    """
    if any(scale["months"] == LARGEST for scale in scales):
        return None
    grown = sorted((s for s in scales if s["months"] >= 12), key=lambda s: s["months"])[-2:]
    if len(grown) < 2:
        return None
    small, large = grown
    step = (LARGEST - large["months"]) / (large["months"] - small["months"])

    def project(engine: str, key: str) -> float:
        return round(large[engine][key] + (large[engine][key] - small[engine][key]) * step, 1)

    return {
        "months": LARGEST,
        "label": f"{_label(LARGEST)} (extrapolated)",
        "from": [small["months"], large["months"]],
        "rows": round(large["rows"] * LARGEST / large["months"]),
        **{
            engine: {
                "seconds": project(engine, "seconds"),
                "largest_process_mib": project(engine, "largest_process_mib"),
            }
            for engine in ("local", "dask")
        },
    }


def render_markdown(doc: dict[str, Any]) -> str:
    """The two tables of the results document."""
    lines = [
        f"# Local against Dask, and tuning throughput, {doc['date']}",
        "",
        f"Machine: {doc['machine']}. {CONFIG['num_boost_round']} rounds, validation "
        f"{VAL_MONTH}. Dask: a LocalCluster of {DASK_WORKERS} workers at its defaults. Largest "
        "process: the peak resident set of the largest single process of the run (driver or "
        "worker). Times on shared cores, indicative only (load average before and after).",
        "",
        "| data | rows | local: time, largest process | Dask, 2 workers: time, largest process "
        "| Dask / local, largest process | RMSE local, Dask | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale in doc["scales"]:
        local, dask = scale["local"], scale["dask"]
        lines.append(
            f"| {scale['label']} ({scale['window']}) | {scale['rows']:,} "
            f"| {local['seconds']:.0f} s, {local['largest_process_mib']:.0f} MiB "
            f"| {dask['seconds']:.0f} s, {dask['largest']} "
            f"| {scale['largest_dask_over_local']:.2f} | {local['rmse']}, {dask['rmse']} "
            f"| {local['load_1min'][0]:.1f}-{dask['load_1min'][1]:.1f} |"
        )
    if doc.get("extrapolated"):
        guess = doc["extrapolated"]
        local, dask = guess["local"], guess["dask"]
        lines.append(
            f"| *{guess['label']}, from {guess['from'][0]} and {guess['from'][1]} months* "
            f"| *~{guess['rows']:,}* | *~{local['seconds']:.0f} s, "
            f"~{local['largest_process_mib']:.0f} MiB* | *~{dask['seconds']:.0f} s, "
            f"~{dask['largest_process_mib']:.0f} MiB* "
            f"| *{dask['largest_process_mib'] / local['largest_process_mib']:.2f}* | | |"
        )
    lines += [
        "",
        f"Tuning, `pipeline tune` on {TUNING_MONTH} (validate {VAL_MONTH}), seed 0, embedded "
        "default:",
        "",
        "| K (--parallel) | trials | trials per minute: search, whole process | process time "
        "| largest process | best RMSE | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in doc["tuning"]:
        lines.append(
            f"| {run['parallel']} | {run['trials']} | {run['trials_per_minute_search']}, "
            f"{run['trials_per_minute_process']} | {run['process_seconds']:.0f} s "
            f"| {run['largest']} | {run['best_rmse']} "
            f"| {run['load_1min'][0]:.1f}-{run['load_1min'][1]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any]) -> Path:
    """The results document and its tables, merged into the day's: a scale or a K measured
    again replaces its entry, the others stay (each entry says when it was measured)."""
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"dask-scale-{doc['date'][:10]}"
    merged = dict(doc)
    if stem.with_suffix(".json").is_file():
        earlier = json.loads(stem.with_suffix(".json").read_text())
        merged["scales"] = _merge(earlier["scales"], doc["scales"], "months")
        merged["tuning"] = _merge(earlier["tuning"], doc["tuning"], "parallel")
    merged["extrapolated"] = extrapolate(merged["scales"])
    stem.with_suffix(".json").write_text(json.dumps(merged, indent=2) + "\n")
    stem.with_suffix(".md").write_text(render_markdown(merged))
    return stem


def _merge(earlier: list[dict[str, Any]], now: list[dict[str, Any]], key: str) -> list[Any]:
    """``earlier``'s entries with ``now``'s in place of those of the same ``key``, by key."""
    entries = {entry[key]: entry for entry in earlier}
    entries.update({entry[key]: entry for entry in now})
    return [entries[value] for value in sorted(entries)]


def _scales(text: str) -> list[int]:
    """``--scales``: comma-separated window sizes, each one of :data:`ALLOWED_SCALES`."""
    try:
        scales = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of months: {text!r}") from None
    wrong = [scale for scale in scales if scale not in ALLOWED_SCALES]
    if wrong:
        allowed = ", ".join(map(str, ALLOWED_SCALES))
        raise argparse.ArgumentTypeError(f"{wrong} not among the scales {allowed}")
    return scales


def _say(message: str) -> None:
    """Progress on standard error."""
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    """Parse the arguments, measure, write the results after each measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scales",
        type=_scales,
        default=list(DEFAULT_SCALES),
        help="window sizes in months, comma-separated, of 1, 12, 192, 768 (default 1,12,192; "
        "768, 64x the year, takes hours; empty: tuning only)",
    )
    parser.add_argument("--trials", type=int, default=8, help="tuning trials per run (default 8)")
    parser.add_argument(
        "--parallel", type=int, nargs="*", default=[1, 2], help="tuning's K (default 1 2)"
    )
    arguments = parser.parse_args()
    if arguments.trials < 1 or any(k < 1 for k in arguments.parallel):
        parser.error("--trials and each --parallel must be at least 1")
    source = os.environ.get("PIPELINE_DATA_DIR")
    if not source:
        parser.error("PIPELINE_DATA_DIR must hold green 2022-01..2022-12, 2023-01 and 2023-02")
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "config": CONFIG,
        "scales": [],
        "tuning": [],
    }
    for parallel in arguments.parallel:
        doc["tuning"].append(measure_tuning(Path(source), arguments.trials, parallel, _say))
        write(doc)
    for months in sorted(set(arguments.scales)):
        doc["scales"].append(measure_scale(Path(source), months, _say))
        write(doc)
    stem = write(doc)
    print(stem.with_suffix(".md").read_text())
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
