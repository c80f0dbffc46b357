"""Which failures the flow's I/O tasks retry: every one but bad input (unit level).

``tests/pipeline/test_flow.py`` shows Prefect applying it to a task in a flow; these pin
the predicate and the tasks' options without a Prefect server.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from mlflow.exceptions import MlflowException
from prefect.cache_policies import NO_CACHE

from pipeline import flows
from pipeline.errors import PipelineError, TransientError


@dataclass(frozen=True)
class FailedState:
    """What Prefect hands the predicate: a state whose result is the task's exception."""

    error: BaseException

    def result(self, *, raise_on_failure: bool) -> BaseException:
        assert raise_on_failure is False  # the predicate must not re-raise the failure
        return self.error


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransientError("S3 is unavailable"), True),
        (MlflowException("RESOURCE_EXHAUSTED"), True),
        (ConnectionError("connection reset by peer"), True),
        (OSError("No space left on device"), True),
        (TimeoutError("read timed out"), True),
        (PipelineError("green_tripdata_2023-01.parquet lacks column(s) DOLocationID"), False),
    ],
    ids=["transient", "mlflow", "connection", "os", "timeout", "bad-data"],
)
def test_every_failure_but_bad_input_is_worth_retrying(error: Exception, retried: bool) -> None:
    assert flows._worth_retrying(None, None, FailedState(error)) is retried


def test_every_io_stage_is_retried_with_backoff_and_training_is_not() -> None:
    for io_task in (
        flows.start_mlflow_run,
        flows.load,
        flows.log_to_mlflow,
        flows.register,
        flows.promote,
    ):
        assert io_task.retries == flows.IO_RETRIES == 3, io_task.name
        assert io_task.retry_condition_fn is flows._worth_retrying, io_task.name
        assert io_task.retry_delay_seconds == [5, 10, 20], io_task.name
        assert io_task.retry_jitter_factor == 0.5, io_task.name
    for stage in (flows.build_features, flows.train, flows.score):
        assert stage.retries == 0, stage.name
    assert flows.train.timeout_seconds == flows.TRAIN_TIMEOUT_SECONDS == 3600


def _stage() -> None:
    """A stand-in for a stage's function."""


def test_a_new_io_task_gets_the_retry_options_and_keeps_its_own() -> None:
    # The flow's tasks are made when pipeline.flows is imported; these make new ones, so that
    # a change to the option helpers shows here (mutmut cannot reach import-time code).
    made = flows._io_task("probe-io", task_run_name="probe-{x}", timeout_seconds=9)(_stage)

    assert made.name == "probe-io"
    assert made.fn is _stage
    assert made.retries == flows.IO_RETRIES
    assert made.retry_delay_seconds == [5, 10, 20]
    assert made.retry_jitter_factor == 0.5
    assert made.retry_condition_fn is flows._worth_retrying
    assert made.cache_policy is NO_CACHE
    assert (made.task_run_name, made.timeout_seconds) == ("probe-{x}", 9)


def test_a_new_task_is_not_cached_nor_retried_and_keeps_its_options() -> None:
    made = flows._task("probe", timeout_seconds=7)(_stage)

    assert (made.name, made.fn) == ("probe", _stage)
    assert made.cache_policy is NO_CACHE
    assert made.retries == 0
    assert made.timeout_seconds == 7
