"""The real MLflow server, run from its rendered spec: CORS for the private address
(SECURITY_INVARIANTS.md 48) and the workers' MLflow user (47).

The tracking and auth stores are SQLite files here (the experiments are about the security
middleware and the auth app, not PostgreSQL); everything else is the rendered unit's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hostboot.services import ServiceSpec

from pipeline.ports import free_port
from tests.hosts.control_services import (
    CONTROL_IP,
    SECRETS,
    answers,
    local_plan,
    running,
    service_environment,
    write_secret_files,
)
from tests.hosts.rendered_hosts import (
    CONTROL,
    Rendered,
    env_file_keys,
    parse_unit,
    unit_environment,
)

ADMIN = (CONTROL.mlflow_admin_username, SECRETS["mlflow_admin_password"])
WORKER = (CONTROL.mlflow_worker_username, SECRETS["mlflow_worker_password"])


@dataclass(frozen=True)
class Server:
    """A running MLflow server and what it was started from."""

    url: str
    port: int
    spec: ServiceSpec
    env: dict[str, str]

    def post_start(self) -> subprocess.CompletedProcess[str]:
        """The unit's ExecStartPost= step, run as systemd runs it (the unit's environment)."""
        return subprocess.run(
            self.spec.post_start, env=self.env, capture_output=True, text=True, timeout=120
        )

    def call(
        self,
        method: str,
        path: str,
        auth: tuple[str, str],
        *,
        origin: str | None = None,
        **kw: object,
    ) -> httpx.Response:
        """A request as a browser on the private address sends it (Host: 10.42.0.10:PORT)."""
        headers = {"Host": f"{CONTROL_IP}:{self.port}"}
        if origin:
            headers["Origin"] = origin
        return httpx.request(method, self.url + path, auth=auth, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The MLflow server as its unit runs it, on a free loopback port, SQLite stores."""
    root = tmp_path_factory.mktemp("control")
    port = free_port()
    plan = local_plan(root, mlflow_port=port)
    spec = next(s for s in plan.services if s.name == "mlflow")
    write_secret_files(
        plan,
        {
            "MLFLOW_BACKEND_STORE_URI=": f"MLFLOW_BACKEND_STORE_URI=sqlite:///{root}/mlflow.db",
            "database_uri = ": f"database_uri = sqlite:///{root}/auth.db",
        },
    )
    env = service_environment(spec)
    url = f"http://127.0.0.1:{port}"
    with running(
        spec.argv,
        env,
        Path(spec.working_directory),
        lambda: answers(f"{url}/health"),
        log=root / "mlflow.log",
        seconds=120,
    ):
        server = Server(url=url, port=port, spec=spec, env=env)
        result = server.post_start()
        assert result.returncode == 0, result.stderr
        yield server


def test_invariant_48_mlflow_accepts_state_changes_from_its_private_address_only(
    mlflow: Server,
) -> None:
    """The UI opened on http://10.42.0.10:5000 searches with POST: MLflow's security
    middleware must accept that origin, and still refuse an unrelated one."""
    search = "/api/2.0/mlflow/experiments/search"
    body = {"max_results": 10}
    own = mlflow.call("POST", search, ADMIN, origin=f"http://{CONTROL_IP}:{mlflow.port}", json=body)
    assert own.status_code == 200, own.text
    tunnel = mlflow.call("POST", search, ADMIN, origin=f"http://localhost:{mlflow.port}", json=body)
    assert tunnel.status_code == 200, tunnel.text
    foreign = mlflow.call("POST", search, ADMIN, origin="http://attacker.example:5000", json=body)
    assert foreign.status_code == 403
    assert "Cross-origin request blocked" in foreign.text


def test_invariant_48_cors_origins_rendered_never_a_wildcard(control: Rendered) -> None:
    argv = parse_unit(control.units()["mlflow.service"])["Service"]["ExecStart"][0].split()
    origins = argv[argv.index("--cors-allowed-origins") + 1].split(",")
    assert origins == [
        f"http://{CONTROL_IP}:5000",
        "http://localhost:5000",
        "http://127.0.0.1:5000",
    ]
    assert not [origin for origin in origins if "*" in origin]


def test_invariant_47_worker_user_logs_and_registers_but_administers_nothing(
    mlflow: Server,
) -> None:
    experiment = mlflow.call(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name",
        WORKER,
        params={"experiment_name": "trip-duration"},
    )
    assert experiment.status_code == 200, experiment.text
    experiment_id = experiment.json()["experiment"]["experiment_id"]
    run = mlflow.call(
        "POST", "/api/2.0/mlflow/runs/create", WORKER, json={"experiment_id": experiment_id}
    )
    assert run.status_code == 200, run.text
    run_id, artifacts = (run.json()["run"]["info"][key] for key in ("run_id", "artifact_uri"))
    metric = {"run_id": run_id, "key": "rmse", "value": 5.1, "timestamp": 0}
    assert mlflow.call("POST", "/api/2.0/mlflow/runs/log-metric", WORKER, json=metric).is_success
    version = mlflow.call(
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        WORKER,
        json={"name": "trip-duration-green", "source": f"{artifacts}/model", "run_id": run_id},
    )
    assert version.status_code == 200, version.text
    number = version.json()["model_version"]["version"]
    alias = {"name": "trip-duration-green", "alias": "champion", "version": number}
    promoted = mlflow.call("POST", "/api/2.0/mlflow/registered-models/alias", WORKER, json=alias)
    assert promoted.status_code == 200, promoted.text
    tag = {"name": "trip-duration-green", "version": number, "key": "k", "value": "v"}
    assert mlflow.call(
        "POST", "/api/2.0/mlflow/model-versions/set-tag", WORKER, json=tag
    ).is_success

    # What an admin may do and the workers' user may not.
    refused = [
        ("POST", "/api/2.0/mlflow/users/create", {"username": "mallory", "password": "x" * 16}),
        (
            "PATCH",
            "/api/2.0/mlflow/users/update-password",
            {"username": ADMIN[0], "password": "y" * 16},
        ),
        ("PATCH", "/api/2.0/mlflow/users/update-admin", {"username": WORKER[0], "is_admin": True}),
    ]
    for method, path, body in refused:
        answer = mlflow.call(method, path, WORKER, json=body)
        assert answer.status_code == 403, (path, answer.status_code, answer.text)
    other = mlflow.call("POST", "/api/2.0/mlflow/experiments/create", ADMIN, json={"name": "other"})
    other_id = other.json()["experiment_id"]
    hidden = mlflow.call(
        "GET", "/api/2.0/mlflow/experiments/get", WORKER, params={"experiment_id": other_id}
    )
    assert hidden.status_code == 403, hidden.text


def test_invariant_47_access_step_is_idempotent_and_repairs_a_changed_grant(
    mlflow: Server,
) -> None:
    experiment = mlflow.call(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name",
        ADMIN,
        params={"experiment_name": "trip-duration"},
    ).json()["experiment"]["experiment_id"]
    grant = {"username": WORKER[0], "resource_type": "experiment", "resource_id": experiment}
    path = "/api/3.0/mlflow/users/permissions"
    assert mlflow.call("POST", f"{path}/revoke", ADMIN, json=grant).is_success
    assert mlflow.call(
        "POST", f"{path}/grant", ADMIN, json={**grant, "permission": "READ"}
    ).is_success
    assert mlflow.post_start().returncode == 0
    assert mlflow.post_start().returncode == 0
    current = mlflow.call("GET", f"{path}/get", ADMIN, params=grant).json()
    assert current["permission"] == "EDIT"


def test_invariant_47_workers_hold_their_own_user_never_the_admin_password(
    control: Rendered, worker: Rendered
) -> None:
    unit = parse_unit(worker.units()["prefect-worker.service"])
    assert unit_environment(unit)["MLFLOW_TRACKING_USERNAME"] == CONTROL.mlflow_worker_username
    (env_path,) = unit["Service"]["EnvironmentFile"]
    secrets = env_file_keys(worker.secret_file_templates()[env_path])
    assert secrets["MLFLOW_TRACKING_PASSWORD"] == "${mlflow_worker_password}"
    assert set(worker.boot_config()["secrets"]) == {"mlflow_worker_password", "prefect_auth_string"}
    assert "mlflow_admin_password" not in worker.text
    # The control host provisions that user after each MLflow start.
    mlflow_unit = parse_unit(control.units()["mlflow.service"])["Service"]
    (post_start,) = mlflow_unit["ExecStartPost"]
    assert "/opt/mlops/mlflow_access.py" in post_start
    assert "--worker worker" in post_start


def test_invariant_47_grants_cover_what_the_flow_writes_by_default() -> None:
    """The experiment and the models the flow uses by default are the ones granted at boot."""
    from typing import get_args

    from pipeline.parameters import DEFAULT_EXPERIMENT, Color, TrainingParameters

    assert CONTROL.worker_experiments == (DEFAULT_EXPERIMENT,)
    models = {TrainingParameters(color=color).registered_model_name for color in get_args(Color)}
    assert set(CONTROL.worker_models) == models
