"""Fixtures for the pipeline tests: the real months, a trained model, local servers, stores.

The real trip records are read from ``$PIPELINE_DATA_DIR`` (green 2023-01 and 2023-02); the
``small_*`` and ``synthetic_*`` fixtures are synthetic months (:mod:`tests.pipeline.synthetic`)
for the tests that need some trips or a model, not the real ones.
Prefect runs against one session-scoped test harness; MLflow against one SQLite store per
session (each test uses its own experiment and model names). Nothing leaves loopback.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

# MLflow's SQL stores, imported with the test modules: `make mutate` forks each mutant's
# session after collection, and importing them there took each session 2 s or more.
import mlflow.store.model_registry.sqlalchemy_store
import mlflow.store.tracking.sqlalchemy_store
import pytest
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.utils import requirements_utils

from pipeline import registry, tracking
from pipeline.data import MonthData, file_name, load_month
from pipeline.features import LabeledSet, make_labeled_set
from pipeline.model import LoggedModel, log_model
from pipeline.train import TrainConfig, train_model
from tests.pipeline.registering import KEY, LOGGED_RUN
from tests.pipeline.synthetic import SMALL_CONFIG, synthetic_trips, write_months

TRAIN_MONTH, VAL_MONTH = "2023-01", "2023-02"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``make mutate``: the cheap tests first, and the tests needing Prefect's harness
    judge only the flow's mutants.

    mutmut runs each mutant in a fresh pytest session and names it in ``MUTANT_UNDER_TEST``.
    Those tests start a Prefect server and most run the training flow (a minute on a loaded
    machine), and every mutant of the load, features, train, registry and tracking stages
    reaches them: a survivor there would pay for all of them. Those stages are judged by their
    unit tests. Leaving tests out can only turn a kill into a survivor, never the reverse.
    """
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if "__mutmut_" not in mutant:
        return
    # The cheap tests first (tests/conftest.py has sorted them by duration; this sort keeps
    # that order within each cost): the durations mutmut records leave out fixtures, so a
    # mutant a unit test kills should not start Prefect's harness or load the real months first.
    items.sort(key=_session_cost)
    if mutant.startswith("pipeline.flows."):
        return
    under_prefect = [item for item in items if "prefect_api" in getattr(item, "fixturenames", ())]
    if under_prefect:
        config.hook.pytest_deselected(items=under_prefect)
        items[:] = [item for item in items if item not in under_prefect]


@pytest.hookimpl(tryfirst=True)  # before tests/conftest.py freezes the fork server's objects
def pytest_collection_finish(session: pytest.Session) -> None:
    """In mutmut's fork server (``--collect-only`` under ``MUTANT_UNDER_TEST``): MLflow's map
    of installed distributions to modules, built once for every mutant session.

    Each session that logs a model built it again (scanning site-packages: 1.3 s of a
    registry or tracking mutant's session on a loaded machine). The warm-up test empties it
    before it checks that :func:`pipeline.tracking.warm_up` fills it.
    """
    if session.config.option.collectonly and "MUTANT_UNDER_TEST" in os.environ:
        requirements_utils._init_modules_to_packages_map()


_REAL_MONTHS = frozenset({"real_data_dir", "months", "labeled", "booster", "data_dir_with"})


def _session_cost(item: pytest.Item) -> int:
    """2 for a test needing Prefect's harness, 1 for one reading the real months, else 0."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if "prefect_api" in fixtures:
        return 2
    return 1 if fixtures & _REAL_MONTHS else 0


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The directory holding the real green 2023-01 and 2023-02 files."""
    value = os.environ.get("PIPELINE_DATA_DIR")
    if not value:
        pytest.fail("set PIPELINE_DATA_DIR to the directory with the real TLC files (see README)")
    directory = Path(value)
    for month in (TRAIN_MONTH, VAL_MONTH):
        if not (directory / file_name("green", month)).is_file():
            pytest.fail(f"PIPELINE_DATA_DIR={value} lacks {file_name('green', month)}")
    return directory


@pytest.fixture(scope="session")
def months(real_data_dir: Path) -> tuple[MonthData, MonthData]:
    """The real training and validation months, loaded."""
    return (
        load_month(str(real_data_dir), "green", TRAIN_MONTH),
        load_month(str(real_data_dir), "green", VAL_MONTH),
    )


@pytest.fixture(scope="session")
def labeled(months: tuple[MonthData, MonthData]) -> tuple[LabeledSet, LabeledSet]:
    """Training and validation sets built from the real months."""
    return (
        make_labeled_set(months[0].trips, label=TRAIN_MONTH),
        make_labeled_set(months[1].trips, label=VAL_MONTH),
    )


@pytest.fixture(scope="session")
def booster(labeled: tuple[LabeledSet, LabeledSet]) -> xgb.Booster:
    """The model trained with the default configuration on the full real months."""
    return train_model(*labeled, TrainConfig())


@pytest.fixture(scope="session")
def small_labeled() -> tuple[LabeledSet, LabeledSet]:
    """Training and validation sets of two synthetic months (2023-01 and 2023-02)."""
    return (
        make_labeled_set(synthetic_trips("2023-01", seed=1), label="synthetic 2023-01"),
        make_labeled_set(synthetic_trips("2023-02", seed=2), label="synthetic 2023-02"),
    )


@pytest.fixture(scope="session")
def small_booster(small_labeled: tuple[LabeledSet, LabeledSet]) -> xgb.Booster:
    """A model trained on the synthetic months in well under a second."""
    return train_model(*small_labeled, SMALL_CONFIG)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with synthetic green files for 2022-12, 2023-01 and 2023-02."""
    return write_months(
        tmp_path_factory.mktemp("synthetic") / "data",
        {"2022-12": 0, "2023-01": 1, "2023-02": 2},
    )


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's test harness: a temporary server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def mlflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the session's MLflow SQLite store and artifacts.

    The store starts as a copy of an empty one made once per MLflow version on this machine:
    creating a store runs MLflow's schema migrations (4 s or more), and `make mutate` runs a
    session per mutant.
    """
    home = tmp_path_factory.mktemp("mlflow")
    store = home / "mlflow.db"
    shutil.copyfile(_empty_store(tmp_path_factory.getbasetemp().parent), store)
    with closing(sqlite3.connect(store)) as db, db:
        # Where a store created from `home` (mlflow_store's working directory) keeps the
        # default experiment's artifacts.
        db.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (str(home / "mlruns" / "0"),),
        )
    return home


def _empty_store(directory: Path) -> Path:
    """An empty MLflow SQLite store of the installed MLflow's schema, made in ``directory``
    unless there already."""
    template = directory / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    # Sessions running side by side (make mutate's) each build their own; the last one in wins.
    building = directory / f"{template.name}.{os.getpid()}"
    building.unlink(missing_ok=True)
    uri = f"sqlite:///{building}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()
    os.replace(building, template)
    return template


@pytest.fixture
def mlflow_store(mlflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's MLflow store as MLFLOW_TRACKING_URI (and the client's), run from its directory.

    The working directory matters: a SQLite store puts artifacts under ./mlruns.
    """
    uri = f"sqlite:///{mlflow_home / 'mlflow.db'}"
    monkeypatch.chdir(mlflow_home)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def unique_name() -> str:
    """A fresh name for an experiment or registered model."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def logged(
    unique_name: str,
    small_booster: xgb.Booster,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> tuple[LoggedModel, str]:
    """The synthetic months' booster logged as a pyfunc model in a fresh run of the
    ``unique_name`` experiment, named ``LOGGED_RUN`` (needs ``mlflow_store``): (the model, its
    run's ID)."""
    tracking.configure_tracking()
    run_id = tracking.start_run(experiment=unique_name, run_name=LOGGED_RUN, tags={})
    model = log_model(run_id, small_booster, small_labeled[1].trips)
    tracking.end_run(run_id)
    return model, run_id


@pytest.fixture
def register(
    logged: tuple[LoggedModel, str], unique_name: str
) -> Callable[..., registry.Candidate]:
    """Register the logged model as a new version of ``unique_name`` (or ``name``) with a
    recorded RMSE; each RMSE is a registration key of its own unless ``attempt`` names one."""
    model, run_id = logged

    def new_version(
        rmse: float, *, key: str = KEY, attempt: str | None = None, name: str = unique_name
    ) -> registry.Candidate:
        return registry.register(
            model,
            model_name=name,
            run_id=run_id,
            registration_key=attempt or f"flow-run-{rmse}",
            rmse_value=rmse,
            validation_key=key,
            tags={"color": "green"},
        )

    return new_version


@dataclass
class FileServer:
    """A loopback HTTP server standing in for the TLC site."""

    base_url: str
    directory: Path
    requests: list[str] = field(default_factory=list)
    # path -> HTTP status to answer instead of the file, consumed one per request
    failures: dict[str, list[int]] = field(default_factory=dict)
    # paths whose body is cut short (Content-Length promises more than is sent)
    truncated: set[str] = field(default_factory=set)
    # path -> where it moved: answered with a 302 to that path (as a CDN redirects)
    moved: dict[str, str] = field(default_factory=dict)


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 at a free port; yields ``http://127.0.0.1:<port>``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def tlc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """Serves files from a temporary directory on 127.0.0.1 at a free port."""
    directory = tmp_path_factory.mktemp("site") / "trip-data"
    directory.mkdir()
    server_state = FileServer(base_url="", directory=directory)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.requests.append(self.path)
            pending = server_state.failures.get(self.path)
            if pending:
                self.send_error(pending.pop(0))
                return
            if self.path in server_state.moved:
                self.send_response(302)
                self.send_header("Location", server_state.moved[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = directory.parent / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in server_state.truncated:
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests inspect ``requests``."""

    with serving(Handler) as url:
        server_state.base_url = f"{url}/trip-data"
        yield server_state


@dataclass
class RefusingServer:
    """A loopback HTTP server answering every request with one refusal status."""

    url: str
    status: int
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def refusing_server() -> Iterator[Callable[[int], RefusingServer]]:
    """Start servers that refuse everything: ``refusing_server(401)``, as a wrong password gets.

    The body and header are what MLflow's basic-auth app sends with a 401.
    """
    with ExitStack() as servers:

        def start(status: int) -> RefusingServer:
            state = RefusingServer(url="", status=status)

            class Handler(http.server.BaseHTTPRequestHandler):
                def _refuse(self) -> None:
                    state.requests.append(f"{self.command} {self.path}")
                    body = b"You are not authenticated. Please see the MLflow docs."
                    self.send_response(status)
                    self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                do_GET = do_POST = do_PATCH = do_DELETE = _refuse

                def log_message(self, format: str, *args: object) -> None:
                    """Quiet: the tests inspect ``requests``."""

            state.url = servers.enter_context(serving(Handler))
            return state

        yield start


@pytest.fixture
def closed_port_url() -> str:
    """A base URL on loopback where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/trip-data"


@pytest.fixture
def prefect_home_naming(tmp_path: Path) -> Callable[[str], Path]:
    """A Prefect home whose active profile, not the environment, sets PREFECT_API_URL (as
    ``prefect cloud login`` leaves it): ``prefect_home_naming(api_url)``."""

    def build(api_url: str) -> Path:
        home = tmp_path / "prefect-home"
        home.mkdir()
        (home / "profiles.toml").write_text(
            f'active = "remote"\n[profiles.remote]\nPREFECT_API_URL = "{api_url}"\n'
        )
        return home

    return build


@pytest.fixture
def data_dir_with(tmp_path: Path, real_data_dir: Path) -> Callable[..., Path]:
    """Build a data directory from real months and/or given files: ``data_dir_with(...)``."""

    def build(*, real: tuple[str, ...] = (), files: dict[str, bytes] | None = None) -> Path:
        directory = tmp_path / "data"
        directory.mkdir(exist_ok=True)
        for month in real:
            shutil.copy(real_data_dir / file_name("green", month), directory)
        for name, content in (files or {}).items():
            (directory / name).write_bytes(content)
        return directory

    return build
