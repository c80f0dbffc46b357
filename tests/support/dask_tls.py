"""A Dask cluster that speaks TLS only, for the tests of what reaches a stack's scheduler.

A LocalCluster of in-process workers whose scheduler, workers and clients share one identity
signed by a CA made here (``scripts.twin.tls``, as the twin makes the stack's); a client
reaches it with Dask's TLS settings naming the identity's files (``client_settings``), as a
stack's worker host sets them for its flow runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distributed import LocalCluster
from distributed.security import Security

from pipeline.dask_engine import TLS_SETTINGS
from scripts.twin.tls import authority, identity

# The identity's files by name: ca, cert, key.
IdentityFiles = dict[str, str]


@contextmanager
def tls_local_cluster(
    directory: Path, *, workers: int = 1
) -> Iterator[tuple[LocalCluster, IdentityFiles]]:
    """A TLS-only LocalCluster of ``workers`` in-process workers and its identity's files,
    written to ``directory``."""
    files = identity(authority("cluster CA"), "cluster").write(directory)
    roles = ("scheduler", "worker", "client")
    security = Security(
        tls_ca_file=files["ca"],
        **{f"tls_{role}_cert": files["cert"] for role in roles},
        **{f"tls_{role}_key": files["key"] for role in roles},
        require_encryption=True,
    )
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=False,
        protocol="tls",
        security=security,
        dashboard_address=":0",  # a free port: 8787 may be taken
    ) as cluster:
        yield cluster, files


def client_settings(files: IdentityFiles) -> dict[str, str]:
    """Dask's TLS settings (``distributed.comm.tls.*``) naming an identity's files."""
    ca, cert, key = TLS_SETTINGS
    return {ca: files["ca"], cert: files["cert"], key: files["key"]}
