"""The e2e browser tests (tests/e2e/test_twin_ui.py) against the hosts twin: Debian's chromium
runs in the operator's namespace and opens the control host's UIs at its private address
(http://10.42.0.10:4200 and :5000), as a person on the VPN would. A page served only to
localhost, or a call refused to another origin, fails here as it would on the stack.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from scripts.twin import hostnet
from tests.e2e.test_twin_ui import (  # the same tests, with this directory's twin_urls
    mlflow_page,
    prefect_page,
    test_mlflow_ui_shows_the_registered_model_with_its_aliases,
    test_mlflow_ui_shows_the_runs_metrics_and_plots,
    test_prefect_ui_logs_in_and_shows_the_training_run_its_tasks_and_metrics,
    test_prefect_ui_refuses_a_wrong_auth_string,
)
from tests.e2e.twin_ui import CHROMIUM, UI_TIMEOUT_MS
from tests.hoststwin.hoststwin_api import OPERATOR_NAMESPACE

pytestmark = pytest.mark.hosts
__all__ = [
    "mlflow_page",
    "prefect_page",
    "test_mlflow_ui_shows_the_registered_model_with_its_aliases",
    "test_mlflow_ui_shows_the_runs_metrics_and_plots",
    "test_prefect_ui_logs_in_and_shows_the_training_run_its_tasks_and_metrics",
    "test_prefect_ui_refuses_a_wrong_auth_string",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium for the module's tests, in the operator's namespace: Playwright's
    driver starts there, so the browser it launches and the requests it makes itself
    (``page.request``) go out from the operator's address."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with hostnet.entered(OPERATOR_NAMESPACE):
        playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()
