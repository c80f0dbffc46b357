"""What a person opening the twin's web UIs gets: the addresses and credentials they use, and a
real browser (Debian's ``chromium`` driven by Playwright; no browser is ever downloaded).

``TwinUrls`` is all the UI tests know of a twin, so the same tests run against the process
twin on loopback and against the hosts twin at the stack addresses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page, Request, Response

from tests.e2e.twin_api import TrainingRun

# Debian's package, installed by .ci/run; Playwright drives it over CDP.
CHROMIUM = Path("/usr/bin/chromium")
# How long a page may take to show something: the servers render on 2 shared cores.
UI_TIMEOUT_MS = 60_000


@dataclass(frozen=True, kw_only=True)
class TwinUrls:
    """The twin's UIs as its operator opens them, and the completed training run to find there."""

    prefect_url: str  # the Prefect server's root, e.g. http://10.42.0.10:4200
    mlflow_url: str  # the MLflow server's root, e.g. http://10.42.0.10:5000
    prefect_auth_string: str
    mlflow_username: str
    mlflow_password: str
    training: TrainingRun

    @classmethod
    def of(cls, env: Mapping[str, str], training: TrainingRun) -> TwinUrls:
        """The UIs of the twin whose env file holds ``env`` (the operator's variables)."""
        return cls(
            prefect_url=env["PREFECT_API_URL"].removesuffix("/").removesuffix("/api"),
            mlflow_url=env["MLFLOW_TRACKING_URI"].removesuffix("/"),
            prefect_auth_string=env["PREFECT_API_AUTH_STRING"],
            mlflow_username=env["MLFLOW_TRACKING_USERNAME"],
            mlflow_password=env["MLFLOW_TRACKING_PASSWORD"],
            training=training,
        )


@dataclass
class ServerResponses:
    """What a server answered a page, so a refused call fails the test by name.

    The UIs turn a refused call into an empty table or an endless spinner: a test waiting for
    rows would only time out. These say which call was refused and what the server answered
    (e.g. MLflow's 403 "Cross-origin request blocked" to a POST from a non-localhost origin).
    """

    server: str  # the server's root URL; calls elsewhere are not kept
    responses: list[Response] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # calls that got no response

    def listen(self, page: Page) -> None:
        """Record the page's calls to the server from now on."""
        page.on("response", self._record)
        page.on("requestfailed", self._record_failure)

    def _record(self, response: Response) -> None:
        """Keep the server's responses (bodies are read only on failure)."""
        if response.url.startswith(f"{self.server}/"):
            self.responses.append(response)

    def _record_failure(self, request: Request) -> None:
        """Keep the calls the browser gave up on, except those the page cancelled itself."""
        # net::ERR_ABORTED: the page navigated away before the answer came (polling UIs).
        if request.url.startswith(f"{self.server}/") and request.failure != "net::ERR_ABORTED":
            self.unanswered.append(f"{request.method} {request.url}: {request.failure}")

    def assert_none_refused(self) -> None:
        """No call of the page was answered 401 or 403, or failed without an answer."""
        refused = [response for response in self.responses if response.status in (401, 403)]
        assert not refused, "the server refused the UI's calls:\n" + described(refused)
        assert not self.unanswered, "the UI's calls failed:\n" + "\n".join(self.unanswered)

    def assert_answered(self, method: str, path: str) -> None:
        """The UI called ``method`` on ``path`` and every such call got a 200."""
        calls = [
            response
            for response in self.responses
            if response.request.method == method and path in response.url
        ]
        assert calls, f"the UI never called {method} {path}; its calls:\n" + described(
            self.responses
        )
        failed = [response for response in calls if response.status != 200]
        assert not failed, f"the UI's {method} {path} failed:\n" + described(failed)


@contextmanager
def refusals_named(page: Page, server: str) -> Iterator[ServerResponses]:
    """Record what ``server`` answers ``page`` in the block; a 401/403 fails the block by name.

    Also when a wait in the block timed out first: the refusal is then the likely cause, and
    the failure names it above the timeout.
    """
    answers = ServerResponses(server=server)
    answers.listen(page)
    try:
        yield answers
    except AssertionError:
        answers.assert_none_refused()
        raise
    answers.assert_none_refused()


def described(responses: list[Response]) -> str:
    """One line per response: the call, the status and, for an error, what the server said."""
    return "\n".join(
        f"{response.request.method} {response.url} -> {response.status}"
        + ("" if response.ok else f": {response.text()[:300]}")
        for response in responses
    )


def screenshot(page: Page, directory: Path, name: str) -> None:
    """Keep what the page shows now as ``<directory>/<name>.png`` for a person to look at."""
    page.screenshot(path=directory / f"{name}.png", full_page=True)
