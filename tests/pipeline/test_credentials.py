"""A tracking server refusing the credentials: the flow fails at once, naming them, no retry.

(The refusal itself, call by call: test_tracking.py.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.errors import PipelineError
from pipeline.flows import training
from pipeline.parameters import TrainingParameters

if TYPE_CHECKING:  # the type only: the server itself comes as a fixture
    from tests.pipeline.conftest import RefusingServer

PASSWORD = "not-the-password-0123456789"
REJECTED = "rejected MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (HTTP 401)"


@pytest.fixture
def wrong_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client sends these as basic auth."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)


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
