"""Tick rates averaged into the forecasters' steps.

Forecasters work at ``forecast.step_s`` (a minute by default), not at the decision tick: a
week of 15-s ticks is 40,000 points, too many to refit on every hour. The daemon keeps one
:class:`StepAverager` per target, and the report's replay of the daemon's forecasts uses the
same one, so both forecast from the same series.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepAverager:
    """The mean rate of every completed step, the last ``keep`` of them.

    A step closes when the first rate of a later step arrives; a step with no rate leaves
    no point (the forecasters fill short gaps and refuse long ones)."""

    step_s: float
    keep: int
    times: list[float] = field(default_factory=list)  # each step's end
    values: list[float] = field(default_factory=list)
    _open: int = -1  # index of the step being averaged
    _sum: float = 0.0
    _count: int = 0

    def add(self, t: float, rate: float) -> tuple[float, float] | None:
        """Take the rate seen at ``t``; the step it completed (end time, mean), if any."""
        idx = int(t // self.step_s)
        closed = None
        if self._open >= 0 and idx != self._open and self._count:
            closed = ((self._open + 1) * self.step_s, self._sum / self._count)
            self.times.append(closed[0])
            self.values.append(closed[1])
            if len(self.times) > self.keep:
                del self.times[:-self.keep]
                del self.values[:-self.keep]
        if idx != self._open:
            self._open, self._sum, self._count = idx, 0.0, 0
        self._sum += rate
        self._count += 1
        return closed

    def replace(self, times: list[float], values: list[float]) -> None:
        """Start from a loaded history (a restarted daemon's, read from Prometheus)."""
        self.times, self.values = times[-self.keep:], values[-self.keep:]
