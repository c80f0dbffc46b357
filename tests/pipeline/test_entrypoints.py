"""The deployments' entrypoints load the flows with the garbage collector paused, then on."""

from __future__ import annotations

import json
import subprocess
import sys

from pipeline import entrypoints, flows

_LOAD = """
import gc, json
from prefect.flows import load_flow_from_entrypoint
frozen = gc.get_freeze_count()
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info))
flow = load_flow_from_entrypoint("pipeline/entrypoints.py:{name}")
print(json.dumps({{"flow": flow.name, "enabled": gc.isenabled(), "collections": len(collections),
                   "frozen": gc.get_freeze_count() - frozen}}))
"""


def test_the_entrypoints_are_the_flows() -> None:
    assert entrypoints.training is flows.training
    assert entrypoints.tuning_flow is flows.tuning_flow


def test_a_deployed_run_loads_its_flow_without_collections_then_freezes_and_collects() -> None:
    """Loaded from ``pipeline/flows.py`` directly, the same load runs some 400 collections."""
    for name, flow_name in (("training", "training"), ("tuning_flow", "tuning")):
        loaded = subprocess.run(
            [sys.executable, "-c", _LOAD.format(name=name)],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(loaded.stdout.strip().splitlines()[-1])
        assert report["flow"] == flow_name
        # None from the imports (about 400 without the pause); one seen under `make mutate`,
        # whose instrumented code collects explicitly once.
        assert report["collections"] <= 1
        assert report["enabled"] is True
        # MLflow's, XGBoost's and pandas' modules, out of the collector's reach.
        assert report["frozen"] > 100_000
