"""The A/B test report: Markdown, a self-contained HTML page with interval plots, and JSON.

Built from the analysis document ``shoplens abtest analyze`` publishes (``result.json``; fields in
docs/outputs.md). Every output opens with the sample-ratio-mismatch verdict, because a mismatched
split invalidates every lift below it; then the rejected rows, then per metric the variants, the
comparisons with control (absolute and relative lift, intervals, p-values raw and adjusted, the
chance to beat control), the per-segment effects and, for a sequential analysis, the daily looks.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from model.experiments import srm_verdict
from services.reports.render import (
    chart_html,
    fmt_count,
    fmt_float,
    fmt_pct,
    html_table,
    layout,
    md_table,
    page,
)

COMPARISON_HEADER = ["variant", "lift", "relative lift", "interval", "relative interval", "p-value",
                     "adjusted p", "P(beat control)", "expected loss", "CUPED saved", "warnings"]  # fmt: skip


def _value(kind: str, x: Any) -> str:
    return fmt_pct(x, 2) if kind == "conversion" else fmt_float(x, 4)


def _lift(kind: str, x: Any) -> str:
    """An absolute lift: percentage points for a rate, the metric's units otherwise."""
    if kind == "continuous" or x is None:
        return fmt_float(x, 4)
    return f"{100 * x:+.2f} pp"


def _interval(kind: str, low: Any, high: Any, rel: bool = False) -> str:
    show = (lambda x: fmt_pct(x, 1)) if rel else (lambda x: _lift(kind, x))
    lo = "-inf" if low is None and high is not None else show(low)
    hi = "+inf" if high is None and low is not None else show(high)
    return f"[{lo}, {hi}]"


def comparison_rows(kind: str, comparisons: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for c in comparisons:
        rows.append([
            c["variant"], _lift(kind, c["lift_abs"]), fmt_pct(c["lift_rel"], 1), _interval(kind, c["ci_low"], c["ci_high"]),
            _interval(kind, c["rel_ci_low"], c["rel_ci_high"], rel=True), fmt_float(c["p_value"], 4),
            fmt_float(c["p_value_adjusted"], 4), fmt_pct(c["chance_to_beat_control"], 1),
            fmt_float(c["expected_loss"], 4), fmt_pct(c.get("variance_reduction"), 0),
            ", ".join(c["warnings"]) or "",
        ])  # fmt: skip
    return rows


def variant_rows(kind: str, variants: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[v["variant"], fmt_count(v["users"]), _value(kind, v["mean"])] for v in variants]


def _settings_line(doc: Mapping[str, Any]) -> str:
    s = doc.get("settings") or {}
    test = s.get("alternative", "two-sided")
    if s.get("margin"):
        test += f", non-inferiority margin {s['margin']:g}"
    correction = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}.get(s.get("correction"), s.get("correction"))
    return (f"alpha {s.get('alpha')}, {test} tests, {correction}-adjusted across all variant x metric "
            f"comparisons, CUPED {'on' if s.get('cuped') else 'off'}, sequential {'on' if s.get('sequential') else 'off'}.")  # fmt: skip


def _rejected_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    users = doc.get("rejected_users") or {}
    return [[r, fmt_count(n), fmt_count(users.get(r))] for r, n in (doc.get("rejected") or {}).items()]


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The report as Markdown (tables; the interval plots are in the HTML)."""
    _level, verdict = srm_verdict(doc.get("srm"))
    src = doc.get("source") or {}
    lines = [
        f"# Experiment {doc.get('experiment')}",
        "",
        f"**{verdict}**",
        "",
        f"Analyzed {doc.get('analyzed_at')} from {src.get('kind')} `{src.get('file')}`"
        + (f" (metrics from the lake, window {src['window']})" if src.get("kind") == "lake" else "")
        + f": {fmt_count(doc.get('users'))} users of {fmt_count(doc.get('rows_read'))} rows; control "
        f"`{doc.get('control')}`. Settings: {_settings_line(doc)}",
        "",
        "## Rejected rows",
        "",
        md_table(["reason", "rows", "users"], _rejected_rows(doc)) if doc.get("rejected") else "None.",
        "",
    ]
    lines += [f"Warning: `{w}`." for w in doc.get("warnings") or []]
    for m in doc.get("metrics") or []:
        kind = m["kind"]
        lines += [f"## {m['metric']} ({kind})", "", md_table(["variant", "users", "mean"], variant_rows(kind, m["variants"])), "",
                  md_table(COMPARISON_HEADER, comparison_rows(kind, m["comparisons"])), ""]  # fmt: skip
        if m.get("segments"):
            lines += ["### Per segment", ""]
            rows = [[s["segment"], *r] for s in m["segments"] for r in comparison_rows(kind, s["comparisons"])]
            lines += [md_table(["segment", *COMPARISON_HEADER], rows), ""]
    if doc.get("sequential"):
        lines += ["## Sequential looks (always-valid intervals)", "",
                  md_table(["date", "metric", "variant", "users", "lift", "fixed interval", "always-valid interval", "always-valid p"],
                           [[r["date"], r["metric"], r["variant"], fmt_count(r["users"]), fmt_float(r["lift_abs"], 4),
                             f"[{fmt_float(r['ci_low'], 4)}, {fmt_float(r['ci_high'], 4)}]",
                             f"[{fmt_float(r['sequential_ci_low'], 4)}, {fmt_float(r['sequential_ci_high'], 4)}]",
                             fmt_float(r["sequential_p_value"], 4)] for r in doc["sequential"]]), ""]  # fmt: skip
    return "\n".join(lines)


def _bounded(value: Any, fallback: float) -> float:
    return fallback if value is None else float(value)


def lift_figure(title: str, labels: Sequence[str], comparisons: Sequence[Mapping[str, Any]]) -> Any:
    """Relative lifts with their intervals, one row each; a dashed line at zero (no effect)."""
    import plotly.graph_objects as go

    x = [_bounded(c["lift_rel"], 0.0) for c in comparisons]
    lows = [_bounded(c["rel_ci_low"], min(x) - 1) for c in comparisons]
    highs = [_bounded(c["rel_ci_high"], max(x) + 1) for c in comparisons]
    colors = ["#54a24b" if lo > 0 else "#e45756" if hi < 0 else "#4c78a8" for lo, hi in zip(lows, highs, strict=True)]
    fig = go.Figure(go.Scatter(
        x=x, y=list(labels), mode="markers", marker={"size": 10, "color": colors},
        error_x={"type": "data", "symmetric": False, "array": [h - v for h, v in zip(highs, x, strict=True)],
                 "arrayminus": [v - lo for v, lo in zip(x, lows, strict=True)]},
        hovertemplate="%{y}: %{x:+.2%}<extra></extra>",
    ))  # fmt: skip
    fig.add_vline(x=0, line_dash="dash", line_color="#888")
    fig.update_xaxes(tickformat="+.0%", title="relative lift vs control")
    return layout(fig, title, height=120 + 40 * len(labels))


def render_html(doc: Mapping[str, Any]) -> str:
    level, verdict = srm_verdict(doc.get("srm"))
    color = {"bad": "#c62828", "warn": "#b26a00", "ok": "#2e7d32"}[level]
    src = doc.get("source") or {}
    parts = [
        f"<h1>Experiment {html.escape(str(doc.get('experiment')))}</h1>",
        f"<p class=sub>Analyzed {html.escape(str(doc.get('analyzed_at')))} from {html.escape(str(src.get('kind')))} "
        f"<code>{html.escape(str(src.get('file')))}</code>: {fmt_count(doc.get('users'))} users; control "
        f"<b>{html.escape(str(doc.get('control')))}</b>.</p>",
        f"<section style='border-left:6px solid {color}'><h2>Sample ratio</h2><p><b>{html.escape(verdict)}</b></p></section>",
        "<section><h2>Rejected rows</h2>"
        + (html_table(["reason", "rows", "users"], _rejected_rows(doc)) if doc.get("rejected") else "<p>None.</p>")
        + "".join(f"<p class=note>Warning: {html.escape(w)}</p>" for w in doc.get("warnings") or [])
        + f"<p class=note>{html.escape(_settings_line(doc))}</p></section>",
    ]  # fmt: skip
    for m in doc.get("metrics") or []:
        kind, comps = m["kind"], m["comparisons"]
        body = [f"<h2>{html.escape(m['metric'])} ({kind})</h2>",
                html_table(["variant", "users", "mean"], variant_rows(kind, m["variants"])),
                html_table(COMPARISON_HEADER, comparison_rows(kind, comps))]  # fmt: skip
        if comps:
            body.append(chart_html(lift_figure(f"{m['metric']}: lift vs {m['comparisons'][0]['control']}",
                                               [c["variant"] for c in comps], comps)))  # fmt: skip
        segs = m.get("segments") or []
        if segs:
            pairs = [(f"{s['segment']} · {c['variant']}", c) for s in segs for c in s["comparisons"]]
            body.append("<h2>Per segment</h2>")
            body.append(chart_html(lift_figure(f"{m['metric']} by segment", [p[0] for p in pairs], [p[1] for p in pairs])))
            body.append(html_table(["segment", *COMPARISON_HEADER],
                                   [[s["segment"], *r] for s in segs for r in comparison_rows(kind, s["comparisons"])]))  # fmt: skip
        parts.append("<section>" + "".join(body) + "</section>")
    if doc.get("sequential"):
        parts.append("<section><h2>Sequential looks</h2><p class=note>Always-valid intervals: looking every day "
                     "does not inflate false positives.</p>"
                     + html_table(["date", "metric", "variant", "users", "lift", "always-valid interval", "always-valid p"],
                                  [[r["date"], r["metric"], r["variant"], fmt_count(r["users"]), fmt_float(r["lift_abs"], 4),
                                    f"[{fmt_float(r['sequential_ci_low'], 4)}, {fmt_float(r['sequential_ci_high'], 4)}]",
                                    fmt_float(r["sequential_p_value"], 4)] for r in doc["sequential"]])
                     + "</section>")  # fmt: skip
    return page(f"Experiment {doc.get('experiment')}", "".join(parts))


def render_json(doc: Mapping[str, Any]) -> str:
    """The analysis document as strict JSON, the SRM verdict as its first key."""
    first = {"srm": doc.get("srm")}
    return json.dumps(first | {k: v for k, v in doc.items() if k != "srm"}, indent=2, allow_nan=False, default=str)


__all__ = ["comparison_rows", "lift_figure", "render_html", "render_json", "render_markdown"]
