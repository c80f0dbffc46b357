"""The file MLflow runs to build the logged model ("models from code": nothing is unpickled)."""

from mlflow.models import set_model

from pipeline.model import TripDurationModel

set_model(TripDurationModel())
