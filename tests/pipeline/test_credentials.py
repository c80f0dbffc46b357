"""A tracking server refusing the credentials: one clear error naming them, at once, no retry."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pytest

from pipeline import tracking
from pipeline.errors import PipelineError, TransientError
from pipeline.flows import training
from pipeline.parameters import TrainingParameters

if TYPE_CHECKING:  # test modules never import conftest at run time (other folders have one)
    from conftest import RefusingServer

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
