"""``mlops smoke``: does the environment in an env file answer, and does it do its job?

Each check gives one verdict (PASS, FAIL, or SKIP when a check it builds on failed):

- ``mlflow-health``: the tracking server answers ``/health``.
- ``mlflow-auth``: it refuses a request without credentials (basic-auth is on) and accepts
  ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``.
- ``mlflow-artifacts``: in the experiment ``mlops-smoke``, a run's artifact is written and
  read back through the server's artifact proxy (so the server's own access to the bucket
  is what is tested, not the caller's).
- ``prefect-health``: the Prefect server answers ``/api/health``.
- ``prefect-auth``: it refuses a request without the auth string and accepts
  ``PREFECT_API_AUTH_STRING``.
- ``work-pool``: the work pool exists.
- ``worker``: at least one worker of that pool is ONLINE (heartbeating).
- ``dask-cluster`` (only when the env file names a cluster, ``MLOPS_DASK_SCHEDULER_ADDRESS``):
  the scheduler answers and sees ``MLOPS_DASK_WORKERS`` workers. A ``tls://`` scheduler is
  reached with Dask's TLS settings (``DASK_DISTRIBUTED__COMM__TLS__*``: the env file's, else
  the environment's), as the flow runs reach it; without them (a laptop: the identity stays
  on the hosts) the check is skipped, saying so. The process twin's env file names the
  identity it made, so the check runs against it.

Talks plain HTTP (the servers' REST APIs) so that every failure maps to a precise verdict:
a refused connection, a Host header the server rejects, a credential it rejects (401).
No credential is ever part of a verdict.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

SMOKE_EXPERIMENT = "mlops-smoke"
ENV_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
)
_TIMEOUT = httpx.Timeout(15.0, connect=10.0)
_INVALID_HOST = "Invalid Host header"  # MLflow's answer to a Host outside --allowed-hosts
_ARTIFACTS_ROUTE = "/api/2.0/mlflow-artifacts/artifacts"
_RETRY_SECONDS = 10.0


DASK_ADDRESS = "MLOPS_DASK_SCHEDULER_ADDRESS"
DASK_WORKERS = "MLOPS_DASK_WORKERS"
DASK_TLS_PREFIX = "DASK_DISTRIBUTED__COMM__TLS__"
_DASK_TIMEOUT_SECONDS = 10


class CheckFailed(Exception):
    """A check's negative verdict; the message says what was wrong."""


class CheckSkipped(Exception):
    """A check that cannot run from here; the message says why (not a failure)."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: ``PASS``, ``FAIL`` or ``SKIP``, and why."""

    check: str
    outcome: str
    detail: str


@dataclass
class Service:
    """One server as the smoke test sees it: a client on its base URL and its credential."""

    name: str
    client: httpx.Client
    credential: str  # the env variables the server authenticates, for verdicts
    auth_headers: dict[str, str]

    @property
    def where(self) -> str:
        """The base URL without any user information, for verdicts."""
        url = self.client.base_url
        return f"{url.scheme}://{url.netloc.decode()}{url.path}"

    def call(
        self,
        method: str,
        path: str,
        *,
        authenticate: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request; transport errors, a refused Host and a 401 become CheckFailed."""
        sent = {**(self.auth_headers if authenticate else {}), **(headers or {})}
        try:
            response = self.client.request(method, path, headers=sent, **kwargs)
        except httpx.ConnectError as exc:
            raise CheckFailed(f"cannot connect to {self.where}: {exc}{self._hint()}") from None
        except httpx.TimeoutException:
            raise CheckFailed(f"no answer from {self.where} in time{self._hint()}") from None
        except httpx.TransportError as exc:
            raise CheckFailed(f"{method} {self.where}{path} failed: {exc}") from None
        if response.status_code == 403 and _INVALID_HOST in response.text:
            raise CheckFailed(
                f"{self.name} refused the Host header {self.client.base_url.netloc.decode()!r} "
                "(HTTP 403 Invalid Host header): the server's --allowed-hosts does not list it"
            )
        if authenticate and response.status_code == 401:
            raise CheckFailed(f"{self.name} rejected {self.credential} (HTTP 401)")
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authenticated call that must succeed; returns its JSON body."""
        response = self.call(method, path, **kwargs)
        if response.is_error:
            raise CheckFailed(_unexpected(method, path, response))
        return _body(method, path, response)

    def _hint(self) -> str:
        """Why a connection may fail: a private address is reachable only inside the VPC."""
        host = self.client.base_url.host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return ""
        if not address.is_private or address.is_loopback:
            return ""
        return (
            f" ({host} is a private address, reachable only inside the VPC: from a laptop run "
            "`mlops tunnel --stack STACK` and write the env file with `mlops env --stack STACK "
            "--via-tunnel`)"
        )


def _unexpected(method: str, path: str, response: httpx.Response) -> str:
    """A verdict for an unexpected HTTP status, with the start of the body."""
    body = " ".join(response.text.split())[:200]
    return f"{method} {path} answered HTTP {response.status_code}: {body}"


def _body(method: str, path: str, response: httpx.Response) -> Any:
    """The JSON body of a successful answer; anything else is a verdict."""
    try:
        return response.json()
    except ValueError:
        raise CheckFailed(_unexpected(method, path, response) + " (not JSON)") from None


def _basic(credentials: str) -> dict[str, str]:
    """An HTTP basic ``Authorization`` header carrying ``credentials``.

    MLflow reads them as ``user:password``; Prefect compares them with its auth string.
    """
    token = base64.b64encode(credentials.encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _refuses_anonymous(service: Service, path: str) -> None:
    """The server must answer 401 to ``path`` without credentials."""
    response = service.call("GET", path, authenticate=False)
    if response.status_code != 401:
        raise CheckFailed(
            f"{service.name} answered GET {path} without credentials with HTTP "
            f"{response.status_code}, not 401: authentication is not enforced"
        )


def health(service: Service, path: str) -> str:
    """The server answers its health endpoint (which needs no credentials)."""
    response = service.call("GET", path, authenticate=False)
    if response.status_code != 200:
        raise CheckFailed(_unexpected("GET", path, response))
    return f"{service.where} is up"


def mlflow_auth(mlflow: Service) -> str:
    """Basic-auth is enforced and the env file's user is accepted."""
    path = "/api/2.0/mlflow/experiments/search"
    _refuses_anonymous(mlflow, path)
    mlflow.json("GET", path, params={"max_results": 1})
    return "anonymous request refused (401); MLFLOW_TRACKING_USERNAME/PASSWORD accepted"


def _smoke_experiment(mlflow: Service) -> str:
    """The id of the smoke experiment, created (or restored) if needed."""
    path = "/api/2.0/mlflow/experiments/get-by-name"
    response = mlflow.call("GET", path, params={"experiment_name": SMOKE_EXPERIMENT})
    if response.status_code == 404:
        created = mlflow.json(
            "POST", "/api/2.0/mlflow/experiments/create", json={"name": SMOKE_EXPERIMENT}
        )
        return str(created["experiment_id"])
    if response.is_error:
        raise CheckFailed(_unexpected("GET", path, response))
    experiment = _body("GET", path, response)["experiment"]
    if experiment.get("lifecycle_stage") == "deleted":
        mlflow.json(
            "POST",
            "/api/2.0/mlflow/experiments/restore",
            json={"experiment_id": experiment["experiment_id"]},
        )
    return str(experiment["experiment_id"])


def _artifact_route(artifact_uri: str) -> str:
    """The server route of a proxied artifact directory (as MLflow's own client resolves it)."""
    parsed = urlsplit(artifact_uri)
    if parsed.scheme != "mlflow-artifacts":
        raise CheckFailed(
            f"the server gave the run artifact URI {artifact_uri!r}, not mlflow-artifacts:/...: "
            "artifacts are not proxied (the server needs --artifacts-destination)"
        )
    return f"{_ARTIFACTS_ROUTE}/{parsed.path.strip('/')}"


def mlflow_artifacts(mlflow: Service) -> str:
    """A small artifact is written and read back through the server's artifact proxy."""
    experiment_id = _smoke_experiment(mlflow)
    now_ms = int(time.time() * 1000)
    run = mlflow.json(
        "POST",
        "/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment_id, "run_name": "smoke", "start_time": now_ms},
    )["run"]["info"]
    status = "FAILED"
    try:
        route = f"{_artifact_route(run['artifact_uri'])}/smoke.txt"
        token = f"mlops smoke {uuid.uuid4()}"
        upload = mlflow.call("PUT", route, content=token.encode())
        if upload.is_error:
            raise CheckFailed(f"artifact upload failed: {_unexpected('PUT', route, upload)}")
        download = mlflow.call("GET", route)
        if download.is_error:
            raise CheckFailed(f"artifact download failed: {_unexpected('GET', route, download)}")
        if download.text != token:
            raise CheckFailed(f"artifact read back from {route} differs from what was written")
        status = "FINISHED"
    finally:
        # Best effort: a run left RUNNING is cosmetic, and the verdict above says more.
        with contextlib.suppress(CheckFailed):
            mlflow.call(
                "POST",
                "/api/2.0/mlflow/runs/update",
                json={
                    "run_id": run["run_id"],
                    "status": status,
                    "end_time": int(time.time() * 1000),
                },
            )
    return f"wrote and read back smoke.txt of run {run['run_id']} (experiment {SMOKE_EXPERIMENT})"


def prefect_auth(prefect: Service) -> str:
    """The auth string is enforced and the env file's one is accepted."""
    _refuses_anonymous(prefect, "admin/version")
    version = prefect.json("GET", "admin/version")
    return f"anonymous request refused (401); PREFECT_API_AUTH_STRING accepted (server {version})"


def work_pool(prefect: Service, pool: str) -> str:
    """The work pool exists."""
    path = f"work_pools/{quote(pool, safe='')}"
    response = prefect.call("GET", path)
    if response.status_code == 404:
        raise CheckFailed(
            f"work pool {pool!r} does not exist (its workers create it when they start)"
        )
    if response.is_error:
        raise CheckFailed(_unexpected("GET", path, response))
    details = _body("GET", path, response)
    return f"work pool {pool!r} exists (type {details.get('type')}, status {details.get('status')})"


def _csrf_headers(prefect: Service) -> dict[str, str]:
    """The CSRF headers Prefect wants on a POST (none when its CSRF protection is off)."""
    client_id = str(uuid.uuid4())
    response = prefect.call("GET", "csrf-token", params={"client": client_id})
    if response.status_code == 422:  # "CSRF protection is disabled."
        return {}
    if response.is_error:
        raise CheckFailed(_unexpected("GET", "csrf-token", response))
    token = _body("GET", "csrf-token", response)["token"]
    return {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": client_id}


def live_worker(prefect: Service, pool: str) -> str:
    """At least one worker of the pool is ONLINE."""
    path = f"work_pools/{quote(pool, safe='')}/workers/filter"
    workers = prefect.json("POST", path, json={}, headers=_csrf_headers(prefect))
    online = [worker["name"] for worker in workers if worker.get("status") == "ONLINE"]
    if not online:
        known = ", ".join(f"{w['name']} {w.get('status')}" for w in workers) or "none"
        raise CheckFailed(f"no ONLINE worker in work pool {pool!r} (workers known: {known})")
    return f"ONLINE: {', '.join(online)}"


def dask_cluster(address: str, expected_workers: str, tls: dict[str, str] | None = None) -> str:
    """The Dask scheduler answers and sees the expected number of workers.

    ``tls``: Dask's TLS settings by variable (``DASK_DISTRIBUTED__COMM__TLS__CA_FILE`` ...)
    given in the env file; they take the place of the environment's.
    """
    import dask.config

    from pipeline.dask_engine import TLS_SETTINGS

    if not expected_workers.isdigit():
        raise CheckFailed(f"{DASK_WORKERS} must be a number of workers, got {expected_workers!r}")
    given = {key: (tls or {}).get(variable) for key, variable in TLS_SETTINGS.items()}
    with dask.config.set({key: value for key, value in given.items() if value}):
        return _dask_workers_seen(address, int(expected_workers))


def _dask_workers_seen(address: str, expected_workers: int) -> str:
    """The check itself, with Dask's configuration in place."""
    from distributed import Client

    from pipeline.dask_engine import tls_security
    from pipeline.errors import PipelineError

    try:
        security = tls_security(address)
    except PipelineError as exc:
        raise CheckSkipped(f"cannot authenticate to {address} from here: {exc}") from None
    try:
        with Client(
            address, timeout=_DASK_TIMEOUT_SECONDS, set_as_default=False, security=security
        ) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
    except (OSError, TimeoutError) as exc:
        raise CheckFailed(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    if len(workers) != expected_workers:
        names = ", ".join(sorted(str(w.get("name")) for w in workers.values())) or "none"
        raise CheckFailed(
            f"the scheduler at {address} sees {len(workers)} workers ({names}); "
            f"{DASK_WORKERS} expects {expected_workers}"
        )
    return f"{address} answers with {len(workers)} workers"


@dataclass(frozen=True)
class Check:
    """A named check, the checks it builds on, and how to run it."""

    name: str
    needs: tuple[str, ...]
    run: Callable[[], str]


def dask_checks(env: dict[str, str]) -> list[Check]:
    """The Dask cluster's check, when the env file names one (a stack with daskWorkers)."""
    address = env.get(DASK_ADDRESS)
    if not address:
        return []
    tls = {key: value for key, value in env.items() if key.startswith(DASK_TLS_PREFIX)}
    workers = env.get(DASK_WORKERS, "")
    return [Check("dask-cluster", (), lambda: dask_cluster(address, workers, tls))]


def run_checks(checks: list[Check]) -> list[Verdict]:
    """Run ``checks`` in order; one whose needs did not pass is skipped."""
    verdicts: dict[str, Verdict] = {}
    for check in checks:
        failed = [need for need in check.needs if verdicts[need].outcome != "PASS"]
        if failed:
            verdicts[check.name] = Verdict(check.name, "SKIP", f"needs {', '.join(failed)}")
            continue
        try:
            verdicts[check.name] = Verdict(check.name, "PASS", check.run())
        except CheckFailed as exc:
            verdicts[check.name] = Verdict(check.name, "FAIL", str(exc))
        except CheckSkipped as exc:
            verdicts[check.name] = Verdict(check.name, "SKIP", str(exc))
    return list(verdicts.values())


def smoke_test(env: dict[str, str], pool: str) -> list[Verdict]:
    """Run every check against the environment described by ``env`` (keys ``ENV_KEYS``)."""
    prefect_base = env["PREFECT_API_URL"].rstrip("/") + "/"
    with (
        httpx.Client(base_url=env["MLFLOW_TRACKING_URI"], timeout=_TIMEOUT) as mlflow_client,
        httpx.Client(base_url=prefect_base, timeout=_TIMEOUT) as prefect_client,
    ):
        mlflow = Service(
            "MLflow",
            mlflow_client,
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD",
            _basic(f"{env['MLFLOW_TRACKING_USERNAME']}:{env['MLFLOW_TRACKING_PASSWORD']}"),
        )
        prefect = Service(
            "Prefect",
            prefect_client,
            "PREFECT_API_AUTH_STRING",
            _basic(env["PREFECT_API_AUTH_STRING"]),
        )
        return run_checks(
            [
                Check("mlflow-health", (), lambda: health(mlflow, "/health")),
                Check("mlflow-auth", ("mlflow-health",), lambda: mlflow_auth(mlflow)),
                Check("mlflow-artifacts", ("mlflow-auth",), lambda: mlflow_artifacts(mlflow)),
                Check("prefect-health", (), lambda: health(prefect, "health")),
                Check("prefect-auth", ("prefect-health",), lambda: prefect_auth(prefect)),
                Check("work-pool", ("prefect-auth",), lambda: work_pool(prefect, pool)),
                Check("worker", ("work-pool",), lambda: live_worker(prefect, pool)),
                *dask_checks(env),
            ]
        )


def failures(verdicts: list[Verdict]) -> list[str]:
    """The names of the failed checks."""
    return [verdict.check for verdict in verdicts if verdict.outcome == "FAIL"]


def smoke_until(
    env: dict[str, str], pool: str, wait_seconds: float, on_retry: Callable[[str], None]
) -> list[Verdict]:
    """Run the checks until all pass or ``wait_seconds`` have passed (hosts still booting)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        verdicts = smoke_test(env, pool)
        remaining = deadline - time.monotonic()
        if not failures(verdicts) or remaining <= 0:
            return verdicts
        on_retry(f"not passing yet: {', '.join(failures(verdicts))} ({remaining:.0f} s left)")
        time.sleep(min(_RETRY_SECONDS, remaining))
