"""The twin's stop, on stand-in processes (no twin needed): the unit's signals in turn to
the process, the last to its whole tree, SIGKILL for what ignores them all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from scripts.twin import StopPolicy, running, stop_tree, tree

# Like `prefect worker start`: the first SIGTERM is only acknowledged, the second one ends it.
# It has a child, as a worker has flow runs.
IGNORES_FIRST_SIGTERM = """
import signal, subprocess, sys, time
received = []
def on_term(signum, frame):
    received.append(signum)
    if len(received) >= 2:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
# Like a Dask nanny whose worker got the stop signal too: it starts another one as it stops,
# which outlives it (re-parented, out of its tree) but stays in its session.
RESTARTS_A_CHILD_AS_IT_STOPS = """
import signal, subprocess, sys, time
def on_term(signum, frame):
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[1], "w") as record:
        record.write(str(late.pid))
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
IGNORES_ALL = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def spawn() -> Iterator[object]:
    """Start a stand-in process; anything left is killed afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(code: str, *args: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(child)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"  # blocks until it is set up
        return child

    yield start
    for child in started:
        for member in tree(psutil.Process(child.pid)) if child.poll() is None else []:
            member.kill()
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()


def test_two_sigterms_stop_a_process_that_ignores_the_first_and_its_children(spawn) -> None:
    child = spawn(IGNORES_FIRST_SIGTERM)
    members = tree(psutil.Process(child.pid))
    assert len(members) == 2
    stop_tree(members[0], StopPolicy(signals=("SIGTERM", "SIGTERM"), timeout_seconds=30))
    assert not any(running(member) for member in members)
    assert child.wait(timeout=5) == 0  # its own exit on the second SIGTERM, not a SIGKILL


def test_what_ignores_every_signal_is_killed_after_the_timeout(spawn) -> None:
    child = spawn(IGNORES_ALL)
    stop_tree(psutil.Process(child.pid), StopPolicy(signals=("SIGTERM",), timeout_seconds=1))
    assert child.wait(timeout=5) == -9


def test_what_a_process_starts_while_it_stops_is_stopped_with_it(spawn, tmp_path: Path) -> None:
    record = tmp_path / "late.pid"
    child = spawn(RESTARTS_A_CHILD_AS_IT_STOPS, str(record))
    stop_tree(psutil.Process(child.pid), StopPolicy(signals=("SIGTERM",), timeout_seconds=5))
    assert child.wait(timeout=5) == 0
    late = int(record.read_text())
    with suppress(psutil.NoSuchProcess):
        process = psutil.Process(late)
        left = running(process)
        if left:
            process.kill()  # not left behind by a failing test
        assert not left, f"pid {late}, started as it stopped, still runs"
