"""The digest of the code and data a trained policy depends on, recorded in its ``meta.json``.

A PPO policy is only as good as the simulator, the features, the reward and the evaluation
it was trained with. Rerunning the training to prove that it still matches does not work
across machines: torch's matrix kernels differ by CPU model, and over a training run a
difference in the last bit grows into another policy. What can be checked on any machine is
whether the *inputs* of training changed: ``aiops train`` records a sha256 of every file
listed in :data:`TRAINING_INPUTS` (the simulator, the features, the training and evaluation
code, the policies it is compared with and shielded by, the hardware profiles), and a test
compares them with the files of the checkout. A mismatch names the files that changed: the
policy must be retrained with the command in its ``meta.json``.

Run ``python -m aiops.train.digest`` to print the digest of this checkout, ``--check DIR``
to compare it with a policy's ``meta.json`` (exit 1 on a mismatch), ``--record DIR`` to
write it into a policy's ``meta.json`` (only for a change that cannot affect training, such
as a comment, and only when the policy's other reproduction tests still pass).

Bytes are hashed as they are (CRLF read as LF, so a Windows checkout agrees): any edit of an
input counts, a comment too, because telling a harmless edit from a harmful one is exactly
what the check must not guess.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The ``aiops`` package directory; input paths are relative to it."""

TRAINING_INPUTS: tuple[str, ...] = (
    "sim/*.py",  # the simulated cluster, its kernel, the gym environment, workloads
    "profiles/*.yaml",  # hardware/model profiles: service times, capacity, prices
    "features.py",  # the observation
    "types.py",  # Snapshot, Forecast, Recommendation
    "policy/*.py",  # the PPO shield and fallback, and the baselines of the evaluation
    "forecast/base.py",  # the naive forecast every evaluated policy sees
    "forecast/naive.py",
    "forecast/season.py",
    "forecast/series.py",
    "ingest/traces.py",  # how trace and rate-series workloads are read
    "train/*.py",  # reward, mix, PPO, evaluation, checkpoint selection, the CLI's defaults
)
"""Globs, relative to the package, of every file whose content can change a training run
or the evaluation recorded beside it."""

NOT_INPUTS: tuple[str, ...] = (
    "sim/cli.py",  # ``aiops simulate``: parsing and printing only
    "sim/backend.py",  # the daemon's simulated cluster, not used in training
    "sim/exporter.py",  # the live fleet's /metrics, not used in training
    "train/digest.py",  # this file: how the digest is taken, not what is trained
)


def input_files(root: Path = PACKAGE_DIR) -> list[str]:
    """The input files under ``root``, as sorted package-relative POSIX paths."""
    found: set[str] = set()
    for pattern in TRAINING_INPUTS:
        found.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    return sorted(found - set(NOT_INPUTS))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def training_inputs(root: Path = PACKAGE_DIR) -> dict[str, Any]:
    """``{"sha256": total, "files": {path: sha256}}``: what ``meta.json`` records.

    The total covers each path and its digest, so a renamed or removed file counts too."""
    files = {rel: file_digest(root / rel) for rel in input_files(root)}
    total = hashlib.sha256()
    for rel, digest in files.items():
        total.update(f"{rel}\0{digest}\n".encode())
    return {"sha256": total.hexdigest(), "files": files}


def changed_inputs(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Files added, removed or edited between two :func:`training_inputs` records."""
    before, now = recorded.get("files") or {}, current.get("files") or {}
    return sorted(f for f in set(before) | set(now) if before.get(f) != now.get(f))


def _meta_path(directory: str) -> Path:
    return Path(directory) / "meta.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aiops.train.digest",
        description="The digest of the code and data training depends on.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", metavar="DIR",
                       help="compare with DIR/meta.json; exit 1 when they differ")
    group.add_argument("--record", metavar="DIR",
                       help="write this checkout's digest into DIR/meta.json")
    args = parser.parse_args(argv)
    current = training_inputs()
    if args.check is None and args.record is None:
        print(current["sha256"])
        return 0
    path = _meta_path(args.check or args.record)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    if args.record is not None:
        meta["training_inputs"] = current
        path.write_text(json.dumps(meta, indent=2) + "\n")
        print(f"recorded {current['sha256']} in {path}")
        return 0
    changed = changed_inputs(meta.get("training_inputs") or {}, current)
    if not changed:
        print(f"{path}: trained on this checkout's inputs ({current['sha256']})")
        return 0
    print(f"{path}: changed since training: {', '.join(changed)}; retrain with the command "
          "in meta.json", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
