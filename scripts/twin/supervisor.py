"""A small process supervisor: start a service as its unit would, find it again, stop it.

Each process gets a clean environment (the caller builds it, as systemd gives PATH, LANG and
the unit's own), runs in its own session with its output in a log file, and is stopped with
its unit's stop signals sent to its whole process tree and session (what systemd's control
group would hold: a child re-parented after its parent exited too). A process is recorded as
``[pid, create_time]`` so that a recycled pid is never taken for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from scripts.common import OpsError

POLL_SECONDS = 0.25
_SIGNAL_GAP_SECONDS = 2.0  # how long a stop signal gets before the next one is sent
_LOG_TAIL_LINES = 30


@dataclass(frozen=True, kw_only=True)
class Process:
    """How the twin runs one service: command line, environment, working directory."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True, kw_only=True)
class StopPolicy:
    """How a service is stopped: signals in turn, then SIGKILL after the timeout."""

    signals: tuple[str, ...] = ("SIGTERM",)
    timeout_seconds: float = 30.0


def wait_for(
    what: str, ready: Callable[[], bool], seconds: float, *, alive: Callable[[], str]
) -> None:
    """Poll ``ready()`` until true; fail after ``seconds`` or as soon as ``alive()`` says why."""
    deadline = time.monotonic() + seconds
    while not ready():
        problem = alive()
        if problem:
            raise OpsError(f"{what}: {problem}")
        if time.monotonic() > deadline:
            raise OpsError(f"{what}: not ready within {seconds:.0f} s")
        time.sleep(POLL_SECONDS)


def launch(process: Process, log: Path) -> subprocess.Popen[bytes]:
    """Start ``process`` in its own session, appending its output to ``log``."""
    process.cwd.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return subprocess.Popen(
            process.argv,
            env=process.env,
            cwd=process.cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def record(pid: int) -> list[float]:
    """What is saved of a started process: its pid and start time."""
    return [pid, psutil.Process(pid).create_time()]


def recorded_process(recorded: list[float] | None) -> psutil.Process | None:
    """The still running process ``recorded`` describes (never a recycled pid), or None."""
    if not recorded:
        return None
    pid, created = int(recorded[0]), recorded[1]
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - created) > 0.01:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return process


def log_tail(path: Path) -> str:
    """The last lines of the log at ``path``, for error messages."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def tree(process: psutil.Process) -> list[psutil.Process]:
    """``process`` and all its descendants."""
    with suppress(psutil.NoSuchProcess):
        return [process, *process.children(recursive=True)]
    return []


def session_members(leader: int | None) -> list[psutil.Process]:
    """The running processes of the session ``leader`` leads (none for None): as systemd's
    control group, it holds what left the tree (re-parented after its parent exited)."""
    if leader is None:
        return []
    members = []
    for process in psutil.process_iter():
        with suppress(OSError, psutil.Error):
            if process.pid != leader and os.getsid(process.pid) == leader:
                members.append(process)
    return members


def leads_session(process: psutil.Process) -> bool:
    """Whether ``process`` leads a session (the twin starts every service in one of its own)."""
    try:
        return os.getsid(process.pid) == process.pid
    except OSError:
        return False


def tree_rss_bytes(process: psutil.Process) -> int:
    """Resident memory of ``process`` and its descendants."""
    total = 0
    for member in tree(process):
        with suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Wait up to ``seconds`` for ``processes`` to end; those still running."""
    deadline = time.monotonic() + seconds
    while True:
        left = [process for process in processes if running(process)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(POLL_SECONDS)


def signal_all(processes: list[psutil.Process], signum: signal.Signals) -> None:
    """Send ``signum`` to each of ``processes`` that still exists."""
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def stop_tree(process: psutil.Process, policy: StopPolicy) -> None:
    """Stop ``process`` and its descendants as systemd stops a unit's control group.

    Every signal but the last goes to the main process (``ExecStop=``), with a short gap for
    it to act; the last (``KillSignal=``) goes to every process of the tree and of the session
    it leads; whatever is left after the timeout is killed, and so is what was started in
    the session meanwhile (a Dask nanny restarting its worker as it stops).
    """
    leader = process.pid if leads_session(process) else None
    members = tree(process)
    members += [other for other in session_members(leader) if other not in members]
    *first, last = policy.signals
    for name in first:
        signal_all([process], signal.Signals[name])
        wait_gone([process], _SIGNAL_GAP_SECONDS)
    now = [*tree(process), *session_members(leader)]
    members += [member for member in now if member not in members]
    signal_all(members, signal.Signals[last])
    left = wait_gone(members, policy.timeout_seconds)
    left += [late for late in session_members(leader) if late not in members]
    signal_all(left, signal.SIGKILL)
    left = wait_gone(left, 5.0)
    if left:
        raise OpsError(f"could not stop pids {', '.join(str(p.pid) for p in left)}")
