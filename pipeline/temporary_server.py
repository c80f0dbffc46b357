"""Prefect's temporary API server for one command-line run, booted beside the pipeline's imports.

Without PREFECT_API_URL, Prefect runs a flow against a temporary API server that it starts in a
subprocess on the flow's first API call (``prefect.server.api.server.SubprocessASGIServer``).
Left to Prefect, that start first imports the server's whole application into this process
(FastAPI, the ORM models, the database layer: 3.5 s on 2 cores), only to launch a subprocess
that imports it all again, and only after the pipeline's own imports. This module launches the
same server process (same command, same settings) as soon as the arguments are valid, so that
it boots while the pipeline imports, and points the flow at it: this process stays a plain API
client and never imports the server.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx

from pipeline.errors import PipelineError
from pipeline.ports import free_port

# What SubprocessASGIServer sets for its server: no UI, and the server knows it is ephemeral.
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
# The pipeline uses no blocks: spare the server importing every installed Prefect collection
# (prefect-aws, boto3, ...) to register their block types at each start (a second).
_NO_BLOCK_REGISTRATION = {
    "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}
_STOP_SECONDS = 10.0
_POLL_SECONDS = 0.1

logger = logging.getLogger("prefect.pipeline.temporary_server")


@dataclass
class TemporaryServer:
    """A Prefect API server process owned by this run."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def api_url(self) -> str:
        """The value PREFECT_API_URL takes for the flow."""
        return f"http://127.0.0.1:{self.port}/api"

    def wait_until_ready(self, timeout_seconds: float) -> None:
        """Return once the server answers its health check; raise if it exits or never does."""
        deadline = time.monotonic() + timeout_seconds
        with httpx.Client(timeout=5.0) as client:
            while True:
                status = self.process.poll()
                if status is not None:
                    raise PipelineError(
                        f"Prefect's temporary API server on port {self.port} exited with status "
                        f"{status} before it answered (its errors are above)"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.api_url}/health").status_code == httpx.codes.OK:
                        return
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"Prefect's temporary API server did not answer on {self.api_url} "
                        f"within {timeout_seconds:.0f} s (PREFECT_SERVER_EPHEMERAL_STARTUP_"
                        "TIMEOUT_SECONDS)"
                    )
                time.sleep(_POLL_SECONDS)  # polling a condition, with the deadline above

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period); safe to call twice."""
        if self.process.poll() is not None:
            return
        logger.info("Stopping temporary server on http://127.0.0.1:%d", self.port)
        self.process.terminate()
        try:
            self.process.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(settings_environment: dict[str, str]) -> TemporaryServer:
    """Launch the server process with the caller's Prefect settings; it stops at exit.

    ``settings_environment`` holds the Prefect settings this process resolved (environment and
    profile), as SubprocessASGIServer passes them on.
    """
    port = free_port()
    logger.info("Starting temporary server on http://127.0.0.1:%d", port)
    # fmt: off
    command = [
        sys.executable, "-m", "uvicorn",
        "--app-dir", str(_site_packages()),
        "--factory", "prefect.server.api.server:create_app",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]
    # fmt: on
    process = subprocess.Popen(
        command,
        env={**os.environ, **_NO_BLOCK_REGISTRATION, **settings_environment, **_SERVER_ENV},
    )
    server = TemporaryServer(process=process, port=port)
    # At exit, not when the flow returns: Prefect's log and event workers, started during the
    # flow (their exit handlers run before this one), still send what they hold to the server.
    atexit.register(server.stop)
    return server


def _site_packages() -> Path:
    """The directory Prefect is installed in (uvicorn's --app-dir), found without importing it."""
    spec = find_spec("prefect")
    if spec is None or spec.origin is None:
        raise PipelineError("Prefect is not installed in this Python environment")
    return Path(spec.origin).parent.parent
