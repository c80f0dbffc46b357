"""What the tracking stage logs with a model: code the model runs, linked metrics and params.

Against the session's real MLflow store (SQLite), with a model trained on synthetic months.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.data import MonthData, MonthSummary
from pipeline.evaluate import evaluate
from pipeline.features import LabeledSet
from pipeline.model import MODEL_MODULES

pytestmark = pytest.mark.usefixtures("mlflow_store")

# Imports the model's modules from the logged code alone and names any package module that
# came from elsewhere (the repository, an installed copy) or could not be found.
_IMPORT_CHECK = """
import importlib, sys
code = sys.argv[1]
sys.path.insert(0, code)
importlib.import_module("pipeline.model")
outside = [name for name, module in sys.modules.items()
           if name.split(".")[0] == "pipeline" and not module.__file__.startswith(code)]
print(outside)
"""


def _summary(month: str, labeled: LabeledSet) -> MonthSummary:
    """What the run records of a loaded month (here, a synthetic one)."""
    data = MonthData(
        color="green", month=month, source=f"/data/{month}", rows_read=2_000, trips=labeled.trips
    )
    return MonthSummary.of(data)


@pytest.fixture
def logged_run(
    unique_name: str,
    small_booster: xgb.Booster,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> tuple[str, str]:
    """A run tracked as the flow tracks it: (run ID, logged model URI)."""
    return _track(unique_name, small_booster, small_labeled)


def _track(
    experiment: str, booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> tuple[str, str]:
    """Track a run as the flow does: (run ID, logged model URI)."""
    tracking.configure_tracking()
    run_id = tracking.start_run(experiment=experiment, run_name="logging", tags={})
    model = tracking.log_training(
        run_id,
        params={"max_depth": 8, "color": "green"},
        months=[
            (_summary("2023-01", labeled[0]), "training"),
            (_summary("2023-02", labeled[1]), "validation"),
        ],
        booster=booster,
        val=labeled[1],
        evaluation=evaluate(booster, *labeled),
    )
    tracking.end_run(run_id)
    return run_id, model.uri


def test_logging_waits_for_the_warm_up_before_mlflow_logs_the_model(
    unique_name: str,
    small_booster: xgb.Booster,
    small_labeled: tuple[LabeledSet, LabeledSet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Else MLflow would build the warm-up's caches a second time, beside it."""
    calls: list[str] = []
    real_log_model = tracking.log_model
    monkeypatch.setattr(tracking, "_warmed", lambda: calls.append("warmed"))

    def log_model(*args: object, **kwargs: object) -> object:
        calls.append("log_model")
        return real_log_model(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tracking, "log_model", log_model)
    _track(unique_name, small_booster, small_labeled)
    assert calls == ["warmed", "log_model"]


def test_the_model_carries_the_code_it_imports_and_no_bytecode(
    logged_run: tuple[str, str], tmp_path: Path
) -> None:
    _, uri = logged_run
    model_dir = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    code = model_dir / "code"
    assert sorted(p.name for p in (code / "pipeline").iterdir()) == sorted(
        f"{module}.py" for module in MODEL_MODULES
    )
    assert not list(model_dir.rglob("*.pyc"))
    # The model's imports are closed over what it carries: nothing from this repository.
    checked = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK, str(code)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "[]"


def test_metrics_and_params_are_on_the_run_and_on_the_logged_model(
    logged_run: tuple[str, str],
) -> None:
    run_id, uri = logged_run
    run = MlflowClient().get_run(run_id)
    model = mlflow.get_logged_model(uri.removeprefix("models:/"))
    assert set(run.data.metrics) == {"rmse", "mae", "baseline_rmse", "baseline_mae", "trees"}
    assert {m.key: m.value for m in model.metrics or []} == run.data.metrics
    assert all(m.run_id == run_id for m in model.metrics or [])
    assert run.data.params == {"max_depth": "8", "color": "green"}
    assert model.params == run.data.params
    plots = {a.path for a in MlflowClient().list_artifacts(run_id, "plots")}
    assert plots == {"plots/feature_importance.png", "plots/predicted_vs_actual.png"}
