"""Which heavy modules a piece of code pulls in, measured in a fresh interpreter.

``aiops --help`` and every command module must stay light: each test that guards an import
boundary runs its statement here, in a subprocess so this test session's imports don't count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def heavy_imports(statement: str, modules: Iterable[str]) -> list[str]:
    """The names in ``modules`` loaded (themselves or any submodule) after ``statement``."""
    names = sorted(modules)
    code = (f"{statement}\nimport json, sys\n"
            f"names = {names!r}\n"
            "print(json.dumps([n for n in names if any(m == n or m.startswith(n + '.') "
            "for m in sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    if done.returncode != 0:
        raise AssertionError(f"the statement failed: {done.stderr}")
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded
