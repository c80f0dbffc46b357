"""``mlops smoke``'s ``dask-cluster`` check against real Dask schedulers started here: a
LocalCluster of in-process workers, on plain TCP and on TLS (certificates from a test CA)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
from distributed import LocalCluster

from pipeline.dask_engine import TLS_SETTINGS
from pipeline.ports import free_port
from scripts.smoke import Check, CheckFailed, CheckSkipped, dask_checks, dask_cluster, run_checks
from tests.support.dask_tls import IdentityFiles, client_settings, tls_local_cluster


class Overran(BaseException):
    """A check that outlived its test's deadline (a BaseException: nothing in it catches that)."""


@pytest.fixture(scope="module")
def tcp_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",  # a free port: 8787 may be taken
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, IdentityFiles]]:
    with tls_local_cluster(tmp_path_factory.mktemp("tls")) as cluster:
        yield cluster


def test_the_scheduler_sees_the_expected_workers(tcp_cluster: LocalCluster) -> None:
    verdict = dask_cluster(tcp_cluster.scheduler_address, "2")
    assert verdict == f"{tcp_cluster.scheduler_address} answers with 2 workers"


def test_a_missing_worker_fails_naming_the_counts_and_the_workers(
    tcp_cluster: LocalCluster,
) -> None:
    address = tcp_cluster.scheduler_address
    with pytest.raises(CheckFailed) as failed:
        dask_cluster(address, "3")

    assert str(failed.value) == (
        f"the scheduler at {address} sees 2 workers (0, 1); MLOPS_DASK_WORKERS expects 3"
    )


def test_a_scheduler_without_workers_fails_saying_none() -> None:
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        with pytest.raises(CheckFailed) as failed:
            dask_cluster(address, "1")

    assert str(failed.value) == (
        f"the scheduler at {address} sees 0 workers (none); MLOPS_DASK_WORKERS expects 1"
    )


def test_an_unreachable_scheduler_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed port: Dask retries the connection until the check's timeout (10 s), which is
    # not what is tested here; under `make mutate`, every smoke mutant's session paid it.
    monkeypatch.setattr("scripts.smoke._DASK_TIMEOUT_SECONDS", 1)
    address = f"tcp://127.0.0.1:{free_port()}"

    def overran(signum: int, frame: object) -> None:
        # Not a TimeoutError: the check turns those into its own verdict.
        raise Overran("the check did not give up at its 1 s timeout (Dask's own is 30 s)")

    previous = signal.signal(signal.SIGALRM, overran)
    signal.alarm(10)
    try:
        with pytest.raises(CheckFailed, match=f"cannot reach the Dask scheduler at {address}"):
            dask_cluster(address, "1")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_worker_count_that_is_not_a_number_fails(tcp_cluster: LocalCluster) -> None:
    with pytest.raises(CheckFailed, match="MLOPS_DASK_WORKERS must be a number"):
        dask_cluster(tcp_cluster.scheduler_address, "")


def test_a_tls_scheduler_is_checked_with_the_hosts_identity(
    tls_cluster: tuple[LocalCluster, IdentityFiles],
) -> None:
    cluster, files = tls_cluster
    with dask.config.set(client_settings(files)):
        assert dask_cluster(cluster.scheduler_address, "1").endswith("answers with 1 workers")


def test_a_tls_scheduler_without_an_identity_is_skipped_not_failed(
    tls_cluster: tuple[LocalCluster, IdentityFiles], tmp_path: Path
) -> None:
    cluster, _ = tls_cluster
    with dask.config.set(dict.fromkeys(TLS_SETTINGS)):
        with pytest.raises(CheckSkipped, match="DASK_DISTRIBUTED__COMM__TLS__CA_FILE"):
            dask_cluster(cluster.scheduler_address, "1")
        (verdict,) = run_checks(
            [Check("dask-cluster", (), lambda: dask_cluster(cluster.scheduler_address, "1"))]
        )
    assert verdict.outcome == "SKIP"
    assert "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in verdict.detail  # why, in the verdict


def test_the_check_runs_only_when_the_env_file_names_a_cluster(
    tcp_cluster: LocalCluster,
) -> None:
    assert dask_checks({"MLFLOW_TRACKING_URI": "http://localhost:5000"}) == []
    assert dask_checks({"MLOPS_DASK_SCHEDULER_ADDRESS": ""}) == []
    env = {"MLOPS_DASK_SCHEDULER_ADDRESS": tcp_cluster.scheduler_address, "MLOPS_DASK_WORKERS": "2"}
    (verdict,) = run_checks(dask_checks(env))
    assert (verdict.check, verdict.outcome) == ("dask-cluster", "PASS")
    del env["MLOPS_DASK_WORKERS"]
    (verdict,) = run_checks(dask_checks(env))
    assert (verdict.outcome, verdict.detail) == (
        "FAIL",
        "MLOPS_DASK_WORKERS must be a number of workers, got ''",
    )


def test_the_env_files_identity_is_the_one_the_check_uses(
    tls_cluster: tuple[LocalCluster, IdentityFiles],
) -> None:
    """The process twin's env file names the client identity it made: `mlops smoke` reaches
    the TLS scheduler with it, nothing set in the environment."""
    cluster, paths = tls_cluster
    variables = list(TLS_SETTINGS.values())
    env = {
        "MLOPS_DASK_SCHEDULER_ADDRESS": cluster.scheduler_address,
        "MLOPS_DASK_WORKERS": "1",
        variables[0]: paths["ca"],
        variables[1]: paths["cert"],
        variables[2]: paths["key"],
    }
    with dask.config.set(dict.fromkeys(TLS_SETTINGS)):
        (verdict,) = run_checks(dask_checks(env))
        assert (verdict.check, verdict.outcome) == ("dask-cluster", "PASS"), verdict.detail
        # The identity applies to the check only: the configuration is as it was after it.
        assert all(dask.config.get(key) is None for key in TLS_SETTINGS)
