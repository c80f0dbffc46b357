"""Registry stage: register the evaluated model and move aliases.

Every new version gets the alias ``challenger``. ``champion`` moves to it only when its RMSE
beats the current champion's on the same validation data (or there is no champion yet).
The champion's recorded RMSE is used when it was validated on the same data; otherwise the
champion is re-scored on this run's validation trips, in a fresh interpreter so that it
runs with the pipeline code logged with it, as serving would. A registration that fails
half-way deletes its version: a failed run registers nothing.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from pipeline.data import MonthData, file_name
from pipeline.errors import PipelineError
from pipeline.evaluate import rmse
from pipeline.features import LabeledSet
from pipeline.model import input_columns
from pipeline.tracking import mlflow_call

CHALLENGER = "challenger"
CHAMPION = "champion"
RMSE_TAG = "rmse"
VALIDATION_TAG = "validation_data"

# Run with the model directory, an input parquet file and an output .npy path. It must not
# import `pipeline`: the model's own copy, which MLflow puts first on sys.path, is the one to use.
_SCORE_SCRIPT = """
import sys
import mlflow.pyfunc, numpy, pandas
model = mlflow.pyfunc.load_model(sys.argv[1])
numpy.save(sys.argv[3], numpy.asarray(model.predict(pandas.read_parquet(sys.argv[2]))))
"""


@dataclass(frozen=True, kw_only=True)
class Registration:
    """The registered version, the aliases it took, and the champion it was compared with."""

    model_name: str
    version: str
    aliases: tuple[str, ...]
    champion_rmse: float | None


def validation_key(month: MonthData, val: LabeledSet) -> str:
    """Identifies validation data across runs and machines: the file and its usable trips."""
    return f"{file_name(month.color, month.month)}:{len(val.target)}"


@mlflow_call
def champion_rmse(model_name: str, validation_key: str, val: LabeledSet) -> float | None:
    """The current champion's RMSE on ``val`` (identified by ``validation_key``), or None."""
    champion = _champion(model_name)
    if champion is None:
        return None
    tags = champion.tags or {}
    if tags.get(VALIDATION_TAG) == validation_key and RMSE_TAG in tags:
        return float(tags[RMSE_TAG])
    predicted = _score_in_fresh_interpreter(f"models:/{model_name}/{champion.version}", val.trips)
    return rmse(val.target, predicted)


@mlflow_call
def register(
    model_uri: str,
    *,
    model_name: str,
    rmse_value: float,
    champion_rmse_value: float | None,
    validation_key: str,
    tags: Mapping[str, str],
) -> Registration:
    """Register ``model_uri`` as a new version of ``model_name`` and move the aliases."""
    version_tags = {**tags, RMSE_TAG: repr(rmse_value), VALIDATION_TAG: validation_key}
    version = mlflow.register_model(model_uri, model_name, tags=version_tags).version
    client = MlflowClient()
    try:
        aliases = [CHALLENGER]
        client.set_registered_model_alias(model_name, CHALLENGER, version)
        if champion_rmse_value is None or rmse_value < champion_rmse_value:
            client.set_registered_model_alias(model_name, CHAMPION, version)
            aliases.append(CHAMPION)
    except BaseException:
        client.delete_model_version(model_name, version)
        raise
    return Registration(
        model_name=model_name,
        version=str(version),
        aliases=tuple(aliases),
        champion_rmse=champion_rmse_value,
    )


def _champion(model_name: str) -> ModelVersion | None:
    """The version holding the champion alias, if the model and the alias exist."""
    client = MlflowClient()
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = registered.aliases.get(CHAMPION)
    return None if version is None else client.get_model_version(model_name, version)


def _score_in_fresh_interpreter(model_uri: str, trips: pd.DataFrame) -> np.ndarray:
    """Predictions of the logged model ``model_uri`` for ``trips``, made by a new Python process."""
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = mlflow.artifacts.download_artifacts(model_uri, dst_path=f"{scratch}/model")
        inputs, outputs = Path(scratch, "trips.parquet"), Path(scratch, "minutes.npy")
        trips[input_columns(trips)].to_parquet(inputs)
        result = subprocess.run(
            [sys.executable, "-c", _SCORE_SCRIPT, model_dir, str(inputs), str(outputs)],
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            last_line = (result.stderr.strip().splitlines() or ["no error output"])[-1]
            raise PipelineError(f"could not score the current champion {model_uri}: {last_line}")
        return np.load(outputs)
