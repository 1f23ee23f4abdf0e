"""External programs the tests use (kubectl, Prometheus, Chromium): found, or skipped with
the reason, or — where a skip would hide a gap — failed.

``CI`` (set by CI), ``AIOPS_REQUIRE_TOOLS=1`` (set by ``.ci/run``) or the older
``AIOPS_REQUIRE_PROMETHEUS=1`` say "no skipping": a missing program then fails the test
with the command that installs it, so a green run always means the check ran.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_VARS = ("CI", "AIOPS_REQUIRE_TOOLS", "AIOPS_REQUIRE_PROMETHEUS")


def required() -> bool:
    """True when a missing tool must fail the run rather than skip."""
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false")
               for v in REQUIRE_VARS)


def missing(reason: str) -> None:
    """Skip with ``reason``, or fail with it where skipping is not allowed."""
    if required():
        pytest.fail(f"{reason} (CI runs every test: no skipping)", pytrace=False)
    pytest.skip(reason)


def find(program: str, *, env: str | None = None, install: str) -> str:
    """The path of ``program`` (``env`` may name an override variable), else skip/fail
    saying how to install it."""
    path = (os.environ.get(env) if env else None) or shutil.which(program)
    if not path:
        missing(f"{program} is not installed; install it with: {install}")
    assert path is not None
    return path
