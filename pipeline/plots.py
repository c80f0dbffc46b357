"""Diagnostic plots tracked with each run, drawn without pyplot (no GUI backend, thread-safe).

Margins are fixed for the labels these plots carry, not computed by a layout engine: the
constrained layout measured every text twice per figure and took most of the drawing time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.xgb import xgboost as xgb


def feature_importance(booster: xgb.Booster) -> Figure:
    """Total gain per feature: what the trees split on."""
    gains = pd.Series(booster.get_score(importance_type="total_gain")).sort_values()
    figure = Figure(figsize=(6, 3.5))
    figure.subplots_adjust(left=0.24, right=0.96, bottom=0.15, top=0.9)
    axes = figure.subplots()
    axes.barh(gains.index, gains.to_numpy())
    axes.set_xlabel("total gain")
    axes.set_title("Feature importance")
    return figure


def predicted_vs_actual(actual: pd.Series, predicted: np.ndarray) -> Figure:
    """Density of (actual, predicted) minutes on the validation month, with the identity line."""
    figure = Figure(figsize=(5, 5))
    figure.subplots_adjust(left=0.13, right=0.98, bottom=0.1, top=0.94)
    axes = figure.subplots()
    cells = axes.hexbin(actual, predicted, gridsize=60, bins="log", mincnt=1, cmap="viridis")
    figure.colorbar(cells, ax=axes, label="trips (log)")
    limits = (0, max(float(np.max(actual)), float(np.max(predicted))))
    axes.plot(limits, limits, color="tab:red", linewidth=1)
    axes.set_xlabel("actual minutes")
    axes.set_ylabel("predicted minutes")
    axes.set_title("Validation: predicted vs actual")
    return figure
