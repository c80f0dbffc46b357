"""Settings for the whole suite, applied before any test module imports MLflow, Prefect, the
Pulumi program or the policy pack.

Nothing the tests run may send traffic off this machine: MLflow and Prefect (and the servers
they start) report usage data unless told not to.

The Pulumi program runs with infra/ as its working directory and the policy pack with policy/
(``main: infra/``, ``pulumi preview --policy-pack policy``): their modules import each other as
siblings (``import config``, ``from resource_types import ...``), and so do the tests, with both
folders on the path from here on, ahead of any installed copy of ``hostboot``.
"""

import gc
import json
import os
import sys
from pathlib import Path

import pytest

os.environ["DO_NOT_TRACK"] = "true"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

ROOT = Path(__file__).resolve().parent.parent
for folder in ("policy", "infra"):  # infra/ ends up first, as under `pulumi up`
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))


def pytest_collection_finish(session: pytest.Session) -> None:
    """In mutmut's fork server, put what collection built out of the garbage collector's reach.

    `make mutate`'s fork server collects the tests once (``--collect-only``, with mutmut's
    ``MUTANT_UNDER_TEST`` set) and forks a session per mutant from that process. Each session
    ends with pytest's full collection (unraisable-exception check), which walked the fork
    server's whole heap, a gigabyte of imported modules (MLflow, Prefect, XGBoost, pandas), and
    copied every page it touched: about half of a short session's time. Frozen objects are never
    collected, which is what they are in a short-lived fork anyway.
    """
    if session.config.option.collectonly and "MUTANT_UNDER_TEST" in os.environ:
        gc.freeze()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `make mutate`, a mutant's tests run fastest first.

    mutmut runs each mutant in a pytest session of its own (naming it in ``MUTANT_UNDER_TEST``)
    that stops at the first failure, and hands the tests over in no particular order: a mutant
    a 10 ms test kills should not wait for a 5 s one first. The durations are the ones mutmut
    recorded in its stats run (``mutmut-stats.json`` in ``mutants/``, its working directory).
    A survivor runs every test either way: the order changes no verdict.
    """
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    stats = Path("mutmut-stats.json")
    if not stats.is_file():
        return
    durations: dict[str, float] = json.loads(stats.read_text())["duration_by_test"]
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
