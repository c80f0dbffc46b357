"""MLflow's post-start step: the workers' MLflow user, with EDIT on the training experiments
and MANAGE on the registered models (versions, aliases, tags), and nothing else.

Run as the ``mlflow`` service after each server start (``ExecStartPost=``; the twin does the
same) with the server's environment: ``MLFLOW_AUTH_ADMIN_PASSWORD`` and
``MLFLOW_WORKER_PASSWORD``. Idempotent: creates the user or resets its password, creates the
experiments and models if missing, grants (or corrects) the permissions. The auth app's
default permission is NO_PERMISSIONS, so the user reaches nothing else. Standard library only
(it ships in the user data, which EC2 caps at 16 KB).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

READY_SECONDS = 540.0  # under the unit's TimeoutStartSec
GRANTS = (("experiment", "EDIT"), ("registered_model", "MANAGE"))


class AccessError(Exception):
    """A call failed in a way retrying will not fix."""


class Api:
    """MLflow's REST API as the admin (basic auth); 4xx answers are returned, not raised."""

    def __init__(self, uri: str, user: str, password: str) -> None:
        self.base = uri.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        url, data = self.base + path, None
        if method == "GET":
            url = f"{url}?{urllib.parse.urlencode(body)}"
        else:
            data = json.dumps(body).encode()
        # S310: the base is checked to be http(s) in main().
        request = urllib.request.Request(url, data, self.headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise
            text = exc.read().decode(errors="replace")
            return exc.code, json.loads(text) if text.startswith("{") else {"message": text}

    def ok(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call(method, path, body)
        if status != 200:
            raise AccessError(f"{method} {path} answered {status}: {answer}")
        return answer


def wait_until_serving(api: Api) -> None:
    """Until the server answers the admin (it migrates its databases first)."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            status, answer = api.call("GET", "/api/2.0/mlflow/users/current", {})
        except OSError as exc:
            status, answer = 0, {"message": str(exc)}
        if status == 200:
            return
        if status in (401, 403) or time.monotonic() > deadline:
            raise AccessError(f"MLflow does not serve the admin: {status} {answer}")
        time.sleep(1.0)


def ensure_resource(api: Api, kind: str, name: str) -> str:
    """The id of experiment or registered model ``name``, created if missing."""
    if kind == "experiment":
        path, query = "/api/2.0/mlflow/experiments", {"experiment_name": name}
        status, answer = api.call("GET", f"{path}/get-by-name", query)
        if status == 200:
            return str(answer["experiment"]["experiment_id"])
        return str(api.ok("POST", f"{path}/create", {"name": name})["experiment_id"])
    path = "/api/2.0/mlflow/registered-models"
    if api.call("GET", f"{path}/get", {"name": name})[0] != 200:
        api.ok("POST", f"{path}/create", {"name": name})
    return name


def ensure_permission(api: Api, grant: dict[str, str], permission: str) -> None:
    """Grant ``permission``, replacing a different earlier grant on the same resource."""
    path = "/api/3.0/mlflow/users/permissions"
    status, answer = api.call("POST", f"{path}/grant", {**grant, "permission": permission})
    if status == 200:
        return
    if answer.get("error_code") != "RESOURCE_ALREADY_EXISTS":
        raise AccessError(f"granting {permission} on {grant}: {answer}")
    if api.ok("GET", f"{path}/get", grant).get("permission") != permission:
        api.ok("POST", f"{path}/revoke", grant)
        api.ok("POST", f"{path}/grant", {**grant, "permission": permission})


def provision(api: Api, args: argparse.Namespace, password: str) -> None:
    """The workers' user and its grants (see the module docstring)."""
    wait_until_serving(api)
    users, user = "/api/2.0/mlflow/users", {"username": args.worker}
    if api.call("GET", f"{users}/get", user)[0] == 200:
        api.ok("PATCH", f"{users}/update-password", {**user, "password": password})
    else:
        api.ok("POST", f"{users}/create", {**user, "password": password})
    for (kind, permission), names in zip(GRANTS, (args.experiment, args.model), strict=True):
        for name in names:
            resource = {"resource_type": kind, "resource_id": ensure_resource(api, kind, name)}
            ensure_permission(api, {**user, **resource}, permission)
            print(f"mlflow-access: {args.worker}: {permission} on {kind} {name}", file=sys.stderr)


def main(argv: list[str]) -> int:
    """Exit 0 when the access is in place, else 1 (2: bad usage) with the reason on stderr."""
    parser = argparse.ArgumentParser(prog="mlflow_access.py")
    for flag in ("--tracking-uri", "--admin", "--worker"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--experiment", action="append", default=[])
    parser.add_argument("--model", action="append", default=[])
    args = parser.parse_args(argv)
    if not args.tracking_uri.startswith(("http://", "https://")):
        print(
            f"mlflow-access: --tracking-uri {args.tracking_uri!r} is not http(s)", file=sys.stderr
        )
        return 2
    admin, worker = (
        os.environ.get(name, "")
        for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_WORKER_PASSWORD")
    )
    if not admin or not worker:
        print(
            "mlflow-access: MLFLOW_AUTH_ADMIN_PASSWORD and MLFLOW_WORKER_PASSWORD needed",
            file=sys.stderr,
        )
        return 1
    try:
        provision(Api(args.tracking_uri, args.admin, admin), args, worker)
    except (AccessError, OSError) as exc:
        print(f"mlflow-access: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
