"""Forecasters that exist to be rejected: tests of ``auto``'s selection use them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from aiops.forecast.base import BaseForecaster, register_forecaster
from aiops.types import FloatArray


class Offset(BaseForecaster):
    """Deliberately bad: the last value plus a large offset. It must lose its backtest,
    so ``auto`` must never use it, whatever else is among the candidates."""

    name = "offset_test_model"

    def get_params(self) -> dict[str, Any]:
        return {}

    def _fit(self, timestamps: FloatArray, values: FloatArray) -> None:
        pass

    def _predict(self, horizon: int) -> tuple[FloatArray, Mapping[float, FloatArray]]:
        p = np.full(horizon, self.history_[-1] + 25.0)
        return p, {0.1: p - 1, 0.5: p, 0.9: p + 1}


register_forecaster(Offset.name, Offset)
