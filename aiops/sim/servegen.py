"""ServeGen workloads: days of production LLM traffic rebuilt from per-client statistics.

The ServeGen release (Alibaba Cloud Model Studio; "ServeGen: Workload Characterization of
Large Language Model Serving in Production", 2025) does not publish requests. It publishes,
for each client of a model, statistics per 10-minute window and token-length distributions
per 6-hour block, in one folder per model::

    chunk-<client>-trace.csv    window_start_s,rate_req_per_s,cv,pattern,shape,scale
    chunk-<client>-dataset.json {block_start_s: {"input_tokens": PDF, "output_tokens": PDF}}

``servegen:DIR`` replays such a folder as a :class:`~aiops.sim.stream.RequestStream`.

What is **measured** (taken from the files as they are): each client's request rate in each
window, the coefficient of variation of its inter-arrival times and the fitted inter-arrival
law (Gamma or Weibull shape; ``Exponential`` is read too), and the prompt and output token
length distributions of each client in each 6-hour block.

What is **reconstructed** (drawn, seeded): the requests themselves. In each window a client
sends ``rate x window x rate_scale`` requests (the fractional part rounded up with its own
probability, so the count's expectation is exact and the measured rate is kept); their
spacing is ``count + 1`` gaps drawn from the client's fitted law, rescaled so that they fill
the window — ServeGen's own method — so the burstiness (the CV) is the measured one while
the order and exact times of requests within a window are made up. Clients add up. Each
request's prompt and output lengths are drawn independently from the client's two PDFs of
that block (the joint distribution is not published; 0 tokens becomes 1, which the
simulator needs). A client with no dataset file, or with an empty PDF for a block (``{}``),
gets the pooled distribution of that block: the mixture of the other clients' PDFs weighted
by their requests in the block (of the whole folder if no client has one for that block);
the summary counts those clients and the share of requests concerned. A window with a rate
but no fitted law gets exponential gaps (Poisson arrivals), also counted.

Randomness: window ``w`` of client ``c`` draws from ``SeedSequence([seed, w, c])`` (``c`` the
number in the file name), and the rounding of counts from ``SeedSequence([seed, w, TAG])``
indexed by client number. So the same seed gives the same requests again, whatever chunk
size the simulator asks for, whatever time range is chosen (a request at day 3 is the same
in a 7-day and a 1-day replay from day 3) and whichever other clients are in the folder.

The spec takes options after the folder, ``servegen:DIR:start=2d:end=9d``: the time range
in the trace's own time (from its first window; default the whole trace). ``rate_scale``
multiplies every rate; ``time_scale`` makes every window last ``600 x time_scale`` seconds
at the same rates (as for a rate series: 1/48 plays two weeks in seven hours at the same
load level); ``duration`` cuts the result, in replayed seconds.

Nothing is replayed from a folder that does not parse: every file is read and checked when
the stream is built. A malformed line or PDF raises :class:`~aiops.errors.InputError` naming
the file, the line and the problem. PDFs are Python dict literals in JSON strings; they are
parsed as data by a small parser here, never evaluated.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiops.errors import InputError
from aiops.sim.stream import DEFAULT_CHUNK_S, Chunk
from aiops.sim.workloads import Workload, rate_bins
from aiops.types import FloatArray, IntArray

SERVEGEN_PREFIX = "servegen:"
TRACE_SUFFIX = "-trace.csv"
DATASET_SUFFIX = "-dataset.json"
DEFAULT_WINDOW_S = 600.0
"""A trace's window when it has a single line and the step cannot be read from it: the
release's 10 minutes."""

PROBABILITY_TOLERANCE = 1e-6
"""How far a PDF's probabilities may sum from 1: the release's sums are within 4e-13 (float
rounding of a normalised histogram); a larger gap means a truncated or edited PDF."""

COUNT_TAG = 2**32 - 1
"""Third word of the SeedSequence of a window's count rounding, never a client number of
the release (they count from 0) and so never the seed of one client's window."""

LAW_NONE, LAW_GAMMA, LAW_WEIBULL, LAW_EXPONENTIAL = 0, 1, 2, 3
_LAWS = {"gamma": LAW_GAMMA, "weibull": LAW_WEIBULL, "exponential": LAW_EXPONENTIAL,
         "exp": LAW_EXPONENTIAL}
_CLIENT_RE = re.compile(r"^chunk-(\d+)-(trace\.csv|dataset\.json)$")
_TOKEN_FIELDS = ("input_tokens", "output_tokens")

_INT = r"\d+"
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR = rf"\s*{_INT}\s*:\s*{_NUM}\s*"
_PDF_RE = re.compile(rf"\s*\{{(?:{_PAIR}(?:,{_PAIR})*,?)?\s*\}}\s*")
_PAIR_RE = re.compile(rf"({_INT})\s*:\s*({_NUM})")
_NUM_RE = re.compile(_NUM)


# --------------------------------------------------------------------------- PDFs


class PdfError(ValueError):
    """A PDF string that is not ``{tokens: probability, ...}``; the message says why."""


@dataclass(frozen=True)
class TokenPdf:
    """A discrete token-length distribution: sorted ``values`` and their cumulative
    probabilities ``cdf`` (last entry 1)."""

    values: IntArray
    cdf: FloatArray

    @cached_property
    def mean(self) -> float:
        probs = np.diff(self.cdf, prepend=0.0)
        return float(np.dot(np.maximum(self.values, 1), probs))

    def sample(self, u: FloatArray) -> IntArray:
        """Token counts for uniforms ``u`` in [0, 1) (inverse CDF), at least 1."""
        idx = np.minimum(np.searchsorted(self.cdf, u, side="right"), len(self.values) - 1)
        out: IntArray = np.maximum(self.values[idx], 1)
        return out


def parse_pdf(text: str) -> TokenPdf | None:
    """``"{12: 0.25, 40: 0.75}"`` as a :class:`TokenPdf`; None for ``"{}"`` (no data).

    A Python dict literal of whole token counts to probabilities, parsed as data: one
    regular expression checks the whole string and another reads the pairs (a 35,000-entry
    PDF takes milliseconds); only when the check fails is the string walked item by item to
    say what is wrong. Raises :class:`PdfError`."""
    if _PDF_RE.fullmatch(text) is None:
        raise PdfError(_pdf_problem(text))
    pairs = _PAIR_RE.findall(text)
    if not pairs:
        return None
    table = np.array(pairs)
    values = table[:, 0].astype(np.int64)
    probs = table[:, 1].astype(np.float64)
    if not np.isfinite(probs).all():
        raise PdfError("a probability is too large to be a number")
    if probs.max() > 1.0 + PROBABILITY_TOLERANCE:
        raise PdfError(f"probability {probs.max():g} is above 1")
    order = np.argsort(values, kind="stable")
    values, probs = values[order], probs[order]
    dup = np.flatnonzero(values[1:] == values[:-1])
    if len(dup):
        raise PdfError(f"token count {values[dup[0]]} appears twice")
    total = float(probs.sum())
    if not abs(total - 1.0) <= PROBABILITY_TOLERANCE:
        raise PdfError(f"probabilities sum to {total:.9g}, not 1")
    cdf = np.cumsum(probs) / total
    cdf[-1] = 1.0
    return TokenPdf(values, cdf)


def _pdf_problem(text: str) -> str:
    """Why ``text`` is not a PDF literal: the first thing wrong, for the error message."""
    body = text.strip()
    if not body.startswith("{") or not body.endswith("}"):
        return (f"a PDF is a {{tokens: probability, ...}} dict literal; got "
                f"{_clip(body)!r}")
    items = body[1:-1].split(",")
    if items and not items[-1].strip():
        items = items[:-1]  # a trailing comma is allowed, as in Python
    for i, item in enumerate(items, start=1):
        key, colon, value = item.partition(":")
        key, value = key.strip(), value.strip()
        if not colon or ":" in value:
            return f"item {i} {_clip(item.strip())!r} is not TOKENS: PROBABILITY"
        if not re.fullmatch(_INT, key):
            what = ("a negative token count" if re.fullmatch(r"-\s*\d+", key)
                    else "not a whole number of tokens")
            return f"item {i}: key {_clip(key)!r} is {what}"
        if _NUM_RE.fullmatch(value) is None:
            what = ("a negative probability" if value.startswith("-")
                    else "not a probability")
            return f"item {i} ({key}): {_clip(value)!r} is {what}"
    return "not a {tokens: probability, ...} dict literal"


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class _Trace:
    client: int
    path: str
    starts: FloatArray
    rate: FloatArray
    cv: FloatArray
    law: npt.NDArray[np.int8]
    shape: FloatArray


def _read_trace(path: Path, client: int) -> _Trace:
    """One ``chunk-N-trace.csv``: every line checked; blank lines are skipped."""
    starts: list[float] = []
    rate: list[float] = []
    cv: list[float] = []
    law: list[int] = []
    shape: list[float] = []
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the trace: {exc}", path=shown) from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 6:
            raise InputError(f"expected 6 comma-separated fields (window_start_s, rate, cv, "
                             f"pattern, shape, scale), got {len(fields)}", path=shown,
                             line=number)
        start, r, c = (_number(fields[i], name, shown, number)
                       for i, name in ((0, "window start"), (1, "rate"), (2, "cv")))
        if not (math.isfinite(start) and start >= 0):
            raise InputError(f"window start {fields[0]!r} must be a number of seconds >= 0",
                             path=shown, line=number)
        if not (math.isfinite(r) and r >= 0):
            raise InputError(f"rate {fields[1]!r} must be a finite number >= 0 (requests/s)",
                             path=shown, line=number)
        if not (c >= 0 or (math.isnan(c) and not fields[3])) or math.isinf(c):
            raise InputError(f"cv {fields[2]!r} must be a finite number >= 0", path=shown,
                             line=number)
        pattern = fields[3]
        kind = LAW_NONE
        k = 0.0
        if pattern:
            kind = _LAWS.get(pattern.lower(), -1)
            if kind < 0:
                raise InputError(f"unknown inter-arrival pattern {pattern!r}; expected "
                                 "Gamma, Weibull or Exponential (or empty for no requests)",
                                 path=shown, line=number)
            k = _number(fields[4], "shape", shown, number)
            scale = _number(fields[5], "scale", shown, number)
            if kind != LAW_EXPONENTIAL and not (math.isfinite(k) and k > 0):
                raise InputError(f"{pattern} shape {fields[4]!r} must be a finite number > 0",
                                 path=shown, line=number)
            if not (math.isfinite(scale) and scale > 0):
                raise InputError(f"{pattern} scale {fields[5]!r} must be a finite number > 0",
                                 path=shown, line=number)
        if starts and start <= starts[-1]:
            raise InputError(f"window start {fields[0]} is not after the previous one "
                             f"({starts[-1]:g})", path=shown, line=number)
        if len(starts) >= 2 and not math.isclose(start - starts[-1], starts[1] - starts[0]):
            raise InputError(f"window start {fields[0]}: windows must be evenly spaced "
                             f"({starts[1] - starts[0]:g} s apart, as the first two)",
                             path=shown, line=number)
        starts.append(start)
        rate.append(r)
        cv.append(0.0 if math.isnan(c) else c)
        law.append(kind)
        shape.append(k)
    if not starts:
        raise InputError("the trace has no windows", path=shown)
    return _Trace(client, shown, np.array(starts), np.array(rate), np.array(cv),
                  np.array(law, dtype=np.int8), np.array(shape))


def _number(text: str, name: str, path: str, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{name} {text!r} is not a number", path=path, line=line) from None


class _LocatedStr(str):
    """A JSON string value that remembers the line it started on."""

    line: int = 0


class _LocatedDict(dict[str, Any]):
    """A JSON object that remembers the line of its opening brace."""

    line: int = 0


def _load_json_with_lines(text: str) -> Any:
    """``json.loads`` whose strings and objects carry their line numbers, so that a bad PDF
    deep in a 500 kB file is reported at its line. Uses the json module's own pure-Python
    scanner with two hooks; the strings themselves are still read by the C scanner."""
    state = {"pos": 0, "line": 1}

    def line_at(pos: int) -> int:
        state["line"] += text.count("\n", state["pos"], pos)
        state["pos"] = pos
        return state["line"]

    def parse_string(s: str, end: int, strict: bool = True) -> tuple[str, int]:
        line = line_at(end)
        value, new_end = json.decoder.scanstring(s, end, strict)  # type: ignore[attr-defined]
        out = _LocatedStr(value)
        out.line = line
        return out, new_end

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        line = line_at(s_and_end[1])
        obj, new_end = json.decoder.JSONObject(s_and_end, *args)  # type: ignore[attr-defined]
        out = _LocatedDict(obj)
        out.line = line
        return out, new_end

    decoder = json.JSONDecoder()
    decoder.parse_string = parse_string  # type: ignore[attr-defined]
    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(text)


@dataclass(frozen=True)
class _Block:
    start: float
    pdfs: tuple[TokenPdf | None, TokenPdf | None]  # input, output; None: empty "{}"


def _read_dataset(path: Path) -> list[_Block]:
    """One ``chunk-N-dataset.json``: every block and PDF checked."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the dataset: {exc}", path=shown) from None
    try:
        doc = _load_json_with_lines(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=shown, line=exc.lineno) from None
    if not isinstance(doc, dict):
        raise InputError("expected an object {block_start_s: {\"input_tokens\": PDF, "
                         "\"output_tokens\": PDF}, ...}", path=shown, line=1)
    blocks: list[_Block] = []
    for key, value in doc.items():
        line = getattr(value, "line", None)
        if not re.fullmatch(r"\d+", key):
            raise InputError(f"block key {_clip(key)!r} is not a start time in whole seconds",
                             path=shown, line=line)
        if not isinstance(value, dict):
            raise InputError(f"block {key}: expected an object with input_tokens and "
                             "output_tokens", path=shown, line=line)
        pdfs: list[TokenPdf | None] = []
        for name in _TOKEN_FIELDS:
            if name not in value:
                raise InputError(f"block {key}: no {name!r}", path=shown, line=line)
            pdf_text = value[name]
            where = getattr(pdf_text, "line", line)
            if not isinstance(pdf_text, str):
                raise InputError(f"block {key}: {name} must be a string holding a PDF "
                                 "literal", path=shown, line=where)
            try:
                pdfs.append(parse_pdf(pdf_text))
            except PdfError as exc:
                raise InputError(f"block {key}: {name}: {exc}", path=shown,
                                 line=where) from None
        blocks.append(_Block(float(key), (pdfs[0], pdfs[1])))
    blocks.sort(key=lambda b: b.start)
    return blocks


# --------------------------------------------------------------------------- the folder


@dataclass(frozen=True)
class _Mixture:
    """Where a (client, block)'s token lengths come from: one PDF (its own) or a mixture
    (pooled), as component PDFs and cumulative weights."""

    pdfs: tuple[TokenPdf, ...]
    cum_weights: FloatArray

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        if len(self.pdfs) == 1:
            return self.pdfs[0].sample(rng.random(n))
        comp = np.searchsorted(self.cum_weights, rng.random(n), side="right")
        comp = np.minimum(comp, len(self.pdfs) - 1)
        u = rng.random(n)
        out = np.empty(n, dtype=np.int64)
        order = np.argsort(comp, kind="stable")  # one pass per component present, O(n log n)
        bounds = np.cumsum(np.bincount(comp, minlength=len(self.pdfs)))
        lo = 0
        for k, hi in enumerate(bounds):
            if hi > lo:
                sel = order[lo:hi]
                out[sel] = self.pdfs[k].sample(u[sel])
            lo = int(hi)
        return out

    @cached_property
    def mean(self) -> float:
        weights = np.diff(self.cum_weights, prepend=0.0)
        return float(sum(w * p.mean for w, p in zip(weights, self.pdfs, strict=True)))


def _mixture(pdfs: list[TokenPdf], weights: list[float]) -> _Mixture:
    w = np.asarray(weights, dtype=np.float64)
    if not w.sum() > 0:
        w = np.ones(len(pdfs))
    cum = np.cumsum(w) / w.sum()
    cum[-1] = 1.0
    return _Mixture(tuple(pdfs), cum)


@dataclass(frozen=True)
class ServeGenData:
    """One model folder, parsed and checked: per client and window the rate, CV, law and
    shape (arrays of shape (clients, windows)); per client and token block where its token
    lengths come from (its own PDFs, or the block's pooled mixture)."""

    path: str
    name: str
    clients: IntArray  # client numbers, ascending
    starts: FloatArray  # window starts, trace seconds
    window_s: float
    rate: FloatArray
    cv: FloatArray
    law: npt.NDArray[np.int8]
    shape: FloatArray
    block_starts: FloatArray
    block_of_window: IntArray  # column of source_index: the block, len(block_starts) before
    sources: tuple[tuple[_Mixture, _Mixture], ...]  # by source index: (input, output)
    source_index: IntArray  # (clients, blocks + 1), last column: before the first block
    pooled: npt.NDArray[np.bool_]  # (clients, blocks + 1): True where a PDF is pooled
    without_dataset: tuple[int, ...]  # client numbers with no dataset file

    @property
    def span_s(self) -> float:
        return len(self.starts) * self.window_s


def _client_files(folder: Path) -> tuple[dict[int, Path], dict[int, Path]]:
    traces: dict[int, Path] = {}
    datasets: dict[int, Path] = {}
    for entry in folder.iterdir():
        m = _CLIENT_RE.match(entry.name)
        if m is None:
            continue
        (traces if m.group(2) == "trace.csv" else datasets)[int(m.group(1))] = entry
    return traces, datasets


def load_servegen(folder: str | Path) -> ServeGenData:
    """Read and check every file of a ServeGen model folder (see the module docstring).

    Parsed folders are cached per process by path and the files' sizes and modification
    times, so the daemon's targets or a sweep's runs on one folder read it once."""
    path = Path(folder)
    if not path.is_dir():
        raise InputError("no such folder; servegen:DIR takes one model's folder of the "
                         "ServeGen release (chunk-N-trace.csv and chunk-N-dataset.json files)",
                         path=str(folder))
    traces, datasets = _client_files(path)
    if not traces:
        raise InputError("no chunk-N-trace.csv files: not a ServeGen model folder",
                         path=str(folder))
    orphans = sorted(set(datasets) - set(traces))
    if orphans:
        raise InputError(f"has no chunk-{orphans[0]}-trace.csv: a dataset needs the trace of "
                         "its client", path=str(datasets[orphans[0]]))
    signature = tuple(sorted((p.name, *_stat(p)) for p in (*traces.values(),
                                                           *datasets.values())))
    key = (str(path.resolve()), signature)
    cached = _CACHE.get(key)
    if cached is None:
        cached = _parse_folder(path, traces, datasets)
        _CACHE.clear()  # one folder at a time: a parsed folder is tens of MB
        _CACHE[key] = cached
    return cached


_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...]], ServeGenData] = {}


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_size, st.st_mtime_ns


def _parse_folder(path: Path, traces: Mapping[int, Path],
                  datasets: Mapping[int, Path]) -> ServeGenData:
    clients = sorted(traces)
    rows = [_read_trace(traces[c], c) for c in clients]
    first = rows[0]
    for row in rows[1:]:
        if len(row.starts) != len(first.starts) or not np.array_equal(row.starts,
                                                                      first.starts):
            raise InputError(
                f"its windows differ from {Path(first.path).name}'s ({_grid(row.starts)} vs "
                f"{_grid(first.starts)}); every client of a model shares one window grid",
                path=row.path)
    starts = first.starts
    window = float(starts[1] - starts[0]) if len(starts) > 1 else DEFAULT_WINDOW_S
    rate = np.stack([r.rate for r in rows])
    blocks = {c: _read_dataset(datasets[c]) for c in clients if c in datasets}
    block_starts = np.array(sorted({b.start for bs in blocks.values() for b in bs}),
                            dtype=np.float64)
    n_blocks = len(block_starts)
    block_of_window = np.searchsorted(block_starts, starts, side="right") - 1
    block_col = np.where(block_of_window < 0, n_blocks, block_of_window)  # last: before any
    # Requests of each client in each block (and before the first): the pooling weights.
    volume = np.zeros((len(clients), n_blocks + 1))
    np.add.at(volume.T, block_col, (rate * window).T)
    own: dict[tuple[int, int], tuple[TokenPdf | None, TokenPdf | None]] = {}
    for i, c in enumerate(clients):
        for blk in blocks.get(c, []):
            own[(i, int(np.searchsorted(block_starts, blk.start)))] = blk.pdfs
    if not any(p is not None for pair in own.values() for p in pair):
        raise InputError("no token-length distribution: no client has a dataset file with a "
                         "non-empty input_tokens and output_tokens PDF", path=str(path))
    pooled_by_block: list[tuple[_Mixture, _Mixture]] = []
    whole: list[_Mixture] = []
    for f in range(2):  # the folder's pool, for blocks no client has a PDF for
        items = [(pair[f], volume[i, b]) for (i, b), pair in own.items() if pair[f]]
        if not items:
            raise InputError(f"no client has a non-empty {_TOKEN_FIELDS[f]} PDF",
                             path=str(path))
        whole.append(_mixture([p for p, _ in items if p], [w for _, w in items]))
    for b in range(n_blocks):
        pair_mix: list[_Mixture] = []
        for f in range(2):
            items = [(own[(i, b)][f], volume[i, b]) for i in range(len(clients))
                     if (i, b) in own and own[(i, b)][f] is not None]
            pair_mix.append(_mixture([p for p, _ in items if p], [w for _, w in items])
                            if items else whole[f])
        pooled_by_block.append((pair_mix[0], pair_mix[1]))
    sources: list[tuple[_Mixture, _Mixture]] = []
    index = np.zeros((len(clients), n_blocks + 1), dtype=np.int64)
    pooled = np.zeros((len(clients), n_blocks + 1), dtype=bool)
    shared: dict[int, int] = {}  # id of a pooled pair -> its source index
    for i in range(len(clients)):
        for b in range(n_blocks + 1):
            pool = pooled_by_block[b] if b < n_blocks else (whole[0], whole[1])
            mine = own.get((i, b), (None, None))
            if mine[0] is None and mine[1] is None:
                key = id(pool)
                if key not in shared:
                    shared[key] = len(sources)
                    sources.append(pool)
                index[i, b] = shared[key]
                pooled[i, b] = True
                continue
            inp = _mixture([mine[0]], [1.0]) if mine[0] is not None else pool[0]
            out = _mixture([mine[1]], [1.0]) if mine[1] is not None else pool[1]
            pooled[i, b] = mine[0] is None or mine[1] is None
            index[i, b] = len(sources)
            sources.append((inp, out))
    return ServeGenData(
        path=str(path), name=f"{path.resolve().parent.name}/{path.resolve().name}",
        clients=np.array(clients, dtype=np.int64), starts=starts, window_s=window,
        rate=rate, cv=np.stack([r.cv for r in rows]), law=np.stack([r.law for r in rows]),
        shape=np.stack([r.shape for r in rows]), block_starts=block_starts,
        block_of_window=block_col.astype(np.int64), sources=tuple(sources),
        source_index=index, pooled=pooled,
        without_dataset=tuple(c for c in clients if c not in datasets))


def _grid(starts: FloatArray) -> str:
    step = f", every {starts[1] - starts[0]:g} s" if len(starts) > 1 else ""
    return f"{len(starts)} windows from {starts[0]:g} s{step}"


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class ServeGenSpec:
    """``servegen:DIR[:start=D][:end=D]`` taken apart: the folder and the time range in the
    trace's own seconds (None: its first window / its end)."""

    folder: str
    start_s: float | None = None
    end_s: float | None = None

    @classmethod
    def parse(cls, spec: str) -> ServeGenSpec:
        from aiops.units import parse_duration

        if not spec.startswith(SERVEGEN_PREFIX):
            raise InputError(f"{spec!r} is not servegen:DIR")
        rest = spec[len(SERVEGEN_PREFIX):]
        opts: dict[str, float] = {}
        while True:
            head, sep, tail = rest.rpartition(":")
            key, eq, value = tail.partition("=")
            if not sep or not eq or key not in ("start", "end"):
                if sep and eq and re.fullmatch(r"[a-z_]+", key):
                    raise InputError(f"{spec!r}: unknown option {key!r}; servegen:DIR takes "
                                     ":start=D and :end=D (e.g. servegen:DIR:start=2d:end=9d)")
                break
            if key in opts:
                raise InputError(f"{spec!r}: {key} is given twice")
            zero = re.fullmatch(r"\s*0+(?:\.0*)?\s*[smhdw]?\s*", value) is not None
            opts[key] = 0.0 if zero else parse_duration(value)
            rest = head
        if not rest:
            raise InputError(f"{spec!r}: give the model's folder, servegen:DIR")
        start, end = opts.get("start"), opts.get("end")
        if start is not None and end is not None and end <= start:
            raise InputError(f"{spec!r}: end ({end:g} s) must be after start ({start:g} s)")
        return cls(rest, start, end)


def is_servegen(spec: str) -> bool:
    return spec.startswith(SERVEGEN_PREFIX)


# --------------------------------------------------------------------------- the stream


@dataclass
class ServeGenStream:
    """A ServeGen folder replayed as a :class:`~aiops.sim.stream.RequestStream`.

    Requests are made window by window when asked for (see the module docstring for what is
    measured and what is drawn); only the per-window counts, a few bytes per client and
    window, are kept. ``duration`` is in replayed seconds, after ``time_scale``."""

    data: ServeGenData
    seed: int = 0
    rate_scale: float = 1.0
    time_scale: float = 1.0
    start_s: float | None = None
    end_s: float | None = None
    duration_s: float | None = None
    source: str = ""
    _rate_cache: dict[float, FloatArray] = field(default_factory=dict, init=False,
                                                 repr=False)

    def __post_init__(self) -> None:
        span = self.data.span_s
        start = 0.0 if self.start_s is None else self.start_s
        end = span if self.end_s is None else self.end_s
        where = self.source or SERVEGEN_PREFIX + self.data.path
        if start >= span:
            raise InputError(f"{where}: start {start:g} s is at or after the end of the "
                             f"trace ({span:g} s, {span / 86400:g} days)")
        if end > span + 1e-9:
            raise InputError(f"{where}: end {end:g} s is after the end of the trace "
                             f"({span:g} s, {span / 86400:g} days)")
        self._a = start
        self._b = min(end, span)
        length = (self._b - self._a) * self.time_scale
        self._duration = length
        if self.duration_s is not None and length >= self.duration_s * (1.0 - 1e-12):
            self._duration = self.duration_s  # float residue of (end - start) x time_scale
        self._w = self.data.window_s
        # Windows overlapping the replay, in trace indices [lo, hi).
        end_trace = self._a + self._duration / self.time_scale
        self._lo = math.floor(self._a / self._w)
        self._hi = max(self._lo + 1, math.ceil(end_trace / self._w - 1e-12))
        self._hi = min(self._hi, len(self.data.starts))

    # -- RequestStream -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.data.name

    @property
    def duration(self) -> float:
        return self._duration

    @property
    def meta(self) -> Mapping[str, object]:
        return {"source": self.source or SERVEGEN_PREFIX + self.data.path,
                "kind": "servegen", "seed": self.seed, "rate_scale": self.rate_scale,
                "time_scale": self.time_scale, "start_s": self._a,
                "end_s": self._a + self._duration / self.time_scale,
                "window_s": self._w * self.time_scale, "servegen": self.stats()}

    def chunks(self, span_s: float = DEFAULT_CHUNK_S) -> Iterator[Chunk]:
        if not (math.isfinite(span_s) and span_s > 0):
            raise ValueError(f"span_s must be finite and > 0, got {span_s}")
        n = max(1, math.ceil(self._duration / span_s))
        pieces = self._pieces(range(self._lo, self._hi))
        buf: list[tuple[FloatArray, IntArray, IntArray]] = []
        pending = next(pieces, None)
        for k in range(n):
            start = k * span_s
            last = k == n - 1
            end = self._duration if last else (k + 1) * span_s
            while pending is not None:
                t = pending[0]
                if len(t) and t[0] >= end and not last:
                    break
                cut = len(t) if last else int(np.searchsorted(t, end, side="left"))
                buf.append((t[:cut], pending[1][:cut], pending[2][:cut]))
                if cut < len(t):
                    pending = (t[cut:], pending[1][cut:], pending[2][cut:])
                    break
                pending = next(pieces, None)
            yield Chunk(start, end, *_concat(buf))
            buf = []

    def window(self, start: float, length: float) -> Workload:
        if not (math.isfinite(start) and start >= 0):
            raise ValueError(f"window start must be finite and >= 0, got {start}")
        if not (math.isfinite(length) and length > 0):
            raise ValueError(f"window length must be finite and > 0, got {length}")
        duration = max(0.0, min(length, self._duration - start))
        lo, hi = self._windows_between(start, start + duration)
        t, ctx, gen = _concat(list(self._pieces(range(lo, hi))))
        keep = (t >= start) & (t < start + duration)
        meta = {**self.meta, "offset_s": start}
        return Workload(self.name, np.minimum(t[keep] - start, duration), ctx[keep], gen[keep],
                        duration, meta)

    def rate(self, bin_s: float) -> FloatArray:
        """As :meth:`Workload.rate`. Exact: a window inside one bin adds its counts; the
        arrival times are drawn (tokens are not) only for windows that straddle a bin edge,
        so bins of whole windows cost nothing and minute bins cost one pass of draws."""
        if bin_s in self._rate_cache:
            return self._rate_cache[bin_s].copy()
        widths = rate_bins(self._duration, bin_s)
        n_bins = len(widths)
        if n_bins == 0:
            return widths
        counts = np.zeros(n_bins)
        totals = self._counts().sum(axis=0)
        for w in range(self._lo, self._hi):
            if totals[w - self._lo] == 0:
                continue
            t0, t1 = self._out_span(w)
            b0 = min(int(max(t0, 0.0) // bin_s), n_bins - 1)
            inside = t0 >= 0 and t1 <= self._duration and min(
                int(math.nextafter(t1, -math.inf) // bin_s), n_bins - 1) == b0
            if inside:
                counts[b0] += totals[w - self._lo]
                continue
            t = self._window_times(w)
            t = t[(t >= 0) & (t < self._duration)]
            idx = np.minimum((t // bin_s).astype(np.int64), n_bins - 1)
            counts += np.bincount(idx, minlength=n_bins)
        rates: FloatArray = counts / widths
        self._rate_cache[bin_s] = rates
        return rates.copy()

    def summary(self) -> dict[str, object]:
        """The keys of :meth:`Workload.summary`, from counts and PDFs (nothing drawn but
        the edge windows' times): ``requests`` is exact; the peak is over whole windows
        (``peak_bin_s`` says so); the token means are the PDFs' expectations. ``servegen``
        adds what was measured and what was filled in (see :meth:`stats`)."""
        n = self.expected_requests(exact=True)
        mean_rate = n / self._duration if self._duration > 0 else None
        counts = self._counts()
        per_window = counts.sum(axis=0) / (self._w * self.time_scale)
        in_mean, out_mean = self._token_means(counts)
        return {
            "name": self.name,
            "requests": int(n),
            "duration_s": self._duration,
            "mean_rate": None if mean_rate is None else float(mean_rate),
            "peak_rate": float(per_window.max()) if len(per_window) else None,
            "peak_bin_s": self._w * self.time_scale,
            "mean_context_tokens": in_mean if n else None,
            "mean_generated_tokens": out_mean if n else None,
            "servegen": self.stats(),
        }

    # -- what the folder holds and what was filled in ------------------------------------
    def stats(self) -> dict[str, object]:
        """JSON-safe: clients, those without a dataset file, those drawing any of their
        requests' tokens from the pooled distribution, the share of requests doing so,
        windows with requests but no fitted law (Poisson), windows of the range with no
        traffic at all (service gaps), and the request-weighted mean CV."""
        d = self.data
        sl = slice(self._lo, self._hi)
        volume = d.rate[:, sl] * self._w
        blocks = d.block_of_window[sl]
        pooled = d.pooled[:, blocks]
        total = float(volume.sum())
        pooled_volume = float((volume * pooled).sum())
        busy = volume > 0
        return {
            "folder": d.path,
            "clients": len(d.clients),
            "clients_without_dataset": len(d.without_dataset),
            "clients_pooled_tokens": int((busy & pooled).any(axis=1).sum()),
            "pooled_token_request_share": round(pooled_volume / total, 6) if total else 0.0,
            "windows": self._hi - self._lo,
            "windows_without_traffic": int((~busy).all(axis=0).sum()),
            "client_windows_without_law": int((busy & (d.law[:, sl] == LAW_NONE)).sum()),
            "mean_cv": round(float((d.cv[:, sl] * volume).sum() / total), 4) if total
            else None,
            "trace_window_s": self._w,
        }

    def expected_requests(self, *, exact: bool = False) -> float:
        """Requests in the replay: from the counts, the edge windows pro rata (cheap), or
        exactly (``exact``: the edge windows' arrival times are drawn)."""
        counts = self._counts().sum(axis=0).astype(np.float64)
        total = 0.0
        for i, w in enumerate(range(self._lo, self._hi)):
            t0, t1 = self._out_span(w)
            if t0 >= 0 and t1 <= self._duration:
                total += counts[i]
            elif exact:
                t = self._window_times(w)
                total += np.count_nonzero((t >= 0) & (t < self._duration))
            else:
                overlap = max(0.0, min(t1, self._duration) - max(t0, 0.0))
                total += counts[i] * overlap / (t1 - t0)
        return total

    # -- generation --------------------------------------------------------------------
    def _out_span(self, w: int) -> tuple[float, float]:
        """Window ``w``'s span in replayed seconds (may stick out of [0, duration])."""
        t0 = (w * self._w - self._a) * self.time_scale
        return t0, t0 + self._w * self.time_scale

    def _windows_between(self, t0: float, t1: float) -> tuple[int, int]:
        a = self._a + t0 / self.time_scale
        b = self._a + t1 / self.time_scale
        lo = max(self._lo, math.floor(a / self._w))
        hi = min(self._hi, max(lo + 1, math.ceil(b / self._w)))
        return lo, hi

    @cached_property
    def _count_table(self) -> IntArray:
        d = self.data
        expected = d.rate[:, self._lo:self._hi] * self.rate_scale * self._w * self.time_scale
        whole = np.floor(expected)
        frac = expected - whole
        u = np.empty_like(frac)
        size = int(d.clients.max()) + 1
        for j, w in enumerate(range(self._lo, self._hi)):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, w, COUNT_TAG]))
            u[:, j] = rng.random(size)[d.clients]
        out: IntArray = (whole + (u < frac)).astype(np.int64)
        return out

    def _counts(self) -> IntArray:
        """Requests per client (rows) and window of the range (columns)."""
        return self._count_table

    def _client_rng(self, w: int, i: int) -> np.random.Generator:
        c = int(self.data.clients[i])
        return np.random.default_rng(np.random.SeedSequence([self.seed, w, c]))

    def _fractions(self, rng: np.random.Generator, w: int, i: int, n: int) -> FloatArray:
        """Where client ``i``'s ``n`` requests fall in window ``w``, as fractions of it:
        ``n + 1`` gaps from the fitted law rescaled to fill the window."""
        d = self.data
        law = int(d.law[i, w])
        k = float(d.shape[i, w])
        if law == LAW_GAMMA:
            gaps = rng.gamma(k, 1.0, n + 1)
        elif law == LAW_WEIBULL:
            gaps = rng.weibull(k, n + 1)
        else:  # exponential, or a rate with no fitted law: Poisson arrivals
            gaps = rng.standard_exponential(n + 1)
        np.minimum(gaps, 1e300 / (n + 1), out=gaps)  # a Weibull tail must not sum to inf
        total = float(gaps.sum())
        if not total > 0:  # every gap underflowed (shape << 1): spread evenly
            gaps = np.ones(n + 1)
            total = float(n + 1)
        cum = np.cumsum(gaps[:n])
        cum /= total
        out: FloatArray = np.minimum(cum, math.nextafter(1.0, 0.0))
        return out

    def _window_times(self, w: int) -> FloatArray:
        """Arrival times (replayed seconds) of window ``w``, every client, unsorted."""
        counts = self._counts()[:, w - self._lo]
        t0, _ = self._out_span(w)
        span = self._w * self.time_scale
        parts = [t0 + span * self._fractions(self._client_rng(w, i), w, i, int(n))
                 for i, n in enumerate(counts) if n > 0]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _pieces(self, windows: range) -> Iterator[tuple[FloatArray, IntArray, IntArray]]:
        """Per window, its requests in time order (clients merged), cut to the replay."""
        d = self.data
        counts = self._counts()
        for w in windows:
            col = counts[:, w - self._lo]
            t0, t1 = self._out_span(w)
            span = self._w * self.time_scale
            times: list[FloatArray] = []
            ctx: list[IntArray] = []
            gen: list[IntArray] = []
            source_col = d.source_index[:, d.block_of_window[w]]
            for i in np.flatnonzero(col):
                n = int(col[i])
                rng = self._client_rng(w, int(i))
                times.append(t0 + span * self._fractions(rng, w, int(i), n))
                inp, out = d.sources[int(source_col[i])]
                ctx.append(inp.sample(rng, n))
                gen.append(out.sample(rng, n))
            if not times:
                continue
            t = np.concatenate(times)
            order = np.argsort(t, kind="stable")
            t = t[order]
            c = np.concatenate(ctx)[order]
            g = np.concatenate(gen)[order]
            if t0 < 0 or t1 > self._duration:
                keep = (t >= 0) & (t < self._duration)
                t, c, g = t[keep], c[keep], g[keep]
            yield t, c, g

    def _token_means(self, counts: IntArray) -> tuple[float, float]:
        d = self.data
        total = counts.sum()
        if total == 0:
            return 0.0, 0.0
        blocks = d.block_of_window[self._lo:self._hi]
        src = d.source_index[:, blocks]
        means = np.array([[m.mean for m in pair] for pair in d.sources])
        weights = counts / total
        return (float((weights * means[src, 0]).sum()), float((weights * means[src, 1]).sum()))


def _concat(pieces: list[tuple[FloatArray, IntArray, IntArray]]
            ) -> tuple[FloatArray, IntArray, IntArray]:
    if not pieces:
        return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if len(pieces) == 1:
        return pieces[0]
    return (np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces]),
            np.concatenate([p[2] for p in pieces]))


def servegen_stream(spec: str, *, seed: int = 0, rate_scale: float = 1.0,
                    time_scale: float = 1.0, duration: float | None = None) -> ServeGenStream:
    """The stream ``servegen:DIR[:start=D][:end=D]`` names (every file read and checked)."""
    parsed = ServeGenSpec.parse(spec)
    data = load_servegen(parsed.folder)
    return ServeGenStream(data, seed=seed, rate_scale=rate_scale, time_scale=time_scale,
                          start_s=parsed.start_s, end_s=parsed.end_s, duration_s=duration,
                          source=spec)




def servegen_episode(stream: ServeGenStream, rng: np.random.Generator, *, episode_s: float,
                     stretch: float, mean_rps: float) -> Workload:
    """A training episode from ``stream``'s range: ``episode_s`` replayed seconds at a random
    offset, played ``stretch`` times slower at the same level (the windows last longer, the
    rates stay), scaled so that the range's mean rate becomes ``mean_rps`` — a whole
    service's thousands of requests/s say nothing about the fleet being trained for — with
    a fresh seed. Its own clients' laws and token lengths, as in a replay."""
    a, b = stream._a, stream._b
    mean = float(stream.data.rate[:, stream._lo:stream._hi].sum(axis=0).mean())
    scale = mean_rps / mean if mean > 0 else 1.0
    length = episode_s / stretch
    start = a + float(rng.uniform(0.0, max(0.0, (b - a) - length)))
    episode = ServeGenStream(stream.data, seed=int(rng.integers(2**31)), rate_scale=scale,
                             time_scale=stretch, start_s=start, end_s=min(b, start + length),
                             duration_s=episode_s, source=stream.source)
    return episode.window(0.0, episode.duration)
