"""ServeGen folders (servegen:DIR): parsing as data, every error case, and the stream.

Every folder here is built in tmp_path in the release's format (tests never read the real
data): ``chunk-N-trace.csv`` lines ``window_start_s,rate,cv,pattern,shape,scale`` and
``chunk-N-dataset.json`` ``{block_start_s: {"input_tokens": "{...}", "output_tokens": ...}}``.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aiops.cli import app
from aiops.errors import InputError
from aiops.sim import workloads as wl
from aiops.sim.servegen import (
    PdfError,
    ServeGenSpec,
    load_servegen,
    parse_pdf,
    servegen_episode,
    servegen_stream,
)
from aiops.sim.stream import RequestStream, WorkloadStream
from aiops.sim.workloads import materialise, resolve_stream, resolve_workload

W = 600.0


def trace_lines(rates: list[float], law: str = "Gamma", shape: float = 1.0) -> list[str]:
    """One line per 600 s window; a zero rate is written as the release writes it."""
    out = []
    for i, r in enumerate(rates):
        if r == 0:
            out.append(f"{int(i * W)},0,0,,0,0")
        else:
            out.append(f"{int(i * W)},{r},{1 / math.sqrt(shape):.4f},{law},{shape},0.01")
    return out


def pdf(d: dict[int, float]) -> str:
    return repr(d)  # the release writes Python's repr of a dict


def dataset(blocks: dict[int, tuple[dict[int, float], dict[int, float]]]) -> str:
    return json.dumps({str(k): {"input_tokens": pdf(i), "output_tokens": pdf(o)}
                       for k, (i, o) in blocks.items()}, indent=2)


def make_folder(root: Path, clients: dict[int, tuple[list[str], str | None]]) -> Path:
    folder = root / "lang" / "m-test"
    folder.mkdir(parents=True, exist_ok=True)
    for c, (lines, data) in clients.items():
        (folder / f"chunk-{c}-trace.csv").write_text("\n".join(lines) + "\n")
        if data is not None:
            (folder / f"chunk-{c}-dataset.json").write_text(data)
    return folder


def simple_folder(tmp_path: Path, windows: int = 6) -> Path:
    """Client 0: 2 req/s, tokens 10 -> 5 then 20 -> 7 from block 1800; client 1: 1 req/s,
    no dataset (pooled); client 2: bursty, tokens 30 -> 9; the window at 1200 s idle."""
    rates0 = [2.0] * windows
    rates1 = [1.0] * windows
    rates2 = [0.5] * windows
    for r in (rates0, rates1, rates2):
        r[2] = 0.0
    return make_folder(tmp_path, {
        0: (trace_lines(rates0), dataset({0: ({10: 1.0}, {5: 1.0}),
                                          1800: ({20: 1.0}, {7: 1.0})})),
        1: (trace_lines(rates1, "Weibull", 0.7), None),
        2: (trace_lines(rates2, "Gamma", 0.25), dataset({0: ({30: 1.0}, {9: 1.0}),
                                                         1800: ({30: 1.0}, {9: 1.0})})),
    })


# --------------------------------------------------------------------------- PDFs


def test_pdf_parses_python_literals_as_data() -> None:
    p = parse_pdf("{3: 0.25, 1: 5e-01,\n 7: .25,}")
    assert p is not None
    assert list(p.values) == [1, 3, 7]
    assert p.cdf == pytest.approx([0.5, 0.75, 1.0])
    assert parse_pdf("{}") is None
    assert parse_pdf(" { } ") is None
    rng = np.random.default_rng(0)
    draws = p.sample(rng.random(20_000))
    assert np.mean(draws == 1) == pytest.approx(0.5, abs=0.02)


def test_pdf_zero_tokens_become_one() -> None:
    p = parse_pdf("{0: 1.0}")
    assert p is not None and set(p.sample(np.array([0.1, 0.9]))) == {1}


@pytest.mark.parametrize(("text", "problem"), [
    ("[1, 2]", "dict literal"),
    ("{1: 0.5, 2: 0.5", "dict literal"),
    ("{a: 1.0}", "not a whole number of tokens"),
    ("{-3: 1.0}", "negative token count"),
    ("{1.5: 1.0}", "not a whole number of tokens"),
    ("{1: -0.5, 2: 1.5}", "negative probability"),
    ("{1: nan}", "not a probability"),
    ("{1: 0.5 2: 0.5}", "not TOKENS: PROBABILITY"),
    ("{1: 0.5, 1: 0.5}", "appears twice"),
    ("{1: 0.5, 2: 0.4}", "sum to 0.9"),
    ("{1: 2.0}", "above 1"),
    ("{1: __import__('os').getcwd()}", "not a probability"),
])
def test_pdf_errors_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(PdfError, match=problem):
        parse_pdf(text)


def test_pdf_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"{{1: (open({str(marker)!r}, 'w').close() or 1.0)}}"
    with pytest.raises(PdfError):
        parse_pdf(text)
    assert not marker.exists()


# --------------------------------------------------------------------------- loader errors


def load_error(folder: Path) -> str:
    with pytest.raises(InputError) as info:
        load_servegen(folder)
    return str(info.value)


GOOD_DATA = dataset({0: ({10: 1.0}, {5: 1.0})})


@pytest.mark.parametrize(("line", "problem"), [
    ("600,1.0,1.0,Gamma,1.0", "expected 6 comma-separated fields"),
    ("600,fast,1.0,Gamma,1.0,0.1", "rate 'fast' is not a number"),
    ("600,-1,1.0,Gamma,1.0,0.1", "rate '-1' must be a finite number >= 0"),
    ("600,inf,1.0,Gamma,1.0,0.1", "rate 'inf' must be a finite number"),
    ("600,1.0,-2,Gamma,1.0,0.1", "cv '-2' must be a finite number >= 0"),
    ("600,1.0,1.0,Pareto,1.0,0.1", "unknown inter-arrival pattern 'Pareto'"),
    ("600,1.0,1.0,Gamma,0,0.1", "Gamma shape '0' must be a finite number > 0"),
    ("600,1.0,1.0,Weibull,-1,0.1", "Weibull shape '-1' must be"),
    ("600,1.0,1.0,Gamma,1.0,0", "Gamma scale '0' must be a finite number > 0"),
    ("0,1.0,1.0,Gamma,1.0,0.1", "is not after the previous one"),
    ("900,1.0,1.0,Gamma,1.0,0.1", "evenly spaced"),
    ("x,1.0,1.0,Gamma,1.0,0.1", "window start 'x' is not a number"),
])
def test_trace_errors_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    lines = ["0,1.0,1.0,Gamma,1.0,0.1", line, "1800,1.0,1.0,Gamma,1.0,0.1"]
    if "evenly" in problem:
        lines = ["0,1.0,1.0,Gamma,1.0,0.1", "600,1.0,1.0,Gamma,1.0,0.1", line]
    folder = make_folder(tmp_path, {0: (lines, GOOD_DATA)})
    message = load_error(folder)
    line_no = 3 if "evenly" in problem else 2
    assert f"chunk-0-trace.csv, line {line_no}: " in message
    assert problem in message


def test_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {0: (["0,1.0,1.0,Gamma,1.0,0.1", "",
                                         "600,1.0,1.0,Bad,1.0,0.1"], GOOD_DATA)})
    assert "chunk-0-trace.csv, line 3: unknown inter-arrival pattern" in load_error(folder)


def test_folder_level_errors(tmp_path: Path) -> None:
    assert "no such folder" in load_error(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    assert "no chunk-N-trace.csv files" in load_error(tmp_path / "empty")
    folder = make_folder(tmp_path / "orphan", {0: (trace_lines([1.0]), GOOD_DATA)})
    (folder / "chunk-7-dataset.json").write_text(GOOD_DATA)
    message = load_error(folder)
    assert "chunk-7-dataset.json" in message and "has no chunk-7-trace.csv" in message
    folder = make_folder(tmp_path / "grid", {0: (trace_lines([1.0, 1.0]), GOOD_DATA),
                                             1: (trace_lines([1.0, 1.0, 1.0]), None)})
    message = load_error(folder)
    assert "chunk-1-trace.csv" in message and "windows differ from chunk-0-trace.csv" in message
    folder = make_folder(tmp_path / "blank", {0: ([""], GOOD_DATA)})
    assert "chunk-0-trace.csv: the trace has no windows" in load_error(folder)
    folder = make_folder(tmp_path / "nopdf", {0: (trace_lines([1.0]),
                                                  dataset({0: ({}, {})})),
                                              1: (trace_lines([1.0]), None)})
    assert "no token-length distribution" in load_error(folder)


def bad_dataset(tmp_path: Path, text: str) -> str:
    return load_error(make_folder(tmp_path, {0: (trace_lines([1.0, 1.0]), text)}))


def test_dataset_errors_name_file_and_line(tmp_path: Path) -> None:
    good = {"input_tokens": "{10: 1.0}", "output_tokens": "{5: 1.0}"}
    text = json.dumps({"0": good, "600": {"input_tokens": "{10: 0.5, 11: 0.6}",
                                          "output_tokens": "{5: 1.0}"}}, indent=2)
    message = bad_dataset(tmp_path / "a", text)
    # Line 7 of the pretty-printed file holds block 600's input_tokens.
    assert "chunk-0-dataset.json, line 7: block 600: input_tokens: probabilities sum" in message
    message = bad_dataset(tmp_path / "b", '{"0": {"input_tokens": "{1: 1.0}",\n "output')
    assert "chunk-0-dataset.json, line 2: not valid JSON" in message
    message = bad_dataset(tmp_path / "c", "[1, 2]")
    assert "chunk-0-dataset.json, line 1: expected an object" in message
    message = bad_dataset(tmp_path / "d", json.dumps({"0": good, "later": good}, indent=2))
    assert "line 6: block key 'later' is not a start time" in message
    message = bad_dataset(tmp_path / "e", json.dumps({"0": {"input_tokens": "{1: 1.0}"}},
                                                     indent=2))
    assert "line 2: block 0: no 'output_tokens'" in message
    message = bad_dataset(tmp_path / "f", json.dumps(
        {"0": {"input_tokens": {"1": 1.0}, "output_tokens": "{1: 1.0}"}}, indent=2))
    assert "line 3: block 0: input_tokens must be a string holding a PDF" in message
    message = bad_dataset(tmp_path / "g", json.dumps({"0": [1]}, indent=2))
    assert "block 0: expected an object" in message
    message = bad_dataset(tmp_path / "h", json.dumps(
        {"0": {"input_tokens": "{1: 1.0}", "output_tokens": "print('x')"}}, indent=2))
    assert "line 4: block 0: output_tokens: a PDF is a {tokens: probability" in message


@pytest.mark.parametrize(("suffix", "problem"), [
    (":speed=2", "unknown option 'speed'"),
    (":start=2d:end=1d", r"end \(86400 s\) must be after start"),
    (":start=1d:start=2d", "start is given twice"),
    (":start=soon", "'soon' is not a duration"),
])
def test_spec_errors(suffix: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        ServeGenSpec.parse("servegen:some/dir" + suffix)


def test_spec_options_and_range_checks(tmp_path: Path) -> None:
    spec = ServeGenSpec.parse("servegen:a:b/dir:start=0:end=1.5h")
    assert (spec.folder, spec.start_s, spec.end_s) == ("a:b/dir", 0.0, 5400.0)
    folder = simple_folder(tmp_path)
    with pytest.raises(InputError, match="start 3600 s is at or after the end"):
        servegen_stream(f"servegen:{folder}:start=1h")
    with pytest.raises(InputError, match="end 4200 s is after the end"):
        servegen_stream(f"servegen:{folder}:end=70m")


def test_cli_reports_a_bad_pdf_with_exit_2_before_replaying(tmp_path: Path) -> None:
    text = json.dumps({"0": {"input_tokens": "{10: 1.0}", "output_tokens": "{5: 1.0, x}"}},
                      indent=2)
    folder = make_folder(tmp_path, {0: (trace_lines([1.0]), text)})
    result = CliRunner().invoke(app, ["simulate", "--workload", f"servegen:{folder}"])
    assert result.exit_code == 2
    assert "chunk-0-dataset.json, line 4: block 0: output_tokens" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- the stream


def test_stream_is_a_request_stream_with_the_measured_counts(tmp_path: Path) -> None:
    s = servegen_stream(f"servegen:{simple_folder(tmp_path)}", seed=3)
    assert isinstance(s, RequestStream)
    assert s.duration == 6 * W and s.name == "lang/m-test"
    w = materialise(s)
    counts = np.bincount((w.arrivals // W).astype(np.int64), minlength=6)
    # 2 + 1 + 0.5 req/s for 600 s: 2,100 requests per window, none in the idle one.
    assert list(counts) == [2100, 2100, 0, 2100, 2100, 2100]
    assert s.summary()["requests"] == len(w) == 5 * 2100
    stats = s.stats()
    assert stats["clients"] == 3 and stats["windows_without_traffic"] == 1
    assert stats["clients_without_dataset"] == 1 and stats["clients_pooled_tokens"] == 1
    assert stats["pooled_token_request_share"] == pytest.approx(1 / 3.5)
    assert w.summary()["servegen"] == stats


def test_fractional_counts_keep_the_rate_on_average(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {0: (trace_lines([0.0025] * 400), GOOD_DATA)})
    w = materialise(servegen_stream(f"servegen:{folder}"))
    per_window = np.bincount((w.arrivals // W).astype(np.int64), minlength=400)
    assert set(per_window) <= {1, 2}  # 1.5 expected each: floor 1, +1 half the time
    assert per_window.mean() == pytest.approx(1.5, abs=0.1)


@pytest.mark.parametrize(("law", "shape"), [("Gamma", 0.25), ("Gamma", 4.0),
                                            ("Weibull", 0.5), ("Exponential", 1.0)])
def test_gaps_follow_the_fitted_law(tmp_path: Path, law: str, shape: float) -> None:
    folder = make_folder(tmp_path, {0: (trace_lines([5.0] * 20, law, shape), GOOD_DATA)})
    w = materialise(servegen_stream(f"servegen:{folder}", seed=1))
    gaps = np.concatenate([np.diff(w.arrivals[(w.arrivals // W) == k]) for k in range(20)])
    cv = gaps.std() / gaps.mean()
    expected = {("Gamma", 0.25): 2.0, ("Gamma", 4.0): 0.5, ("Exponential", 1.0): 1.0,
                ("Weibull", 0.5): math.sqrt(math.gamma(5) / math.gamma(3) ** 2 - 1)}
    assert cv == pytest.approx(expected[(law, shape)], rel=0.15)


def test_clients_add_up(tmp_path: Path) -> None:
    one = make_folder(tmp_path / "one", {4: (trace_lines([1.0013] * 3, "Weibull", 0.8),
                                             GOOD_DATA)})
    both = make_folder(tmp_path / "both", {0: (trace_lines([2.0] * 3), GOOD_DATA),
                                           4: (trace_lines([1.0013] * 3, "Weibull", 0.8),
                                               GOOD_DATA)})
    a = materialise(servegen_stream(f"servegen:{one}", seed=5))
    b = materialise(servegen_stream(f"servegen:{both}", seed=5))
    assert len(b) == len(a) + 3600
    # Client 4's requests (counts, times) do not depend on the other clients in the folder.
    assert np.isin(a.arrivals, b.arrivals).all()


def test_tokens_come_from_the_clients_block_or_the_pool(tmp_path: Path) -> None:
    s = servegen_stream(f"servegen:{simple_folder(tmp_path)}", seed=2)
    w = materialise(s)
    early = w.arrivals < 1800
    pairs_early = set(zip(w.context_tokens[early].tolist(),
                          w.generated_tokens[early].tolist(), strict=True))
    pairs_late = set(zip(w.context_tokens[~early].tolist(),
                         w.generated_tokens[~early].tolist(), strict=True))
    # Own PDFs, and the pooled client's draws from them (input and output independently).
    assert {(10, 5), (30, 9)} <= pairs_early <= {(10, 5), (30, 9), (10, 9), (30, 5)}
    assert {(20, 7), (30, 9)} <= pairs_late <= {(20, 7), (30, 9), (20, 9), (30, 7)}
    # Pooled weights follow the clients' volumes: client 0 sends 4x client 2's requests,
    # so 3,000 requests have 10 tokens (1,200 own + 4/5 of the pooled client's 600 x 2).
    assert np.count_nonzero(w.context_tokens[early] == 10) == pytest.approx(2400 + 960,
                                                                             rel=0.05)


def test_an_empty_pdf_falls_back_to_the_pool_and_is_counted(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {
        0: (trace_lines([1.0, 1.0]), dataset({0: ({}, {}), 600: ({10: 1.0}, {5: 1.0})})),
        1: (trace_lines([1.0, 1.0]), dataset({0: ({40: 1.0}, {8: 1.0}),
                                              600: ({40: 1.0}, {8: 1.0})})),
    })
    s = servegen_stream(f"servegen:{folder}")
    w = materialise(s)
    assert set(w.context_tokens[w.arrivals < W].tolist()) == {40}
    assert set(w.context_tokens[w.arrivals >= W].tolist()) == {10, 40}
    assert s.stats()["clients_pooled_tokens"] == 1
    assert s.stats()["clients_without_dataset"] == 0
    assert s.stats()["pooled_token_request_share"] == pytest.approx(0.25)


def test_a_rate_without_a_law_is_poisson_and_counted(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {0: (["0,1.0,nan,,0,0", "600,1.0,1,Gamma,1,1"], GOOD_DATA)})
    s = servegen_stream(f"servegen:{folder}")
    assert s.stats()["client_windows_without_law"] == 1
    assert len(materialise(s)) == 1200


def test_same_seed_same_requests_whatever_the_chunks(tmp_path: Path) -> None:
    spec = f"servegen:{simple_folder(tmp_path)}"
    s = servegen_stream(spec, seed=7, rate_scale=0.5)
    ref = materialise(s)
    for span in (45.0, 600.0, 777.0, 1e9):
        chunks = list(s.chunks(span))
        assert chunks[0].start == 0 and chunks[-1].end == s.duration
        assert all(a.end == b.start for a, b in itertools.pairwise(chunks))
        for c in chunks:
            assert ((c.arrivals >= c.start) & (c.arrivals <= c.end)).all()
        np.testing.assert_array_equal(np.concatenate([c.arrivals for c in chunks]),
                                      ref.arrivals)
        np.testing.assert_array_equal(np.concatenate([c.context_tokens for c in chunks]),
                                      ref.context_tokens)
    again = materialise(servegen_stream(spec, seed=7, rate_scale=0.5))
    np.testing.assert_array_equal(again.arrivals, ref.arrivals)
    np.testing.assert_array_equal(again.generated_tokens, ref.generated_tokens)
    other = materialise(servegen_stream(spec, seed=8, rate_scale=0.5))
    assert not np.array_equal(other.arrivals, ref.arrivals)


def test_a_time_range_replays_the_same_requests(tmp_path: Path) -> None:
    folder = simple_folder(tmp_path)
    # A rate scale with fractions: the rounding of counts must not depend on the range.
    full = materialise(servegen_stream(f"servegen:{folder}", seed=4, rate_scale=0.3337))
    part = servegen_stream(f"servegen:{folder}:start=1000s:end=50m", seed=4,
                           rate_scale=0.3337)
    assert part.duration == 2000.0
    w = materialise(part)
    sel = (full.arrivals >= 1000) & (full.arrivals < 3000)
    np.testing.assert_allclose(w.arrivals, full.arrivals[sel] - 1000, atol=1e-9)
    np.testing.assert_array_equal(w.context_tokens, full.context_tokens[sel])
    assert part.summary()["requests"] == len(w)
    window = servegen_stream(f"servegen:{folder}", seed=4,
                             rate_scale=0.3337).window(1000.0, 2000.0)
    np.testing.assert_allclose(window.arrivals, w.arrivals, atol=1e-9)


def test_rate_matches_the_requests_for_any_bin(tmp_path: Path) -> None:
    s = servegen_stream(f"servegen:{simple_folder(tmp_path)}:start=100s", seed=9,
                        duration=3000.0)
    w = materialise(s)
    for bin_s in (7.5, 60.0, 600.0, 1000.0, 5000.0):
        np.testing.assert_allclose(s.rate(bin_s), w.rate(bin_s))


def test_rate_and_time_scale(tmp_path: Path) -> None:
    spec = f"servegen:{simple_folder(tmp_path)}"
    base = servegen_stream(spec)
    heavy = servegen_stream(spec, rate_scale=2.0)
    slow = servegen_stream(spec, time_scale=0.5)
    assert heavy.summary()["requests"] == 2 * base.summary()["requests"]
    # Time scale: windows last half as long at the same rates (rate-series semantics).
    assert slow.duration == base.duration / 2
    assert slow.summary()["mean_rate"] == pytest.approx(base.summary()["mean_rate"])
    cut = servegen_stream(spec, duration=1000.0)
    assert cut.duration == 1000.0 and materialise(cut).arrivals.max() < 1000.0


def test_resolvers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = f"servegen:{simple_folder(tmp_path)}"
    assert isinstance(resolve_stream("synthetic:steady", duration=60.0), WorkloadStream)
    s = resolve_stream(spec, seed=1, rate_scale=0.5, duration=1200.0)
    w = resolve_workload(spec, seed=1, rate_scale=0.5, duration=1200.0)
    np.testing.assert_array_equal(materialise(s).arrivals, w.arrivals)
    monkeypatch.setattr(wl, "MAX_REQUESTS", 1000)
    with pytest.raises(InputError, match="an in-memory replay holds every request"):
        resolve_workload(spec)
    with pytest.raises(InputError, match="rate_scale must be > 0"):
        resolve_stream(spec, rate_scale=0.0)


def test_training_episodes_are_normalised_windows(tmp_path: Path) -> None:
    s = servegen_stream(f"servegen:{simple_folder(tmp_path)}")
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(20):
        w = servegen_episode(s, rng, episode_s=600.0, stretch=2.0, mean_rps=10.0)
        assert w.duration == 600.0
        rates.append(len(w) / w.duration)
    # The trace's mean is 3.5 req/s x 5/6 windows busy; scaled to a mean of 10 req/s.
    assert np.mean(rates) == pytest.approx(10.0, rel=0.25)


def test_the_daemons_sim_backend_replays_a_folder_per_target(tmp_path: Path) -> None:
    from aiops.clock import SimClock
    from aiops.config import parse_config
    from aiops.sim.backend import SimBackend

    folder = simple_folder(tmp_path)
    cfg = parse_config(f"""
backend: sim
sim: {{workload: "servegen:{folder}:start=10m", rate_scale: 0.5, seed: 3}}
leader_election: {{enabled: false}}
targets:
  - {{name: a, deployment: a, policy: hpa, max_replicas: 16}}
  - {{name: b, deployment: b, policy: hpa, max_replicas: 16}}
""", environ={})
    backend = SimBackend(cfg, SimClock(0.0), duration=1500.0)
    a, b = (backend.sims[n].workload for n in ("a", "b"))
    expected = materialise(servegen_stream(f"servegen:{folder}:start=10m", seed=3,
                                           rate_scale=0.5, duration=1500.0))
    np.testing.assert_array_equal(a.arrivals, expected.arrivals)
    assert a.duration == b.duration == 1500.0 and len(b) == pytest.approx(len(a), rel=0.1)
    assert not np.array_equal(a.arrivals, b.arrivals)


def test_the_daemon_refuses_a_bad_folder_with_exit_2(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, {0: (["0,1,1,Gamma,1"], GOOD_DATA)})
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(f"""
backend: sim
sim: {{workload: "servegen:{folder}"}}
leader_election: {{enabled: false}}
daemon: {{http_port: 0}}
targets:
  - {{name: a, deployment: a, policy: hpa, max_replicas: 16}}
""")
    res = CliRunner().invoke(app, ["run", "--config", str(cfg), "--duration", "10m"])
    assert res.exit_code == 2
    assert "chunk-0-trace.csv, line 1: expected 6 comma-separated fields" in res.output


def test_simulate_replays_a_folder_and_its_summary_says_what_was_filled_in(
        tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    folder = simple_folder(tmp_path)
    result = CliRunner().invoke(app, ["simulate", "--workload", f"servegen:{folder}:start=10m",
                                      "--rate-scale", "0.5", "--duration", "30m",
                                      "--policy", "hpa", "--json", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())["workload"]
    assert summary["duration_s"] == 1800.0 and summary["name"] == "lang/m-test"
    assert summary["servegen"]["clients_without_dataset"] == 1
    assert summary["servegen"]["windows_without_traffic"] == 1  # the idle window at 20 min
    assert summary["requests"] == 2 * 1050  # two busy windows of 3.5 req/s x 0.5
