"""bench/detect.py: how ``--detectors`` is cut into detector specs."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "bench" / "detect.py"


def _load() -> dict[str, Any]:
    """The benchmark's functions (its ``main`` does not run: not loaded as ``__main__``)."""
    return runpy.run_path(str(BENCH))


def test_detector_list_keeps_json_values_with_commas_whole() -> None:
    bench = _load()
    text = 'knn-novelty,ensemble:members=["knn-novelty","seasonal"];combine="max",knn:short=10'
    assert bench["split_specs"](text) == [
        "knn-novelty", 'ensemble:members=["knn-novelty","seasonal"];combine="max"',
        "knn:short=10"]
    # each spec then splits into a name and parameters the way ``aiops detect`` reads them
    assert bench["split_spec"](bench["split_specs"](text)[1]) == (
        "ensemble", ['members=["knn-novelty","seasonal"]', 'combine="max"'])


def test_plain_lists_and_quoted_commas() -> None:
    bench = _load()
    assert bench["split_specs"]("knn,seasonal,,hbos") == ["knn", "seasonal", "hbos"]
    assert bench["split_specs"]('seasonal:label="a,b"') == ['seasonal:label="a,b"']
    assert bench["split_specs"]("") == []
