"""What the registry and promotion tests share: a validation key and the aliases' reader.

The fixtures that log and register the synthetic months' model (``logged``, ``register``)
are in ``conftest.py``.
"""

from __future__ import annotations

from mlflow import MlflowClient

# The validation key of a registration: the validation file and its row count.
KEY = "green_tripdata_2023-02.parquet:1999"
# The run the ``logged`` fixture logs the model in (the flow's own runs are named otherwise).
LOGGED_RUN = "logged-model"


def aliases(name: str) -> dict[str, int]:
    """The registered model's aliases."""
    return dict(MlflowClient().get_registered_model(name).aliases)
