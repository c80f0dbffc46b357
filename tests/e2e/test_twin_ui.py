"""The web UIs a person opens after a training run, in a real browser (Debian's chromium driven by
Playwright): the Prefect UI behind its auth string showing the completed flow run, its task runs
and the ``training-metrics`` artifact; the MLflow UI behind basic auth showing the run's
metrics, its plots (artifacts read back through the server from the bucket) and the registered
model with its aliases.

Screenshots of each page are kept in the test's ``tmp_path`` (under pytest's ``--basetemp``).
Every wait is on a condition with a deadline; an API call the server refuses (401/403) fails the
test naming the call, e.g. MLflow's 403 to the UI's POST searches from a non-localhost origin.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.e2e.twin_api import MODEL_NAME, metrics
from tests.e2e.twin_ui import CHROMIUM, UI_TIMEOUT_MS, TwinUrls, refusals_named, screenshot

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium for the module's tests."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


def new_page(context: BrowserContext) -> Page:
    """A page of ``context`` whose waits and assertions give up after ``UI_TIMEOUT_MS``."""
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context.new_page()


@pytest.fixture
def prefect_page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context: no saved login."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        yield new_page(context)
    finally:
        context.close()


@pytest.fixture
def mlflow_page(browser: Browser, twin_urls: TwinUrls) -> Iterator[Page]:
    """A page whose context answers MLflow's basic-auth challenge with the admin credentials."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 900},
        http_credentials={
            "username": twin_urls.mlflow_username,
            "password": twin_urls.mlflow_password,
        },
    )
    try:
        yield new_page(context)
    finally:
        context.close()


def open_prefect_login(page: Page, urls: TwinUrls) -> None:
    """Open the Prefect UI's root as a person would; it must answer with its login form."""
    landing = page.goto(f"{urls.prefect_url}/")
    assert landing is not None
    assert landing.ok, (
        f"GET {urls.prefect_url}/ answered {landing.status}: the Prefect server serves no UI "
        f"(it logs 'That UI will not be available' when it cannot copy its UI build)"
    )
    expect(page.get_by_placeholder("admin:pass")).to_be_visible()


def log_in(page: Page, auth_string: str) -> None:
    """Submit ``auth_string`` in the Prefect UI's login form."""
    page.get_by_placeholder("admin:pass").fill(auth_string)
    page.get_by_role("button", name="Login").click()


def as_javascript_prints(value: float) -> str:
    """``value`` as the UI shows it: JavaScript prints whole numbers without a fraction."""
    return str(int(value)) if value.is_integer() else repr(value)


def test_prefect_ui_refuses_a_wrong_auth_string(
    twin_urls: TwinUrls, prefect_page: Page, tmp_path: Path
) -> None:
    page = prefect_page
    open_prefect_login(page, twin_urls)
    log_in(page, "admin:not-the-auth-string")
    expect(page.get_by_text("Invalid credentials")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login"))
    screenshot(page, tmp_path, "prefect-login-refused")


def test_prefect_ui_logs_in_and_shows_the_training_run_its_tasks_and_metrics(
    twin_urls: TwinUrls, prefect_page: Page, tmp_path: Path
) -> None:
    page, training = prefect_page, twin_urls.training
    open_prefect_login(page, twin_urls)
    screenshot(page, tmp_path, "prefect-login")
    log_in(page, twin_urls.prefect_auth_string)
    expect(page).to_have_url(re.compile(r"/dashboard"))
    expect(page.get_by_role("link", name="Runs")).to_be_visible()
    # The dashboard's address is under the UI version the server serves by default.
    ui_base = page.url.split("/dashboard", 1)[0]

    with refusals_named(page, twin_urls.prefect_url):  # from here on, logged in
        page.goto(f"{ui_base}/runs/flow-run/{training.flow_run_id}")
        expect(page.get_by_role("navigation", name="breadcrumb")).to_contain_text(
            training.flow_run_name
        )
        expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
        screenshot(page, tmp_path, "prefect-flow-run")

        page.get_by_role("tab", name="Task Runs").click()
        # The UI may show the count twice (a summary and the panel): one visible is enough.
        expect(page.get_by_text(f"{len(training.task_run_names)} Task runs").first).to_be_visible()
        for name in training.task_run_names:
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        screenshot(page, tmp_path, "prefect-task-runs")

        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("training-metrics", exact=True).click()
        rendered = page.get_by_test_id("markdown-display")
        heading = f"{MODEL_NAME} version {training.version['version']}"
        expect(rendered.get_by_role("heading", name=heading)).to_be_visible()
        rmse = metrics(training.mlflow_run)["rmse"]
        expect(rendered.get_by_role("row", name="RMSE (minutes)")).to_contain_text(f"{rmse:.4f}")
        screenshot(page, tmp_path, "prefect-training-metrics")


def test_mlflow_ui_shows_the_runs_metrics_and_plots(
    twin_urls: TwinUrls, mlflow_page: Page, tmp_path: Path
) -> None:
    page, run = mlflow_page, twin_urls.training.mlflow_run
    experiment_id, run_id = run["info"]["experiment_id"], twin_urls.training.run_id
    run_url = f"{twin_urls.mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}"

    with refusals_named(page, twin_urls.mlflow_url) as answers:
        page.goto(run_url)
        expect(page.get_by_role("heading", name=run["info"]["run_name"])).to_be_visible()
        for key, value in metrics(run).items():
            row = page.get_by_role("row").filter(has=page.get_by_role("link", name=key, exact=True))
            expect(row).to_contain_text(as_javascript_prints(value))
        screenshot(page, tmp_path, "mlflow-run")
        # The UI fills the run page through POST searches, which MLflow refuses (403) from an
        # origin that is neither localhost nor in --cors-allowed-origins.
        answers.assert_answered("POST", "/ajax-api/2.0/mlflow/runs/search")

        page.goto(f"{run_url}/artifacts")
        page.get_by_text("plots", exact=True).click()
        for plot in ("feature_importance.png", "predicted_vs_actual.png"):
            page.get_by_text(plot, exact=True).click()
            image = page.get_by_role("img", name=f"plots/{plot}")
            expect(image).to_be_visible()
            # Decoded: the server fetched the PNG from the bucket and the browser drew it.
            page.wait_for_function(
                "image => image.complete && image.naturalWidth > 0", arg=image.element_handle()
            )
            screenshot(page, tmp_path, f"mlflow-plot-{plot.removesuffix('.png')}")
        answers.assert_answered("GET", "/get-artifact?path=plots%2F")


def test_mlflow_ui_shows_the_registered_model_with_its_aliases(
    twin_urls: TwinUrls, mlflow_page: Page, tmp_path: Path
) -> None:
    page = mlflow_page
    # The aliases as they are now (a later run may have moved the challenger).
    model = page.request.get(
        f"{twin_urls.mlflow_url}/api/2.0/mlflow/registered-models/get", params={"name": MODEL_NAME}
    )
    assert model.ok, f"registered-models/get answered {model.status}: {model.text()}"
    registered = model.json()["registered_model"]
    aliases = {item["alias"]: item["version"] for item in registered["aliases"]}
    assert {"champion", "challenger"} <= set(aliases), aliases

    with refusals_named(page, twin_urls.mlflow_url) as answers:
        page.goto(f"{twin_urls.mlflow_url}/#/models/{MODEL_NAME}")
        for alias, version in aliases.items():
            row = page.get_by_role("row").filter(
                has=page.get_by_role("link", name=f"Version {version}", exact=True)
            )
            expect(row.get_by_role("status", name=alias, exact=True)).to_be_visible()
        screenshot(page, tmp_path, "mlflow-registered-model")

        version = twin_urls.training.version["version"]
        page.goto(f"{twin_urls.mlflow_url}/#/models/{MODEL_NAME}/versions/{version}")
        expect(page.get_by_role("heading", name=f"Version {version}")).to_be_visible()
        for alias in (alias for alias, held_by in aliases.items() if held_by == version):
            expect(page.get_by_role("status", name=alias, exact=True)).to_be_visible()
        screenshot(page, tmp_path, "mlflow-model-version")
        answers.assert_answered("GET", "/ajax-api/2.0/mlflow/model-versions/get")
