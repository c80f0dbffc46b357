"""Prefect's temporary API server for one command-line run, booted beside the pipeline's imports.

Without PREFECT_API_URL, Prefect runs a flow against a temporary API server that it starts in a
subprocess on the flow's first API call (``prefect.server.api.server.SubprocessASGIServer``).
Left to Prefect, that start first imports the server's whole application into this process
(FastAPI, the ORM models, the database layer: 3.5 s on 2 cores), only to launch a subprocess
that imports it all again, and only after the pipeline's own imports. This module launches the
server process itself (``python -m pipeline.temporary_server PORT``) as soon as the arguments
are valid, before this process imports Prefect, so that it boots while the pipeline imports,
and points the flow at it: this process stays a plain API client and never imports the server.

The server process resolves Prefect's settings itself, from the same environment, profile and
working directory as the command line (which sets none of its own), and exits at once, serving
nothing, if they name an API (PREFECT_API_URL in a profile): the command line then uses that
one. Otherwise it serves Prefect's application as SubprocessASGIServer does (uvicorn, loopback,
no UI), built with the cyclic garbage collector paused, and without the services the pipeline
never uses (below).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline.errors import PipelineError
from pipeline.ports import LOOPBACK, free_port

# What SubprocessASGIServer sets for its server: no UI, and the server knows it is ephemeral.
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
# Defaults for what the pipeline never uses (a setting in the environment still wins):
# - blocks: spare the server importing every installed Prefect collection (prefect-aws, boto3,
#   ...) to register their block types at each start (a second);
# - automations: their services (triggers and actions) each build an API client at start,
#   work the server does before it answers (0.2 to 0.3 s of its 3 to 4 s boot).
_UNUSED_SERVICES_OFF = {
    "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
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
        return f"http://{LOOPBACK}:{self.port}/api"

    def announce(self) -> None:
        """Log where the server is (as Prefect's own start does), once logging is set up."""
        logger.info("Starting temporary server on http://%s:%d", LOOPBACK, self.port)

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
        logger.info("Stopping temporary server on http://%s:%d", LOOPBACK, self.port)
        self.process.terminate()
        try:
            self.process.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start() -> TemporaryServer:
    """Launch the server process; it stops at this process's exit.

    Its log line waits for the caller (:meth:`TemporaryServer.announce`): Prefect's logging is
    not set up yet.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", __name__, str(port)],
        env={**_UNUSED_SERVICES_OFF, **os.environ, **_SERVER_ENV},
    )
    server = TemporaryServer(process=process, port=port)
    # At exit, not when the flow returns: Prefect's log and event workers, started during the
    # flow (their exit handlers run before this one), still send what they hold to the server.
    atexit.register(server.stop)
    return server


def serve(port: int) -> None:
    """The server process: Prefect's API on loopback ``port``, unless the settings name one.

    The garbage collector stays paused while Prefect's modules are imported and its
    application is built (over 400,000 objects left for it to track, next to no garbage: the
    collections that allocating them triggers took a tenth of the boot's CPU), and runs again
    once it is built.
    """
    gc.disable()
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return  # the command line uses the configured API
    import uvicorn

    uvicorn.run(
        _application, factory=True, host=LOOPBACK, port=port, log_level="error", lifespan="on"
    )


def _application() -> Any:
    """Prefect's server application (as ``SubprocessASGIServer`` serves it); collector back on."""
    from prefect.server.api.server import create_app

    application = create_app()
    gc.enable()
    return application


if __name__ == "__main__":
    serve(int(sys.argv[1]))
