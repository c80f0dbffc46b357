"""One run must not change the data later runs train on (invariants 65, 66, 71).

The experiment of issue 10 (finding 3): a loopback HTTP server serves a poisoned month (real
January records with every distance multiplied by 50, a valid file the loader accepts). A run
given it as ``tlc_base_url`` is refused unless plain http is explicitly allowed, and when
allowed its download is cached apart; the next ordinary run does not read it. For a directory
and for S3 (moto's server on loopback). The TLC site's stand-in for the ordinary run is a
closed https port on loopback: reading anything but the month's ordinary file would show.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from moto.server import ThreadedMotoServer

from pipeline import cache
from pipeline.cache import RECORD_SUFFIX
from pipeline.data import file_name, load_month
from pipeline.errors import PipelineError, TransientError
from pipeline.urls import redact

NAME = file_name("green", "2023-01")
SECRET = "s3cr3t-mirror-password"


@pytest.fixture
def poisoned(tlc_server: Any, real_data_dir: Path) -> pd.DataFrame:
    """Real January with distances x50, served by the loopback site; returns the genuine file."""
    genuine = pd.read_parquet(real_data_dir / NAME)
    poison = genuine.assign(trip_distance=genuine["trip_distance"] * 50)
    buffer = io.BytesIO()
    poison.to_parquet(buffer, index=False)
    (tlc_server.directory / NAME).write_bytes(buffer.getvalue())
    return genuine


@pytest.fixture
def tlc_site_offline(monkeypatch: pytest.MonkeyPatch) -> str:
    """The TLC site as a closed https port on loopback: an ordinary run cannot download."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = f"https://127.0.0.1:{port}/trip-data"
    monkeypatch.setattr(cache, "TLC_BASE_URL", site)
    return site


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 server on 127.0.0.1 with a bucket ``trips``; yields a client for it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("s3")
        client.create_bucket(Bucket="trips")
        yield client
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["directory", "s3"])
def test_65_a_mirror_run_cannot_poison_what_ordinary_runs_train_on(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tlc_server: Any,
    poisoned: pd.DataFrame,
    tlc_site_offline: str,
) -> None:
    data_dir = str(tmp_path / "data") if kind == "directory" else "s3://trips/data"
    if kind == "s3":
        request.getfixturevalue("s3_server")

    # 1. Plain http is refused before anything is fetched or written.
    with pytest.raises(PipelineError, match="is plain http"):
        load_month(data_dir, "green", "2023-01", base_url=tlc_server.base_url)
    assert tlc_server.requests == []

    # 2. Explicitly allowed, the mirror's file is used by that run (its choice)...
    mirrored = load_month(
        data_dir, "green", "2023-01", base_url=tlc_server.base_url, allow_insecure_mirror=True
    )
    assert mirrored.trips["trip_distance"].mean() > 20 * poisoned["trip_distance"].mean()
    assert "/mirrors/" in mirrored.source
    assert mirrored.source.endswith(NAME)

    # 3. ...but the next ordinary run does not read it: it needs the TLC site's file.
    with pytest.raises(
        TransientError,
        match=rf"{NAME} is not in {data_dir} and could not download {tlc_site_offline}/{NAME}",
    ):
        load_month(data_dir, "green", "2023-01", base_url=tlc_site_offline)
    assert tlc_server.requests == [f"/trip-data/{NAME}"]


def test_66_a_cached_file_changed_after_download_is_refused(
    tmp_path: Path, tlc_server: Any, poisoned: pd.DataFrame, real_data_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    first = load_month(
        str(data_dir), "green", "2023-01", base_url=tlc_server.base_url, allow_insecure_mirror=True
    )
    stored = Path(first.source)
    record = json.loads(stored.with_name(NAME + RECORD_SUFFIX).read_text())
    assert record["url"] == f"{tlc_server.base_url}/{NAME}"
    assert record["size"] == stored.stat().st_size
    # Replaced in place (another writer of the data directory): the record no longer matches.
    stored.write_bytes((real_data_dir / NAME).read_bytes())
    with pytest.raises(
        PipelineError, match=rf"{stored} changed since it was downloaded from .*: refusing it"
    ):
        load_month(
            str(data_dir),
            "green",
            "2023-01",
            base_url=tlc_server.base_url,
            allow_insecure_mirror=True,
        )


def test_66_a_record_naming_another_source_is_refused(
    data_dir_with: Any, real_data_dir: Path, tlc_server: Any
) -> None:
    # A month's ordinary file whose record says a mirror filled it (as an unfixed run would).
    content = (real_data_dir / NAME).read_bytes()
    record = cache.Record.of(content, f"{tlc_server.base_url}/{NAME}")
    directory = data_dir_with(files={NAME: content, NAME + RECORD_SUFFIX: record.to_json()})
    with pytest.raises(
        PipelineError,
        match=rf"{NAME} was downloaded from {tlc_server.base_url}/{NAME}, "
        rf"not from {cache.TLC_BASE_URL}/{NAME}: refusing it",
    ):
        load_month(str(directory), "green", "2023-01")


def test_66_a_file_placed_without_a_record_is_read_as_unverified(real_data_dir: Path) -> None:
    # The shared data directory holds the TLC files as published, without records.
    month = load_month(str(real_data_dir), "green", "2023-01")
    assert (
        month.origin
        == f"{real_data_dir / NAME} (placed in the data directory, no download record: unverified)"
    )


def test_66_every_mirror_gets_its_own_cache_key() -> None:
    one = cache.entries("https://mirror-a.example/trip-data/", NAME, allow_insecure=False)
    other = cache.entries("https://mirror-b.example/trip-data", NAME, allow_insecure=False)
    assert one[0] == other[0] == cache.CacheEntry(key=NAME, url=f"{cache.TLC_BASE_URL}/{NAME}")
    assert one[1].key != other[1].key
    assert one[1].key.startswith("mirrors/")
    assert cache.entries(cache.TLC_BASE_URL + "/", NAME, allow_insecure=False) == (one[0],)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:pw@mirror.example/trip-data", "https://mirror.example/trip-data"),
        ("http://token@127.0.0.1:8080/x?y=1", "http://127.0.0.1:8080/x?y=1"),
        (
            "could not download https://u:p@h/a.parquet: HTTP 404",
            "could not download https://h/a.parquet: HTTP 404",
        ),
        ("https://u:p@a/x and s3://k:s@b/y", "https://a/x and s3://b/y"),
        ("https://mirror.example/a@b", "https://mirror.example/a@b"),  # '@' in a path: no user-info
        ("no url here: user@host", "no url here: user@host"),
    ],
)
def test_71_redact_removes_user_info_from_every_url(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_71_a_mirrors_credentials_reach_neither_the_record_nor_an_error(
    tmp_path: Path, tlc_server: Any, poisoned: pd.DataFrame, closed_port_url: str
) -> None:
    with_credentials = tlc_server.base_url.replace("://", f"://reader:{SECRET}@")
    month = load_month(
        str(tmp_path), "green", "2023-01", base_url=with_credentials, allow_insecure_mirror=True
    )
    record = Path(month.source).with_name(NAME + RECORD_SUFFIX).read_text()
    assert SECRET not in record
    assert SECRET not in month.origin
    offline = closed_port_url.replace("://", f"://reader:{SECRET}@")
    with pytest.raises(TransientError) as raised:
        load_month(
            str(tmp_path / "other"),
            "green",
            "2023-01",
            base_url=offline,
            allow_insecure_mirror=True,
        )
    assert "could not download http://127.0.0.1" in str(raised.value)
    assert SECRET not in str(raised.value)
    with pytest.raises(PipelineError) as refused:
        load_month(str(tmp_path / "other"), "green", "2023-01", base_url=offline)
    assert SECRET not in str(refused.value)
