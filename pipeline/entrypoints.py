"""The deployments' entrypoints (``prefect.yaml``): ``pipeline/entrypoints.py:training`` and
``pipeline/entrypoints.py:tuning_flow``, the flows of :mod:`pipeline.flows`.

A deployed run's process (``prefect flow-run execute`` on a worker host) imports its flow from
here, so that the imports of the flows' modules (MLflow, XGBoost, pandas, the pipeline's own)
run with the garbage collector paused, as the command line runs them
(:func:`pipeline.imports.collector_paused`): 1.39 -> 0.98 s of CPU before the flow starts,
and one full collection instead of five by then.
"""

from __future__ import annotations

from pipeline.imports import collector_paused

with collector_paused():
    from pipeline.flows import training, tuning_flow

__all__ = ["training", "tuning_flow"]
