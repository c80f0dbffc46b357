"""What a training run records about its data and code, where runs go, and a server refusing
the credentials (stand-in servers on loopback only)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from pipeline import tracking
from pipeline.data import MonthData, MonthSummary
from pipeline.errors import PipelineError, TransientError

if TYPE_CHECKING:  # the type only: the server itself comes as a fixture
    from tests.pipeline.conftest import RefusingServer


def _month(source: str, distance: float = 1.5, index: tuple[int, int] = (0, 1)) -> MonthSummary:
    trips = pd.DataFrame(
        {
            "lpep_pickup_datetime": pd.to_datetime(["2023-01-01 10:00", "2023-01-02 11:30"]),
            "PULocationID": np.array([74, 75], dtype="int64"),
            "trip_distance": [distance, 3.25],
        },
        index=list(index),
    )
    loaded = MonthData(color="green", month="2023-01", source=source, rows_read=3, trips=trips)
    return MonthSummary.of(loaded)  # what the run records of a loaded month


def test_a_month_is_recorded_as_a_dataset_with_its_source_schema_size_and_context() -> None:
    source = "/data/green_tripdata_2023-01.parquet"

    recorded = tracking._dataset_input(_month(source), "training")

    dataset = recorded.dataset
    assert dataset.name == "green_tripdata_2023-01"
    assert dataset.source_type == "local"
    assert json.loads(dataset.source) == {"uri": source}
    assert dataset.schema is not None
    assert dataset.profile is not None
    assert json.loads(dataset.schema) == {
        "mlflow_colspec": [
            {"type": "datetime", "name": "lpep_pickup_datetime", "required": True},
            {"type": "long", "name": "PULocationID", "required": True},
            {"type": "double", "name": "trip_distance", "required": True},
        ]
    }
    assert json.loads(dataset.profile) == {"num_rows": 2, "num_elements": 6}
    assert {tag.key: tag.value for tag in recorded.tags} == {
        "mlflow.data.context": "training",
        "month": "2023-01",
        "rows": "2",
    }


def test_a_month_read_from_s3_is_an_s3_dataset() -> None:
    uri = "s3://mlops-artifacts/data/green_tripdata_2023-01.parquet"

    dataset = tracking._dataset_input(_month(uri), "validation").dataset

    assert dataset.source_type == "s3"
    assert json.loads(dataset.source) == {"uri": uri}


def test_the_dataset_digest_follows_the_rows_not_where_they_were_read() -> None:
    digest = tracking._dataset_input(_month("/a/x.parquet"), "training").dataset.digest

    assert len(digest) == 8
    int(digest, 16)
    assert tracking._dataset_input(_month("s3://b/x.parquet"), "training").dataset.digest == digest
    changed = tracking._dataset_input(_month("/a/x.parquet", distance=1.6), "training")
    assert changed.dataset.digest != digest
    # The same rows numbered otherwise (a Dask partition's, a filtered frame's) are the same data.
    renumbered = tracking._dataset_input(_month("/a/x.parquet", index=(7, 9)), "training")
    assert renumbered.dataset.digest == digest


@pytest.fixture
def restored_tracking_uri() -> Iterator[None]:
    """MLflow's tracking URI is process-wide: put back what the other tests set."""
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


@pytest.mark.usefixtures("restored_tracking_uri")
def test_runs_go_to_the_tracking_uri_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")

    assert tracking.configure_tracking() == "http://127.0.0.1:5999"
    assert mlflow.get_tracking_uri() == "http://127.0.0.1:5999"


@pytest.mark.usefixtures("restored_tracking_uri")
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_without_a_tracking_uri_runs_go_to_the_embedded_store(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", value)

    assert tracking.configure_tracking() == "sqlite:///mlflow.db"
    assert mlflow.get_tracking_uri() == "sqlite:///mlflow.db"


def test_the_code_version_is_a_digest_of_the_pipeline_s_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pipeline"
    shutil.copytree(tracking._PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(tracking, "_PACKAGE_DIR", package)
    version = tracking.code_version()
    assert version.startswith("sha256:")
    assert len(version) == len("sha256:") + 16
    int(version.removeprefix("sha256:"), 16)

    (package / "notes.txt").write_text("not code")  # only the .py files count
    assert tracking.code_version() == version
    (package / "train.py").write_text((package / "train.py").read_text() + "\n# changed\n")
    changed = tracking.code_version()
    assert changed != version
    (package / "train.py").rename(package / "train2.py")  # a renamed module is other code
    assert tracking.code_version() not in {version, changed}


# A tracking server refusing the credentials: one clear error naming them, at once, no retry
# (the flow failing so: test_credentials.py).

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


def test_an_http_error_without_a_response_passes_through_unchanged() -> None:
    # requests raises some HTTPErrors (a redirect loop, a refused body) before any answer.
    error = requests.HTTPError("no answer")
    assert tracking._http_status(error) is None

    @tracking.mlflow_call
    def call() -> None:
        raise error

    with pytest.raises(requests.HTTPError) as raised:
        call()
    assert raised.value is error


def test_warm_up_builds_once_what_the_first_model_logging_would(
    mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a thread, started once; logging waits for it. Each of MLflow's private caches it
    fills is checked here: an MLflow upgrade that renames one fails this test rather than
    silently putting the work back on the run's critical path."""
    import sys

    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking.context.git_context import GitRunContext
    from mlflow.tracking.context.registry import _run_context_provider_registry
    from mlflow.utils import requirements_utils

    git = next(p for p in _run_context_provider_registry if isinstance(p, GitRunContext))
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(git, "_cache", {})
    monkeypatch.setattr(registry_utils, "_model_registry_store_registry", None)
    monkeypatch.delitem(sys.modules, "pipeline.plots", raising=False)
    monkeypatch.setattr(tracking, "_warm_up", None)

    tracking.warm_up()
    thread = tracking._warm_up
    assert thread is not None
    # A daemon (a run failing before it logs does not wait for it at exit), named for what it
    # is in a stack dump.
    assert thread.daemon
    assert thread.name == "mlflow-warm-up"
    tracking.warm_up()
    assert tracking._warm_up is thread  # once per process
    tracking._warmed()
    assert not thread.is_alive()
    assert requirements_utils._MODULES_TO_PACKAGES is not None
    assert "git_info" in git._cache
    assert registry_utils._model_registry_store_registry is not None
    assert "pipeline.plots" in sys.modules


def test_a_failing_warm_up_step_leaves_the_rest_done_and_the_error_to_the_real_call(
    mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import threading

    from mlflow.utils import requirements_utils

    def broken() -> None:
        raise OSError("site-packages unreadable")

    monkeypatch.setattr(requirements_utils, "_init_modules_to_packages_map", broken)
    monkeypatch.delitem(sys.modules, "pipeline.plots", raising=False)
    monkeypatch.setattr(tracking, "_warm_up", None)
    escaped: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    tracking.warm_up()
    tracking._warmed()
    assert escaped == []
    assert "pipeline.plots" in sys.modules  # the steps after the failed one ran
