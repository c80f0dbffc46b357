"""Rendered user data for a control host and a worker with AWS-like settings, taken apart.

Helpers shared by the hostboot tests (the fixtures are in conftest.py). They read back
what cloud-init would write (decoding compressed files) and what
systemd would read (unit files as section -> key -> values), so the tests assert on the
rendered artefacts, not on the renderer's internals.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass
from typing import Any

import hostboot
import yaml

REGION = "eu-west-1"
ACCOUNT = "123456789012"
CONTROL_IP = "10.42.0.10"


def secret_arn(name: str) -> str:
    """A Secrets Manager ARN as AWS forms them (random suffix included)."""
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:mlops-dev-{name}-Ab12Cd"


CONTROL = hostboot.ControlHostSettings(
    environment="dev",
    region=REGION,
    artifact_bucket="mlops-dev-artifacts-3f9a1c",
    private_ip=CONTROL_IP,
    db_host="mlops-dev-db.c9akciq32.eu-west-1.rds.amazonaws.com",
    db_port=5432,
    db_username="mlops",
    db_password_secret_arn=secret_arn("db-password"),
    mlflow_db_password_secret_arn=secret_arn("db-mlflow-password"),
    mlflow_auth_db_password_secret_arn=secret_arn("db-mlflow-auth-password"),
    prefect_db_password_secret_arn=secret_arn("db-prefect-password"),
    mlflow_admin_username="admin",
    mlflow_admin_password_secret_arn=secret_arn("mlflow-admin-password"),
    mlflow_worker_username="worker",
    mlflow_worker_password_secret_arn=secret_arn("mlflow-worker-password"),
    mlflow_flask_secret_key_secret_arn=secret_arn("mlflow-flask-secret-key"),
    prefect_auth_string_secret_arn=secret_arn("prefect-auth-string"),
)
WORKER = hostboot.WorkerHostSettings(
    environment="dev",
    region=REGION,
    artifact_bucket="mlops-dev-artifacts-3f9a1c",
    control_private_ip=CONTROL_IP,
    work_pool="training",
    worker_name="mlops-dev-worker-0",
    mlflow_worker_username="worker",
    mlflow_worker_password_secret_arn=secret_arn("mlflow-worker-password"),
    prefect_auth_string_secret_arn=secret_arn("prefect-auth-string"),
)


@dataclass(frozen=True)
class Rendered:
    """One host's user data: its text, its YAML document and its files by path."""

    text: str
    document: dict[str, Any]
    files: dict[str, str]

    def units(self) -> dict[str, str]:
        """The systemd unit files by unit name."""
        prefix = "/etc/systemd/system/"
        return {
            path.removeprefix(prefix): text
            for path, text in self.files.items()
            if path.startswith(prefix)
        }

    def boot_config(self) -> dict[str, Any]:
        """The boot script's config."""
        return json.loads(self.files["/etc/mlops/boot.json"])

    def secret_file_templates(self) -> dict[str, str]:
        """The files the boot script writes (env files, MLflow auth config), by path."""
        return {f["path"]: f["template"] for f in self.boot_config()["files"]}


def _content(entry: dict[str, Any]) -> str:
    """A write_files entry's content as cloud-init writes it."""
    if entry.get("encoding") == "gz+b64":
        return gzip.decompress(base64.b64decode(entry["content"])).decode()
    assert "encoding" not in entry, entry["encoding"]
    return entry["content"]


def take_apart(text: str) -> Rendered:
    """Parse rendered user data."""
    document = yaml.safe_load(text)
    files = {entry["path"]: _content(entry) for entry in document["write_files"]}
    return Rendered(text=text, document=document, files=files)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (keys may repeat, e.g. Environment=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"assignment outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def unit_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    """The Environment= assignments of a parsed unit (as rendered: one quoted pair each)."""
    pairs = (value.strip('"').partition("=") for value in unit["Service"].get("Environment", []))
    return {key: value for key, _, value in pairs}


def env_file_keys(template: str) -> dict[str, str]:
    """An env file template as KEY -> value template."""
    return dict(line.split("=", 1) for line in template.splitlines() if line)
