"""Requests as a stream of time windows: how a workload longer than memory reaches the simulator.

A :class:`~aiops.sim.workloads.Workload` holds every request in three arrays. That is right
for an hour of traffic and wrong for two weeks of a busy service (a hundred million requests
or more). A :class:`RequestStream` hands the same requests over in consecutive windows
instead, each generated or read only when the simulator reaches it, so a replay's memory is
bounded by the longest window and the requests in flight, not by the replay's length.

Every workload source implements the protocol: an in-memory ``Workload`` through
:class:`WorkloadStream`, a generator such as ServeGen's per-client windows natively. The
simulator consumes only this interface.

Contract of :meth:`RequestStream.chunks`:

* chunks are consecutive and cover ``[0, duration]`` exactly: chunk ``k`` is
  ``[start_k, end_k)`` with ``start_0 == 0``, ``start_{k+1} == end_k`` and the last
  ``end == duration`` (an arrival exactly at ``duration`` belongs to the last chunk);
* arrival times are absolute (seconds from the stream's start), sorted, inside their chunk;
* the requests do not depend on ``span_s``: asking for other window sizes yields the same
  requests, cut at other places (a seeded generator draws per fixed block of its own);
* iterating twice yields the same requests again.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from aiops.sim.workloads import Workload
from aiops.types import FloatArray, IntArray

DEFAULT_CHUNK_S = 600.0
"""Window the simulator asks for: ten minutes (ServeGen's own window) of a 4,000 requests/s
service is ~60 MB of request arrays, and long against any request's lifetime."""


@dataclass(frozen=True)
class Chunk:
    """The requests arriving in ``[start, end)`` (``[start, end]`` for the last chunk)."""

    start: float
    end: float
    arrivals: FloatArray
    context_tokens: IntArray
    generated_tokens: IntArray

    def __len__(self) -> int:
        return len(self.arrivals)


@runtime_checkable
class RequestStream(Protocol):
    """A workload read window by window (see the module docstring for the contract)."""

    @property
    def name(self) -> str: ...

    @property
    def duration(self) -> float: ...

    @property
    def meta(self) -> Mapping[str, object]: ...

    def chunks(self, span_s: float = DEFAULT_CHUNK_S) -> Iterator[Chunk]:
        """Consecutive windows of at most ``span_s`` seconds, in time order."""
        ...

    def window(self, start: float, length: float) -> Workload:
        """The requests in ``[start, start + length)`` as an in-memory Workload re-based to
        0, as :meth:`Workload.window` does: a training episode or a test takes a slice of a
        long stream without generating the rest."""
        ...

    def rate(self, bin_s: float) -> FloatArray:
        """Requests/s in consecutive bins of ``bin_s`` seconds over ``[0, duration)``, as
        :meth:`Workload.rate` defines them. Planning (the oracle, a fleet's starting size)
        needs the whole load curve; it is small even when the requests are not."""
        ...

    def summary(self) -> dict[str, object]:
        """JSON-safe overview with the keys of :meth:`Workload.summary`."""
        ...


class WorkloadStream:
    """An in-memory :class:`Workload` seen as a :class:`RequestStream` (views, no copies)."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload

    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def duration(self) -> float:
        return self.workload.duration

    @property
    def meta(self) -> Mapping[str, object]:
        return self.workload.meta

    def __len__(self) -> int:
        return len(self.workload)

    def chunks(self, span_s: float = DEFAULT_CHUNK_S) -> Iterator[Chunk]:
        if not (math.isfinite(span_s) and span_s > 0):
            raise ValueError(f"span_s must be finite and > 0, got {span_s}")
        w = self.workload
        n = max(1, math.ceil(w.duration / span_s)) if w.duration > 0 else 1
        lo = 0
        for k in range(n):
            start = k * span_s
            last = k == n - 1
            end = w.duration if last else (k + 1) * span_s
            hi = len(w) if last else int(np.searchsorted(w.arrivals, end, side="left"))
            yield Chunk(start, end, w.arrivals[lo:hi], w.context_tokens[lo:hi],
                        w.generated_tokens[lo:hi])
            lo = hi

    def window(self, start: float, length: float) -> Workload:
        return self.workload.window(start, length)

    def rate(self, bin_s: float) -> FloatArray:
        return self.workload.rate(bin_s)

    def summary(self) -> dict[str, object]:
        return self.workload.summary()


def as_stream(source: Workload | RequestStream) -> RequestStream:
    """Any workload source as a stream: a Workload is wrapped, a stream passes through."""
    if isinstance(source, Workload):
        return WorkloadStream(source)
    return source
