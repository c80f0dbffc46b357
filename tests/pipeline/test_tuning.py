"""The tuning flow: seeded Optuna trials as Prefect tasks on a local Dask cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.flows import tuning_flow
from pipeline.parameters import TrainingParameters
from pipeline.tracking import BEST_CONFIGURATION_ARTIFACT
from pipeline.train import TrainConfig
from pipeline.tuning import TuningParameters, new_study, suggest

# Few, small trials: the test is about the search's wiring, not its result.
TINY = TrainConfig(num_boost_round=8, early_stopping_rounds=4)


def search_of(data_dir: Path, name: str, seed: int) -> TuningParameters:
    return TuningParameters(
        training=TrainingParameters(
            train_month="2023-01",
            val_month="2023-02",
            data_dir=str(data_dir),
            experiment=name,
            hyperparameters=TINY,
        ),
        trials=2,
        parallel=2,
        seed=seed,
    )


def test_a_seed_fixes_the_sampled_configurations() -> None:
    def drawn(seed: int) -> list[TrainConfig]:
        study = new_study(seed)
        configs = []
        for rmse in (6.0, 5.5, 5.8):
            trial = study.ask()
            configs.append(suggest(trial, TINY))
            study.tell(trial, rmse)
        return configs

    assert drawn(7) == drawn(7)
    assert drawn(7) != drawn(8)
    for config in drawn(7):  # what the search draws is a valid training configuration
        assert TrainConfig.model_validate(config.model_dump()) == config
        assert config.num_boost_round == TINY.num_boost_round


# The local cluster's scheduler serves HTTP on 8787, or on another port with this warning when
# another Dask cluster on the machine holds 8787: harmless (its dashboard is off).
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")
@pytest.mark.slow  # a Dask cluster of worker processes: a minute on a loaded 2-core machine
@pytest.mark.usefixtures("prefect_api", "mlflow_store")
def test_the_search_nests_its_trials_and_logs_a_reusable_best(
    synthetic_data_dir: Path, unique_name: str
) -> None:
    first = tuning_flow(search_of(synthetic_data_dir, unique_name, seed=3))
    assert [trial.number for trial in first.trials] == [0, 1]
    assert first.best_rmse == min(trial.rmse for trial in first.trials)
    client = MlflowClient()
    parent = client.get_run(first.run_id)
    assert parent.info.status == "FINISHED"
    assert float(parent.data.metrics["best_rmse"]) == pytest.approx(first.best_rmse)
    nested = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{first.run_id}'"
    )
    by_trial = {int(run.data.params["trial"]): run for run in nested}
    assert set(by_trial) == {0, 1}
    for trial in first.trials:
        run = by_trial[trial.number]
        assert run.data.metrics["rmse"] == pytest.approx(trial.rmse)
        assert float(run.data.params["learning_rate"]) == trial.config.learning_rate
    best = json.loads(
        Path(client.download_artifacts(first.run_id, BEST_CONFIGURATION_ARTIFACT)).read_text()
    )
    # Usable as the training flow's hyperparameters as it is.
    usable = TrainingParameters.model_validate({"hyperparameters": best}).hyperparameters
    assert usable == first.best_hyperparameters

    again = tuning_flow(search_of(synthetic_data_dir, unique_name, seed=3))
    assert [t.config for t in again.trials] == [t.config for t in first.trials]
