"""The loader's checks on what a download or S3 answers, one at a time (no data files needed).

What a user sees when the TLC site, a mirror or the bucket misbehaves: which failures are worth
a retry (:class:`TransientError`) and which are not, and the message naming the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from pipeline import data
from pipeline.errors import PipelineError, TransientError
from tests.pipeline.synthetic import parquet_bytes, synthetic_trips

URL = "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_2023-01.parquet"
URI = "s3://bucket/data/green_tripdata_2023-01.parquet"


def _answer(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", URL))


def test_a_200_is_a_download_to_read() -> None:
    data._check_status(_answer(200), URL)


@pytest.mark.parametrize("status", [500, 501, 503])
def test_a_server_error_is_worth_a_retry(status: int) -> None:
    with pytest.raises(TransientError) as raised:
        data._check_status(_answer(status), URL)
    assert str(raised.value) == f"could not download {URL}: the server answered HTTP {status}"


@pytest.mark.parametrize("status", [403, 404, 499, 204])
def test_any_other_status_is_a_month_not_published(status: int) -> None:
    with pytest.raises(PipelineError) as raised:
        data._check_status(_answer(status), URL)
    assert not isinstance(raised.value, TransientError)
    assert str(raised.value) == (
        f"could not download {URL}: HTTP {status} (is this month published yet?)"
    )


@pytest.mark.parametrize(
    "body", [b"PAR1" + b"\0" * 4 + b"PAR1", b"PAR1" + b"\0" * 5 + b"PAR1"], ids=["12", "13"]
)
def test_a_body_framed_by_parquet_magic_is_accepted(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "file.parquet"
    path.write_bytes(body)
    data._check_parquet_magic(path, URL)


@pytest.mark.parametrize(
    "body",
    [
        b"PAR1\0\0\0PAR1",  # 11 bytes: too short for a parquet file
        b"<html>error</html>PAR1",
        b"PAR1" + b"\0" * 20,  # cut off before its footer
        b"",
    ],
    ids=["too-short", "no-head", "no-tail", "empty"],
)
def test_a_body_that_is_not_parquet_is_refused_with_its_size(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "file.parquet"
    path.write_bytes(body)
    with pytest.raises(PipelineError) as raised:
        data._check_parquet_magic(path, URL)
    assert str(raised.value) == f"{URL} did not return a parquet file ({len(body)} bytes)"


def test_a_url_s_credentials_never_reach_the_messages(tmp_path: Path) -> None:
    url = "https://user:hunter2@mirror.example.com/green_tripdata_2023-01.parquet"
    path = tmp_path / "file.parquet"
    path.write_bytes(b"nope")
    for check in (
        lambda: data._check_status(_answer(404), url),
        lambda: data._check_status(_answer(502), url),
        lambda: data._check_parquet_magic(path, url),
    ):
        with pytest.raises(PipelineError) as raised:
            check()
        assert "hunter2" not in str(raised.value)
        assert "mirror.example.com/green_tripdata_2023-01.parquet" in str(raised.value)


@pytest.mark.parametrize(
    ("data_dir", "key"),
    [
        ("s3://bucket", "green.parquet"),
        ("s3://bucket/", "green.parquet"),
        ("s3://bucket/data", "data/green.parquet"),
        ("s3://bucket//data/sub/", "data/sub/green.parquet"),
        ("s3://bucket/XMAS/X", "XMAS/X/green.parquet"),  # only slashes are stripped
    ],
)
def test_an_s3_data_dir_is_a_bucket_and_a_key_prefix(data_dir: str, key: str) -> None:
    assert data._s3_key(data_dir, "green.parquet") == ("bucket", key)


def test_an_s3_data_dir_without_a_bucket_is_refused() -> None:
    with pytest.raises(PipelineError) as raised:
        data._s3_key("s3:///data", "green.parquet")
    assert str(raised.value) == "data directory 's3:///data' names no bucket (s3://bucket/prefix)"


def _client_error(code: str, message: str | None = "Access Denied") -> ClientError:
    error = {"Code": code} if message is None else {"Code": code, "Message": message}
    return ClientError({"Error": error}, "GetObject")


class _Bucket:
    """An S3 client holding one object, answering others as S3 does."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.asked: list[tuple[str, str]] = []

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.asked.append((Bucket, Key))
        if self.error is not None:
            raise self.error

        class Body:
            def read(self) -> bytes:
                return b"content"

        return {"Body": Body()}


def test_an_object_is_read_from_its_bucket_and_key() -> None:
    client = _Bucket()
    assert data._get_object(client, "bucket", "data/x.parquet") == b"content"
    assert client.asked == [("bucket", "data/x.parquet")]


@pytest.mark.parametrize("code", ["NoSuchKey", "404"])
def test_a_missing_object_is_none(code: str) -> None:
    assert data._get_object(_Bucket(_client_error(code)), "bucket", "x") is None


def test_any_other_refusal_is_raised() -> None:
    with pytest.raises(ClientError):
        data._get_object(_Bucket(_client_error("AccessDenied")), "bucket", "x")


def test_a_refusal_without_an_error_body_is_raised_as_it_came() -> None:
    # botocore raises a ClientError with an empty response for an answer without a body.
    error = ClientError({}, "GetObject")
    with pytest.raises(ClientError) as raised:
        data._get_object(_Bucket(error), "bucket", "x")
    assert raised.value is error


def _raise(error: Exception) -> Any:
    raise error


def test_an_s3_call_returns_what_the_call_returns() -> None:
    assert data._s3_call(URI, lambda: 42) == 42


def test_no_credentials_is_a_clear_error_not_worth_a_retry() -> None:
    with pytest.raises(PipelineError) as raised:
        data._s3_call(URI, lambda: _raise(NoCredentialsError()))
    assert not isinstance(raised.value, TransientError)
    assert str(raised.value) == f"cannot access {URI}: no AWS credentials found"


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (_client_error("AccessDenied"), "AccessDenied (Access Denied)"),
        (
            _client_error("SlowDown", None),
            "SlowDown (An error occurred (SlowDown) when calling the GetObject operation: Unknown)",
        ),
        (
            ClientError({}, "GetObject"),
            "error (An error occurred (Unknown) when calling the GetObject operation: Unknown)",
        ),
    ],
    ids=["code-and-message", "code-only", "nothing"],
)
def test_a_refusal_names_the_object_and_s3_s_code_and_message(
    error: ClientError, shown: str
) -> None:
    with pytest.raises(PipelineError) as raised:
        data._s3_call(URI, lambda: _raise(error))
    assert not isinstance(raised.value, TransientError)
    assert str(raised.value) == f"cannot access {URI}: {shown}"


def test_a_connection_failure_is_worth_a_retry() -> None:
    error = EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com")
    with pytest.raises(TransientError) as raised:
        data._s3_call(URI, lambda: _raise(error))
    assert str(raised.value) == (
        f"cannot access {URI}: Could not connect to the endpoint URL: "
        '"https://s3.us-east-1.amazonaws.com"'
    )


class _FailingBucket:
    """An S3 client holding ``objects``, refusing (AccessDenied) the keys in ``refused``.

    With ``writes_only``, reads of the refused keys answer as for any missing key.
    """

    def __init__(
        self, objects: dict[str, bytes], refused: set[str], *, writes_only: bool = False
    ) -> None:
        self.objects, self.refused, self.writes_only = objects, refused, writes_only

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        if Key in self.refused and not self.writes_only:
            raise _client_error("AccessDenied")
        if Key not in self.objects:
            raise _client_error("NoSuchKey")
        content = self.objects[Key]

        class Body:
            def read(self) -> bytes:
                return content

        return {"Body": Body()}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> None:
        if Key in self.refused:
            raise _client_error("AccessDenied")
        self.objects[Key] = Body

    def upload_file(self, filename: str, bucket: str, key: str) -> None:
        if key in self.refused:
            raise _client_error("AccessDenied")
        self.objects[key] = Path(filename).read_bytes()


NAME = "green_tripdata_2023-01.parquet"


def _s3_with(monkeypatch: pytest.MonkeyPatch, bucket: _FailingBucket) -> None:
    monkeypatch.setattr(data.boto3, "client", lambda service: bucket)


def test_a_refused_download_record_is_an_error_naming_the_month(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    places = data.cache.entries(data.TLC_BASE_URL, NAME, allow_insecure=False)
    entry = places[0]
    bucket = _FailingBucket({f"data/{entry.key}": b"content"}, refused={f"data/{entry.record_key}"})
    _s3_with(monkeypatch, bucket)
    with pytest.raises(PipelineError) as raised:
        data._s3_parquet("s3://bucket/data", NAME, places)
    assert str(raised.value).startswith(f"cannot access s3://bucket/data/{entry.key}: AccessDenied")


@pytest.mark.parametrize("refused", ["record", "month"])
def test_a_refused_upload_of_a_downloaded_month_is_an_error_naming_it(
    refused: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    places = data.cache.entries(data.TLC_BASE_URL, NAME, allow_insecure=False)
    entry = places[-1]
    key = f"data/{entry.record_key if refused == 'record' else entry.key}"
    bucket = _FailingBucket({}, refused={key}, writes_only=True)
    _s3_with(monkeypatch, bucket)
    monkeypatch.setattr(data, "download", _fake_download)
    with pytest.raises(PipelineError) as raised:
        data._s3_parquet("s3://bucket/data", NAME, places)
    assert str(raised.value).startswith(f"cannot access s3://bucket/data/{entry.key}: AccessDenied")
    assert key not in bucket.objects
    if refused == "record":  # the record goes first: no month is left in S3 without one
        assert bucket.objects == {}


def _fake_download(url: str, local: Path) -> None:
    """What :func:`pipeline.data.download` leaves: the file and its record beside it."""
    content = b"PAR1" + b"\0" * 8 + b"PAR1"
    local.write_bytes(content)
    record = data.cache.Record.of(content, url)
    local.with_name(local.name + data.cache.RECORD_SUFFIX).write_bytes(record.to_json())


def test_a_month_missing_locally_is_downloaded_from_the_tlc_site_beside_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ordinary cache: the TLC site's files sit at the top of the data directory (the
    # download itself is test_download.py's, against a stand-in site; here, no network).
    fetched: list[tuple[str, Path]] = []

    def fetch(url: str, local: Path) -> None:
        fetched.append((url, local))
        content = parquet_bytes(synthetic_trips("2023-01", rows=100))
        local.write_bytes(content)
        record = data.cache.Record.of(content, url)
        local.with_name(local.name + data.cache.RECORD_SUFFIX).write_bytes(record.to_json())

    monkeypatch.setattr(data, "download", fetch)

    month = data.load_month(str(tmp_path), "green", "2023-01")

    assert fetched == [(f"{data.TLC_BASE_URL}/{NAME}", tmp_path / NAME)]
    assert month.source == str(tmp_path / NAME)
    assert month.origin.endswith(", verified)")
    assert len(month.trips) == 100
