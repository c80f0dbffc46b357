"""Data bigger than a process (issue 11, item 5): two Dask workers, each limited below what
the local engine needs for the same training data, train it and get the local engine's RMSE.

Three years of green trips (2,386,950 rows: the twelve real months of 2022 and the same
months moved back by one and two years, ``bench.dask_memory.build_window``), validated on
2023-02. The local engine trains in a child process whose resident memory is sampled every
20 ms: its peak is what one process needs. Then the Dask engine trains on a LocalCluster of
two worker processes, each limited to 0.8 of that peak, with spilling and pausing off (the
limit is a ceiling: a worker above 95 % of it is restarted and the training fails). At this
size the data decide the peaks, not the libraries a worker carries (about 330 MiB): measured
on 2026-11-29, local 768 MiB, limit 614 MiB, largest worker 527 MiB.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

YEARS = 3
FRACTION = 0.8


def test_two_workers_each_below_the_local_engine_s_peak_train_the_same_model(
    real_data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Imported here: `make mutate` collects this module from mutants/, which holds no bench/.
    from bench import dask_memory

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(real_data_dir))
    # The window's scratch files and the local run's figures: the test's own directory.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    result = dask_memory.run(copies=YEARS, fraction=FRACTION, reuse_local=False)

    print(result)  # the figures, for the log
    local, dask = result["local"], result["dask"]
    assert result["rows"] > 2_000_000  # the local engine's training rows
    assert dask["worker_memory_limit_mib"] < local["peak_mib"]
    workers = [peak for name, peak in dask["processes_mib"].items() if name.endswith(":worker")]
    assert len(workers) == 2
    assert max(workers) == dask["largest_worker_peak_mib"] < dask["worker_memory_limit_mib"]
    assert abs(dask["rmse"] - local["rmse"]) < dask_memory.RMSE_TOLERANCE
