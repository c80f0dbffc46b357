"""A tracking server refusing the credentials: one clear error naming them, at once, no retry."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from pipeline import tracking
from pipeline.errors import PipelineError, TransientError
from pipeline.flows import training
from pipeline.parameters import TrainingParameters

if TYPE_CHECKING:  # the type only: the server itself comes as a fixture
    from tests.pipeline.conftest import RefusingServer

PASSWORD = "not-the-password-0123456789"
REJECTED = "rejected MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (HTTP 401)"
DENIED = (
    "refused the request (HTTP 403): the user in MLFLOW_TRACKING_USERNAME lacks the "
    "permission, or the server's --allowed-hosts does not list the host of MLFLOW_TRACKING_URI"
)


@pytest.fixture
def wrong_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client sends these as basic auth."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)


@pytest.mark.usefixtures("wrong_password")
@pytest.mark.parametrize(("status", "expected"), [(401, REJECTED), (403, DENIED)])
def test_a_refusal_is_a_plain_pipeline_error_naming_the_variables_and_server(
    refusing_server: Callable[[int], RefusingServer], status: int, expected: str
) -> None:
    server = refusing_server(status)
    mlflow.set_tracking_uri(server.url)
    with pytest.raises(PipelineError) as raised:
        tracking.start_run(experiment="x", run_name="x", tags={})
    assert str(raised.value) == f"the MLflow server at {server.url} {expected}"
    assert not isinstance(raised.value, TransientError)  # the flow does not retry it
    assert len(server.requests) == 1  # nor does MLflow's client


def test_the_server_is_named_without_credentials_written_into_its_uri(
    refusing_server: Callable[[int], RefusingServer],
) -> None:
    server = refusing_server(401)
    mlflow.set_tracking_uri(server.url.replace("://", f"://admin:{PASSWORD}@"))
    with pytest.raises(PipelineError, match="rejected") as raised:
        tracking.end_run("0" * 32)
    assert PASSWORD not in str(raised.value)
    assert f"the MLflow server at {server.url} " in str(raised.value)


def http_error(status: int) -> requests.HTTPError:
    """What MLflow's proxied-artifact client raises for an HTTP ``status``."""
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error", response=response)


@pytest.mark.parametrize(
    ("error", "expected"),
    [(http_error(401), REJECTED), (http_error(403), DENIED)],
)
def test_a_refused_artifact_transfer_is_named_too(error: Exception, expected: str) -> None:
    @tracking.mlflow_call
    def upload() -> None:
        raise error

    with pytest.raises(PipelineError, match=re.escape(expected)):
        upload()


@pytest.mark.parametrize(
    "error",
    [
        http_error(500),
        MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST),
        MlflowException("server error"),
    ],
)
def test_other_mlflow_errors_pass_through_unchanged(error: Exception) -> None:
    @tracking.mlflow_call
    def call() -> None:
        raise error

    with pytest.raises(type(error)) as raised:
        call()
    assert raised.value is error


@pytest.mark.usefixtures("prefect_api", "wrong_password")
def test_the_flow_fails_at_its_first_mlflow_call_without_retrying(
    refusing_server: Callable[[int], RefusingServer],
    real_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = refusing_server(401)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    expected = f"the MLflow server at {server.url} {REJECTED}"
    with pytest.raises(PipelineError, match=f"^{re.escape(expected)}$"):
        training(
            TrainingParameters(
                data_dir=str(real_data_dir), train_month="2023-01", val_month="2023-02"
            )
        )
    # The run was never opened, so there is nothing to mark FAILED or to register.
    assert server.requests == [
        "GET /api/2.0/mlflow/experiments/get-by-name?experiment_name=trip-duration"
    ]
