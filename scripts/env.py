"""``mlops env``: a stack's outputs turned into the architecture's environment variables.

The stack's URIs name the control host's private address, reachable only inside the VPC.
From a laptop the services are reached through ``mlops tunnel`` (SSM port forwarding onto
localhost), so ``--via-tunnel`` writes the same URIs with the tunnel's local ends instead;
MLflow accepts them because the control host lists ``localhost`` in ``--allowed-hosts``.

A stack with a Dask cluster (output ``dask_scheduler_address`` not empty) adds
``MLOPS_DASK_SCHEDULER_ADDRESS`` and ``MLOPS_DASK_WORKERS`` (what ``mlops smoke`` checks),
except through the tunnel, which forwards the scheduler's dashboard but not the scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from scripts.common import OpsError, stack_outputs, string_outputs
from scripts.envfile import write_env_file
from scripts.tunnel import LocalPorts

# The stack outputs (docs/architecture.md) the variables are made of.
ENV_OUTPUTS = (
    "region",
    "artifact_bucket",
    "mlflow_tracking_uri",
    "prefect_api_url",
    "mlflow_admin_username",
    "mlflow_admin_password",
    "prefect_api_auth_string",
)
# Optional outputs: a stack deployed before Dask existed has none of them.
DASK_OUTPUTS = ("dask_scheduler_address", "dask_workers")
# Variables whose values are credentials: written to the file, never shown.
SECRET_VARIABLES = frozenset({"MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING"})


def through_tunnel(uri: str, local_port: int) -> str:
    """``uri`` with its host and port replaced by the tunnel's local end ``localhost:PORT``."""
    return urlsplit(uri)._replace(netloc=f"localhost:{local_port}").geturl()


def dask_variables(outputs: Mapping[str, object], tunnel: LocalPorts | None) -> dict[str, str]:
    """The Dask cluster's variables, when the stack has one and it is reachable from here."""
    address = outputs.get("dask_scheduler_address")
    if not isinstance(address, str) or not address or tunnel is not None:
        return {}
    return {
        "MLOPS_DASK_SCHEDULER_ADDRESS": address,
        "MLOPS_DASK_WORKERS": str(outputs.get("dask_workers", "")),
    }


def env_from_outputs(outputs: Mapping[str, str], tunnel: LocalPorts | None) -> dict[str, str]:
    """The environment variables for a stack's ``outputs`` (keys as in ``ENV_OUTPUTS``)."""
    mlflow_uri = outputs["mlflow_tracking_uri"]
    prefect_url = outputs["prefect_api_url"]
    if tunnel is not None:
        mlflow_uri = through_tunnel(mlflow_uri, tunnel.mlflow)
        prefect_url = through_tunnel(prefect_url, tunnel.prefect)
    return {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_TRACKING_USERNAME": outputs["mlflow_admin_username"],
        "MLFLOW_TRACKING_PASSWORD": outputs["mlflow_admin_password"],
        "PREFECT_API_URL": prefect_url,
        "PREFECT_API_AUTH_STRING": outputs["prefect_api_auth_string"],
        "AWS_REGION": outputs["region"],
        "PIPELINE_DATA_DIR": f"s3://{outputs['artifact_bucket']}/data",
    }


def write_stack_env(stack: str, env_file: Path, tunnel: LocalPorts | None) -> dict[str, str]:
    """Write the variables of ``stack`` to ``env_file`` (mode 0600) and return them."""
    every_output = stack_outputs(stack, show_secrets=True)
    outputs = string_outputs(stack, every_output, ENV_OUTPUTS)
    values = env_from_outputs(outputs, tunnel) | dask_variables(every_output, tunnel)
    try:
        write_env_file(env_file, values)
    except OSError as exc:
        raise OpsError(f"cannot write env file {env_file}: {exc.strerror}") from None
    return values


def describe(values: Mapping[str, str]) -> list[str]:
    """One ``KEY=value`` line per variable, with the secret values left out."""
    return [
        f"{key}=<secret, in the file only>" if key in SECRET_VARIABLES else f"{key}={value}"
        for key, value in values.items()
    ]
