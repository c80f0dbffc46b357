"""Stand-ins for the CLIs the ``mlops`` commands shell out to (``pulumi``, ``aws``,
``session-manager-plugin``).

Each stand-in is an executable on PATH that records its arguments and working directory,
then answers what the test scripted for exactly that argument list (standard output,
standard error, exit status), like the real tool would. An argument list the test did not
script fails loudly (exit 99), so a test also proves no unexpected command ran. With
``serve`` the stand-in behaves like a port-forwarding session: it stays up until SIGTERM and
leaves a marker saying it was stopped; with ``child`` too, like the aws CLI, it first starts a
child (the session-manager plugin's part, marker ``child-PID``) that it does not stop itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.common import REPO_ROOT

DATA = Path(__file__).parent / "data"
SECRET_OUTPUTS = ("mlflow_admin_password", "prefect_api_auth_string")

_STAND_IN = """#!{python}
import glob, json, os, signal, subprocess, sys, time

state = os.environ["FAKE_TOOLS_STATE"]
tool = os.path.basename(sys.argv[0])
args = sys.argv[1:]
record = {{"tool": tool, "args": args, "cwd": os.getcwd(), "pid": os.getpid()}}
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps(record) + "\\n")
with open(os.path.join(state, "answers.json")) as answers:
    answer = json.load(answers).get(json.dumps([tool, *args]))
if answer is None:
    sys.stderr.write(f"stand-in {{tool}}: unscripted arguments {{args}}\\n")
    sys.exit(99)
deadline = time.monotonic() + 30
while len(glob.glob(os.path.join(state, "serving-*"))) < answer["after_serving"]:
    if time.monotonic() > deadline:
        sys.exit(98)
    time.sleep(0.05)
sys.stdout.write(answer["stdout"])
sys.stdout.flush()
sys.stderr.write(answer["stderr"])
if answer["serve"]:
    if answer["child"]:
        child = subprocess.Popen(
            [sys.executable, "-c", "import signal\\nwhile True: signal.pause()"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        open(os.path.join(state, f"child-{{child.pid}}"), "w").close()

    def stop(signum, frame):
        open(os.path.join(state, f"stopped-{{os.getpid()}}"), "w").close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if answer["stubborn"] else stop)
    open(os.path.join(state, f"serving-{{os.getpid()}}"), "w").close()
    while True:
        signal.pause()
sys.exit(answer["exit"])
"""


@dataclass
class FakeTools:
    """The stand-ins' state directory: scripted answers in, recorded calls out."""

    state: Path
    bin_dir: Path
    pulumi_cwd: Path = REPO_ROOT  # where pulumi must run: the mlops commands run it there

    def answer(
        self,
        command: list[str],
        *,
        stdout: str = "",
        stderr: str = "",
        exit: int = 0,
        serve: bool = False,
        child: bool = False,
        stubborn: bool = False,
        after_serving: int = 0,
    ) -> None:
        """Script the answer to ``command`` (tool name first, then its exact arguments).

        ``serve``: stay up until SIGTERM. ``child``: and start a child process first.
        ``stubborn``: stay up through SIGTERM too (only SIGKILL stops it).
        ``after_serving``: answer only once that many
        serving stand-ins are up (a session that dies after the other one has started).
        """
        path = self.state / "answers.json"
        answers = json.loads(path.read_text())
        answers[json.dumps(command)] = {
            "stdout": stdout,
            "stderr": stderr,
            "exit": exit,
            "serve": serve,
            "child": child,
            "stubborn": stubborn,
            "after_serving": after_serving,
        }
        path.write_text(json.dumps(answers))

    def calls(self) -> list[list[str]]:
        """Every recorded call, tool name first, in order (pulumi's must run in ``pulumi_cwd``)."""
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        records = [json.loads(line) for line in log.read_text().splitlines()]
        for record in records:
            if record["tool"] == "pulumi":
                assert record["cwd"] == str(self.pulumi_cwd), record
        return [[record["tool"], *record["args"]] for record in records]

    def pids(self, tool: str) -> list[int]:
        """The process ids of every recorded call of ``tool``."""
        log = self.state / "calls.jsonl"
        records = (
            [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        )
        return [record["pid"] for record in records if record["tool"] == tool]

    def install(self, path: Path) -> None:
        """Put a stand-in at ``path`` (its file name is the tool name it answers as)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_STAND_IN.format(python=sys.executable))
        path.chmod(0o755)

    def remove(self, tool: str) -> None:
        """Take ``tool``'s stand-in off PATH (as if the tool were not installed)."""
        (self.bin_dir / tool).unlink()

    def markers(self, prefix: str) -> list[Path]:
        """The ``serving-PID``, ``child-PID`` or ``stopped-PID`` markers of serving stand-ins."""
        return sorted(self.state.glob(f"{prefix}-*"))

    def wait_for_markers(self, prefix: str, count: int, deadline_seconds: float = 30.0) -> None:
        """Wait until ``count`` markers named ``prefix`` exist, failing after the deadline."""
        deadline = time.monotonic() + deadline_seconds
        while len(self.markers(prefix)) < count:
            assert time.monotonic() < deadline, (
                f"only {self.markers(prefix)} after {deadline_seconds} s"
            )
            time.sleep(0.05)

    def child_pids(self) -> list[int]:
        """The process ids of the children the serving stand-ins started."""
        return [int(marker.name.split("-")[1]) for marker in self.markers("child")]

    def running_children(self) -> list[int]:
        """Those children still running."""
        return [pid for pid in self.child_pids() if _is_running(pid)]


def _is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited one not yet reaped is a zombie: not live)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTools]:
    """``pulumi``, ``aws`` and ``session-manager-plugin`` stand-ins first on PATH.

    Stand-ins and their children still running when the test ends are killed (a tunnel
    that failed to stop them must not leave them behind: under `make mutate`, every mutant
    that does would leave its sessions running until the machine restarts).
    """
    bin_dir = tmp_path / "bin"
    state = tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (state / "answers.json").write_text("{}")
    tools = FakeTools(state, bin_dir)
    for tool in ("pulumi", "aws", "session-manager-plugin"):
        tools.install(bin_dir / tool)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TOOLS_STATE", str(state))
    yield tools
    stand_ins = [pid for tool in ("pulumi", "aws", "session-manager-plugin")
                 for pid in tools.pids(tool)]  # fmt: skip
    for pid in tools.running_children():
        os.kill(pid, signal.SIGKILL)
    for pid in stand_ins:
        if _is_running(pid) and str(bin_dir) in _command_line(pid):  # not a reused pid
            os.kill(pid, signal.SIGKILL)


def _command_line(pid: int) -> str:
    """``pid``'s command line ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


@pytest.fixture
def dev_outputs() -> dict[str, object]:
    """The recorded ``pulumi stack output --json --show-secrets`` of a dev stack."""
    return json.loads((DATA / "stack-output-dev.json").read_text())


@pytest.fixture
def dev_outputs_masked(dev_outputs: dict[str, object]) -> str:
    """The same stack's ``pulumi stack output --json`` (no ``--show-secrets``: masked)."""
    masked = {
        key: "[secret]" if key in SECRET_OUTPUTS else value for key, value in dev_outputs.items()
    }
    return json.dumps(masked, indent=2)
