"""TLS identities: a CA and certificates it signs, as pulumi-tls makes them (both twins' Dask
clusters, and the tests).

ECDSA P-256 keys in PEM (the key in SEC1 "EC PRIVATE KEY" form, as pulumi-tls writes it),
certificates good for both ends of a connection (Dask processes serve and dial).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scripts.envfile import write_private


@dataclass(frozen=True)
class Identity:
    """PEM texts: the CA's certificate, a certificate it signed, and that certificate's key."""

    ca: str
    cert: str
    key: str

    def bundle(self) -> dict[str, str]:
        """The secret's JSON object, as the Pulumi program stores it."""
        return {"ca": self.ca, "cert": self.cert, "key": self.key}

    def write(self, directory: Path) -> dict[str, str]:
        """The three files in ``directory``, by role (``ca``, ``cert``, ``key``): the
        directory 0700, each file written atomically 0600 (only its owner reads the key)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        paths = {}
        for name, text in self.bundle().items():
            path = directory / f"{name}.pem"
            write_private(path, text)
            paths[name] = str(path)
        return paths


@dataclass(frozen=True)
class Authority:
    """A CA: its key and certificate, to sign identities."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def authority(name: str = "test CA", days: int = 1) -> Authority:
    """A self-signed CA, good for ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(key=key, cert=cert)


def identity(ca: Authority, name: str = "dask", ip: str = "127.0.0.1", days: int = 1) -> Identity:
    """A key and a certificate ``ca`` signed for ``name`` (and ``ip``), good for ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Identity(
        ca=ca.pem, cert=cert.public_bytes(serialization.Encoding.PEM).decode(), key=_key_pem(key)
    )
