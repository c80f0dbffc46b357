"""Fetch one object from the artifact bucket and keep it only if its sha256 is the expected one.

Run by the host bootstrap (``fetch.py REGION BUCKET KEY SHA256 DEST``) with the host's
virtualenv, to read the host lock whose digest the user data carries. Standalone: standard
library plus boto3, which the bootstrap installs first. Each run builds its own client, so
instance credentials that appear late are picked up by the bootstrap's next attempt.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


class FetchError(Exception):
    """The object could not be read, or is not the one the user data names."""


def fetch(*, region: str, bucket: str, key: str, sha256: str, dest: Path) -> None:
    """Download ``s3://bucket/key`` to ``dest`` (atomically) if its digest is ``sha256``."""
    import boto3

    client = boto3.session.Session().client("s3", region_name=region)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    actual = hashlib.sha256(body).hexdigest()
    if actual != sha256:
        raise FetchError(f"s3://{bucket}/{key} has sha256 {actual}; the user data expects {sha256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, dest)


def main(argv: list[str]) -> int:
    """Exit 0 with ``DEST`` written, 1 with one line on stderr (and nothing written) if not."""
    if len(argv) != 6:
        print("usage: fetch.py REGION BUCKET KEY SHA256 DEST", file=sys.stderr)
        return 2
    region, bucket, key, sha256, dest = argv[1:]
    try:
        fetch(region=region, bucket=bucket, key=key, sha256=sha256, dest=Path(dest))
    except Exception as exc:  # any failure: the bootstrap logs it and tries again later
        print(f"fetch: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
