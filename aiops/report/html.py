"""The report as one self-contained HTML page.

Self-contained because the page is pasted into design reviews, attached to tickets and
opened on laptops without cluster access: CSS is inline, plots are PNG ``data:`` URIs, there
is no script, and the only links are fragments within the page. Nothing is fetched.

Reading order, for someone with ten seconds: the headline sentence and three numbers; then
the bar chart; then, per target, the table, the load and replica plots, the batch-size
advice and the changes aiops would have made. Every number is formatted by the same
functions as the JSON's ``text`` fields (``aiops.report.model``), so the two always agree.
Elements carry ``data-*`` attributes (role, key, status) so tests and scrapers can find a
figure without parsing prose.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape

from aiops.report import plots
from aiops.report.model import (
    ADVICE_NAMES,
    ROLES,
    SLO_TIE_PP,
    STATUS_TEXT,
    BatchAdvice,
    Change,
    PolicyFigures,
    Report,
    TargetReport,
    Verdict,
    fmt_change,
    fmt_gpu_hours,
    fmt_seconds,
    fmt_slo,
    fmt_span,
    fmt_time,
)

MAX_CHANGE_ROWS = 150
"""Changes listed on the page; a busy week has thousands and nobody reads past the first
screens. The JSON lists them all."""

CSS = """
:root { --fg:#1d1d1f; --muted:#5f6368; --line:#dadce0; --ok:#1a9850; --bad:#c62828;
        --bg2:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 6px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 6px; }
.meta { color: var(--muted); font-size: 13px; margin: 0 0 16px; }
.summary { background: var(--bg2); border: 1px solid var(--line); border-radius: 8px;
           padding: 18px 20px; }
.headline { font-size: 21px; font-weight: 600; margin: 0 0 14px; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; margin: 0 0 12px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px;
        min-width: 200px; }
.tile .v { font-size: 22px; font-weight: 700; }
.tile .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
.good { color: var(--ok); } .bad { color: var(--bad); }
img.plot { width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; width: 100%; font-size: 14px; margin: 6px 0 10px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: right;
         vertical-align: top; }
th { background: var(--bg2); font-weight: 600; font-size: 13px; white-space: nowrap; }
td:first-child, th:first-child { text-align: left; }
td.text, th.text { text-align: left; }
tr.aiops td { font-weight: 600; }
tr.pick td { background: #eef7f0; font-weight: 600; }
table.changes td { font-size: 12.5px; }
table.changes td.reason { max-width: 640px; color: #333; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 9px; font-size: 12px;
         font-weight: 600; vertical-align: middle; margin-left: 6px; }
.badge.ok { background: #e3f4e8; color: #14622f; }
.badge.fail { background: #fde7e7; color: #8e1b1b; }
.problem { background: #fff4f4; border: 1px solid #f3c4c4; border-radius: 6px; padding: 10px 14px; }
.note { color: var(--muted); font-size: 13px; }
ul.notes { color: var(--muted); font-size: 13px; margin: 4px 0; }
nav a { margin-right: 14px; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 40px; padding-top: 10px;
         border-top: 1px solid var(--line); }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "target"
    slug, k = f"target-{base}", 2
    while slug in taken:
        slug, k = f"target-{base}-{k}", k + 1
    taken.add(slug)
    return slug


def _tiles(v: Verdict) -> str:
    """aiops against the baseline in four numbers. The word, the sign and the colour of the
    GPU-hours change agree: "2.61 fewer (−53.4%)" in green, "2.61 more (+53.4%)" in red."""
    base = ADVICE_NAMES.get(v.baseline_role, "the baseline")
    words, pct = fmt_change(v.saved, v.baseline_gpu_hours)
    cls = "good" if v.saved > 0 else "bad" if v.saved < 0 else ""
    change = words if words == "the same" else f"{words}{f' ({pct})' if pct else ''}"
    slo_cls = ("good" if (v.aiops_slo - v.baseline_slo) * 100 >= -SLO_TIE_PP else "bad")
    return (
        '<div class="tiles">'
        f'<div class="tile" data-key="gpu_hours_saved"><div class="k">GPU-hours, aiops against '
        f'{escape(base)}</div><div class="v {cls}">{escape(change)}</div></div>'
        f'<div class="tile" data-key="gpu_hours"><div class="k">GPU-hours: aiops vs '
        f'{escape(base)}</div><div class="v">{escape(fmt_gpu_hours(v.aiops_gpu_hours))} vs '
        f'{escape(fmt_gpu_hours(v.baseline_gpu_hours))}</div></div>'
        f'<div class="tile" data-key="slo_attainment"><div class="k">SLO attainment: aiops vs '
        f'{escape(base)}</div><div class="v {slo_cls}">{fmt_slo(v.aiops_slo)} vs '
        f'{fmt_slo(v.baseline_slo)}</div></div>'
        f'<div class="tile" data-key="span"><div class="k">replayed</div>'
        f'<div class="v">{escape(fmt_span(v.span_s))}</div></div>'
        '</div>'
        f'<p class="note verdict">{escape(v.text())}</p>'
    )


def _policy_table(rows: Sequence[PolicyFigures], choice: str = "") -> str:
    head = ("<tr><th>policy</th><th>GPU-hours</th><th>cost $</th><th>SLO attainment</th>"
            "<th>TTFT p50 s</th><th>TTFT p99 s</th><th>TPOT p99 s</th><th>scale ups</th>"
            "<th>scale downs</th><th>max replicas</th><th>unserved</th></tr>")
    body = []
    for r in rows:
        cells = [
            ("gpu_hours", fmt_gpu_hours(r.gpu_hours)),
            ("cost_usd", f"{r.cost_usd:,.2f}"),
            ("slo_attainment", fmt_slo(r.slo_attainment)),
            ("ttft_p50_s", fmt_seconds(r.ttft_p50_s)),
            ("ttft_p99_s", fmt_seconds(r.ttft_p99_s)),
            ("tpot_p99_s", "∞" if r.tpot_p99_s is None else f"{r.tpot_p99_s:.4f}"),
            ("scale_ups", str(r.scale_ups)),
            ("scale_downs", str(r.scale_downs)),
            ("max_replicas", str(r.max_replicas)),
            ("unfinished", str(r.unfinished)),
        ]
        tds = "".join(f'<td data-key="{k}">{escape(v)}</td>' for k, v in cells)
        mark = " ✓ recommended" if r.role == choice else ""
        body.append(f'<tr class="{escape(r.role)}{" pick" if mark else ""}" '
                    f'data-role="{escape(r.role)}"><td title="{escape(r.spec)}">'
                    f"{escape(r.label)}<strong>{mark}</strong></td>{tds}</tr>")
    return f'<table class="policies">{head}{"".join(body)}</table>'


def _batch(b: BatchAdvice) -> str:
    cur = f"{b.current}" + ("" if b.current_known else " (assumed: the profile's default; "
                                                       "vLLM does not export --max-num-seqs)")
    rows = []
    for o in b.options:
        cls = ' class="pick"' if o.batch_size == b.recommended else ""
        rows.append(f'<tr{cls} data-batch="{o.batch_size}"><td>{o.batch_size}</td>'
                    f"<td>{o.decode_tokens_per_s:,.0f}</td><td>{1000 * o.tpot_s:.1f}</td>"
                    f"<td>{o.capacity_rps:.2f}</td><td>{o.replicas_at_peak}</td></tr>")
    return (
        f'<p class="batch" data-recommended="{b.recommended}"><strong>Recommended batch size '
        f"(--max-num-seqs): {b.recommended}</strong>, current {escape(cur)}. "
        f"{escape(b.reason)}.</p>"
        '<table class="batch-options"><tr><th>batch size</th><th>decode tokens/s per replica'
        "</th><th>TPOT at a full batch, ms</th><th>req/s per replica within the SLO</th>"
        f"<th>replicas at the peak</th></tr>{''.join(rows)}</table>"
    )


def _changes(changes: Sequence[Change], start_unix: float | None) -> str:
    if not changes:
        return '<p class="note">aiops would not have changed anything.</p>'
    shown = changes[:MAX_CHANGE_ROWS]
    rows = []
    for c in shown:
        rules = ", ".join(cl.text() for cl in c.clamps) or "—"
        details = "; ".join(f"{cl.rule}: {cl.detail}" for cl in c.clamps if cl.detail)
        rows.append(f"<tr><td>{escape(fmt_time(c.time, start_unix))}</td>"
                    f'<td class="text">{escape(c.action)}</td>'
                    f'<td class="text reason">{escape(c.reason)}</td>'
                    f'<td class="text" title="{escape(details)}">{escape(rules)}</td></tr>')
    more = ""
    if len(changes) > len(shown):
        more = (f'<p class="note">Showing the first {len(shown)} of {len(changes)} changes; '
                "the JSON lists all of them.</p>")
    when = "time (UTC)" if start_unix is not None else "time from start"
    return (f'<table class="changes" data-count="{len(changes)}"><tr><th>{when}</th>'
            '<th class="text">change</th><th class="text">reason (the policy\'s own)</th>'
            f'<th class="text">guardrails that shaped it</th></tr>{"".join(rows)}</table>{more}')


def _firings(firings: dict[str, int]) -> str:
    if not firings:
        return '<p class="note">No guardrail changed a recommendation.</p>'
    rows = "".join(f'<tr><td>{escape(k)}</td><td data-rule="{escape(k)}">{v}</td></tr>'
                   for k, v in firings.items())
    return ('<table class="firings" style="width:auto"><tr><th>guardrail rule</th>'
            f"<th>decisions it changed</th></tr>{rows}</table>")


def _observed(obs: dict[str, float | None]) -> str:
    def f(key: str, fmt: Callable[[float], str]) -> str | None:
        v = obs.get(key)
        return None if v is None else fmt(v)

    parts = []
    g = f("gpu_hours", fmt_gpu_hours)
    if g:
        parts.append(f"{g} GPU-hours by kube-state-metrics replicas")
    for key, what in (("ttft_p99_s", "TTFT p99"), ("tpot_p99_s", "TPOT p99")):
        med, mx = f(f"{key}_median", fmt_seconds), f(f"{key}_max", fmt_seconds)
        if med:
            parts.append(f"{what} per window: median {med} s, worst {mx} s")
    med, mx = (f("kv_cache_usage_median", lambda x: f"{100 * x:.0f}%"),
               f("kv_cache_usage_max", lambda x: f"{100 * x:.0f}%"))
    if med:
        parts.append(f"KV-cache usage: median {med}, peak {mx}")
    if not parts:
        return ""
    return ('<p class="observed"><strong>Observed in Prometheus:</strong> '
            + escape("; ".join(parts)) + ".</p>")


def _target(t: TargetReport, slug: str, single: bool) -> str:
    head = f'<h2 id="{slug}">{escape(t.name)}'
    if t.key and t.key != t.name:
        head += f' <span class="note">{escape(t.key)}</span>'
    badge = "ok" if t.ok else "fail"
    head += (f'<span class="badge {badge}">{escape(STATUS_TEXT.get(t.status, t.status))}'
             "</span></h2>")
    attrs = (f'class="target" data-target="{escape(t.name)}" data-status="{escape(t.status)}"')
    if not t.ok:
        notes = "".join(f"<li>{escape(n)}</li>" for n in t.notes)
        return (f"<section {attrs}>{head}<p class=\"problem\">"
                f"<strong>{escape(STATUS_TEXT.get(t.status, t.status))}:</strong> "
                f"{escape(t.message)}</p>"
                + (f'<ul class="notes">{notes}</ul>' if notes else "")
                + "<p class=\"note\">This target is left out of the summary above.</p>"
                  "</section>")
    series = plots.series_of(t.series)
    parts = [f"<section {attrs}>", head]
    parts.append(f'<p class="meta">policy <code>{escape(t.policy)}</code> · profile '
                 f"<code>{escape(t.profile)}</code> · {t.requests:,} requests over "
                 f"{escape(fmt_span(t.span_s))}</p>")
    if t.advice is not None:
        parts.append(f'<p class="advice" data-choice="{escape(t.advice.choice)}"><strong>'
                     f"{escape(t.advice.text)}</strong></p>")
    if t.verdict is not None:
        parts.append(f'<p class="verdict">{escape(t.verdict.text())}</p>')
    else:
        parts.append('<p class="problem">No verdict: '
                     + escape(t.message or "the aiops policy could not be replayed") + ".</p>")
    parts.append("<h3>Every policy on the same traffic</h3>")
    parts.append(_policy_table(t.policies, t.advice.choice if t.advice else ""))
    if t.simulate_note:
        parts.append(f'<p class="note simulate">{escape(t.simulate_note)}</p>')
    if not single:
        parts.append(_img(plots.policy_bars(t.policies, f"{t.name}: cost and service level"),
                          f"GPU-hours and SLO attainment per policy for {t.name}"))
    if t.observed:
        parts.append(_observed(dict(t.observed)))
    if series is not None:
        parts.append("<h3>Load, forecast and anomalies</h3>")
        fc = t.forecast
        windows = t.anomalies.windows if t.anomalies is not None else ()
        parts.append(_img(plots.load_chart(series, windows, fc.lead_s if fc else 0.0,
                                           fc.model if fc else ""),
                          f"arrival rate with forecast band and anomalies for {t.name}"))
    for info in (t.forecast, t.anomalies):
        if info is not None:
            cls = "forecast" if info is t.forecast else "anomalies"
            parts.append(f'<p class="note {cls}">{escape(info.text())}.</p>')
    if series is not None:
        parts.append("<h3>Replicas</h3>")
        parts.append(_img(plots.replicas_chart(series),
                          f"replicas over time per policy for {t.name}"))
        parts.append(_img(plots.ttft_chart(series), f"TTFT p99 over time for {t.name}"))
    if t.batch is not None:
        parts.append("<h3>Batch size</h3>")
        parts.append(_batch(t.batch))
    parts.append(f"<h3>Changes aiops would have made ({len(t.changes)})</h3>")
    parts.append(_changes(t.changes, t.start_unix))
    parts.append("<h3>Guardrails</h3>")
    parts.append(_firings(dict(t.guardrail_firings)))
    if t.notes:
        parts.append('<h3>Notes</h3><ul class="notes">'
                     + "".join(f"<li>{escape(n)}</li>" for n in t.notes) + "</ul>")
    parts.append("</section>")
    return "".join(parts)


def _overall_rows(report: Report) -> list[PolicyFigures]:
    """One bar per role: the single target's rows, or every target's summed by role."""
    done = [t for t in report.targets if t.ok]
    if len(done) == 1:
        return list(done[0].policies)
    rows = []
    for role in ROLES:
        got = [p for t in done for p in t.policies if p.role == role]
        if not got or len(got) != len(done):
            continue
        n = sum(p.requests for p in got) or 1
        rows.append(PolicyFigures(
            role=role, label=f"{got[0].label.split(' (')[0]} (all targets)", spec=role,
            gpu_hours=sum(p.gpu_hours for p in got), cost_usd=sum(p.cost_usd for p in got),
            slo_attainment=sum(p.slo_attainment * p.requests for p in got) / n,
            ttft_p50_s=None, ttft_p99_s=None, tpot_p99_s=None,
            scale_ups=sum(p.scale_ups for p in got), scale_downs=sum(p.scale_downs for p in got),
            max_replicas=max(p.max_replicas for p in got), requests=n))
    return rows


def render(report: Report) -> str:
    """The whole page as a string (UTF-8 when written)."""
    taken: set[str] = set()
    slugs = [_slug(t.name, taken) for t in report.targets]
    when = datetime.fromtimestamp(report.generated_unix, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    src = ("Prometheus " + report.source if report.mode == "prometheus"
           else "trace " + report.source)
    since = f" · last {fmt_span(report.since_s)}" if report.since_s else ""
    v = report.verdict
    done = [t for t in report.targets if t.ok]
    summary = [f'<section class="summary" id="summary"><p class="headline" id="headline">'
               f"{escape(report.summary_text())}</p>"]
    basis = next((t.advice.basis() for t in report.targets if t.advice is not None), "")
    if basis:
        summary.append(f'<p class="note basis">{escape(basis)}</p>')
    if v is not None:
        summary.append(_tiles(v))
    rows = _overall_rows(report)
    if rows:
        title = "Cost and service level per policy" + (
            "" if len(done) == 1 else f" ({len(done)} targets)")
        summary.append(_img(plots.policy_bars(rows, title),
                            "GPU-hours and SLO attainment per policy"))
        if len(done) == 1:
            summary.append('<p class="note">Details and the table: see the target below.</p>')
    failed = [t for t in report.targets if not t.ok]
    if failed:
        summary.append('<p class="note bad">Not evaluated: ' + escape("; ".join(
            f"{t.name} ({STATUS_TEXT.get(t.status, t.status)})" for t in failed)) + ".</p>")
    summary.append("</section>")
    nav = ""
    if len(report.targets) > 1:
        nav = "<nav>Targets: " + "".join(
            f'<a href="#{s}">{escape(t.name)}</a>' for t, s in zip(report.targets, slugs,
                                                                    strict=True)) + "</nav>"
    body = "".join(_target(t, s, single=len(done) == 1)
                   for t, s in zip(report.targets, slugs, strict=True))
    footer = (
        "<footer><p>How to read this: every option is replayed on the same requests through "
        "aiops' simulated cluster (model/hardware profile, cold starts, continuous batching, "
        "rolling batch-size changes), from the same starting replicas. <em>aiops</em> is the "
        "configured policy followed by the guardrails, with the forecasts the daemon would "
        "have made (the past only, refitted on a schedule). <em>What ran</em> replays the "
        "recorded replica counts through the same simulator, so its figures are comparable "
        "with the others (the measured ones are listed as observed). The <em>fixed "
        "fleet</em> is the size with the lowest GPU cost plus missed requests at the price "
        "stated under the headline, the same measure the recommendation compares every "
        "option with. SLO attainment counts a request as good when both its TTFT and its "
        "TPOT meet the SLO; a request never served counts as missed. Plots are "
        "downsampled for display only.</p></footer>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>aiops recommendation report</title><style>{CSS}</style></head><body><main>"
        f"<h1>What aiops would have done</h1><p class=\"meta\">dry-run recommendation report · "
        f"{escape(src)}{escape(since)} · generated {escape(when)}</p>"
        + "".join(summary) + nav + body + footer + "</main></body></html>\n")
