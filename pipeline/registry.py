"""Registry stage: register the evaluated model, then promote it by compare-and-set.

:func:`register` adds a version without any alias, tagged with its RMSE, its validation data,
the digest of its files (``model_sha256``) and a registration key (the Prefect flow run ID).
It looks the key up first: a retried registration returns the version it already created
instead of adding a second one. A run failing after registration deletes its version
(:func:`discard`): a failed run leaves nothing registered and moves no alias.

:func:`promote` is a run's last step, called under a lock per registered model (the flow
holds a Prefect global concurrency limit): it reads the champion at that moment, scores it on
the run's validation data, and moves ``champion`` only when the new version's RMSE is lower
(or there is no champion); the version becomes ``challenger`` either way. So two concurrent
runs cannot demote a better champion: the second one compares with the first one's result.

The champion's recorded RMSE is used when it was validated on the same data; otherwise it is
re-scored from its logged booster file with this worker's own feature code, once its files
match the digest recorded at registration: nothing read from the artifact store runs as code.
That digest is the one :func:`pipeline.model.log_model` took of the files as they were
uploaded: what the store received from this run, not what it holds by the time the version
is registered (a change in between is caught at the first re-scoring, as any later one).
"""

from __future__ import annotations

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
from pipeline.features import LabeledSet, make_features
from pipeline.model import LoggedModel, input_columns, load_booster, model_digest
from pipeline.tracking import mlflow_call
from pipeline.train import predict_minutes

CHALLENGER = "challenger"
CHAMPION = "champion"
RMSE_TAG = "rmse"
VALIDATION_TAG = "validation_data"
DIGEST_TAG = "model_sha256"
REGISTRATION_TAG = "prefect_flow_run_id"


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A registered version, not yet promoted: what promotion compares with the champion."""

    model_name: str
    version: str
    rmse: float
    validation_key: str


@dataclass(frozen=True, kw_only=True)
class Promotion:
    """The aliases a version took, and the champion's RMSE it was compared with (None: none)."""

    aliases: tuple[str, ...]
    champion_rmse: float | None


def validation_key(month: MonthData, val: LabeledSet) -> str:
    """Identifies validation data across runs and machines: the file and its usable trips."""
    return f"{file_name(month.color, month.month)}:{len(val.target)}"


@mlflow_call
def register(
    model: LoggedModel,
    *,
    model_name: str,
    run_id: str,
    registration_key: str,
    rmse_value: float,
    validation_key: str,
    tags: Mapping[str, str],
) -> Candidate:
    """The version of ``model_name`` registered from ``run_id`` under ``registration_key``.

    Created (with the digest of the model's files as logged) only if no such version exists yet.
    """
    version = _registered(model_name, run_id, registration_key)
    if version is None:
        version_tags = {
            **tags,
            RMSE_TAG: repr(rmse_value),
            VALIDATION_TAG: validation_key,
            DIGEST_TAG: model.digest,
            REGISTRATION_TAG: registration_key,
        }
        version = mlflow.register_model(model.uri, model_name, tags=version_tags)
    return Candidate(
        model_name=model_name,
        version=str(version.version),
        rmse=rmse_value,
        validation_key=validation_key,
    )


@mlflow_call
def discard(candidate: Candidate) -> None:
    """Delete ``candidate``'s version (its run failed after registering it)."""
    MlflowClient().delete_model_version(candidate.model_name, candidate.version)


@mlflow_call
def promote(candidate: Candidate, val: LabeledSet) -> Promotion:
    """Make ``candidate`` challenger, and champion if it beats the champion on ``val`` now.

    A compare-and-set: the caller holds the model's promotion lock around it.
    """
    name = candidate.model_name
    champion = _champion(name)
    # A retry. (str: a SQL store's client gives the version as an int, the REST client a str.)
    already = champion is not None and str(champion.version) == candidate.version
    champion_rmse = (
        None if champion is None or already else _rmse_on(champion, candidate.validation_key, val)
    )
    client = MlflowClient()
    client.set_registered_model_alias(name, CHALLENGER, candidate.version)
    if already or champion_rmse is None or candidate.rmse < champion_rmse:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
        return Promotion(aliases=(CHALLENGER, CHAMPION), champion_rmse=champion_rmse)
    return Promotion(aliases=(CHALLENGER,), champion_rmse=champion_rmse)


@mlflow_call
def champion_rmse(model_name: str, validation_key: str, val: LabeledSet) -> float | None:
    """The current champion's RMSE on ``val`` (identified by ``validation_key``), or None."""
    champion = _champion(model_name)
    return None if champion is None else _rmse_on(champion, validation_key, val)


def _registered(model_name: str, run_id: str, registration_key: str) -> ModelVersion | None:
    """The version of ``model_name`` from ``run_id`` registered under ``registration_key``."""
    found = MlflowClient().search_model_versions(f"tags.{REGISTRATION_TAG} = '{registration_key}'")
    matching = [v for v in found if v.name == model_name and v.run_id == run_id]
    return min(matching, key=lambda v: int(v.version), default=None)


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


def _rmse_on(champion: ModelVersion, validation_key: str, val: LabeledSet) -> float:
    """``champion``'s RMSE on ``val``: as recorded if validated on the same data, else re-scored."""
    tags = champion.tags or {}
    if tags.get(VALIDATION_TAG) == validation_key and RMSE_TAG in tags:
        return float(tags[RMSE_TAG])
    return rmse(val.target, _rescore(champion, val.trips))


def _rescore(version: ModelVersion, trips: pd.DataFrame) -> np.ndarray:
    """Predictions of ``version``'s logged booster for ``trips``, made by this worker's code.

    Its files must match the digest recorded at registration: a model changed in the artifact
    store since is refused.
    """
    uri = f"models:/{version.name}/{version.version}"
    expected = (version.tags or {}).get(DIGEST_TAG)
    if expected is None:
        raise PipelineError(
            f"cannot re-score the champion {uri}: it has no {DIGEST_TAG} tag (registered before "
            "model digests were recorded), so its files cannot be checked. Check them and tag "
            f"the version with {DIGEST_TAG}, or move the champion alias to a version that has one"
        )
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(mlflow.artifacts.download_artifacts(uri, dst_path=scratch))
        actual = model_digest(model_dir)
        if actual != expected:
            raise PipelineError(
                f"the files of the champion {uri} do not match the digest recorded at "
                f"registration ({DIGEST_TAG} {expected}, found {actual}): they were changed in "
                "the artifact store; not re-scoring or promoting against it"
            )
        booster = load_booster(model_dir)
    return predict_minutes(booster, make_features(trips[input_columns(trips)]))
