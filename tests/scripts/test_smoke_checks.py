"""``mlops smoke`` against stand-ins of the MLflow and Prefect servers that do (or fail) their job.

The stand-ins answer the REST calls the smoke test makes as the real servers do (paths,
status codes, bodies, basic auth, Prefect's CSRF token) and remember what they were sent, so
a test can say both what each verdict is and what the check did to the servers. They run as
httpx mock transports for one check at a time, and on loopback HTTP servers for the whole
``smoke_test`` (which opens its own clients). The real servers: tests/e2e/test_smoke.py.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from scripts.smoke import (
    SMOKE_EXPERIMENT,
    CheckFailed,
    Service,
    Verdict,
    _basic,
    health,
    live_worker,
    mlflow_artifacts,
    mlflow_auth,
    smoke_test,
    smoke_until,
    work_pool,
)

USER, PASSWORD = "admin", "Qm7vT2xP9sLk4RzW8nYcHd3F"
AUTH_STRING = "Zr5KpWq8Ns2Lx7Vb4MtYg6Hc"
MLFLOW_CREDENTIAL = "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/"


def _json(request: httpx.Request) -> dict:
    return json.loads(request.content) if request.content else {}


@dataclass
class FakeMlflow:
    """MLflow with basic auth and the artifact proxy (``--artifacts-destination``)."""

    experiments: dict[str, dict] = field(default_factory=dict)  # name -> experiment
    proxied: bool = True
    upload_status: int = 200
    download_status: int = 200
    read_back: bytes | None = None  # what a download answers instead of what was written
    health_failures: int = 0  # /health answers 503 this many times first
    update_status: int = 200  # runs/update's answer
    artifacts: dict[str, bytes] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)  # run_id -> create and update bodies
    calls: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        if f"{request.method} {path}" == "GET /health":
            if self.health_failures:
                self.health_failures -= 1
                return httpx.Response(503, text="starting")
            return httpx.Response(200, text="OK")
        if request.headers.get("Authorization") != _basic(f"{USER}:{PASSWORD}")["Authorization"]:
            return httpx.Response(401, text="You are not authenticated. Please see ...")
        if path.startswith(ARTIFACTS):
            return self._artifact(request, path.removeprefix(ARTIFACTS))
        route = f"{request.method} {path.removeprefix('/api/2.0/mlflow/')}"
        if route == "GET experiments/search":
            return httpx.Response(200, json={"experiments": list(self.experiments.values())})
        if route == "GET experiments/get-by-name":
            found = self.experiments.get(request.url.params["experiment_name"])
            if found is None:
                return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST"})
            return httpx.Response(200, json={"experiment": found})
        if route == "POST experiments/create":
            name = _json(request)["name"]
            experiment_id = str(len(self.experiments) + 1)
            self.experiments[name] = {
                "experiment_id": experiment_id,
                "name": name,
                "lifecycle_stage": "active",
            }
            return httpx.Response(200, json={"experiment_id": experiment_id})
        if route == "POST experiments/restore":
            restored = _json(request)["experiment_id"]
            for experiment in self.experiments.values():
                if experiment["experiment_id"] == restored:
                    experiment["lifecycle_stage"] = "active"
            return httpx.Response(200, json={})
        if route == "POST runs/create":
            body = _json(request)
            run_id = f"run{len(self.runs) + 1}"
            self.runs[run_id] = {"create": body}
            root = "mlflow-artifacts:" if self.proxied else "s3://bucket/mlflow"
            uri = f"{root}/{body['experiment_id']}/{run_id}/artifacts"
            return httpx.Response(
                200, json={"run": {"info": {"run_id": run_id, "artifact_uri": uri}}}
            )
        if route == "POST runs/update":
            if self.update_status != 200:
                return httpx.Response(self.update_status, text="database is locked")
            body = _json(request)
            self.runs[body["run_id"]]["update"] = body
            return httpx.Response(200, json={"run_info": {}})
        return httpx.Response(404, json={"error_code": "ENDPOINT_NOT_FOUND"})

    def _artifact(self, request: httpx.Request, key: str) -> httpx.Response:
        if request.method == "PUT":
            if self.upload_status != 200:
                return httpx.Response(self.upload_status, text="upload   refused\n by the store")
            self.artifacts[key] = request.content
            return httpx.Response(200, json={})
        if request.method != "GET":
            return httpx.Response(405, text="Method Not Allowed")
        if self.download_status != 200:
            return httpx.Response(self.download_status, text="no such artifact")
        if key not in self.artifacts:
            return httpx.Response(404, text="no such artifact")
        return httpx.Response(200, content=self.read_back or self.artifacts[key])


@dataclass
class FakePrefect:
    """A Prefect server with ``--auth-string`` (basic auth), under ``/api/``."""

    pools: dict[str, dict] = field(default_factory=lambda: {"training": {"type": "process"}})
    workers: list[dict] = field(default_factory=lambda: [{"name": "worker-1", "status": "ONLINE"}])
    csrf: bool = False  # PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED
    csrf_status: int = 200  # the csrf-token endpoint's answer when protection is on
    tokens: dict[str, str] = field(default_factory=dict)  # client -> token issued
    calls: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().split("?")[0].removeprefix("/api/")
        self.calls.append(f"{request.method} {path}")
        if f"{request.method} {path}" == "GET health":
            return httpx.Response(200, json=True)
        if request.headers.get("Authorization") != _basic(AUTH_STRING)["Authorization"]:
            return httpx.Response(401, json={"exception_message": "Unauthorized"})
        if f"{request.method} {path}" == "GET admin/version":
            return httpx.Response(200, json="3.9.0")
        if f"{request.method} {path}" == "GET csrf-token":
            if not self.csrf:
                return httpx.Response(422, json={"detail": "CSRF protection is disabled."})
            if self.csrf_status != 200:
                return httpx.Response(self.csrf_status, text="token store down")
            client = request.url.params["client"]
            self.tokens[client] = f"token-for-{client}"
            return httpx.Response(200, json={"token": self.tokens[client], "client": client})
        match = re.fullmatch(r"work_pools/([^/]+)(/workers/filter)?", path)
        if match is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        pool = unquote(match[1])
        if pool not in self.pools:
            return httpx.Response(404, json={"detail": "Work pool not found."})
        if (request.method, match[2]) == ("GET", None):
            return httpx.Response(200, json={"name": pool, "status": "READY", **self.pools[pool]})
        if (request.method, match[2]) != ("POST", "/workers/filter"):
            return httpx.Response(405, json={"detail": "Method Not Allowed"})
        if self.csrf and not self._csrf_ok(request):
            return httpx.Response(403, json={"detail": "Invalid CSRF token or client identifier."})
        return httpx.Response(200, json=self.workers)

    def _csrf_ok(self, request: httpx.Request) -> bool:
        client = request.headers.get("Prefect-Csrf-Client")
        return client is not None and self.tokens.get(client) == request.headers.get(
            "Prefect-Csrf-Token"
        )


def _mlflow(fake: FakeMlflow) -> Service:
    client = httpx.Client(base_url="http://127.0.0.1:5000", transport=httpx.MockTransport(fake))
    return Service("MLflow", client, MLFLOW_CREDENTIAL, _basic(f"{USER}:{PASSWORD}"))


def _prefect(fake: FakePrefect) -> Service:
    client = httpx.Client(
        base_url="http://127.0.0.1:4200/api/", transport=httpx.MockTransport(fake)
    )
    return Service("Prefect", client, "PREFECT_API_AUTH_STRING", _basic(AUTH_STRING))


@contextmanager
def _served(fake: FakeMlflow | FakePrefect) -> Iterator[str]:
    """``fake`` on a loopback HTTP server; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = httpx.Request(
                self.command,
                f"http://{self.headers['Host']}{self.path}",
                headers=dict(self.headers),
                content=self.rfile.read(length),
            )
            response = fake(request)
            response.read()
            self.send_response(response.status_code)
            for name in ("Content-Type",):
                if name in response.headers:
                    self.send_header(name, response.headers[name])
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _env(mlflow_url: str, prefect_url: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": mlflow_url,
        "MLFLOW_TRACKING_USERNAME": USER,
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "PREFECT_API_URL": f"{prefect_url}/api",
        "PREFECT_API_AUTH_STRING": AUTH_STRING,
    }


@pytest.mark.parametrize("csrf", [False, True], ids=["csrf-off", "csrf-on"])
def test_every_check_passes_against_servers_doing_their_job(csrf: bool) -> None:
    mlflow, prefect = FakeMlflow(), FakePrefect(csrf=csrf)
    started_ms = time.time() * 1000
    with _served(mlflow) as mlflow_url, _served(prefect) as prefect_url:
        verdicts = smoke_test(_env(mlflow_url, prefect_url), "training")
    ended_ms = time.time() * 1000

    assert verdicts == [
        Verdict("mlflow-health", "PASS", f"{mlflow_url}/ is up"),
        Verdict(
            "mlflow-auth",
            "PASS",
            "anonymous request refused (401); MLFLOW_TRACKING_USERNAME/PASSWORD accepted",
        ),
        Verdict(
            "mlflow-artifacts",
            "PASS",
            f"wrote and read back smoke.txt of run run1 (experiment {SMOKE_EXPERIMENT})",
        ),
        Verdict("prefect-health", "PASS", f"{prefect_url}/api/ is up"),
        Verdict(
            "prefect-auth",
            "PASS",
            "anonymous request refused (401); PREFECT_API_AUTH_STRING accepted (server 3.9.0)",
        ),
        Verdict("work-pool", "PASS", "work pool 'training' exists (type process, status READY)"),
        Verdict("worker", "PASS", "ONLINE: worker-1"),
    ]
    # What the checks did: the smoke experiment made, one run finished, its artifact written.
    assert mlflow.experiments[SMOKE_EXPERIMENT]["experiment_id"] == "1"
    created, updated = mlflow.runs["run1"]["create"], mlflow.runs["run1"]["update"]
    assert (created["experiment_id"], created["run_name"]) == ("1", "smoke")
    assert updated["status"] == "FINISHED"
    # The run's times are the wall clock's, in milliseconds (as MLflow shows them).
    assert started_ms - 1000 <= created["start_time"] <= updated["end_time"] <= ended_ms + 1000
    [(key, content)] = mlflow.artifacts.items()
    assert key == "1/run1/artifacts/smoke.txt"
    assert re.fullmatch(rb"mlops smoke [0-9a-f-]{36}", content)
    assert len(prefect.tokens) == (1 if csrf else 0)


def test_the_smoke_experiment_is_reused_and_restored_when_deleted() -> None:
    fake = FakeMlflow(
        experiments={
            SMOKE_EXPERIMENT: {"experiment_id": "9", "lifecycle_stage": "deleted"},
            "other": {"experiment_id": "2", "lifecycle_stage": "active"},
        }
    )

    mlflow_artifacts(_mlflow(fake))

    assert fake.experiments[SMOKE_EXPERIMENT]["lifecycle_stage"] == "active"
    assert fake.experiments["other"]["lifecycle_stage"] == "active"
    assert fake.runs["run1"]["create"]["experiment_id"] == "9"
    assert "POST /api/2.0/mlflow/experiments/create" not in fake.calls


def test_an_active_smoke_experiment_is_used_as_it_is() -> None:
    fake = FakeMlflow(experiments={SMOKE_EXPERIMENT: {"experiment_id": "4"}})

    mlflow_artifacts(_mlflow(fake))

    assert fake.runs["run1"]["create"]["experiment_id"] == "4"
    assert not [call for call in fake.calls if "/experiments/" in call and "POST" in call]


@pytest.mark.parametrize(
    ("failure", "verdict"),
    [
        (
            {"upload_status": 500},
            "artifact upload failed: PUT /api/2.0/mlflow-artifacts/artifacts/1/run1/artifacts/"
            "smoke.txt answered HTTP 500: upload refused by the store",
        ),
        (
            {"download_status": 403},
            "artifact download failed: GET /api/2.0/mlflow-artifacts/artifacts/1/run1/artifacts/"
            "smoke.txt answered HTTP 403: no such artifact",
        ),
        (
            {"read_back": b"something else"},
            "artifact read back from /api/2.0/mlflow-artifacts/artifacts/1/run1/artifacts/"
            "smoke.txt differs from what was written",
        ),
    ],
    ids=["upload", "download", "read-back"],
)
def test_a_failed_artifact_round_trip_is_named_and_the_run_marked_failed(
    failure: dict[str, Any], verdict: str
) -> None:
    fake = FakeMlflow(**failure)
    with pytest.raises(CheckFailed) as failed:
        mlflow_artifacts(_mlflow(fake))

    assert str(failed.value) == verdict
    assert fake.runs["run1"]["update"]["status"] == "FAILED"
    assert fake.runs["run1"]["update"]["run_id"] == "run1"


def test_a_server_error_looking_up_the_smoke_experiment_is_a_verdict() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="database is locked")

    client = httpx.Client(base_url="http://127.0.0.1:5000", transport=httpx.MockTransport(server))
    with pytest.raises(CheckFailed) as failed:
        mlflow_artifacts(Service("MLflow", client, MLFLOW_CREDENTIAL, {}))

    assert str(failed.value) == (
        "GET /api/2.0/mlflow/experiments/get-by-name answered HTTP 500: database is locked"
    )


def test_a_missing_work_pool_is_a_verdict_saying_who_creates_it() -> None:
    with pytest.raises(CheckFailed) as failed:
        work_pool(_prefect(FakePrefect(pools={})), "training")

    assert str(failed.value) == (
        "work pool 'training' does not exist (its workers create it when they start)"
    )


def test_a_work_pool_name_is_sent_as_one_path_segment() -> None:
    fake = FakePrefect(pools={"gpu pool/a": {"type": "process"}})

    detail = work_pool(_prefect(fake), "gpu pool/a")

    assert detail == "work pool 'gpu pool/a' exists (type process, status READY)"
    assert fake.calls == ["GET work_pools/gpu%20pool%2Fa"]


def test_a_server_error_reading_the_work_pool_is_a_verdict() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="Internal Server Error")

    client = httpx.Client(
        base_url="http://127.0.0.1:4200/api/", transport=httpx.MockTransport(server)
    )
    with pytest.raises(CheckFailed) as failed:
        work_pool(Service("Prefect", client, "PREFECT_API_AUTH_STRING", {}), "training")

    assert str(failed.value) == "GET work_pools/training answered HTTP 500: Internal Server Error"


@pytest.mark.parametrize(
    ("workers", "known"),
    [
        ([], "none"),
        (
            [{"name": "worker-1", "status": "OFFLINE"}, {"name": "worker-2"}],
            "worker-1 OFFLINE, worker-2 None",
        ),
    ],
    ids=["none", "offline"],
)
def test_no_online_worker_is_a_verdict_listing_the_workers_known(
    workers: list[dict], known: str
) -> None:
    with pytest.raises(CheckFailed) as failed:
        live_worker(_prefect(FakePrefect(workers=workers)), "training")

    assert str(failed.value) == (
        f"no ONLINE worker in work pool 'training' (workers known: {known})"
    )


def test_every_online_worker_is_named() -> None:
    workers = [
        {"name": "worker-1", "status": "ONLINE"},
        {"name": "worker-2", "status": "OFFLINE"},
        {"name": "worker-3", "status": "ONLINE"},
    ]
    fake = FakePrefect(workers=workers, csrf=True)

    assert live_worker(_prefect(fake), "training") == "ONLINE: worker-1, worker-3"
    [(client, _)] = fake.tokens.items()
    assert re.fullmatch(r"[0-9a-f-]{36}", client)  # a fresh client id per check


def test_a_csrf_token_endpoint_failing_is_a_verdict() -> None:
    with pytest.raises(CheckFailed) as failed:
        live_worker(_prefect(FakePrefect(csrf=True, csrf_status=503)), "training")

    assert str(failed.value) == "GET csrf-token answered HTTP 503: token store down"


def test_smoke_until_retries_a_failing_check_and_returns_once_all_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("scripts.smoke._RETRY_SECONDS", 0.1)  # not 10 s between the rounds
    mlflow, prefect = FakeMlflow(health_failures=1), FakePrefect()
    retries: list[str] = []

    def retry(message: str) -> None:
        retries.append(message)
        # Fails here, not after the 60 s: a check that never passes would retry until then.
        assert len(retries) == 1, f"retried again: {retries}"

    with _served(mlflow) as mlflow_url, _served(prefect) as prefect_url:
        verdicts = smoke_until(_env(mlflow_url, prefect_url), "training", 60.0, retry)

    assert [verdict.outcome for verdict in verdicts] == ["PASS"] * 7
    assert len(retries) == 1
    assert re.fullmatch(r"not passing yet: mlflow-health \((59|60) s left\)", retries[0])


def test_smoke_until_does_not_retry_what_passes() -> None:
    def retry(message: str) -> None:
        # Fails at the first retry, not after the 60 s of retrying.
        raise AssertionError(f"retried what passes: {message}")

    with _served(FakeMlflow()) as mlflow_url, _served(FakePrefect()) as prefect_url:
        verdicts = smoke_until(_env(mlflow_url, prefect_url), "training", 60.0, retry)

    assert [verdict.outcome for verdict in verdicts] == ["PASS"] * 7


def test_a_failing_check_skips_only_the_checks_built_on_it() -> None:
    mlflow, prefect = FakeMlflow(proxied=False), FakePrefect(pools={})
    with _served(mlflow) as mlflow_url, _served(prefect) as prefect_url:
        verdicts = smoke_test(_env(mlflow_url, prefect_url), "training")

    assert [(v.check, v.outcome) for v in verdicts] == [
        ("mlflow-health", "PASS"),
        ("mlflow-auth", "PASS"),
        ("mlflow-artifacts", "FAIL"),
        ("prefect-health", "PASS"),
        ("prefect-auth", "PASS"),
        ("work-pool", "FAIL"),
        ("worker", "SKIP"),
    ]
    assert verdicts[-1].detail == "needs work-pool"


@dataclass
class SlowMlflow(FakeMlflow):
    """MLflow answering each request a second late."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        time.sleep(1.0)  # the server's latency under test, not a wait for anything
        return super().__call__(request)


@dataclass
class SlowPrefect(FakePrefect):
    """Prefect answering each request a second late."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        time.sleep(1.0)
        return super().__call__(request)


def test_a_server_slower_than_the_timeout_fails_its_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scripts.smoke._TIMEOUT", httpx.Timeout(0.2))  # 15 s in production
    with _served(SlowMlflow()) as mlflow_url, _served(SlowPrefect()) as prefect_url:
        verdicts = smoke_test(_env(mlflow_url, prefect_url), "training")

    failed = {v.check: v.detail for v in verdicts if v.outcome == "FAIL"}
    assert failed == {
        "mlflow-health": f"no answer from {mlflow_url}/ in time",
        "prefect-health": f"no answer from {prefect_url}/api/ in time",
    }


def test_a_prefect_api_url_ending_in_a_slash_is_the_same_api() -> None:
    with _served(FakeMlflow()) as mlflow_url, _served(FakePrefect()) as prefect_url:
        env = _env(mlflow_url, prefect_url) | {"PREFECT_API_URL": f"{prefect_url}/api/"}
        verdicts = smoke_test(env, "training")

    assert [(v.check, v.outcome) for v in verdicts if v.outcome != "PASS"] == []


def test_smoke_until_retries_in_its_last_second_and_stops_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]  # smoke_until's clock: sleeping moves it on

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(
        "scripts.smoke.time", SimpleNamespace(monotonic=lambda: clock[0], sleep=sleep)
    )
    monkeypatch.setattr("scripts.smoke._RETRY_SECONDS", 9.5)
    monkeypatch.setattr(
        "scripts.smoke.smoke_test", lambda env, pool: [Verdict("mlflow-health", "FAIL", "down")]
    )
    retries: list[str] = []

    def retry(message: str) -> None:
        retries.append(message)
        assert len(retries) <= 2, f"retried past the deadline: {retries}"

    verdicts = smoke_until({}, "training", 10.0, retry)

    # At 0 s, at 9.5 s (half a second left: still a retry), then at 10 s: the deadline.
    assert retries == [
        "not passing yet: mlflow-health (10 s left)",
        "not passing yet: mlflow-health (0 s left)",
    ]
    assert clock[0] == 10.0
    assert verdicts == [Verdict("mlflow-health", "FAIL", "down")]


def test_rejected_credentials_are_named_by_service_and_variable() -> None:
    env = _env("", "") | {"MLFLOW_TRACKING_PASSWORD": "wrong", "PREFECT_API_AUTH_STRING": "wrong"}
    with _served(FakeMlflow()) as mlflow_url, _served(FakePrefect()) as prefect_url:
        env |= {"MLFLOW_TRACKING_URI": mlflow_url, "PREFECT_API_URL": f"{prefect_url}/api"}
        verdicts = smoke_test(env, "training")

    failed = {v.check: v.detail for v in verdicts if v.outcome == "FAIL"}
    assert failed == {
        "mlflow-auth": f"MLflow rejected {MLFLOW_CREDENTIAL} (HTTP 401)",
        "prefect-auth": "Prefect rejected PREFECT_API_AUTH_STRING (HTTP 401)",
    }


@pytest.mark.parametrize(
    ("base_url", "hinted"),
    [
        ("http://10.0.0.10:5000", True),
        ("http://127.0.0.1:5000", False),
        ("http://54.210.1.7:5000", False),
        ("http://mlflow.internal:5000", False),
    ],
    ids=["private", "loopback", "public", "name"],
)
def test_only_an_unreachable_private_address_points_at_the_tunnel(
    base_url: str, hinted: bool
) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(base_url=base_url, transport=httpx.MockTransport(unreachable))
    with pytest.raises(CheckFailed) as failed:
        health(Service("MLflow", client, MLFLOW_CREDENTIAL, {}), "/health")

    message = str(failed.value)
    assert message.startswith(f"cannot connect to {base_url}/: connection refused")
    assert ("mlops tunnel --stack STACK" in message) is hinted
    if not hinted:
        assert message == f"cannot connect to {base_url}/: connection refused"


def test_a_transport_failure_mid_request_names_the_request() -> None:
    def cut_off(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    client = httpx.Client(base_url="http://127.0.0.1:5000", transport=httpx.MockTransport(cut_off))
    with pytest.raises(CheckFailed) as failed:
        health(Service("MLflow", client, MLFLOW_CREDENTIAL, {}), "/health")

    assert str(failed.value) == "GET http://127.0.0.1:5000//health failed: peer closed connection"


def test_a_successful_answer_that_is_not_json_is_a_verdict_with_the_body_s_start() -> None:
    page = "<html>\n  <body>" + "x" * 300 + "</body></html>"

    def proxy_page(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") is None:
            return httpx.Response(401)
        return httpx.Response(200, text=page)

    with pytest.raises(CheckFailed) as failed:
        work_pool(_prefect(proxy_page), "training")  # type: ignore[arg-type]

    body = ("<html> <body>" + "x" * 300)[:200]
    assert str(failed.value) == f"GET work_pools/training answered HTTP 200: {body} (not JSON)"


def test_a_csrf_token_answer_that_is_not_json_is_a_verdict() -> None:
    def proxy_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>login</html>")

    client = httpx.Client(
        base_url="http://127.0.0.1:4200/api/", transport=httpx.MockTransport(proxy_page)
    )
    with pytest.raises(CheckFailed) as failed:
        live_worker(Service("Prefect", client, "PREFECT_API_AUTH_STRING", {}), "training")

    assert str(failed.value) == ("GET csrf-token answered HTTP 200: <html>login</html> (not JSON)")


def test_the_workers_of_a_pool_named_with_a_slash_are_asked_of_that_pool() -> None:
    fake = FakePrefect(pools={"gpu/a": {"type": "process"}})

    assert live_worker(_prefect(fake), "gpu/a") == "ONLINE: worker-1"
    assert fake.calls == ["GET csrf-token", "POST work_pools/gpu%2Fa/workers/filter"]


def test_a_run_that_cannot_be_marked_finished_does_not_fail_a_good_round_trip() -> None:
    # Marking the smoke run is best effort: the artifact verdict is what counts.
    fake = FakeMlflow(update_status=500)

    detail = mlflow_artifacts(_mlflow(fake))

    assert detail == f"wrote and read back smoke.txt of run run1 (experiment {SMOKE_EXPERIMENT})"
    assert "update" not in fake.runs["run1"]


def test_artifacts_not_proxied_name_the_uri_the_server_gave_and_the_flag_it_needs() -> None:
    with pytest.raises(CheckFailed) as failed:
        mlflow_artifacts(_mlflow(FakeMlflow(proxied=False)))

    assert str(failed.value) == (
        "the server gave the run artifact URI 's3://bucket/mlflow/1/run1/artifacts', not "
        "mlflow-artifacts:/...: artifacts are not proxied (the server needs "
        "--artifacts-destination)"
    )


def test_an_experiment_lookup_answer_that_is_not_json_is_a_verdict() -> None:
    def proxy_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>login</html>")

    client = httpx.Client(
        base_url="http://127.0.0.1:5000", transport=httpx.MockTransport(proxy_page)
    )
    with pytest.raises(CheckFailed) as failed:
        mlflow_artifacts(Service("MLflow", client, MLFLOW_CREDENTIAL, {}))

    assert str(failed.value) == (
        "GET /api/2.0/mlflow/experiments/get-by-name answered HTTP 200: <html>login</html> "
        "(not JSON)"
    )


def test_an_authenticated_call_answering_an_error_is_a_verdict_naming_the_call() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") is None:
            return httpx.Response(401)
        return httpx.Response(503, text="Service Unavailable")

    client = httpx.Client(base_url="http://127.0.0.1:5000", transport=httpx.MockTransport(server))
    mlflow = Service("MLflow", client, MLFLOW_CREDENTIAL, _basic(f"{USER}:{PASSWORD}"))
    with pytest.raises(CheckFailed) as failed:
        mlflow_auth(mlflow)

    assert str(failed.value) == (
        "GET /api/2.0/mlflow/experiments/search answered HTTP 503: Service Unavailable"
    )


def test_an_unreachable_private_address_says_how_to_reach_it() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(
        base_url="http://10.0.0.10:5000", transport=httpx.MockTransport(unreachable)
    )
    with pytest.raises(CheckFailed) as failed:
        health(Service("MLflow", client, MLFLOW_CREDENTIAL, {}), "/health")

    assert str(failed.value) == (
        "cannot connect to http://10.0.0.10:5000/: connection refused (10.0.0.10 is a private "
        "address, reachable only inside the VPC: from a laptop run `mlops tunnel --stack STACK` "
        "and write the env file with `mlops env --stack STACK --via-tunnel`)"
    )
