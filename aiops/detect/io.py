"""Reading ``timestamp,value`` CSV files (the NAB layout) and writing scores next to them.

Parsing is done row by row with the ``csv`` module, so that every problem can be reported
with its line number (1-based, the header is line 1) instead of surfacing from pandas or
numpy. A missing value (empty, ``nan``) is data, not an error: the detector scores it 0.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from aiops.detect.base import FloatArray
from aiops.errors import InputError

_MISSING = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "na"}


@dataclass(frozen=True)
class Series:
    """One file's rows: the original text (written back unchanged) and parsed numbers."""

    path: Path
    timestamp_text: tuple[str, ...]
    value_text: tuple[str, ...]
    t: FloatArray  # Unix seconds
    x: FloatArray  # NaN where the value is missing


def parse_time(text: str) -> float:
    """Unix seconds from ISO 8601 (naive = UTC, as NAB's files are) or a plain number."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise ValueError(f"timestamp {text!r} is not finite")
        return v
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def read_series(path: Path, *, unsorted: str = "error") -> Series:
    """Read one CSV with ``timestamp`` and ``value`` columns; ``InputError`` on bad input.

    Rows must be in time order (equal timestamps are allowed: they are the same instant);
    a row earlier than the one before it is an error naming both lines, as for every other
    command that reads a time series, unless ``unsorted="skip"``: the detector then skips
    such rows and scores them 0 (NAB's ``machine_temperature`` file repeats an hour).
    A file with a header and no rows is an error too: there is nothing to score.
    """
    if unsorted not in ("error", "skip"):
        raise ValueError(f"unsorted={unsorted!r} must be 'error' or 'skip'")
    name = str(path)
    if path.is_dir():
        raise InputError("is a directory, not a CSV file", path=name)
    if not path.exists():
        raise InputError("no such file", path=name)
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=name) from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError("empty file (expected a header: timestamp,value)",
                                 path=name, line=1)
            cols = [h.strip().lower() for h in header]
            if "timestamp" not in cols or "value" not in cols:
                raise InputError(f"header {header!r} needs columns 'timestamp' and 'value'",
                                 path=name, line=1)
            ti, vi = cols.index("timestamp"), cols.index("value")
            ts_text: list[str] = []
            val_text: list[str] = []
            t: list[float] = []
            x: list[float] = []
            latest, latest_line = -math.inf, 0
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                if len(row) != len(header):
                    raise InputError(f"{len(row)} fields, the header has {len(header)}",
                                     path=name, line=line)
                try:
                    t.append(parse_time(row[ti]))
                except ValueError:
                    raise InputError(f"timestamp {row[ti]!r} is neither ISO 8601 nor a number",
                                     path=name, line=line) from None
                if t[-1] < latest and unsorted == "error":
                    raise InputError(
                        f"timestamp {row[ti]!r} is earlier than {ts_text[-1]!r} on line "
                        f"{latest_line}; rows must be in time order (--unsorted skip scores "
                        "such rows 0 instead)", path=name, line=line)
                if t[-1] >= latest:
                    latest, latest_line = t[-1], line
                raw = row[vi].strip()
                if raw in _MISSING:
                    x.append(math.nan)
                else:
                    try:
                        x.append(float(raw))
                    except ValueError:
                        raise InputError(f"value {row[vi]!r} is not a number",
                                         path=name, line=line) from None
                ts_text.append(row[ti])
                val_text.append(row[vi])
        except csv.Error as exc:
            raise InputError(f"not valid CSV: {exc}", path=name, line=reader.line_num) from None
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text", path=name) from None
    if not t:
        raise InputError("no data rows after the header (expected timestamp,value rows)",
                         path=name, line=2)
    return Series(path, tuple(ts_text), tuple(val_text),
                  np.asarray(t, dtype=np.float64), np.asarray(x, dtype=np.float64))


def write_scores(path: Path, series: Series, scores: FloatArray) -> None:
    """``timestamp,value,anomaly_score``, one row per input row, input text kept as is."""
    if len(scores) != len(series.t):
        raise ValueError(f"{len(scores)} scores for {len(series.t)} rows")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "value", "anomaly_score"])
        for ts, v, s in zip(series.timestamp_text, series.value_text, scores, strict=True):
            w.writerow([ts, v, f"{float(s):.6f}"])
