"""Load request traces and rate series from CSV files.

Two kinds of file are understood, told apart by their header (:func:`sniff_csv_kind`):

* a **request trace**, one row per request: ``TIMESTAMP,ContextTokens,GeneratedTokens``
  (the Azure LLM inference trace layout). Replayed request by request.
* a **rate series**, one row per interval: ``timestamp,value`` (the NAB layout). Read as a
  load shape; the simulator turns it into Poisson arrivals.

Header names are matched case-insensitively and extra columns are ignored, so a trace with
an added column still loads. Timestamps are ISO 8601 (any number of fractional digits — the
Azure trace has 7; a naive time is taken as UTC, an offset is honoured) or plain numbers,
read as Unix seconds (the first row decides which). Rows must be in time order; equal
timestamps are allowed because real files have them (NAB's daylight-saving repeats). Blank
lines are skipped.

Every problem raises :class:`~aiops.errors.InputError` naming the file, the 1-based line
(the header is line 1) and what is wrong, so the user can fix the file without reading code.

This module is shared with the forecasting and anomaly training code: it must not import
``aiops.sim``. Parsing is done by pandas' C reader with the token/value columns typed as
floats up front (a 1M-row trace loads in about 1.5 s); only when that fast read finds a
problem is the file read again as text to locate the offending line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from aiops.errors import InputError
from aiops.types import FloatArray, IntArray

CsvKind = Literal["request_trace", "rate_series"]

TRACE_COLUMNS: tuple[str, str, str] = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
"""Header of a request trace (the Azure LLM inference trace 2023 layout)."""

SERIES_COLUMNS: tuple[str, str] = ("timestamp", "value")
"""Header of a rate series (the Numenta Anomaly Benchmark layout)."""

_HEADER_LINE = 1
_FIRST_DATA_LINE = 2


@dataclass(frozen=True, eq=False)
class RequestTrace:
    """One row per request, in file order (which is time order).

    ``timestamps`` are Unix seconds (float64: sub-microsecond resolution at today's epoch,
    finer than any trace records). Token counts are >= 0 as read; turning 0 into 1 is the
    simulator's business, not the loader's.
    """

    path: str
    timestamps: FloatArray
    context_tokens: IntArray
    generated_tokens: IntArray

    def __len__(self) -> int:
        return len(self.timestamps)


@dataclass(frozen=True, eq=False)
class RateSeries:
    """One row per interval: row ``i`` covers ``[timestamps[i], timestamps[i+1])``.

    ``values`` are whatever the file measures (requests, taxi rides, bytes...), finite and
    >= 0; the caller decides how they map to requests/s. ``interval`` is the median spacing
    in seconds: robust to the odd gap or repeated stamp, and the span given to the last row.
    """

    path: str
    timestamps: FloatArray
    values: FloatArray
    interval: float

    def __len__(self) -> int:
        return len(self.timestamps)


def sniff_csv_kind(path: str | Path) -> CsvKind:
    """Tell a request trace from a rate series by the header line alone (cheap on big files)."""
    p = _check_path(path)
    header = _read_header(p)
    lowered = {name.lower() for name in header}
    if {c.lower() for c in TRACE_COLUMNS} <= lowered:
        return "request_trace"
    if {c.lower() for c in SERIES_COLUMNS} <= lowered:
        return "rate_series"
    raise InputError(
        f"unrecognised header; found columns: {_list(header)}; expected a request trace "
        f"({','.join(TRACE_COLUMNS)}) or a rate series ({','.join(SERIES_COLUMNS)})",
        path=str(p),
        line=_HEADER_LINE,
    )


def load_request_trace(path: str | Path) -> RequestTrace:
    """Read a ``TIMESTAMP,ContextTokens,GeneratedTokens`` CSV.

    Raises InputError for a missing file or column, an empty file or one with no rows, an
    unparsable timestamp or number, a negative or fractional token count, and timestamps
    that go backwards.
    """
    p = _check_path(path)
    header = _read_header(p)
    ts_col, ctx_col, gen_col = _find_columns(header, TRACE_COLUMNS, p, "a request trace")
    table = _read_table(p, header, ts_col, (ctx_col, gen_col))
    timestamps = _parse_timestamps(table, p, header[ts_col])
    _check_order(timestamps, table, p)
    ctx = _check_tokens(table.numbers[0], table, p, header[ctx_col])
    gen = _check_tokens(table.numbers[1], table, p, header[gen_col])
    return RequestTrace(
        path=str(p), timestamps=timestamps, context_tokens=ctx, generated_tokens=gen
    )


def load_rate_series(path: str | Path) -> RateSeries:
    """Read a ``timestamp,value`` CSV.

    Needs at least two rows: the interval a row covers is only known from its neighbours.
    Raises InputError for the same file problems as :func:`load_request_trace`, plus NaN,
    infinite and negative values (a rate cannot be any of those, and silently reading NaN
    as zero load is the kind of quiet error DESIGN principle 6 forbids).
    """
    p = _check_path(path)
    header = _read_header(p)
    ts_col, value_col = _find_columns(header, SERIES_COLUMNS, p, "a rate series")
    table = _read_table(p, header, ts_col, (value_col,))
    timestamps = _parse_timestamps(table, p, header[ts_col])
    _check_order(timestamps, table, p)
    values = _check_values(table.numbers[0], table, p, header[value_col])
    if len(timestamps) < 2:
        raise InputError(
            "a rate series needs at least 2 rows: the interval a row covers is the gap to "
            "the next one",
            path=str(p),
            line=int(table.lines[0]),
        )
    interval = float(np.median(np.diff(timestamps)))
    if interval <= 0:
        raise InputError(
            "most timestamps repeat (median spacing is 0 s); cannot tell the interval",
            path=str(p),
        )
    return RateSeries(path=str(p), timestamps=timestamps, values=values, interval=interval)


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Table:
    """The parsed columns of a file, blank lines removed; ``lines[i]`` is row i's line."""

    raw_time: npt.NDArray[np.object_]
    numbers: tuple[FloatArray, ...]
    lines: IntArray


def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", path=str(p))
    if p.is_dir():
        raise InputError("is a directory, not a CSV file", path=str(p))
    return p


def _read_header(p: Path) -> list[str]:
    try:
        with p.open(encoding="utf-8-sig", newline="") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text; expected a CSV file", path=str(p)) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=str(p)) from None
    if not first.strip():
        problem = "empty file" if not first else "the header line is blank"
        raise InputError(
            f"{problem}; expected a header such as {','.join(TRACE_COLUMNS)} or "
            f"{','.join(SERIES_COLUMNS)}",
            path=str(p),
            line=_HEADER_LINE,
        )
    return [name.strip() for name in next(csv.reader([first]))]


def _find_columns(
    header: list[str], wanted: tuple[str, ...], p: Path, kind: str
) -> tuple[int, ...]:
    """Positions of ``wanted`` in ``header``, matched case-insensitively."""
    positions = {name.lower(): i for i, name in reversed(list(enumerate(header)))}
    missing = [w for w in wanted if w.lower() not in positions]
    if missing:
        raise InputError(
            f"missing column {_list(missing)}; found columns: {_list(header)}; "
            f"{kind} needs {','.join(wanted)}",
            path=str(p),
            line=_HEADER_LINE,
        )
    return tuple(positions[w.lower()] for w in wanted)


def _read_table(p: Path, header: list[str], ts_col: int, num_cols: tuple[int, ...]) -> _Table:
    """Read the timestamp column as text and ``num_cols`` as float64.

    Columns are renamed ``c0, c1, ...`` by position so stray spaces or odd names in the
    header cannot break the dtype mapping. ``skip_blank_lines=False`` keeps row i on line
    i + 2, which makes the line numbers in error messages exact; blank rows are dropped
    afterwards.
    """
    names = [f"c{i}" for i in range(len(header))]
    dtypes: dict[Hashable, str] = {names[ts_col]: "str"}
    dtypes.update({names[c]: "float64" for c in num_cols})
    try:
        frame = pd.read_csv(
            p,
            header=0,
            names=names,
            dtype=dtypes,
            keep_default_na=False,
            na_values={names[c]: [""] for c in num_cols},
            encoding="utf-8-sig",
            skip_blank_lines=False,
            skipinitialspace=True,
        )
        fast_ok = True
    except pd.errors.ParserError as e:
        raise _parser_error(e, p) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text; expected a CSV file", path=str(p)) from None
    except (ValueError, TypeError):
        fast_ok = False  # a non-number somewhere: find it on the slow path below

    if fast_ok:
        raw_time = frame.iloc[:, ts_col].to_numpy(dtype=object)
        numbers = tuple(frame.iloc[:, c].to_numpy(dtype=np.float64) for c in num_cols)
        blank = (raw_time == "") & np.logical_and.reduce([np.isnan(n) for n in numbers])
        kept = ~blank
        if not np.isnan(np.concatenate([n[kept] for n in numbers])).any():
            lines = np.flatnonzero(kept).astype(np.int64) + _FIRST_DATA_LINE
            table = _Table(raw_time[kept], tuple(n[kept] for n in numbers), lines)
            _check_not_empty(table, p)
            return table
    return _read_table_slow(p, header, ts_col, num_cols)


def _read_table_slow(
    p: Path,
    header: list[str],
    ts_col: int,
    num_cols: tuple[int, ...],
) -> _Table:
    """Text read that reports the first bad number with its line and the text found."""
    try:
        frame = pd.read_csv(
            p,
            header=0,
            names=[f"c{i}" for i in range(len(header))],
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            skip_blank_lines=False,
            skipinitialspace=True,
        )
    except pd.errors.ParserError as e:
        raise _parser_error(e, p) from None
    text = [frame.iloc[:, c].to_numpy(dtype=object) for c in (ts_col, *num_cols)]
    blank = np.logical_and.reduce([col == "" for col in text])
    kept = ~blank
    lines = np.flatnonzero(kept).astype(np.int64) + _FIRST_DATA_LINE
    numbers: list[FloatArray] = []
    for c, col in zip(num_cols, text[1:], strict=True):
        kept_text = col[kept]
        parsed = pd.to_numeric(pd.Series(kept_text), errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(np.isnan(parsed) & (kept_text != "nan") & (kept_text != "NaN"))
        empty = np.flatnonzero(kept_text == "")
        first_bad = min([*bad[:1], *empty[:1]], default=None)
        if first_bad is not None:
            found = str(kept_text[first_bad])
            what = "is missing or empty" if found == "" else f"is not a number: {found!r}"
            raise InputError(f"{header[c]} {what}", path=str(p), line=int(lines[first_bad]))
        numbers.append(parsed)
    table = _Table(text[0][kept], tuple(numbers), lines)
    _check_not_empty(table, p)
    return table


def _check_not_empty(table: _Table, p: Path) -> None:
    if len(table.lines) == 0:
        raise InputError(
            "the file has a header but no data rows", path=str(p), line=_FIRST_DATA_LINE
        )


_PANDAS_LINE = re.compile(r"line (\d+)")
_PANDAS_ROW = re.compile(r"EOF inside string starting at row (\d+)")


def _parser_error(e: Exception, p: Path) -> InputError:
    """Turn pandas' tokenizer error into an InputError on the file's line. Its "line N" is
    already 1-based with the header; its "row N" (an unclosed quote) counts from 0 with the
    header, so the line is N + 1."""
    message = str(e).strip()
    match = _PANDAS_LINE.search(message)
    line = int(match.group(1)) if match else None
    detail = message.split("C error:")[-1].strip()
    detail = _PANDAS_LINE.sub("this line", detail)
    quote = _PANDAS_ROW.search(message)
    if quote is not None:
        line = int(quote.group(1)) + 1
        detail = "a quote opened on this line is never closed"
    return InputError(f"malformed CSV row: {detail}", path=str(p), line=line)


def _parse_timestamps(table: _Table, p: Path, column: str) -> FloatArray:
    """ISO 8601 (naive = UTC) or numeric Unix seconds, to float64 Unix seconds."""
    raw = table.raw_time
    empty = np.flatnonzero(raw == "")
    if len(empty):
        line = int(table.lines[empty[0]])
        raise InputError(f"{column} is missing or empty", path=str(p), line=line)
    series = pd.Series(raw, dtype=object)
    # The first row decides: a plain number means Unix seconds for the whole column. Asking
    # the ISO parser first would read "2023" or "20231116" as dates.
    if _looks_numeric(str(raw[0])):
        numeric = pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
        bad_num = np.flatnonzero(~np.isfinite(numeric))
        if len(bad_num) == 0:
            return numeric
        first = int(bad_num[0])
        raise InputError(
            f"{column} is not a number of Unix seconds like the first row: {raw[first]!r}",
            path=str(p),
            line=int(table.lines[first]),
        )
    parsed = pd.to_datetime(series, format="ISO8601", utc=True, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad) == 0:
        epoch = pd.Timestamp(0, tz="UTC")
        return np.asarray((parsed - epoch) / pd.Timedelta(seconds=1), dtype=np.float64)
    first = int(bad[0])
    raise InputError(
        f"{column} is not an ISO 8601 date-time (e.g. 2023-11-16 18:17:03.97996) "
        f"or is out of range: {raw[first]!r}",
        path=str(p),
        line=int(table.lines[first]),
    )


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_order(timestamps: FloatArray, table: _Table, p: Path) -> None:
    back = np.flatnonzero(timestamps[1:] < timestamps[:-1])
    if len(back):
        i = int(back[0]) + 1
        raise InputError(
            f"timestamps out of order: {table.raw_time[i]!r} comes after "
            f"{table.raw_time[i - 1]!r} on line {int(table.lines[i - 1])}; "
            "rows must be sorted by time",
            path=str(p),
            line=int(table.lines[i]),
        )


def _check_tokens(values: FloatArray, table: _Table, p: Path, column: str) -> IntArray:
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0) | (values != np.floor(values)))
    if len(bad):
        i = int(bad[0])
        v = values[i]
        what = "is negative" if v < 0 else "is not a whole number"
        raise InputError(
            f"{column} {what}: {v:g}; token counts are integers >= 0",
            path=str(p),
            line=int(table.lines[i]),
        )
    return values.astype(np.int64)


def _check_values(values: FloatArray, table: _Table, p: Path, column: str) -> FloatArray:
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        i = int(bad[0])
        v = values[i]
        what = "is negative" if v < 0 else "is not finite"
        raise InputError(
            f"{column} {what}: {v:g}; a rate series needs finite values >= 0",
            path=str(p),
            line=int(table.lines[i]),
        )
    return values


def _list(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "(none)"
