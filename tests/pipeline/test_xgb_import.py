"""XGBoost is imported without scikit-learn (``pipeline.xgb``), and nothing else changes.

Each check runs in a fresh interpreter: which module imports XGBoost first is a property of
a whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

_REPORT = """
import json, sys
{imports}
print(json.dumps({{
    "sklearn": sorted(m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")),
    "xgboost": "xgboost" in sys.modules,
}}))
"""


def imported_after(imports: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _REPORT.format(imports=imports)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "module",
    [
        "pipeline.flows",  # the command line and every flow run on a worker
        "pipeline.serving",  # a logged model loaded for prediction
        "pipeline.tracking",
        "pipeline.plots",
    ],
)
def test_the_pipeline_imports_xgboost_without_scikit_learn(module: str) -> None:
    assert imported_after(f"import {module}") == {"sklearn": [], "xgboost": True}


def test_training_imports_xgboost_without_scikit_learn() -> None:
    report = imported_after(
        "from pipeline.features import make_labeled_set\n"
        "from pipeline.train import train_model\n"
        "from tests.pipeline.synthetic import SMALL_CONFIG, synthetic_trips\n"
        "sets = [make_labeled_set(synthetic_trips(m), label=m) for m in ('2023-01', '2023-02')]\n"
        "train_model(*sets, SMALL_CONFIG)"
    )
    assert report == {"sklearn": [], "xgboost": True}


def test_scikit_learn_stays_importable_and_xgboost_trains_after_it() -> None:
    report = imported_after(
        "import pipeline.xgb\n"
        "import sklearn.base\n"
        "from pipeline.xgb import xgboost as xgb\n"
        "booster = xgb.train({}, xgb.DMatrix([[1.0], [2.0]], label=[1.0, 2.0]), 2)\n"
        "assert booster.num_boosted_rounds() == 2"
    )
    assert "sklearn.base" in report["sklearn"]


def test_a_process_that_imported_scikit_learn_first_keeps_xgboost_s_estimators() -> None:
    imported_after(
        "import sklearn\n"
        "from pipeline.xgb import xgboost as xgb\n"
        "from xgboost.compat import SKLEARN_INSTALLED\n"
        "assert SKLEARN_INSTALLED\n"
        "xgb.XGBRegressor(n_estimators=2).fit([[1.0], [2.0]], [1.0, 2.0])"
    )


def test_a_dask_worker_running_the_engine_imports_xgboost_without_scikit_learn() -> None:
    """A worker process imports the engine's module for its first task, then xgboost.dask."""
    report = imported_after(
        "from distributed import Client, LocalCluster\n"
        "import pandas as pd\n"
        "from pipeline import dask_engine\n"
        "def worker_modules():\n"
        "    import xgboost.dask  # as xgboost.dask.train's tasks import it on a worker\n"
        "    return sorted(m for m in sys.modules if m.partition('.')[0] == 'sklearn')\n"
        "if __name__ == '__main__':\n"
        "    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,\n"
        "                      dashboard_address=':0') as cluster, Client(cluster) as client:\n"
        "        client.submit(dask_engine._empty_like, pd.DataFrame({'a': [1]})).result()\n"
        "        (on_worker,) = client.run(worker_modules).values()\n"
        "    assert on_worker == [], on_worker"
    )
    assert report["xgboost"]
