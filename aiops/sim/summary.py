"""Latency percentiles of a replay too long to keep every request: DataDog's DDSketch.

A two-week replay of a busy service finishes a billion requests; their TTFT and TPOT cannot
be kept to sort at the end. DDSketch (the ``ddsketch`` package) keeps counts in
logarithmic buckets and answers every quantile within a relative accuracy (0.2 % here), in
memory that grows with the log of the value range, not with the count. It is deterministic
and does not depend on the order values arrive in, so a replay gives the same percentiles
whether it ran in one process or as Ray tasks, in one window or many.

The library adds one value at a time in Python, which would cost more than simulating the
request. :meth:`LatencySketch.update` therefore buckets a whole batch with numpy using the
sketch's own key mapping (``ceil(log(v) / log(gamma))``, checked against the library's at
construction) and keeps the counts per bucket; before a quantile is read each bucket is
added to the sketch once with its count: the same sketch, built in bulk.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from ddsketch import DDSketch

RELATIVE_ACCURACY = 0.002
"""Any percentile is within 0.2 % of a value whose rank is exactly right."""


class LatencySketch:
    """Streaming quantiles of non-negative latencies (seconds)."""

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        self.sketch = DDSketch(relative_accuracy)
        mapping = self.sketch._mapping
        self._log2_gamma = math.log2(mapping.gamma)
        self._value = mapping.value
        probe = np.array([1e-4, 3.3e-3, 0.05, 0.731, 12.0, 1e4])
        if [int(k) for k in self._keys(probe)] != [mapping.key(float(v)) for v in probe]:
            raise RuntimeError("ddsketch's key mapping changed; LatencySketch needs updating")
        self.count = 0
        # Bucket counts not yet in the sketch, by key - ``_lo`` (a dense run of keys: a
        # decade of latencies is ~600 keys at 0.2 %).
        self._pending = np.zeros(0, dtype=np.int64)
        self._lo = 0
        self._zeros = 0

    def _keys(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        keys: npt.NDArray[np.int64] = np.ceil(np.log2(values) / self._log2_gamma).astype(
            np.int64)
        return keys

    def update(self, values: npt.ArrayLike) -> None:
        """Add a batch of values (NaN ignored; zero and below count as zero)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        if not v.size:
            return
        self.count += int(v.size)
        positive = v[v > 0]
        self._zeros += v.size - positive.size
        if not positive.size:
            return
        keys = self._keys(positive)
        lo, hi = int(keys.min()), int(keys.max())
        if self._pending.size == 0:
            self._lo = lo
        if lo < self._lo or hi >= self._lo + self._pending.size:
            new_lo = min(lo, self._lo)
            new_hi = max(hi + 1, self._lo + self._pending.size)
            grown = np.zeros(new_hi - new_lo, dtype=np.int64)
            grown[self._lo - new_lo:self._lo - new_lo + self._pending.size] = self._pending
            self._pending, self._lo = grown, new_lo
        self._pending += np.bincount(keys - self._lo, minlength=self._pending.size)

    def _flush(self) -> None:
        """Hand the bucket counts gathered since the last read to the sketch."""
        if self._zeros:
            self.sketch.add(0.0, float(self._zeros))
            self._zeros = 0
        for offset in np.flatnonzero(self._pending):
            self.sketch.add(self._value(int(offset) + self._lo), float(self._pending[offset]))
        self._pending[:] = 0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (NaN when empty)."""
        if self.count == 0:
            return math.nan
        self._flush()
        value = self.sketch.get_quantile_value(q)
        return math.nan if value is None else float(value)
