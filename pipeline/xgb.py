"""XGBoost as the pipeline imports it: ``from pipeline.xgb import xgboost as xgb``.

Importing XGBoost imports scikit-learn (and through it much of SciPy) to define its
scikit-learn-style estimators (``xgboost.XGBRegressor`` and the like), which the pipeline never
uses: it trains with ``xgboost.train`` and ``xgboost.dask.train`` on ``DMatrix`` objects. That
import costs every process that trains or scores about 60 MiB of resident memory and half a
second of CPU (measured: 289 -> 227 MiB and 2.26 -> 1.72 s of CPU for XGBoost, MLflow, Prefect
and pandas together). So the first import of XGBoost in a process goes through here and does not
see scikit-learn: XGBoost's own compatibility check (``xgboost.compat``) then defines its
estimators on placeholder bases, as it does where scikit-learn is not installed.

Nothing else changes: scikit-learn stays importable (the entry hiding it is removed once XGBoost
is in), and a process that imported XGBoost or scikit-learn before this module keeps XGBoost as
it is. Only XGBoost's scikit-learn-style estimators, in a process whose first import of XGBoost
was this one, refuse to work ("sklearn needs to be installed in order to use this module"): to
use them, import scikit-learn before the pipeline.
"""

from __future__ import annotations

import sys

_HIDE_SKLEARN = "xgboost" not in sys.modules and "sklearn" not in sys.modules
if _HIDE_SKLEARN:
    # A None entry makes ``import sklearn`` raise ImportError, which xgboost.compat expects.
    sys.modules["sklearn"] = None  # type: ignore[assignment]
try:
    import xgboost
finally:
    if _HIDE_SKLEARN:
        del sys.modules["sklearn"]

__all__ = ["xgboost"]
