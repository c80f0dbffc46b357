"""The trip-record cache: where a downloaded month is kept, and the record that vouches for it.

A data directory (local or ``s3://``) caches the monthly files the runs download:

- from the TLC site (``https`` only), under the file's own name
  (``green_tripdata_2023-01.parquet``): the files every run reads;
- from a mirror (any other base URL: ``https``, or plain ``http`` only when explicitly allowed),
  under ``mirrors/<digest of the mirror's URL>/<name>``: read only by runs given that mirror, so
  no mirror can replace what the scheduled runs train on. A mirror run still reads a month
  already cached from the TLC site before asking its mirror.

Each downloaded file gets a record beside it, ``<file>.source.json``: the URL it came from
(credentials removed), its size and its sha256, checked on every read. A file without a
record is one a person put there (as in the shared data directory): it is read as is and
reported as unverified. A file that does not match its record, or whose record names another
source, is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pipeline.errors import PipelineError
from pipeline.schema import TLC_BASE_URL
from pipeline.urls import redact

RECORD_SUFFIX = ".source.json"
MIRRORS_PREFIX = "mirrors"
_MIRROR_ID_CHARS = 16


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """A place in the data directory (``key``, relative to it) and the URL that fills it."""

    key: str
    url: str

    @property
    def record_key(self) -> str:
        """The key of the record beside the file."""
        return self.key + RECORD_SUFFIX


@dataclass(frozen=True, kw_only=True)
class Record:
    """What was downloaded into a cache entry: from where (no credentials), how big, which bytes."""

    url: str
    size: int
    sha256: str

    @classmethod
    def of(cls, content: bytes, url: str) -> Record:
        """The record of ``content`` downloaded from ``url``."""
        return cls(url=redact(url), size=len(content), sha256=hashlib.sha256(content).hexdigest())

    def to_json(self) -> bytes:
        """The record as stored beside the file."""
        return json.dumps({"url": self.url, "size": self.size, "sha256": self.sha256}).encode()

    @classmethod
    def parse(cls, stored: bytes, label: str) -> Record:
        """The record read from ``label``; a damaged one is an error naming it."""
        try:
            fields = json.loads(stored)
            return cls(
                url=str(fields["url"]), size=int(fields["size"]), sha256=str(fields["sha256"])
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise PipelineError(
                f"{label} is not a download record (JSON with url, size and sha256): {exc}"
            ) from exc


def check_base_url(base_url: str, *, allow_insecure: bool) -> str:
    """``base_url`` without its trailing slash, if it is ``https`` (or ``http`` when allowed)."""
    shown = redact(base_url)
    if base_url.startswith("https://"):
        return base_url.rstrip("/")
    if base_url.startswith("http://"):
        if allow_insecure:
            return base_url.rstrip("/")
        raise PipelineError(
            f"tlc_base_url {shown} is plain http: anyone on the path can change the data. "
            "Use an https URL, or allow a plain-http mirror explicitly (allow_insecure_mirror, "
            "--allow-insecure-mirror)"
        )
    raise PipelineError(
        f"tlc_base_url must be an https:// URL (the TLC site or a mirror), got {shown}"
    )


def is_mirror(base_url: str) -> bool:
    """Whether ``base_url`` is anything but the TLC site."""
    return base_url.rstrip("/") != TLC_BASE_URL


def entries(base_url: str, name: str, *, allow_insecure: bool) -> tuple[CacheEntry, ...]:
    """Where ``name`` may be read from, in order; the last is where a download goes."""
    base = check_base_url(base_url, allow_insecure=allow_insecure)
    ordinary = CacheEntry(key=name, url=f"{TLC_BASE_URL}/{name}")
    if not is_mirror(base):
        return (ordinary,)
    mirror_id = hashlib.sha256(redact(base).encode()).hexdigest()[:_MIRROR_ID_CHARS]
    return ordinary, CacheEntry(key=f"{MIRRORS_PREFIX}/{mirror_id}/{name}", url=f"{base}/{name}")


def verify(content: bytes, stored_record: bytes | None, *, entry: CacheEntry, label: str) -> str:
    """Check ``content`` (read from ``label``) against its record; returns its origin, for logs.

    Without a record the file is one a person placed: accepted, and said to be unverified.
    """
    if stored_record is None:
        return f"{label} (placed in the data directory, no download record: unverified)"
    record = Record.parse(stored_record, label + RECORD_SUFFIX)
    expected_url = redact(entry.url)
    remedy = f"delete {label} and {label}{RECORD_SUFFIX} to download it again"
    if record.url != expected_url:
        raise PipelineError(
            f"{label} was downloaded from {record.url}, not from {expected_url}: "
            f"refusing it; {remedy}"
        )
    actual = Record.of(content, entry.url)
    if (actual.size, actual.sha256) != (record.size, record.sha256):
        raise PipelineError(
            f"{label} changed since it was downloaded from {record.url} "
            f"({actual.size} bytes, sha256 {actual.sha256}; recorded {record.size} bytes, "
            f"sha256 {record.sha256}): refusing it; {remedy}"
        )
    return f"{label} (downloaded from {record.url}, sha256 {record.sha256[:12]}, verified)"
