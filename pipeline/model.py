"""The logged model: an MLflow pyfunc that takes raw trip records and returns minutes.

Preprocessing travels inside it: the ``pipeline`` package's modules it imports are logged with
the model (``code_paths``, :data:`MODEL_MODULES`), the model is built from code (``serving.py``,
no pickle) and :func:`pipeline.features.make_features` runs at prediction time, so

    mlflow.pyfunc.load_model("models:/<name>@champion").predict(raw_trips)

reproduces training's features on any machine with the logged requirements, without this
repository. The booster is stored as a plain XGBoost UBJSON file beside it
(``artifacts/booster.ubj``): the registry re-scores a champion from that file alone, with the
worker's own feature code (:func:`load_booster`), after checking :func:`model_digest`.

:func:`log_model` digests the model's files as MLflow uploads them, from the directory it
uploads them from: the registry records that digest without downloading the model again.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.store.artifact.models_artifact_repo import REGISTERED_MODEL_META_FILE_NAME
from mlflow.types import ColSpec, Schema, TensorSpec

from pipeline.errors import PipelineError
from pipeline.features import make_features, pickup_column_of
from pipeline.schema import DROPOFF_ZONE, PICKUP_ZONE, TRIP_DISTANCE
from pipeline.train import predict_minutes
from pipeline.xgb import xgboost as xgb

MODEL_NAME_IN_RUN = "model"
BOOSTER_ARTIFACT = "booster"
BOOSTER_FILE = "booster.ubj"
# Where pyfunc puts the files given as ``artifacts`` inside the logged model's directory.
_ARTIFACTS_DIR = "artifacts"
_PACKAGE_DIR = Path(__file__).resolve().parent
_MODEL_CODE = _PACKAGE_DIR / "serving.py"
# The package's modules the model imports at prediction time (serving.py -> model.py and what it
# imports): the code logged with it. Not the flow, tracking or registry code it never runs: each
# logged file is one more upload, and one more download when the version is registered.
MODEL_MODULES = ("__init__", "errors", "schema", "features", "train", "xgb", "model")
# What the model needs at prediction time (pins of the environment that logged it).
_RUNTIME_PACKAGES = ("mlflow", "xgboost", "pandas", "numpy", "cloudpickle")
_EXAMPLE_ROWS = 5


@dataclass(frozen=True)
class LoggedModel:
    """A model logged to the tracking store: its URI and the digest of the files uploaded."""

    uri: str
    digest: str


class TripDurationModel(PythonModel):
    """Predicted trip duration in minutes from raw TLC trip records."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the booster logged beside the model."""
        self._booster = xgb.Booster(model_file=context.artifacts[BOOSTER_ARTIFACT])

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Minutes for each trip of ``model_input`` (a raw trip-record frame)."""
        return predict_minutes(self._booster, make_features(model_input))


def input_columns(trips: pd.DataFrame) -> list[str]:
    """The raw columns the model reads: what is known at pickup, plus the metered distance."""
    return [pickup_column_of(trips), PICKUP_ZONE, DROPOFF_ZONE, TRIP_DISTANCE]


def signature(pickup_column: str) -> ModelSignature:
    """Raw trip columns in (extra columns are ignored), minutes out."""
    inputs = Schema(
        [
            ColSpec("datetime", pickup_column),
            ColSpec("long", PICKUP_ZONE),
            ColSpec("long", DROPOFF_ZONE),
            ColSpec("double", TRIP_DISTANCE),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype("float32"), (-1,))]))


def log_model(run_id: str, booster: xgb.Booster, trips: pd.DataFrame) -> LoggedModel:
    """Log ``booster`` as the run's pyfunc model; ``trips`` give the example."""
    columns = input_columns(trips)
    example = trips[columns].head(_EXAMPLE_ROWS).reset_index(drop=True)
    with (
        tempfile.TemporaryDirectory() as scratch,
        warnings.catch_warnings(),
        _no_bytecode(),
        _digesting_upload() as digests,
    ):
        # MLflow 3.17 compares columns with a range when saving the example (pandas 3 warns).
        warnings.filterwarnings("ignore", "Operation with range is deprecated", DeprecationWarning)
        booster_path = Path(scratch, BOOSTER_FILE)
        booster.save_model(booster_path)
        code = _model_code(Path(scratch, "code"))
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME_IN_RUN,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=str(_MODEL_CODE),
            artifacts={BOOSTER_ARTIFACT: str(booster_path)},
            code_paths=[str(code)],
            signature=signature(columns[0]),
            input_example=example,
            pip_requirements=[f"{name}=={version(name)}" for name in _RUNTIME_PACKAGES],
        )
    digest = digests[0] if len(digests) == 1 else None
    if digest is None:
        raise PipelineError(
            f"MLflow did not upload the model {info.model_uri} as one directory (uploads: "
            f"{digests}): the digest of its files is unknown (an MLflow upgrade?)"
        )
    return LoggedModel(uri=info.model_uri, digest=digest)


@contextmanager
def _digesting_upload() -> Iterator[list[str | None]]:
    """Meanwhile, :func:`model_digest` of each directory MLflow uploads as a logged model's files,
    taken just before it uploads them: the digest of what the store receives, with no download.

    ``Model.log`` saves the model in a temporary directory of its own, uploads it with
    ``MlflowClient.log_model_artifacts`` and removes it: that call is the one moment its files
    are all there and final. Patched on the class (``Model.log`` makes its own client), for
    the length of one ``log_model`` call: a flow logs one model at a time.
    """
    upload = MlflowClient.log_model_artifacts
    digests: list[str | None] = []

    def digest_then_upload(
        self: MlflowClient, model_id: str, local_dir: str, artifact_path: str | None = None
    ) -> None:
        # Files put under a subdirectory are not the model as a whole: None.
        digests.append(None if artifact_path else model_digest(Path(local_dir)))
        upload(self, model_id, local_dir, artifact_path)

    MlflowClient.log_model_artifacts = digest_then_upload  # type: ignore[method-assign]
    try:
        yield digests
    finally:
        MlflowClient.log_model_artifacts = upload  # type: ignore[method-assign]


@contextmanager
def _no_bytecode() -> Iterator[None]:
    """No ``.pyc`` written meanwhile: MLflow loads the model it saved to check the input example,
    after it cleared the model's ``__pycache__``, and would upload the bytecode of that load."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


def _model_code(directory: Path) -> Path:
    """A copy of the package holding only :data:`MODEL_MODULES`, in ``directory``; its path."""
    package = directory / _PACKAGE_DIR.name
    package.mkdir(parents=True)
    for module in MODEL_MODULES:
        shutil.copyfile(_PACKAGE_DIR / f"{module}.py", package / f"{module}.py")
    return package


def model_digest(model_dir: Path) -> str:
    """``sha256:<hex>`` over every file of a downloaded model: its relative path and content.

    Leaves out the ``registered_model_meta`` file MLflow's client writes into a directory it
    downloads by registered name and version (it is not stored with the model).
    """
    digest = hashlib.sha256()
    local_only = model_dir / REGISTERED_MODEL_META_FILE_NAME
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and p != local_only):
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"sha256:{digest.hexdigest()}"


def load_booster(model_dir: Path) -> xgb.Booster:
    """The booster of a downloaded model, read as data (XGBoost's format: no code runs)."""
    return xgb.Booster(model_file=str(model_dir / _ARTIFACTS_DIR / BOOSTER_FILE))
