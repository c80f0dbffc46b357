"""Write a host's Dask TLS identity (CA, certificate, key) from its Secrets Manager secret.

Run as root before a unit that uses the identity starts (``ExecStartPre=+``), from beside the
boot script, whose helpers it uses (``/opt/mlops/venv/bin/python /opt/mlops/tls_files.py
REGION SECRET_ARN DIR GROUP``). The secret holds JSON ``{"ca", "cert", "key"}`` in PEM, made by
the Pulumi program. Before anything is written, the key must be the certificate's and the CA
must have signed the certificate: a broken secret stops the unit with one line naming what is
wrong, rather than a TLS error at its first connection. The files are ``ca.pem``,
``cert.pem`` and ``key.pem`` in DIR, 0640 root:GROUP, each replaced atomically; they are
written at every start, so a re-issued certificate reaches a host when its unit restarts.
"""

from __future__ import annotations

import fcntl
import json
import sys
from functools import partial
from pathlib import Path

from boot import BootError, read_secret, retry, write_file

NAMES = ("ca", "cert", "key")
MODE = 0o640


def parse_bundle(text: str) -> dict[str, str]:
    """The three PEM texts of the secret's JSON, or a BootError saying what is missing."""
    try:
        bundle = json.loads(text)
    except json.JSONDecodeError:
        raise BootError("the Dask TLS secret is not JSON") from None
    if not isinstance(bundle, dict):
        raise BootError("the Dask TLS secret is not a JSON object")
    missing = [n for n in NAMES if "-----BEGIN " not in str(bundle.get(n, ""))]
    if missing:
        raise BootError(f"the Dask TLS secret lacks a PEM {', '.join(missing)}")
    return {name: str(bundle[name]) for name in NAMES}


def check_bundle(bundle: dict[str, str]) -> None:
    """The key is the certificate's, and the CA signed the certificate."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        ca = x509.load_pem_x509_certificate(bundle["ca"].encode())
        cert = x509.load_pem_x509_certificate(bundle["cert"].encode())
        key = serialization.load_pem_private_key(bundle["key"].encode(), password=None)
    except ValueError as exc:
        raise BootError(f"the Dask TLS secret holds an unreadable PEM: {exc}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != cert.public_key().public_bytes(
        encoding, public
    ):
        raise BootError("the Dask TLS key is not the certificate's")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        reason = str(exc) or "the signature does not verify"
        raise BootError(f"the Dask TLS certificate is not signed by its CA: {reason}") from None


def write_bundle(bundle: dict[str, str], directory: Path, group: str) -> None:
    """``ca.pem``, ``cert.pem`` and ``key.pem`` in ``directory``, 0640 root:``group``.

    Under a lock: two units of a worker host (the Dask worker, the Prefect worker) start at
    once and write the same files through the same temporary names.
    """
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in NAMES:
            write_file(directory / f"{name}.pem", bundle[name], MODE, group)


def main(argv: list[str]) -> int:
    """Exit 0 with the files written, 1 with one line on stderr (and nothing written) if not."""
    if len(argv) != 5:
        print("usage: tls_files.py REGION SECRET_ARN DIR GROUP", file=sys.stderr)
        return 2
    region, arn, directory, group = argv[1:]
    try:
        text = retry("reading the Dask TLS secret", partial(read_secret, region, arn))
        bundle = parse_bundle(text)
        check_bundle(bundle)
        write_bundle(bundle, Path(directory), group)
    except BootError as exc:
        print(f"tls_files: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
