"""Error hierarchy: every error says what the caller should do next.

The daemon's loop dispatches on the class, not on the message: a ``TransientError`` is
retried with backoff, a ``PermanentError`` stops work on that target until the config
changes, a ``DataQualityError`` turns into a safe hold, an ``ActuationError`` is reported
and retried on the next tick. Command-line tools map ``InputError`` to exit code 2.
"""

from __future__ import annotations


class AiopsError(Exception):
    """Base class of every error aiops raises on purpose."""


class TransientError(AiopsError):
    """Worth retrying later (timeouts, 5xx, 409 conflicts)."""


class PermanentError(AiopsError):
    """Retrying will not help until something outside aiops changes."""


class DataQualityError(AiopsError):
    """Metrics exist but cannot be trusted (empty, NaN, stale, several series)."""


class ActuationError(AiopsError):
    """The decision could not be applied to the target."""


class InputError(PermanentError):
    """A file or argument given by the user is malformed.

    The message names the file, the line (1-based, counting the header) and the problem,
    so the user can fix the input without reading our code.
    """

    def __init__(self, problem: str, *, path: str | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(f"{where}{problem}")
