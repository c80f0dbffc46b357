"""Stopping the process groups a test started (``start_new_session=True``): a Dask scheduler,
its workers, a run's process and whatever each of them started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

STOP_SECONDS = 30


def stop_groups(processes: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGTERM each process's group, then SIGKILL a group whose leader is still there after
    ``STOP_SECONDS``; a group already gone is skipped."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
