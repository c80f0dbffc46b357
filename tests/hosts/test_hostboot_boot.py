"""The boot script against an in-process Secrets Manager emulator (moto).

Database creation is exercised by the local twin (tests/e2e), which runs this same script
against PostgreSQL.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from hostboot import boot
from moto import mock_aws

REGION = "eu-west-1"


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An emulated Secrets Manager (dummy credentials, no network)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def config(tmp_path: Path, arns: dict[str, str]) -> dict[str, object]:
    """A boot config writing one env file and one service-readable file under ``tmp_path``."""
    return {
        "region": REGION,
        "secrets": arns,
        "min_secret_length": 12,
        "files": [
            {
                "path": str(tmp_path / "etc/app.env"),
                "template": "URL=postgresql://u:${db}@h/d\nTOKEN=${token}\n",
                "mode": "0600",
                "group": None,
            },
            {
                "path": str(tmp_path / "etc/app.ini"),
                "template": "[x]\nkey = ${token}\n",
                "mode": "0640",
                "group": None,
            },
        ],
        "database": None,
    }


def create(client: object, name: str, value: str) -> str:
    """Store a secret and return its ARN."""
    return client.create_secret(Name=name, SecretString=value)["ARN"]  # type: ignore[attr-defined]


def test_boot_writes_files_with_secrets_substituted_and_modes(
    secretsmanager: object, tmp_path: Path
) -> None:
    arns = {
        "db": create(secretsmanager, "db", "Pg0123456789abcdef"),
        "token": create(secretsmanager, "token", "Tk0123456789abcdef"),
    }
    boot.boot(config(tmp_path, arns))
    env = tmp_path / "etc/app.env"
    assert (
        env.read_text() == "URL=postgresql://u:Pg0123456789abcdef@h/d\nTOKEN=Tk0123456789abcdef\n"
    )
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    ini = tmp_path / "etc/app.ini"
    assert ini.read_text() == "[x]\nkey = Tk0123456789abcdef\n"
    assert stat.S_IMODE(ini.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("short", "secret token is 5 characters long; at least 12 are needed"),
        ("has spaces and $igns", "secret token holds characters outside [A-Za-z0-9_-]"),
    ],
)
def test_boot_refuses_an_unusable_secret_and_writes_nothing(
    secretsmanager: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    value: str,
    message: str,
) -> None:
    arns = {
        "db": create(secretsmanager, "db", "Pg0123456789abcdef"),
        "token": create(secretsmanager, "token", value),
    }
    path = tmp_path / "boot.json"
    path.write_text(json.dumps(config(tmp_path, arns)))
    assert boot.main(["boot.py", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"boot: {message}"
    assert value not in err  # the value itself is never shown
    assert not (tmp_path / "etc").exists()


def test_boot_names_a_placeholder_without_secret(secretsmanager: object, tmp_path: Path) -> None:
    arns = {"db": create(secretsmanager, "db", "Pg0123456789abcdef")}
    with pytest.raises(boot.BootError, match=r"app.env refers to unknown secret 'token'"):
        boot.boot(config(tmp_path, arns))


def test_boot_picks_up_credentials_that_arrive_after_its_first_attempt(
    secretsmanager: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 60: an instance profile attached late does not leave the host without secrets.

    No credentials at the first attempt (no environment, no files, no IMDS); they arrive while
    the boot script waits to retry, as the profile's do on a fresh instance.
    """
    arns = {
        "db": create(secretsmanager, "db", "Pg0123456789abcdef"),
        "token": create(secretsmanager, "token", "Tk0123456789abcdef"),
    }
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    pauses: list[float] = []

    def credentials_arrive_while_waiting(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) > 3:
            raise AssertionError("still failing after the credentials arrived")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    monkeypatch.setattr(boot.time, "sleep", credentials_arrive_while_waiting)
    boot.boot(config(tmp_path, arns))
    assert len(pauses) == 1  # one failed attempt, then success
    assert "TOKEN=Tk0123456789abcdef" in (tmp_path / "etc/app.env").read_text()
