"""Forecasters that exist to be rejected: tests of ``auto``'s selection use them.

They are registered only for the tests that ask (:func:`registered`), never at import: a
model registered for good would show in every other test's list of forecasters (and in the
CLI's "known:" message those tests check).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from aiops.forecast import base
from aiops.forecast.base import BaseForecaster
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



def registered(monkeypatch: pytest.MonkeyPatch, *models: type[BaseForecaster]) -> None:
    """Register ``models`` until the end of the current test (the registry's own dict,
    restored by ``monkeypatch``)."""
    for model in models:
        monkeypatch.setitem(base._REGISTERED, model.name, model)
