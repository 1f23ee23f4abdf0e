"""``aiops recommend``: the dry-run report from a (stubbed) Prometheus history and from a trace.

The Prometheus part is a stub object with ``load_history``/``load_range`` that answers, per
target, like ``PrometheusSource`` does (grid of ``step`` seconds, NaN in gaps, typed errors),
so the report's own judgement of each answer is what is tested. Workloads are tens of
minutes at a few requests/s and the forecaster is ``naive``: the whole file runs in seconds.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from importcheck import heavy_imports
from typer.testing import CliRunner

from aiops.config import TargetConfig, parse_config
from aiops.errors import InputError
from aiops.ingest.prometheus import EmptyResultError, PrometheusUnavailableError
from aiops.report import cli as report_cli
from aiops.report.build import batch_advice, report_from_prometheus, report_from_trace
from aiops.report.history import fill_hold, fill_linear
from aiops.report.html import render
from aiops.report.model import (
    ROLE_AIOPS,
    ROLE_HPA,
    ROLE_KEDA,
    ROLE_RAN,
    ROLE_STATIC,
    PolicyFigures,
    Report,
    Verdict,
    advise,
    better_of,
    fmt_gpu_hours,
    fmt_pct,
    fmt_slo,
)
from aiops.report.plots import downsample
from aiops.report.replay import RecordedReplicas
from aiops.sim.cluster import SloSpec
from aiops.sim.profiles import load_profile
from aiops.sim.workloads import TokenDistribution, synthetic

STEP = 60.0
NOW = 1_700_000_000.0
SINCE = 40 * 60.0

CONFIG = """
targets:
  - {name: chat, deployment: chat-vllm, max_replicas: 12}
  - {name: empty, deployment: empty-vllm}
  - {name: down, deployment: down-vllm}
  - {name: boom, deployment: boom-vllm}
  - {name: short, deployment: short-vllm}
forecast: {model: naive}
"""


# --------------------------------------------------------------------------- the stub source
@dataclass(frozen=True)
class FakeRange:
    times: np.ndarray
    values: np.ndarray
    gaps: tuple[tuple[float, float], ...] = ()


class StubPrometheus:
    """Answers like ``PrometheusSource`` for a few canned targets; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def _grid(self, start: float, end: float, step: float) -> np.ndarray:
        n = int((end - start) // step) + 1
        return start + step * np.arange(n)

    def _series(self, target: TargetConfig, name: str, t: np.ndarray) -> np.ndarray:
        k = np.arange(len(t))
        if target.name == "short":  # only the last 6 minutes have data
            rate = np.where(k >= len(t) - 6, 3.0, np.nan)
        else:
            # 4 req/s, a burst to 14 req/s from minute 20 to 26, and one missing scrape.
            rate = np.where((k >= 20) & (k < 26), 14.0, 4.0)
            rate[5] = np.nan
        series = {
            "arrival_rate": rate,
            "replicas": np.where(k < len(t) // 2, 3.0, 4.0),
            "ttft_p99": np.where(k == 7, np.nan, 0.25),
            "kv_cache_usage": np.full(len(t), 0.4),
            "prompt_tokens_rate": rate * 800.0,
            "generation_tokens_rate": rate * 120.0,
        }
        if name not in series:
            raise EmptyResultError("no data", query=name, promql="...", target=target.name)
        return series[name]

    def load_range(self, target: TargetConfig, name: str, start: float, end: float,
                   step: float) -> FakeRange:
        self.asked.append((target.name, name))
        if target.name == "empty":
            raise EmptyResultError("no data between a and b", query=name,
                                   promql=f"sum(rate(x{{deployment='{target.deployment}'}}))",
                                   target=target.name)
        if target.name == "down":
            raise PrometheusUnavailableError("connection", "cannot connect to 127.0.0.1:9")
        if target.name == "boom":
            raise RuntimeError("a bug in the source")
        t = self._grid(start, end, step)
        return FakeRange(t, self._series(target, name, t))

    def load_history(self, target: TargetConfig, start: float, end: float,
                     step: float) -> tuple[np.ndarray, np.ndarray]:
        got = self.load_range(target, "arrival_rate", start, end, step)
        return got.times, got.values


# --------------------------------------------------------------------------- HTML parsing
class PageParser(HTMLParser):
    """Collects every attribute, the images, the sections and the policy-table cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.images: list[dict[str, str]] = []
        self.sections: dict[str, str] = {}  # target -> status
        self.section_images: dict[str, int] = defaultdict(int)
        self.cells: dict[tuple[str, str, str], str] = {}  # (target, role, key) -> text
        self.tags: set[str] = set()
        self._target = ""
        self._role = ""
        self._key = ""
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.attrs.extend((tag, k, v) for k, v in a.items())
        if tag == "section" and "data-target" in a:
            self._target = a["data-target"]
            self.sections[self._target] = a["data-status"]
        if tag == "img":
            self.images.append(a)
            self.section_images[self._target] += 1
        if tag == "tr":
            self._role = a.get("data-role", "")
        if tag == "td" and self._role and "data-key" in a:
            self._key = a["data-key"]
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._key:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._key:
            self.cells[(self._target, self._role, self._key)] = "".join(self._text).strip()
            self._key = ""
        if tag == "section":
            self._target = ""


def parse(html: str) -> PageParser:
    p = PageParser()
    p.feed(html)
    p.close()
    return p


def headline(html: str) -> str:
    m = re.search(r'<p class="headline" id="headline">(.*?)</p>', html, flags=re.S)
    assert m is not None, "no headline"
    return unescape(m.group(1))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prom_report() -> Report:
    cfg = parse_config(CONFIG, environ={})
    return report_from_prometheus(cfg, StubPrometheus(), since_s=SINCE, now=NOW)


@pytest.fixture(scope="module")
def prom_html(prom_report: Report) -> str:
    return render(prom_report)


def write_trace(path: Path, minutes: float = 20.0, seed: int = 1) -> Path:
    """A request trace in the Azure layout: 3 req/s with a burst to 12 req/s."""
    rng = np.random.default_rng(seed)
    span = minutes * 60
    t = np.sort(rng.uniform(0, span, int(3 * span)))
    burst = np.sort(rng.uniform(0.5 * span, 0.6 * span, int(9 * 0.1 * span)))
    t = np.sort(np.concatenate([t, burst]))
    ctx = rng.integers(200, 2000, len(t))
    gen = rng.integers(20, 300, len(t))
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for ti, c, g in zip(t, ctx, gen, strict=True):
        lines.append(f"{1_700_000_000 + ti:.6f},{c},{g}")
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_app() -> typer.Typer:
    """The real ``aiops`` app when it has the command, else one with only ``recommend``."""
    from aiops.cli import app

    if any(c.name == "recommend" for c in app.registered_commands):
        return app
    own = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @own.callback()
    def _root() -> None:
        """Test app."""

    report_cli.register(own)
    return own


@pytest.fixture(scope="module")
def trace_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, dict[str, Any]]:
    d = tmp_path_factory.mktemp("trace")
    trace = write_trace(d / "trace.csv")
    out, js = d / "r.html", d / "r.json"
    res = CliRunner().invoke(cli_app(), [
        "recommend", "--workload", str(trace), "--output", str(out), "--json", str(js),
        "--rate-scale", "1.5", "--forecast-model", "naive", "--max-replicas", "16"])
    assert res.exit_code == 0, res.output
    return res, out.read_text(), json.loads(js.read_text())


# --------------------------------------------------------------------------- Prometheus mode
def test_every_target_gets_a_section_with_its_status(prom_report: Report, prom_html: str
                                                     ) -> None:
    page = parse(prom_html)
    want = {"chat": "ok", "empty": "no_data", "down": "unavailable", "boom": "error",
            "short": "ok"}
    assert page.sections == want
    data = prom_report.as_json()
    assert {t["name"]: t["status"] for t in data["targets"]} == want
    by_name = {t["name"]: t for t in data["targets"]}
    assert "no data" in by_name["empty"]["message"]
    assert "cannot connect" in by_name["down"]["message"]
    assert "a bug in the source" in by_name["boom"]["message"]
    assert data["summary"]["targets_evaluated"] == 2
    assert data["summary"]["targets_failed"] == 3
    # The failed targets say so on the page, in their own section.
    for name, words in (("empty", "no data"), ("down", "metrics unavailable")):
        section = re.search(rf'data-target="{name}".*?</section>', prom_html, flags=re.S)
        assert section is not None and words in section.group(0)


def test_images_are_inline_pngs_and_sections_have_plots(prom_html: str) -> None:
    page = parse(prom_html)
    assert len(page.images) >= 1 + 2 * 4  # summary bars; per evaluated target 4 plots
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        raw = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(raw) > 5000  # a real plot, not an empty canvas
        assert img.get("alt")
    assert page.section_images["chat"] == 4
    assert page.section_images["empty"] == 0


def test_no_external_url_anywhere(prom_html: str, trace_run: tuple[Any, str, dict[str, Any]]
                                  ) -> None:
    for html in (prom_html, trace_run[1]):
        page = parse(html)
        for tag, attr, value in page.attrs:
            if attr in ("src", "href", "srcset", "action", "poster", "data"):
                assert value.startswith(("data:", "#")), (tag, attr, value[:80])
            assert not re.search(r"(?i)\b(?:https?:|ftp:)?//", value[:200]) or \
                value.startswith("data:"), (tag, attr, value[:80])
        assert not page.tags & {"script", "link", "iframe", "object", "embed"}
        assert "@import" not in html and "url(" not in html


def test_summary_matches_the_json(prom_report: Report, prom_html: str) -> None:
    data = prom_report.as_json()
    s = data["summary"]
    text = headline(prom_html)
    assert text == s["text"] == prom_report.summary_text()
    # Two evaluated targets: the headline says what to run on each, by name.
    assert "for chat" in text and "short" in text and "empty, down and boom not evaluated" in text
    assert s["verdict_text"].startswith("Over 41 minutes aiops would have used")  # 41 samples
    # Two evaluated targets: the verdict adds their GPU-hours and weights SLO by requests.
    ok = [t for t in data["targets"] if t["status"] == "ok"]
    aiops = [next(p for p in t["policies"] if p["role"] == "aiops") for t in ok]
    ran = [next(p for p in t["policies"] if p["role"] == "ran") for t in ok]
    assert s["aiops_gpu_hours"] == pytest.approx(sum(p["gpu_hours"] for p in aiops), abs=1e-3)
    assert s["baseline_gpu_hours"] == pytest.approx(sum(p["gpu_hours"] for p in ran), abs=1e-3)
    assert s["baseline"] == "ran"
    n = sum(p["requests"] for p in aiops)
    assert s["aiops_slo_attainment"] == pytest.approx(
        sum(p["slo_attainment"] * p["requests"] for p in aiops) / n, abs=1e-4)
    check_sentence(s["verdict_text"], s)


def check_sentence(text: str, s: dict[str, Any]) -> None:
    """The sentence's numbers are the JSON's, as the page formats them."""
    m = re.search(r"used ([\d.,]+) (fewer|more) GPU-hours \(([−+])([\d.]+)%\)", text)
    assert m is not None, text
    assert m.group(1) == fmt_gpu_hours(abs(s["gpu_hours_saved"]))
    assert (m.group(2) == "fewer") == (s["gpu_hours_saved"] > 0)
    assert m.group(4) == fmt_pct(abs(s["gpu_hours_saved_pct"]))
    m2 = re.search(r"SLO attainment ([\d.]+)% vs ([\d.]+)%", text)
    assert m2 is not None, text
    assert float(m2.group(1)) == pytest.approx(100 * s["aiops_slo_attainment"], abs=0.051)
    assert float(m2.group(2)) == pytest.approx(100 * s["baseline_slo_attainment"], abs=0.051)


def test_table_cells_match_the_json(prom_report: Report, prom_html: str) -> None:
    page = parse(prom_html)
    chat = next(t for t in prom_report.as_json()["targets"] if t["name"] == "chat")
    roles = [p["role"] for p in chat["policies"]]
    assert roles == ["aiops", "ran", "static", "hpa", "keda"]
    for p in chat["policies"]:
        cell = page.cells[("chat", p["role"], "gpu_hours")]
        assert cell == fmt_gpu_hours(p["gpu_hours"])
        slo = page.cells[("chat", p["role"], "slo_attainment")]
        assert slo == fmt_slo(p["slo_attainment"])
        assert re.fullmatch(r"\d+\.\d\d%", slo)  # one format in the whole column
        assert page.cells[("chat", p["role"], "scale_ups")] == str(p["scale_ups"])
        assert p["requests"] == chat["workload"]["requests"]
    target_summary = chat["summary"]
    assert target_summary["text"] in prom_html
    check_sentence(target_summary["text"], target_summary)


def test_history_becomes_the_workload_and_what_ran(prom_report: Report) -> None:
    chat = next(t for t in prom_report.targets if t.name == "chat")
    # ~4 req/s for 41 minutes plus a 6-minute burst at 14 req/s.
    expected = 4 * 35 * 60 + 14 * 6 * 60
    assert 0.85 * expected < chat.requests < 1.15 * expected
    ran = chat.figures(ROLE_RAN)
    assert ran is not None and ran.label == "what ran (3–4 replicas)"
    # The observed figures come from the history, not from the replay.
    assert chat.observed["gpu_hours"] == pytest.approx((20 * 3 + 21 * 4) / 60, rel=1e-6)
    assert chat.observed["ttft_p99_s_median"] == pytest.approx(0.25)
    assert chat.observed["mean_context_tokens"] == pytest.approx(800.0)
    assert any("1 of 41 points missing" in n for n in chat.notes)
    mean_ctx = chat.workload["mean_context_tokens"]
    assert isinstance(mean_ctx, float) and 650 < mean_ctx < 950


def test_forecast_band_changes_and_guardrails_are_reported(prom_report: Report,
                                                           prom_html: str) -> None:
    chat = next(t for t in prom_report.targets if t.name == "chat")
    assert chat.forecast is not None and chat.forecast.available, chat.forecast
    # One forecast per completed 60-s step once 10 steps exist: 41 minutes give ~31.
    assert chat.forecast.points > 25 and chat.forecast.coverage_80 is not None
    assert (chat.forecast.fits, chat.forecast.step_s) == (1, 60.0)
    assert chat.changes, "aiops changed nothing through a 3.5x burst"
    first = chat.changes[0]
    assert first.reason.startswith("predictive:")
    assert "guardrails:" not in first.reason  # the clamps are listed apart
    data = next(t for t in prom_report.as_json()["targets"] if t["name"] == "chat")
    assert len(data["changes"]) == len(chat.changes)
    assert data["changes"][0]["time_unix"] == pytest.approx(NOW - SINCE + first.time)
    assert data["guardrail_firings"] == dict(chat.guardrail_firings)
    assert f"Changes aiops would have made ({len(chat.changes)})" in prom_html
    assert chat.batch is not None
    assert f'data-recommended="{chat.batch.recommended}"' in prom_html


def test_too_little_history_to_forecast_is_said(prom_report: Report, prom_html: str) -> None:
    short = next(t for t in prom_report.targets if t.name == "short")
    assert short.ok
    assert short.forecast is not None and not short.forecast.available
    assert "too little history to forecast" in short.forecast.reason
    section = re.search(r'data-target="short".*?</section>', prom_html, flags=re.S)
    assert section is not None
    assert "forecast unavailable: too little history to forecast" in unescape(section.group(0))
    data = next(t for t in prom_report.as_json()["targets"] if t["name"] == "short")
    assert data["forecast"]["available"] is False


def test_json_is_strict(prom_report: Report) -> None:
    json.loads(json.dumps(prom_report.as_json(), allow_nan=False))


# --------------------------------------------------------------------------- trace mode
def test_trace_report_from_the_command_line(trace_run: tuple[Any, str, dict[str, Any]]) -> None:
    res, html, data = trace_run
    s = data["summary"]
    assert s["baseline"] in ("hpa", "keda")
    assert "better of HPA and KEDA" in s["verdict_text"]
    assert s["text"] in res.output
    assert headline(html) == s["text"] == data["targets"][0]["recommendation"]["text"]
    check_sentence(s["verdict_text"], s)
    (t,) = data["targets"]
    assert t["status"] == "ok"
    assert [p["role"] for p in t["policies"]] == ["aiops", "static", "hpa", "keda"]
    base = next(p for p in t["policies"] if p["role"] == s["baseline"])
    assert s["baseline_gpu_hours"] == base["gpu_hours"]
    assert data["settings"]["rate_scale"] == 1.5
    assert any("scaled ×1.5" in n for n in t["notes"])
    page = parse(html)
    assert page.sections == {"trace": "ok"}
    assert len(page.images) == 4  # one target: its bars are the summary's
    assert "2023-11-14" in html  # the trace's own clock on the time axis and in changes


def test_bad_trace_is_an_input_error_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n1,2\n")
    app = cli_app()
    out = tmp_path / "r.html"
    one_of = ("error: give exactly one of --config FILE (the daemon's targets) or "
              "--workload TRACE")
    for args, says in (
            (["--workload", str(bad)], f"error: {bad}, line 1: unrecognised header"),
            (["--workload", str(tmp_path / "missing.csv")],
             f"error: {tmp_path / 'missing.csv'}: no such file"),
            ([], one_of), (["--workload", str(bad), "--config", str(bad)], one_of)):
        res = CliRunner().invoke(app, ["recommend", "--output", str(out), *args])
        assert res.exit_code == 2, (args, res.output)
        (line,) = res.output.strip().splitlines()  # one line naming the file or option
        assert line.startswith(says), (args, line)
    assert not out.exists()


def test_bad_policy_for_a_trace_fails_before_the_replay(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", minutes=2)
    with pytest.raises(InputError, match="unknown policy"):
        report_from_trace(str(trace), policy="nosuch", forecast_model="naive")
    with pytest.raises(InputError, match="oracle"):
        report_from_trace(str(trace), policy="oracle", forecast_model="naive")


# --------------------------------------------------------------------------- degrading
class BrokenPolicy:
    name = "broken"

    def initial_state(self) -> None:
        return None

    def decide(self, inp: Any, state: None) -> Any:
        raise RuntimeError("model file is corrupt")


def test_a_failing_policy_or_missing_forecaster_leaves_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aiops.report import build

    monkeypatch.setattr(build, "forecast_available",
                        lambda: "aiops.forecast is not importable (No module named 'x')")
    w = synthetic("steady", seed=0, duration=300.0)
    settings = build.Settings(profile=load_profile(), policy="predictive",
                              forecast_model="naive")
    ok = build.evaluate("t", "t", w, settings)
    assert ok.forecast is not None and not ok.forecast.available
    assert ok.forecast.text() == ("forecast unavailable: aiops.forecast is not importable "
                                  "(No module named 'x')")
    assert any(n.startswith("forecast unavailable: aiops.forecast is not importable")
               for n in ok.notes)
    assert ok.verdict is not None  # predictive ran as the HPA, and said so

    broken = build.evaluate("t", "t", w, settings, policy=BrokenPolicy())  # type: ignore[arg-type]
    assert broken.ok and broken.verdict is None
    assert [p.role for p in broken.policies] == ["static", "hpa", "keda"]
    assert "failed during the replay: RuntimeError: model file is corrupt" in broken.message
    html = render(Report(0.0, "trace", "x", (broken,)))
    assert "No verdict: the aiops policy" in unescape(html)
    assert headline(html).startswith("No comparison")


# --------------------------------------------------------------------------- units
def fig(role: str, gpu: float, slo: float) -> PolicyFigures:
    return PolicyFigures(role, role, role, gpu, gpu * 2, slo, 0.1, 0.5, 0.03, 1, 1, 3, 100)


def test_verdict_sentence_says_fewer_more_or_same() -> None:
    v = Verdict(7 * 86400, ROLE_RAN, "what ran", 80.0, 100.0, 0.995, 0.99)
    assert v.text() == ("Over 7 days aiops would have used 20.0 fewer GPU-hours (−20.0%) than "
                        "what ran, at SLO attainment 99.50% vs 99.00%.")
    more = Verdict(3600 * 3.5, ROLE_HPA, "the HPA", 5.0, 4.0, 0.9, 0.8)
    assert "1.00 more GPU-hours (+25.0%)" in more.text()
    assert "3.5 hours" in more.text() and "90.00% vs 80.00%" in more.text()
    same = Verdict(600, ROLE_HPA, "the HPA", 1.0, 1.001, 0.9, 0.9)
    assert "the same GPU-hours as the HPA" in same.text()


def test_better_of_prefers_slo_then_cost() -> None:
    assert better_of(fig(ROLE_HPA, 10, 0.90), fig(ROLE_KEDA, 20, 0.95)).role == ROLE_KEDA
    assert better_of(fig(ROLE_HPA, 10, 0.950), fig(ROLE_KEDA, 20, 0.953)).role == ROLE_HPA
    assert better_of(fig(ROLE_AIOPS, 10, 0.5), fig(ROLE_HPA, 9, 0.5)).role == ROLE_HPA


def test_downsample_keeps_peaks_for_display() -> None:
    t = np.arange(10_000, dtype=float)
    v = np.ones(10_000)
    v[4321] = 50.0
    _, vv = downsample(t, v, 1000, how="max")
    assert len(vv) == 1000 and vv.max() == 50.0
    _, mean = downsample(t, v, 1000, how="mean")
    assert mean.max() == pytest.approx(1 + 49 / 10)
    _, v3 = downsample(t[:10], v[:10], 1000)
    assert len(v3) == 10


def test_gap_filling() -> None:
    filled, n = fill_linear(np.array([np.nan, 1.0, np.nan, 3.0, np.nan]))
    assert n == 3 and filled.tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert fill_hold(np.array([np.nan, 2.0, np.nan, 5.0])).tolist() == [2.0, 2.0, 2.0, 5.0]


def test_recorded_replicas_follow_the_history() -> None:
    rec = RecordedReplicas(np.array([0.0, 60.0, 120.0]), np.array([2.0, 5.0, 3.0]))
    assert [rec.at(t) for t in (-5, 0, 59.9, 60, 119, 500)] == [2, 2, 2, 5, 5, 3]


def test_batch_advice_changes_only_when_it_buys_capacity() -> None:
    prof = load_profile()
    # Long prompts: a full batch of 256 holds ~600k KV tokens, far above a 50 ms step.
    w = synthetic("steady", seed=0, duration=600.0,
                  tokens=TokenDistribution(context_median=2400, generated_median=150))
    slo = SloSpec()
    keep = batch_advice(prof, w, slo, prof.batch_sizes, 64)
    assert keep.recommended == 64 and keep.reason.startswith("keep 64")
    off = batch_advice(prof, w, slo, prof.batch_sizes, 256)
    too_slow = off.option(256)
    assert too_slow is not None and too_slow.tpot_s > slo.tpot_s
    # A size whose full batch misses the TPOT objective is never recommended, and left.
    assert off.recommended != 256 and "above the SLO" in off.reason
    rec = off.option(off.recommended)
    assert rec is not None and rec.tpot_s <= slo.tpot_s


def test_cli_module_imports_nothing_heavy() -> None:
    assert heavy_imports("import aiops.report.cli",
                         ("numpy", "matplotlib", "pandas", "aiops.sim.runner")) == []


# --------------------------------------------------------------------------- a real browser
@pytest.mark.integration
def test_renders_in_headless_chromium(tmp_path: Path, prom_html: str) -> None:
    """Skipped only outside CI where Chromium is missing (scripts/chromium.sh installs it)."""
    from fakes.tools import find
    from PIL import Image

    chromium = find("chromium", env="AIOPS_CHROMIUM_BIN", install="scripts/chromium.sh install")
    page = tmp_path / "r.html"
    page.write_text(prom_html)
    shot = tmp_path / "shot.png"
    res = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
         "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[:2] == (2400, 1280)
    ink = (np.abs(img - 255).sum(axis=2) > 60).mean()
    assert ink > 0.03, f"only {ink:.1%} of the page is not white"
    # The aiops green of the bar chart made it to the screen: the images were decoded.
    green = ((np.abs(img[..., 0] - 0x1A) < 20) & (np.abs(img[..., 1] - 0x98) < 20)
             & (np.abs(img[..., 2] - 0x50) < 20)).sum()
    assert green > 2000


# --------------------------------------------------------------------------- the advice
def row(role: str, gpu: float, slo: float, requests: int = 100_000) -> PolicyFigures:
    return PolicyFigures(role, role, role, gpu, gpu * 2, slo, 0.1, 0.5, 0.03, 1, 1, 3,
                         requests)


POLICY_TEXT = "predictive (its default settings; 1–64 replicas, the default guardrails)"
CHANGE = re.compile(r"([\d.,]+) (fewer|more)(?: GPU-hours)? than [^(]+?\(([−+])([\d.]+)%\)")


def check_words_and_signs(text: str) -> int:
    """Every "N fewer … (−X%)" / "N more … (+X%)": the word and the sign agree."""
    found = CHANGE.findall(text)
    for _amount, word, sign, _pct in found:
        assert (word == "fewer") == (sign == "−"), (word, sign, text)
    return len(found)


def test_advice_says_when_a_fixed_fleet_is_the_better_choice() -> None:
    # The diurnal day: 7 fixed replicas, 10.5 GPU-h, 99.2%, against aiops' 12.5 GPU-h, 96.3%.
    rows = [row(ROLE_AIOPS, 12.5, 0.963), row(ROLE_STATIC, 10.5, 0.992),
            row(ROLE_HPA, 14.2, 0.971), row(ROLE_KEDA, 13.0, 0.952)]
    a = advise(rows, 86400, policy_text=POLICY_TEXT, fixed_replicas=7)
    assert a is not None and a.choice == ROLE_STATIC
    assert a.text.startswith(f"Run a fixed fleet of 7 replicas rather than aiops with "
                             f"{POLICY_TEXT}: over 24 hours")
    assert ("2.00 fewer GPU-hours than aiops (−16.0%), 3.70 fewer than the HPA (−26.1%) and "
            "2.50 fewer than KEDA (−19.2%)") in a.text
    assert "at SLO attainment 99.20% (aiops 96.30%, the HPA 97.10%, KEDA 95.20%)" in a.text
    assert a.text.endswith("the best fixed fleet costs less than autoscaling around it, "
                           "missed requests included.")
    assert check_words_and_signs(a.text) == 3
    assert a.savings == {ROLE_AIOPS: 2.0, ROLE_HPA: 3.7, ROLE_KEDA: 2.5}


def test_advice_to_switch_names_every_saving_and_the_fixed_fleet() -> None:
    rows = [row(ROLE_AIOPS, 10.0, 0.993), row(ROLE_RAN, 12.0, 0.990),
            row(ROLE_STATIC, 11.0, 0.991), row(ROLE_HPA, 13.0, 0.989),
            row(ROLE_KEDA, 12.5, 0.982)]
    a = advise(rows, 7 * 86400, policy_text=POLICY_TEXT, fixed_replicas=8)
    assert a is not None and a.choice == ROLE_AIOPS
    assert a.text.startswith(f"Switch to aiops with {POLICY_TEXT}: over 7 days it would have "
                             "used 2.00 fewer GPU-hours than what ran (−16.7%), 1.00 fewer "
                             "than the best fixed fleet of 8 (−9.1%), 3.00 fewer than the HPA "
                             "(−23.1%) and 2.50 fewer than KEDA (−20.0%), at SLO attainment "
                             "99.30% (what ran 99.00%, the fixed fleet 99.10%")
    assert a.text.endswith("stay with a fixed fleet only where its best size costs less than "
                           "autoscaling, which here it does not.")
    assert check_words_and_signs(a.text) == 4


def test_advice_weighs_missed_requests_against_gpu_hours() -> None:
    # The HPA serves clearly better; aiops is cheaper only by missing more requests.
    rows = [row(ROLE_AIOPS, 8.0, 0.95), row(ROLE_STATIC, 9.0, 0.952),
            row(ROLE_HPA, 10.0, 0.99), row(ROLE_KEDA, 11.0, 0.985)]
    a = advise(rows, 3600, policy_text=POLICY_TEXT, fixed_replicas=4)
    assert a is not None and a.choice == ROLE_HPA
    assert a.text.startswith("Use the HPA with its default settings rather than aiops")
    assert "2.00 more GPU-hours than aiops (+25.0%)" in a.text
    assert a.text.endswith("aiops would use fewer GPU-hours but miss more requests (95.00% vs "
                           "99.00%), which costs more at $0.005 a miss.")
    check_words_and_signs(a.text)


def test_the_price_of_a_miss_decides_between_cost_and_service() -> None:
    """Half a point of attainment on 1,000 requests is not worth three times the GPUs at
    half a cent a miss; at ten dollars a miss it is."""
    rows = [row(ROLE_AIOPS, 1.0, 0.9855, 1_000), row(ROLE_RAN, 3.0, 0.991, 1_000)]
    cheap = advise(rows, 600, policy_text=POLICY_TEXT)
    assert cheap is not None and cheap.choice == ROLE_AIOPS
    assert cheap.scores[ROLE_AIOPS] == pytest.approx(2.0 + 0.005 * 0.0145 * 1000)
    dear = advise(rows, 600, policy_text=POLICY_TEXT, slo_miss_usd=10.0)
    assert dear is not None and dear.choice == ROLE_RAN
    assert dear.text.startswith("Keep what runs rather than switching to aiops")
    assert "$10 for each request" in dear.basis()


@pytest.mark.parametrize(("aiops_gpu", "word", "cls"), [(4.0, "fewer (−20.0%)", "good"),
                                                       (6.0, "more (+20.0%)", "bad")])
def test_the_savings_tile_agrees_in_word_sign_and_colour(aiops_gpu: float, word: str,
                                                        cls: str) -> None:
    from aiops.report.html import _tiles

    html = _tiles(Verdict(86400, ROLE_HPA, "the HPA", aiops_gpu, 5.0, 0.99, 0.99))
    m = re.search(r'data-key="gpu_hours_saved">.*?<div class="v ([a-z]*)">([^<]*)</div>', html)
    assert m is not None, html
    assert m.group(1) == cls
    assert m.group(2) == f"{1.0:.2f} {word}"


def test_the_trace_report_explains_the_difference_from_simulate(
        trace_run: tuple[Any, str, dict[str, Any]]) -> None:
    _, html, data = trace_run
    (t,) = data["targets"]
    note = t["simulate_note"]
    assert note.startswith("Why `aiops simulate --policy predictive` on the same input gives "
                           "other figures")
    assert "guardrails" in note and "forecaster" in note and "1–16 replicas" in note
    assert unescape(note) in unescape(html) or note in unescape(html)
    fixed = next(p for p in t["policies"] if p["role"] == ROLE_STATIC)
    assert fixed["label"].startswith("fixed fleet (") and "the best size" in fixed["label"]


def test_best_fixed_fleet_is_the_size_with_the_lowest_score() -> None:
    from aiops.policy.static import StaticPolicy
    from aiops.report.build import best_fixed_fleet
    from aiops.sim.runner import planning_context, run_policy

    prof = load_profile()
    w = synthetic("diurnal-bursty", seed=1, duration=1800.0)
    ctx = planning_context(prof, w, max_replicas=16)
    fixed = best_fixed_fleet(w, prof, ctx, SloSpec(), 0.005)
    n = fixed.replicas
    assert fixed.output.result.max_replicas == n
    assert {n - 1, n + 1} <= set(fixed.tried)  # both neighbours were weighed
    assert len(fixed.tried) <= 8  # a walk to the valley, not a sweep

    def score(k: int) -> float:
        r = run_policy(StaticPolicy(k), w, prof, ctx, start_replicas=k).result
        return r.cost_usd + 0.005 * (1 - r.slo_attainment) * r.requests

    assert all(score(n) <= score(k) for k in range(max(1, n - 3), n + 4))
