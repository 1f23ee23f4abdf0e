"""Parsing of human durations ("90s", "15m", "7d") used by the command line and the config."""

from __future__ import annotations

import re

from aiops.errors import InputError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number (seconds) or a number with a unit ms, s, m, h, d or w."""
    match = _PATTERN.match(text)
    if match is None:
        raise InputError(
            f"{text!r} is not a duration; use a number of seconds or e.g. 90s, 15m, 2h, 7d"
        )
    value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if value <= 0:
        raise InputError(f"duration {text!r} must be > 0")
    return value
