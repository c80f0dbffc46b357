"""The temporary Prefect API server the command line starts: a real server, and its failures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pipeline import temporary_server
from pipeline.errors import PipelineError


def test_the_server_answers_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    server = temporary_server.start()
    try:
        server.wait_until_ready(timeout_seconds=180)
        assert httpx.get(f"{server.api_url}/health").json() is True
    finally:
        server.stop()
    assert server.process.returncode is not None
    server.stop()  # a second stop (the exit handler's) is harmless


def test_a_server_whose_profile_names_an_api_exits_without_serving(
    prefect_home_naming: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It resolves Prefect's settings as the command line does, and leaves the API to that one."""
    home = prefect_home_naming("http://127.0.0.1:9/api")
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    server = temporary_server.start()
    with pytest.raises(PipelineError, match="exited with status 0 before it answered"):
        server.wait_until_ready(timeout_seconds=180)
    assert not (home / "prefect.db").exists()  # no database created or migrated


def never_listening(tmp_path: Path, code: str) -> temporary_server.TemporaryServer:
    """A stand-in server process running ``code``; port 9 (discard) has no HTTP server."""
    process = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    return temporary_server.TemporaryServer(process=process, port=9)


def test_a_server_that_exits_is_an_error_naming_its_status(tmp_path: Path) -> None:
    server = never_listening(tmp_path, "raise SystemExit(3)")
    with pytest.raises(PipelineError, match="temporary API server on port 9 exited with status 3"):
        server.wait_until_ready(timeout_seconds=60)


def test_a_server_that_never_answers_is_an_error_after_the_deadline(tmp_path: Path) -> None:
    server = never_listening(tmp_path, "import time; time.sleep(600)")
    try:
        with pytest.raises(PipelineError, match=r"did not answer on .* within 1 s"):
            server.wait_until_ready(timeout_seconds=1)
    finally:
        server.stop()
    assert server.process.returncode is not None


class _Answering:
    """A server that answers at once (what ``cli._api`` needs of one)."""

    api_url = "http://127.0.0.1:9/api"

    def wait_until_ready(self, timeout_seconds: float) -> None:
        assert timeout_seconds > 0


def test_a_flow_against_the_temporary_server_sends_no_heartbeats() -> None:
    """Nothing outlives the server to watch for them, and Prefect's heartbeat thread delays
    every run's end by up to a second; a configured API keeps Prefect's setting."""
    from prefect.settings import get_current_settings

    from pipeline import cli

    configured = get_current_settings().flows.heartbeat_frequency
    assert configured is not None  # Prefect's default: 180 s
    with cli._api(_Answering()):  # type: ignore[arg-type]
        assert get_current_settings().api.url == _Answering.api_url
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == configured
    with cli._api(None):
        assert get_current_settings().flows.heartbeat_frequency == configured
