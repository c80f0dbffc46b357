"""Does the registry's champion load and predict? (a restore drill's last question)

``python -m scripts.champion MODEL_NAME`` loads ``models:/MODEL_NAME@champion`` from the MLflow
server that the environment's ``MLFLOW_TRACKING_*`` variables name, predicts on the input
example logged with it (so no trip data is needed) and prints one JSON object: the version,
its run, and the predictions. It runs as its own process so that the caller's environment and
imports stay untouched (MLflow reads its credentials from the environment).
"""

from __future__ import annotations

import json
import sys
import tempfile

import mlflow
import numpy as np
from mlflow.models import Model


def champion_predictions(model_name: str) -> dict[str, object]:
    """The champion's version, run id and its predictions on its own input example."""
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(model_name, "champion")
    uri = f"models:/{model_name}@champion"
    with tempfile.TemporaryDirectory() as directory:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=directory)
        example = Model.load(local).load_input_example(local)
        if example is None:
            raise ValueError(f"{uri} was logged without an input example")
        predictions = np.asarray(mlflow.pyfunc.load_model(local).predict(example), dtype=float)
    if not np.isfinite(predictions).all():
        raise ValueError(f"{uri} predicted non-finite values: {predictions.tolist()}")
    return {
        "model_name": model_name,
        "version": version.version,
        "run_id": version.run_id,
        "predictions": [round(float(value), 6) for value in predictions],
    }


def main() -> None:
    """Print the champion's predictions as JSON; an expected failure is one line and exit 1."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m scripts.champion MODEL_NAME")
    try:
        print(json.dumps(champion_predictions(sys.argv[1])))
    except (mlflow.exceptions.MlflowException, ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
