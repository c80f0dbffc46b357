"""Downloading missing months from the TLC site (a loopback server stands in for it)."""

from __future__ import annotations

import http.server
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline import data
from pipeline.cache import RECORD_SUFFIX
from pipeline.data import download, file_name, load_month
from pipeline.errors import PipelineError, TransientError
from tests.pipeline.conftest import serving
from tests.pipeline.synthetic import parquet_bytes, synthetic_trips

NAME = file_name("green", "2023-01")


@pytest.fixture
def published(tlc_server: Any, real_data_dir: Path) -> bytes:
    """The real 2023-01 file, published on the loopback site; returns its bytes."""
    content = (real_data_dir / NAME).read_bytes()
    (tlc_server.directory / NAME).write_bytes(content)
    return content


def files_in(directory: Path) -> list[str]:
    """The files under ``directory``, as sorted relative paths."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_a_missing_month_is_downloaded_into_the_data_dir(
    tlc_server: Any, published: bytes, tmp_path: Path
) -> None:
    data_dir = tmp_path / "new" / "data"  # created on demand
    month = load_month(
        str(data_dir), "green", "2023-01", base_url=tlc_server.base_url, allow_insecure_mirror=True
    )
    # A mirror's file, kept apart from the TLC site's, with its download record.
    (stored,) = (data_dir / "mirrors").glob(f"*/{NAME}")
    assert stored.read_bytes() == published
    assert month.rows_read == 68_211
    assert month.origin.endswith("verified)")
    relative = str(stored.relative_to(data_dir))
    assert files_in(data_dir) == [relative, relative + RECORD_SUFFIX]
    # Present now: read from the directory, not downloaded again.
    load_month(
        str(data_dir), "green", "2023-01", base_url=tlc_server.base_url, allow_insecure_mirror=True
    )
    assert tlc_server.requests == [f"/trip-data/{NAME}"]


def test_an_unpublished_month_is_a_clear_error(tlc_server: Any, tmp_path: Path) -> None:
    with pytest.raises(
        PipelineError,
        match=rf"{NAME} is not in {tmp_path} and could not download "
        rf"{tlc_server.base_url}/{NAME}: HTTP 404",
    ) as raised:
        load_month(
            str(tmp_path),
            "green",
            "2023-01",
            base_url=tlc_server.base_url,
            allow_insecure_mirror=True,
        )
    assert not isinstance(raised.value, TransientError)
    assert files_in(tmp_path) == []


def test_no_network_is_a_transient_error_naming_the_url(
    closed_port_url: str, tmp_path: Path
) -> None:
    with pytest.raises(
        TransientError,
        match=rf"{NAME} is not in {tmp_path} and could not download "
        rf"{closed_port_url}/{NAME}: .*[Cc]onnect",
    ):
        load_month(
            str(tmp_path), "green", "2023-01", base_url=closed_port_url, allow_insecure_mirror=True
        )
    assert files_in(tmp_path) == []


def test_a_server_error_is_transient(tlc_server: Any, published: bytes, tmp_path: Path) -> None:
    tlc_server.failures[f"/trip-data/{NAME}"] = [503]
    with pytest.raises(TransientError, match="the server answered HTTP 503"):
        download(f"{tlc_server.base_url}/{NAME}", tmp_path / NAME)
    assert list(tmp_path.iterdir()) == []


def test_a_cut_off_download_leaves_no_file(
    tlc_server: Any, published: bytes, tmp_path: Path
) -> None:
    tlc_server.truncated.add(f"/trip-data/{NAME}")
    with pytest.raises(TransientError, match=f"could not download {tlc_server.base_url}/{NAME}"):
        download(f"{tlc_server.base_url}/{NAME}", tmp_path / NAME)
    assert list(tmp_path.iterdir()) == []


def test_a_body_that_is_not_parquet_is_refused(tlc_server: Any, tmp_path: Path) -> None:
    (tlc_server.directory / NAME).write_text("<html>Access denied</html>")
    with pytest.raises(PipelineError, match=rf"{NAME} did not return a parquet file \(26 bytes\)"):
        download(f"{tlc_server.base_url}/{NAME}", tmp_path / NAME)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_data_dir_is_a_clear_error(
    tlc_server: Any, published: bytes, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")  # a file where the directory should be created
    with pytest.raises(PipelineError, match=f"cannot write {blocker / 'data' / NAME}"):
        download(f"{tlc_server.base_url}/{NAME}", blocker / "data" / NAME)


def test_a_month_the_site_redirects_to_elsewhere_is_downloaded_from_there(
    tlc_server: Any, tmp_path: Path
) -> None:
    content = parquet_bytes(synthetic_trips("2023-01", rows=300))
    elsewhere = tlc_server.directory.parent / "moved"
    elsewhere.mkdir()
    (elsewhere / NAME).write_bytes(content)
    tlc_server.moved[f"/trip-data/{NAME}"] = f"/moved/{NAME}"

    download(f"{tlc_server.base_url}/{NAME}", tmp_path / NAME)

    assert (tmp_path / NAME).read_bytes() == content
    assert tlc_server.requests == [f"/trip-data/{NAME}", f"/moved/{NAME}"]


def test_the_progress_bar_names_the_file_and_counts_binary_kilobytes(
    tlc_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = parquet_bytes(synthetic_trips("2023-01", rows=300))
    (tlc_server.directory / NAME).write_bytes(content)
    size = f"{len(content) / 1024:.1f}k"  # e.g. 13.8k: 1024 bytes a kilobyte

    download(f"{tlc_server.base_url}/{NAME}", tmp_path / NAME)

    bar = capsys.readouterr().err.strip().split("\r")[-1]
    assert bar.startswith(f"{NAME}: 100%|")
    assert f"| {size}/{size} [" in bar
    assert bar.endswith("B/s]")  # bytes


def test_a_network_error_is_named_with_its_own_words(closed_port_url: str, tmp_path: Path) -> None:
    with pytest.raises(TransientError) as raised:
        download(f"{closed_port_url}/{NAME}", tmp_path / NAME)
    assert str(raised.value) == (
        f"could not download {closed_port_url}/{NAME}: [Errno 111] Connection refused"
    )


def test_a_network_error_without_words_is_named_by_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dropped(*args: object, **kwargs: object) -> None:
        raise httpx.RemoteProtocolError("")

    monkeypatch.setattr(httpx, "stream", dropped)
    with pytest.raises(TransientError) as raised:
        download(f"https://mirror.example.com/{NAME}", tmp_path / NAME)
    assert str(raised.value) == (
        f"could not download https://mirror.example.com/{NAME}: RemoteProtocolError"
    )


def test_the_partial_download_is_a_hidden_file_beside_the_month(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beside it: the final rename stays on one filesystem (atomic). Hidden: never a month.
    content = parquet_bytes(synthetic_trips("2023-01", rows=300))
    seen: list[list[str]] = []

    def stream(url: str, out: Any, *, label: str) -> None:
        out.write(content)
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    monkeypatch.setattr(data, "_stream_to", stream)
    download(f"https://mirror.example.com/{NAME}", tmp_path / NAME)

    [[partial]] = seen
    assert partial.startswith(f".{NAME}.")
    assert files_in(tmp_path) == [NAME, NAME + RECORD_SUFFIX]
    assert (tmp_path / NAME).read_bytes() == content


def test_the_month_and_its_record_are_each_renamed_from_a_hidden_file_beside_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rename within one directory is atomic; from another filesystem (the system's
    # temporary directory) it is not even possible. Hidden: a reader never takes it for one.
    content = parquet_bytes(synthetic_trips("2023-01", rows=300))
    monkeypatch.setattr(data, "_stream_to", lambda url, out, *, label: out.write(content))
    renames: list[tuple[Path, Path]] = []
    rename = os.replace

    def spy(source: str, destination: Path) -> None:
        renames.append((Path(source), Path(destination)))
        rename(source, destination)

    monkeypatch.setattr(data.os, "replace", spy)
    download(f"https://mirror.example.com/{NAME}", tmp_path / NAME)

    assert [destination.name for _, destination in renames] == [NAME + RECORD_SUFFIX, NAME]
    for source, destination in renames:
        assert source.parent == destination.parent == tmp_path
        assert source.name.startswith(f".{destination.name}.")
    assert files_in(tmp_path) == [NAME, NAME + RECORD_SUFFIX]


def test_a_download_waits_for_a_slow_site_as_configured_not_httpx_s_five_seconds(
    tlc_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx gives up after 5 s without a byte by default: too soon for a month of records
    # from a busy CDN. The download asks for 10 s to connect and 60 s between reads.
    (tlc_server.directory / NAME).write_bytes(parquet_bytes(synthetic_trips("2023-01", rows=300)))
    timeouts: list[object] = []
    stream = httpx.stream

    def spy(*args: Any, **kwargs: Any) -> Any:
        timeouts.append(kwargs.get("timeout", "httpx's default"))
        return stream(*args, **kwargs)

    monkeypatch.setattr(data.httpx, "stream", spy)
    download(f"{tlc_server.base_url}/{NAME}", tmp_path / NAME)

    assert timeouts == [httpx.Timeout(60.0, connect=10.0)]


def test_a_site_sending_no_length_is_downloaded_with_a_bar_counting_what_came(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A CDN may stream a file without Content-Length (chunked, or to the connection's end).
    # 14,190 bytes: 13.9 binary kilobytes (13.8 in units of 1,025).
    content = b"PAR1" + b"\0" * (14_190 - 8) + b"PAR1"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()  # no Content-Length: the body ends with the connection
            self.wfile.write(content)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    with serving(Handler) as url:
        download(f"{url}/{NAME}", tmp_path / NAME)

    assert (tmp_path / NAME).read_bytes() == content
    shown = capsys.readouterr().err
    assert shown.strip().split("\r")[-1].startswith(f"{NAME}: 13.9kB [")
    assert "%" not in shown  # no total, from the first render on: no percentage, no bar
