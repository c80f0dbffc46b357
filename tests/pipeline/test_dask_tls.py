"""The Dask engine reaches a ``tls://`` scheduler with the identity Dask's TLS settings name (a
stack's worker host sets them for its flow runs), and refuses clearly without one.

The scheduler is a real TLS LocalCluster (one in-process worker, ``tests.support.dask_tls``)
started by the test, with certificates from a CA made there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
from distributed import Client, LocalCluster

from pipeline import dask_engine
from pipeline.dask_engine import (
    TLS_SETTINGS,
    TRACKER_PORT_VARIABLE,
    collective_config,
    connect,
    tracker_config,
)
from pipeline.errors import PipelineError
from pipeline.parameters import TrainingParameters
from scripts.twin.tls import authority, identity
from tests.support.dask_tls import IdentityFiles, client_settings, tls_local_cluster


def parameters(address: str) -> TrainingParameters:
    return TrainingParameters.model_validate(
        {
            "train_month": "2023-01",
            "val_month": "2023-02",
            "engine": "dask",
            "dask_address": address,
        }
    )


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, IdentityFiles]]:
    with tls_local_cluster(tmp_path_factory.mktemp("cluster-identity")) as cluster:
        yield cluster


def test_a_tls_scheduler_is_reached_with_the_configured_identity(
    tls_cluster: tuple[LocalCluster, IdentityFiles],
) -> None:
    cluster, files = tls_cluster
    address = cluster.scheduler_address
    assert address.startswith("tls://")
    settings = client_settings(files)
    with dask.config.set(settings), connect(parameters(address)) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    assert len(workers) == 1


def test_a_tls_scheduler_without_the_settings_is_refused_naming_them(
    tls_cluster: tuple[LocalCluster, IdentityFiles],
) -> None:
    address = tls_cluster[0].scheduler_address
    unset = dict.fromkeys(TLS_SETTINGS)
    with (
        dask.config.set(unset),
        pytest.raises(PipelineError) as refused,
        connect(parameters(address)),
    ):
        pass
    for variable in TLS_SETTINGS.values():
        assert variable in str(refused.value)


def test_unreadable_tls_files_are_refused_naming_them(
    tls_cluster: tuple[LocalCluster, IdentityFiles], tmp_path: Path
) -> None:
    missing = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}
    with (
        dask.config.set(client_settings(missing)),
        pytest.raises(PipelineError, match="cannot read the Dask TLS files") as refused,
        connect(parameters(tls_cluster[0].scheduler_address)),
    ):
        pass
    assert missing["key"] in str(refused.value)


def test_an_identity_from_another_ca_cannot_connect(
    tls_cluster: tuple[LocalCluster, IdentityFiles], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT_SECONDS", 3)  # the handshake fails at once
    stranger = identity(authority("another CA"), "stranger").write(tmp_path)
    address = tls_cluster[0].scheduler_address
    with (
        dask.config.set(client_settings(stranger)),
        pytest.raises(PipelineError, match=f"cannot reach the Dask scheduler at {address}"),
        connect(parameters(address)),
    ):
        pass


def test_the_tracker_port_comes_from_the_host_and_xgboost_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xgboost.dask.utils import get_address_from_user

    scheduler = "tls://10.42.0.10:8786"
    monkeypatch.delenv(TRACKER_PORT_VARIABLE, raising=False)
    assert collective_config(scheduler) is None
    monkeypatch.setenv(TRACKER_PORT_VARIABLE, "8789")
    config = collective_config(scheduler)
    assert config is not None
    # What xgboost.dask then binds its tracker to, on the scheduler's host: the host's port.
    assert get_address_from_user(None, config) == ("10.42.0.10", 8789)
    monkeypatch.setenv(TRACKER_PORT_VARIABLE, "port")
    with pytest.raises(PipelineError, match=TRACKER_PORT_VARIABLE):
        collective_config(scheduler)


def test_a_local_cluster_leaves_the_tracker_port_to_xgboost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs that start their own cluster on one host (a stack's worker host sets the port for
    its flow runs) must not all bind the tracker to the same port; a given cluster's runs do,
    one at a time."""
    monkeypatch.setenv(TRACKER_PORT_VARIABLE, "8789")
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as own,
        Client(cluster.scheduler_address, set_as_default=False) as given,
    ):
        assert tracker_config(own) is None
        config = tracker_config(given)
    assert config is not None
    assert config.tracker_port == 8789
