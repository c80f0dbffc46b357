"""``mlops deploy`` and ``mlops run``: the training flow on whatever environment the env file names.

Both talk to the Prefect server given by ``PREFECT_API_URL`` with ``PREFECT_API_AUTH_STRING``
(an AWS stack through ``mlops tunnel``, or the local twin); a rejected credential or an
unreachable server is one clear error naming the variable, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import httpx

from scripts.common import OpsError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


class PrefectApiError(OpsError):
    """The Prefect server refused the credential or could not be reached."""


@contextmanager
def prefect_client(env: Mapping[str, str], *, retries: int = 3) -> Iterator[SyncPrefectClient]:
    """A Prefect API client on ``env``'s server and auth string; errors name the variable."""
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    url = env["PREFECT_API_URL"]
    updates = {
        PREFECT_API_URL: url,
        PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"],
        PREFECT_CLIENT_MAX_RETRIES: retries,
    }
    try:
        with temporary_settings(updates=updates), get_client(sync_client=True) as client:
            yield client
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 401:
            raise PrefectApiError(
                f"the Prefect server at {url} rejected PREFECT_API_AUTH_STRING (HTTP 401)"
            ) from None
        raise
    except httpx.TransportError as exc:
        raise PrefectApiError(
            f"cannot reach the Prefect server at PREFECT_API_URL={url}: {exc}"
        ) from None
