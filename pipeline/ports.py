"""A free TCP port on loopback, for every server this repository starts on one machine.

Prefect's temporary API server (:mod:`pipeline.temporary_server`), the local twin's services
and the tests' stand-ins all take theirs from :func:`free_port`.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])
