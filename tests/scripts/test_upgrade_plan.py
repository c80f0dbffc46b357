"""``mlops upgrade plan``: running versions, the host lock's, and the schema revisions between.

The servers are stood in by an ``httpx.MockTransport`` answering MLflow's ``/version`` and
Prefect's ``/api/admin/version`` (and refusing requests without the env file's credentials,
as the real ones do); the target's heads are read from this virtualenv's packages, which the
dev lock installs at the host lock's versions.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from scripts import upgrade
from scripts.cli import app
from scripts.common import OpsError
from scripts.envfile import write_env_file

ENV = {
    "MLFLOW_TRACKING_URI": "http://control:5000",
    "MLFLOW_TRACKING_USERNAME": "admin",
    "MLFLOW_TRACKING_PASSWORD": "admin-password-0123",
    "PREFECT_API_URL": "http://control:4200/api",
    "PREFECT_API_AUTH_STRING": "admin:prefect-auth-string-0123",
}


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def servers(mlflow: str = "3.16.1", prefect: str = "3.8.8") -> httpx.Client:
    """MLflow and Prefect servers reporting these versions to the env file's credentials."""

    def answer(request: httpx.Request) -> httpx.Response:
        expected = {
            "/version": (basic("admin:admin-password-0123"), mlflow),
            "/api/admin/version": (basic(ENV["PREFECT_API_AUTH_STRING"]), json.dumps(prefect)),
        }
        if request.url.path not in expected:
            return httpx.Response(404)
        credentials, body = expected[request.url.path]
        if request.headers.get("Authorization") != credentials:
            return httpx.Response(401)
        return httpx.Response(200, text=body)

    return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.fixture(scope="module")
def target() -> dict[str, upgrade.Shipped]:
    return upgrade.shipped_heads()


def test_the_target_is_the_host_lock_and_its_heads_are_this_virtualenvs(
    target: dict[str, upgrade.Shipped],
) -> None:
    pins = upgrade.pinned_versions()
    lock = upgrade.HOST_LOCK.read_text()
    assert f"mlflow=={pins['mlflow']} " in lock
    assert f"prefect=={pins['prefect']} " in lock
    assert set(target) == {"mlflow", "mlflow_auth", "prefect"}
    for database, shipped in target.items():
        assert shipped.version == pins[upgrade.DATABASES[database]]
        assert shipped.head in shipped.revisions
        assert len(shipped.revisions) > 5  # the whole history, not just the head


def test_running_versions_are_read_with_the_env_files_credentials() -> None:
    assert upgrade.running_versions(ENV, servers()) == {"mlflow": "3.16.1", "prefect": "3.8.8"}
    anonymous = {**ENV, "MLFLOW_TRACKING_PASSWORD": "wrong", "PREFECT_API_AUTH_STRING": "x"}
    refused = upgrade.running_versions(anonymous, servers())
    assert refused["mlflow"].startswith("unreachable (HTTPStatusError")
    assert refused["prefect"].startswith("unreachable (HTTPStatusError")


def test_a_server_that_does_not_answer_is_reported_not_raised() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(down))
    found = upgrade.running_versions(ENV, client)
    assert found["mlflow"] == "unreachable (ConnectError: http://control:5000/version)"


def test_each_database_verdict(target: dict[str, upgrade.Shipped]) -> None:
    older = sorted(target["mlflow"].revisions - {target["mlflow"].head})[0]
    result = upgrade.Plan(
        current={"mlflow": "3.16.1", "prefect": "3.9.1"},
        target=upgrade.pinned_versions(),
        shipped=target,
        revisions={"mlflow": older, "mlflow_auth": target["mlflow_auth"].head, "prefect": None},
    )
    assert result.database_verdict("mlflow") == "will be migrated"
    assert result.database_verdict("mlflow_auth") == "up to date"
    assert result.database_verdict("prefect") == "new database: created at the head"
    assert result.blocked == []
    newer = upgrade.Plan(**{**result.__dict__, "revisions": {"mlflow": "0badc0ffee00"}})
    assert newer.database_verdict("mlflow").startswith("UNKNOWN to the target")
    assert newer.database_verdict("prefect").startswith("not reachable from here")
    assert newer.blocked == ["mlflow"]
    lines = upgrade.report(result)
    assert any(line.startswith("mlflow      3.16.1") and "<- upgrade" in line for line in lines)
    (prefect,) = [line for line in lines if line.startswith("prefect     3.9.1")]
    assert "<- upgrade" not in prefect
    assert any(line.startswith(f"mlflow      {older}") for line in lines)


def test_plan_refuses_a_virtualenv_that_is_not_the_locks(tmp_path: Path) -> None:
    lock = tmp_path / "host-lock.txt"
    lock.write_text(upgrade.HOST_LOCK.read_text().replace("\nmlflow==3.17.2 ", "\nmlflow==9.9.9 "))
    with pytest.raises(OpsError, match=r"this virtualenv has mlflow 3\.17\.2 \(lock: 9\.9\.9\)"):
        upgrade.plan(ENV, client=servers(), lock=lock)
    lock.write_text("pip==26.3 \\\n")
    with pytest.raises(OpsError, match="pins no mlflow, prefect"):
        upgrade.pinned_versions(lock)


def test_the_command_prints_the_plan_for_an_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "mlops.env"
    # Nothing listens on port 9 (discard): the plan still shows the target, and says so.
    write_env_file(
        env_file,
        {
            **ENV,
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
            "PREFECT_API_URL": "http://127.0.0.1:9/api",
        },
    )
    result = CliRunner().invoke(app, ["upgrade", "plan", "--env-file", str(env_file)])
    assert result.exit_code == 0, result.output
    assert "mlflow      unreachable (ConnectError: http://127.0.0.1:9/version)" in result.output
    assert "3.17.2" in result.output
    assert "not reachable from here" in result.output
    missing = CliRunner().invoke(app, ["upgrade", "plan", "--env-file", str(tmp_path / "none")])
    assert missing.exit_code == 1
