"""The local-against-Dask bench's own logic: its windows, its rates and its extrapolation.

The measurements themselves are the bench's (``python -m bench.dask_scale``), never a test's.
"""

import json
from pathlib import Path

import pandas as pd
import pytest

from bench import dask_scale
from bench.dask_memory import build_window


def _real_months(directory: Path) -> None:
    """Tiny stand-ins for green 2022-01..12 and 2023-02: one trip in each."""
    for name in [f"2022-{month:02d}" for month in range(1, 13)] + ["2023-02"]:
        pickup = pd.Timestamp(f"{name}-15 10:00")
        pd.DataFrame(
            {
                "lpep_pickup_datetime": [pickup],
                "lpep_dropoff_datetime": [pickup + pd.Timedelta(minutes=12)],
            }
        ).to_parquet(directory / f"green_tripdata_{name}.parquet", index=False)


@pytest.mark.parametrize(
    ("months", "first", "last"),
    [
        (1, "2022-12", "2022-12"),
        (12, "2022-01", "2022-12"),
        (13, "2021-12", "2022-12"),
        (168, "2009-01", "2022-12"),
        (192, "2009-01", "2025-12"),
    ],
)
def test_copies_of_the_real_year_go_back_by_whole_years_to_2009_then_on_from_2024(
    tmp_path: Path, months: int, first: str, last: str
) -> None:
    source, target = tmp_path / "real", tmp_path / "window"
    source.mkdir()
    target.mkdir()
    _real_months(source)

    window = build_window(source, target, months)

    assert (len(window), window[0], window[-1]) == (months, first, last)
    assert not [month for month in window if month.startswith("2023")]
    for month in (first, last):
        copy = pd.read_parquet(target / f"green_tripdata_{month}.parquet")
        assert copy["lpep_pickup_datetime"].iloc[0] == pd.Timestamp(f"{month}-15 10:00")
    assert (target / "green_tripdata_2023-02.parquet").is_file()
    assert len(list(target.glob("*.parquet"))) == months + 1


def test_a_window_of_no_months_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one month"):
        build_window(tmp_path, tmp_path, 0)


def test_the_search_rate_counts_from_the_first_batch_to_the_last_trial() -> None:
    log = "\n".join(
        [
            "21:00:00.000 | INFO    | Flow run 'x' - starting",
            "21:00:10.000 | INFO    | Flow run 'x' - trial 0: RMSE 5.1",
            "21:00:10.500 | INFO    | Flow run 'x' - trial 1: RMSE 5.2",
            "21:00:40.000 | INFO    | Flow run 'x' - trial 2: RMSE 5.0",
            "21:00:40.500 | INFO    | Flow run 'x' - trial 3: RMSE 5.3",
        ]
    )
    times = dask_scale._trial_times(log)

    assert dask_scale._steady_rate(times, trials=4, parallel=2) == pytest.approx(4.0)
    assert dask_scale._steady_rate(times, trials=5, parallel=2) is None  # a trial not logged


def _scale(months: int, seconds: float, peak: float) -> dict[str, object]:
    engine = {"seconds": seconds, "largest_process_mib": peak}
    return {"months": months, "rows": months * 1000, "local": engine, "dask": engine}


def test_768_months_are_extrapolated_on_the_line_through_the_two_largest_windows() -> None:
    guess = dask_scale.extrapolate([_scale(1, 1, 100), _scale(12, 10, 400), _scale(192, 82, 760)])

    assert guess is not None
    assert guess["from"] == [12, 192]
    # 2 MiB and 0.4 s a month from 12 to 192 months; 576 months more.
    assert guess["local"]["largest_process_mib"] == pytest.approx(760 + 2 * 576)
    assert guess["dask"]["seconds"] == pytest.approx(82 + 0.4 * 576)
    assert guess["rows"] == 768_000
    measured = [_scale(months, 1, 1) for months in (12, 192, 768)]
    assert dask_scale.extrapolate(measured) is None


def test_scales_outside_the_bench_are_refused_by_name() -> None:
    assert dask_scale._scales("1,12,192,768") == [1, 12, 192, 768]
    assert dask_scale._scales("") == []
    with pytest.raises(Exception, match=r"\[24\] not among the scales"):
        dask_scale._scales("1,24")


def test_a_day_s_results_keep_what_a_later_run_did_not_measure_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dask_scale, "RESULTS", tmp_path)
    tuning = {
        "parallel": 1, "trials": 8, "trials_per_minute_search": 6.0,
        "trials_per_minute_process": 5.0, "process_seconds": 90.0, "largest": "worker, 500 MiB",
        "best_rmse": 4.4, "load_1min": [1.0, 1.0],
    }  # fmt: skip
    first = {"date": "2026-11-29T21:00:00+00:00", "machine": {}, "scales": [], "tuning": [tuning]}
    dask_scale.write(first)
    again = {**tuning, "trials_per_minute_search": 7.0}
    dask_scale.write({**first, "tuning": [again, {**tuning, "parallel": 2}]})

    written = json.loads((tmp_path / "dask-scale-2026-11-29.json").read_text())
    assert [(run["parallel"], run["trials_per_minute_search"]) for run in written["tuning"]] == [
        (1, 7.0),
        (2, 6.0),
    ]
