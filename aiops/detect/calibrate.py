"""Turning raw outlier scores into calibrated anomaly scores in [0, 1].

Raw scores (a distance, a z-score) mean different things on different series: a noisy series
always has large ones. What is comparable across series is how unusual the *recent* raw
scores are for *this* series. :class:`AnomalyLikelihood` follows the anomaly-likelihood idea
of Numenta's HTM detector (Ahmad et al., "Unsupervised real-time anomaly detection for
streaming data", Neurocomputing 2017): the mean of the last few raw scores is compared with
the distribution of such means over a long trailing window, and the Gaussian tail
probability is put on a log scale, so 0.5 means a tail probability of 1e-5 and 1.0 means
1e-10. Averaging a few points trades a little delay for far fewer alarms on single noisy
points; the long window adapts to a series whose normal noise level changes.

The output is a calibrated score for the daemon (``AnomalyReport`` uses 0.9 by default,
a tail probability near 1e-9) and a good ranking for NAB, which sweeps one threshold over
all series at once.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import ndtr

from aiops.detect.base import BoolArray, DetectorState, FloatArray

_LOG_FLOOR = 1e-10
_RED_TAIL = 1e-5  # tail probability of an alarm-worthy point (score 0.5)
_YELLOW_TAIL = 1e-3  # what a repeated alarm is lowered to (score 0.3)


def tail_to_score(tail: FloatArray) -> FloatArray:
    """Map a tail probability to [0, 1] on a log scale: 1 -> 0, 1e-5 -> 0.5, 1e-10 -> 0.97,
    0 -> 1 (HTM's ``log(1 + 1e-10 - likelihood) / log(1e-10)``)."""
    score: FloatArray = np.log(np.asarray(tail, dtype=np.float64) + _LOG_FLOOR) / math.log(
        _LOG_FLOOR
    )
    return np.clip(score, 0.0, 1.0)


class AnomalyLikelihood:
    """Streaming tail probability of the short-window mean of raw scores.

    Parameters (defaults are the published HTM ones, chosen there for 5-minute metrics):
        short: points in the recent mean (10: ~one hour at 5-minute scrapes).
        history: points of mean raw scores the distribution is estimated on (8640: 30 days
            of 5-minute points, long enough that one incident does not redefine normal).
        reestimate: the distribution is re-estimated every this many points (100). It is
            kept as sums per block of this size, so memory is O(history / reestimate), not
            O(history): the daemon may hold tens of thousands of these.
        min_std: floor for the standard deviation of the mean, so a perfectly regular
            stream does not make the first wobble infinitely unlikely.
        robust: estimate the distribution from medians over blocks instead of plain moments
            (see ``_estimate``); HTM uses plain moments, and so do we by default: on NAB the
            robust estimate raised more false alarms (standard 65.3 vs 68.8 during
            development, both without a learning period).
        learning: the first raw scores (300: a day of 5-minute points, when the raw model
            has seen less than one daily cycle) define "normal" only until as many later
            ones replace them; otherwise their start-up extremes would mute alarms for
            ``history`` points (30 days). It costs on NAB (knn 66.35 vs 68.55 with
            ``learning=0``), where many windows fall in a file's first weeks, but without
            it an 8-sigma spike on day 7 of a fresh daily series scored below 0.1.

    Repeated alarms are lowered: a point whose tail is below 1e-5 within ``rearm`` points
    of another such point gets the score of a 1e-3 tail instead. An alarm's onset is the
    information; its persistence would be counted again as fresh alarms. ``rearm=1`` lowers
    only the point right after an alarm; ``rearm=short`` waits until the averaging window
    holds none of the raw scores that raised the last alarm, since until then a new alarm is
    the same evidence counted again.
    """

    def __init__(self, short: int = 10, history: int = 8640, reestimate: int = 100,
                 min_std: float = 1e-3, robust: bool = False, learning: int = 300,
                 rearm: int = 1) -> None:
        if short < 1 or reestimate < 1 or history < reestimate:
            raise ValueError("need short >= 1, reestimate >= 1 and history >= reestimate")
        self.short = short
        self.reestimate = reestimate
        self.n_blocks = max(1, history // reestimate)
        self.min_std = min_std
        self.robust = robust
        self.learning = learning
        self.closed = 0  # blocks completed so far
        self.learn_acc = np.zeros(3)  # sum, sum of squares, count over the learning period
        self.recent = np.zeros(0)  # last short-1 raw scores
        self.block_sum = np.zeros(self.n_blocks)
        self.block_sq = np.zeros(self.n_blocks)
        self.block_n = np.zeros(self.n_blocks)
        self.pending = np.zeros(0)  # averaged scores of the block being filled
        self.head = 0  # ring index of the next block slot
        self.mean = math.nan
        self.std = math.nan
        self.prev_red = False
        self.rearm = rearm
        self.since_red = 10**9  # points since the last alarm (red tail), for ``rearm``

    @property
    def warmup(self) -> int:
        """Raw scores needed before the first estimate (one block)."""
        return self.reestimate

    def update(self, raw: FloatArray) -> FloatArray:
        """Calibrated scores for the next raw scores (finite, any batch size)."""
        raw = np.asarray(raw, dtype=np.float64)
        n = len(raw)
        out = np.zeros(n)
        # short-window means with the carried-over tail of earlier raw scores; each window
        # is summed on its own (not by differences of a running sum) so that the result is
        # bit-identical however the stream is cut into batches
        ext = np.concatenate([self.recent, raw])
        pad = self.short - 1 - len(self.recent)  # > 0 only at the very start
        padded = np.concatenate([np.full(max(pad, 0), np.nan), ext])
        win = sliding_window_view(padded, self.short)[-n:] if n else np.zeros((0, self.short))
        avg = np.nansum(win, axis=1) / np.sum(~np.isnan(win), axis=1)
        i = 0
        while i < n:
            # the estimate is fixed until the current block is full, so score a block at once
            room = self.reestimate - len(self.pending)
            j = min(n, i + room)
            seg = avg[i:j]
            if not math.isnan(self.mean):
                z = (seg - self.mean) / self.std
                # folded-normal tail: 1 at or below the mean (score 0 for anything typical
                # or quieter), 2*Q(z) above it
                tail = np.minimum(2.0 * ndtr(-z), 1.0)
                red = tail < _RED_TAIL
                last = -1
                for k in np.flatnonzero(red):  # few: alarms are rare by construction
                    dist = k - last if last >= 0 else self.since_red + k + 1
                    if dist <= self.rearm:
                        tail[k] = _YELLOW_TAIL
                    last = int(k)
                self.since_red = len(seg) - 1 - last if last >= 0 else self.since_red + len(seg)
                self.prev_red = self.since_red == 0
                out[i:j] = tail_to_score(tail)
            self.pending = np.concatenate([self.pending, seg])
            if len(self.pending) >= self.reestimate:
                # summed once per complete block: the same values in the same order always
                p = self.pending
                self.pending = np.zeros(0)
                self._close_block(np.array([p.sum(), np.square(p).sum(), float(len(p))]))
            i = j
        keep = self.short - 1
        # max(): a start with fewer raw scores than the window keeps them all
        self.recent = ext[max(0, len(ext) - keep):] if keep else np.zeros(0)
        return out

    def _close_block(self, block: FloatArray) -> None:
        """Add a completed block (sum, sum of squares, count) and re-estimate."""
        self.closed += 1
        if self.closed * self.reestimate <= self.learning:
            # start-up: the raw model was fitted on little data; its scores define "normal"
            # only until there is something better (HTM's learning period, without the wait)
            self.learn_acc += block
            sums, sqs, ns = self.learn_acc[0:1], self.learn_acc[1:2], self.learn_acc[2:3]
        else:
            h = self.head
            self.block_sum[h], self.block_sq[h], self.block_n[h] = block
            self.head = (h + 1) % self.n_blocks
            sums, sqs, ns = self.block_sum, self.block_sq, self.block_n
            if self.block_n.sum() < self.learning:
                # too few blocks after start-up for a stable estimate: keep the start-up
                # scores in until as many later ones replace them
                sums, sqs, ns = (np.append(sums, self.learn_acc[0]),
                                 np.append(sqs, self.learn_acc[1]),
                                 np.append(ns, self.learn_acc[2]))
        self._estimate(sums, sqs, ns)

    def _estimate(self, sums: FloatArray, sqs: FloatArray, ns: FloatArray) -> None:
        filled = ns > 0
        cnt = ns[filled]
        means = sums[filled] / cnt
        sq = sqs[filled]
        if self.robust:
            # median block mean and median within-block variance plus the robust spread of
            # block means: a few incident blocks (or the start-up, when the raw model was
            # still learning) do not inflate "normal" for the next `history` points
            within = np.maximum(sq / cnt - means * means, 0.0)
            center = float(np.median(means))
            between = (1.4826 * float(np.median(np.abs(means - center)))) ** 2
            var = float(np.median(within)) + between
        else:
            n = cnt.sum()
            center = float(sums[filled].sum() / n)
            var = max(float(sq.sum() / n) - center * center, 0.0)
        self.mean = center
        self.std = max(math.sqrt(var), self.min_std)

    def state(self) -> DetectorState:
        return DetectorState(
            name="likelihood", params={},
            meta={"head": self.head, "mean": self.mean, "std": self.std,
                  "prev_red": self.prev_red, "closed": self.closed,
                  "since_red": min(self.since_red, 10**9)},
            arrays={"recent": self.recent.copy(), "block_sum": self.block_sum.copy(),
                    "block_sq": self.block_sq.copy(), "block_n": self.block_n.copy(),
                    "pending": self.pending.copy(), "learn_acc": self.learn_acc.copy()},
        )

    def load(self, st: DetectorState) -> None:
        if len(st.arrays["block_sum"]) != self.n_blocks:
            raise ValueError("saved likelihood has a different history length")
        self.head = int(st.meta["head"] or 0)
        self.mean = float(st.meta["mean"] if st.meta["mean"] is not None else math.nan)
        self.std = float(st.meta["std"] if st.meta["std"] is not None else math.nan)
        self.prev_red = bool(st.meta["prev_red"])
        since = st.meta.get("since_red")
        self.since_red = int(since) if since is not None else (0 if self.prev_red else 10**9)
        a = st.arrays
        self.recent, self.block_sum, self.block_sq = a["recent"], a["block_sum"], a["block_sq"]
        self.block_n, self.pending, self.learn_acc = a["block_n"], a["pending"], a["learn_acc"]
        self.closed = int(st.meta["closed"] or 0)


class SpatialNovelty:
    """Flags values outside everything seen so far by more than ``tolerance`` of the range.

    A value the series has never come near is worth an alert whatever a model of the recent
    past says; the models forget (trailing windows), this does not. The 5% margin keeps a
    slowly growing series from alerting at every new maximum. Same idea as the spatial
    anomaly rule of Numenta's NAB detector.
    """

    def __init__(self, tolerance: float = 0.05) -> None:
        self.tolerance = tolerance
        self.lo = math.nan
        self.hi = math.nan

    def update(self, x: FloatArray) -> BoolArray:
        """Boolean novelty flag per value (each judged against the values before it)."""
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        if n == 0:
            return np.zeros(0, dtype=bool)
        lo0 = x[0] if math.isnan(self.lo) else self.lo
        hi0 = x[0] if math.isnan(self.hi) else self.hi
        # running extremes *before* each point
        lo = np.minimum.accumulate(np.concatenate([[lo0], x[:-1]]))
        hi = np.maximum.accumulate(np.concatenate([[hi0], x[:-1]]))
        tol = (hi - lo) * self.tolerance
        flag = (hi > lo) & ((x > hi + tol) | (x < lo - tol))
        self.lo = float(min(lo[-1], x[-1]))
        self.hi = float(max(hi[-1], x[-1]))
        return flag

    def state(self) -> DetectorState:
        return DetectorState(name="spatial", params={}, meta={"lo": self.lo, "hi": self.hi})

    def load(self, st: DetectorState) -> None:
        lo, hi = st.meta["lo"], st.meta["hi"]
        self.lo = math.nan if lo is None else float(lo)
        self.hi = math.nan if hi is None else float(hi)



class RunNovelty:
    """Flags a value repeated for longer than any run of identical values seen before.

    Spatial novelty in time: a series that goes silent (disk writes at zero, a gauge stuck)
    or freezes stays inside its range, so no value-based rule sees it; how long it has not
    moved is what is new. Runs shorter than ``min_run`` are never flagged (a few equal
    samples are common in coarse data), and a run must beat the longest earlier one by
    ``tolerance`` of it, so a series that is often flat does not alarm at every new record.
    Each run is flagged once, at the point it becomes a record.
    """

    def __init__(self, min_run: int = 20, tolerance: float = 0.05) -> None:
        self.min_run, self.tolerance = min_run, tolerance
        self.last = math.nan
        self.run = 0  # length of the current run of identical values
        self.longest = 0  # longest completed run before it

    def update(self, x: FloatArray) -> BoolArray:
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros(len(x), dtype=bool)
        for k, v in enumerate(x):  # per point: runs end and start anywhere in a batch
            if v == self.last:
                self.run += 1
            else:
                self.longest = max(self.longest, self.run)
                self.last, self.run = float(v), 1
            need = max(self.min_run, math.ceil(self.longest * (1 + self.tolerance)) + 1)
            out[k] = self.run == need
        return out

    def state(self) -> DetectorState:
        return DetectorState(name="runs", params={}, meta={
            "last": self.last, "run": self.run, "longest": self.longest})

    def load(self, st: DetectorState) -> None:
        last = st.meta["last"]
        self.last = math.nan if last is None else float(last)
        self.run = int(st.meta["run"] or 0)
        self.longest = int(st.meta["longest"] or 0)


class AlarmGate:
    """For ``rearm`` points after an alarm, scores are capped at a warning's (a 1e-3 tail),
    unless they are stronger than every alarm of the episode so far.

    Alarms are scores of at least 0.5 (a 1e-5 tail), whatever raised them; an alarm inside
    the span restarts it, so an episode raises one alarm however long it lasts, plus one
    for each escalation (a weak alarm at the onset must not hide a sure one a few points
    later). The likelihood's short-window mean holds the raw scores that raised an alarm
    for ``short`` points, and a value that set a new record is often followed by more:
    counting them again reports one episode many times.
    """

    ALARM = 0.5

    def __init__(self, rearm: int) -> None:
        self.rearm = rearm
        self.since = 10**9  # points since the last alarm
        self.level = 0.0  # the strongest alarm of the current episode

    def apply(self, scores: FloatArray) -> FloatArray:
        out = np.array(scores, dtype=np.float64)
        lowered = float(tail_to_score(np.array([_YELLOW_TAIL]))[0])
        for k in range(len(out)):
            self.since += 1
            score = out[k]
            if self.since > self.rearm:
                self.level = 0.0  # the last episode is over
            if score >= self.ALARM:
                self.since = 0
            if score > self.level and score >= self.ALARM:
                self.level = score  # an onset, or an escalation: information
            elif self.since <= self.rearm or score >= self.ALARM:
                out[k] = min(score, lowered)
        return out

    def state(self) -> DetectorState:
        return DetectorState(name="gate", params={}, meta={"since": min(self.since, 10**9),
                                                           "level": self.level})

    def load(self, st: DetectorState) -> None:
        since = st.meta["since"]
        self.since = 10**9 if since is None else int(since)
        self.level = float(st.meta["level"] or 0.0)
