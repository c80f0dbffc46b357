"""The pipeline's heavy imports with the cyclic garbage collector paused.

Importing Prefect, MLflow and XGBoost leaves some 300,000 objects for the collector to track,
next to no garbage, and the collections that allocating them triggers took a sixth of the
imports' CPU. The command line (:mod:`pipeline.cli`) and a deployed flow run
(:mod:`pipeline.entrypoints`) import the flows inside :func:`collector_paused`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside; what was built is frozen at the end.

    Frozen (moved out of the collector's reach), the imports' objects are not walked again by
    every full collection during the flow (7 in a run before, 1 after). The collector's state
    is restored, so the pauses nest.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
