"""The dossier's document: sections of paragraphs, tables and charts, rendered once as HTML and as PDF.

One HTML text is the source of both files: the browser opens it as it is (every chart inlined as a PNG
data URI, no script, no network), and WeasyPrint, a pip-installable library (Debian's pango is its
only system dependency), lays the same text out as PDF pages with page numbers, a contents list with
page references and table rows never cut across pages (the print rules of :data:`PRINT_CSS`). Charts
are static matplotlib PNGs (no browser needed to render them), each also written as its own file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.reports.render import CSS

PRINT_CSS = """
@page{size:A4;margin:18mm 15mm 20mm 15mm;
  @bottom-center{content:"shoplens dossier - page " counter(page) " of " counter(pages);font-size:8pt;color:#666}}
@media print{body{background:#fff}main{max-width:none;padding:0}
  section{box-shadow:none;padding:0;margin:0 0 10mm}
  section.major{break-before:page}section.summary{break-after:page}
  .summary h1{margin:0}.summary h2{margin:8px 0 4px}.summary .card img{height:24mm;object-fit:contain}
  .summary .insights{font-size:9.5pt;margin:0}
  nav.toc a::after{content:leader('.') target-counter(attr(href), page)}
  h2,h3{break-after:avoid}figure{break-inside:avoid}
  table{font-size:7.5pt}th,td{padding:2px 4px}th{white-space:normal}}
table{page-break-inside:auto}tr,td,th{break-inside:avoid;page-break-inside:avoid}
thead{display:table-header-group}
figure{margin:10px 0}figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.85em}
nav.toc ol{padding-left:20px}nav.toc a{color:#222;text-decoration:none}
.insights li{margin:4px 0}.card p{margin:6px 0 0;font-size:.85em;color:#333}.card img{width:100%}
.meta{color:#666;font-size:.85em}
"""


@dataclass(frozen=True)
class Chart:
    """One static chart: ``name`` is its file name (without ``.png``), unique in the document."""

    name: str
    png: bytes
    caption: str


@dataclass(frozen=True)
class Table:
    caption: str
    header: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Card:
    """A summary card: a key figure, the sentence that says what matters, optionally a small chart."""

    label: str
    value: str
    sentence: str
    chart: Chart | None = None


Part = str | Table | Chart  # a paragraph, a table or a chart, in reading order


@dataclass
class Section:
    """One part of the dossier, built from one published result (``source``: its dataset and version)."""

    key: str
    title: str
    source: str
    parts: list[Part] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # the key numbers, exactly as published
    cards: list[Card] = field(default_factory=list)
    insights: list[str] = field(default_factory=list)

    def charts(self) -> list[Chart]:
        return [p for p in self.parts if isinstance(p, Chart)] + [c.chart for c in self.cards if c.chart]


# -- charts -------------------------------------------------------------------------------------------
def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _figure(width: float = 7.0, height: float = 3.2, polar: bool = False) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height))
    ax = fig.add_subplot(111, polar=polar)
    if not polar:
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_axisbelow(True)
        ax.grid(color="#eee")
    return fig, ax


def bar_chart(name: str, caption: str, labels: Sequence[str], values: Sequence[float], *, xlabel: str = "",
              horizontal: bool = True, colors: Sequence[str] | None = None, fmt: str = "{:,.0f}") -> Chart:  # fmt: skip
    """Bars with their values written on them."""
    fig, ax = _figure(7.0, max(2.0, 0.38 * len(labels) + 0.8) if horizontal else 3.2)
    pos = np.arange(len(labels))
    color = list(colors) if colors else "#4c78a8"
    if horizontal:
        bars = ax.barh(pos, values, color=color)
        ax.set_yticks(pos, labels)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
    else:
        bars = ax.bar(pos, values, color=color)
        ax.set_xticks(pos, labels, rotation=20, ha="right")
        ax.set_ylabel(xlabel)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
    return Chart(name, png_bytes(fig), caption)


def line_chart(name: str, caption: str, x: Sequence[float], series: dict[str, Sequence[float]], *, xlabel: str = "",
               ylabel: str = "", hline: tuple[float, str] | None = None, diagonal: bool = False) -> Chart:  # fmt: skip
    """One line per series (markers on the points)."""
    fig, ax = _figure()
    for label, ys in series.items():
        xs = x if len(x) == len(ys) else np.arange(len(ys))
        ax.plot(xs, ys, marker="o" if len(ys) <= 30 else None, markersize=3, label=label)
    if hline is not None:
        ax.axhline(hline[0], color="#c44", linestyle="--", linewidth=1, label=hline[1])
    if diagonal:
        ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1 or hline is not None:
        ax.legend(fontsize=8, frameon=False)
    return Chart(name, png_bytes(fig), caption)


def heatmap_chart(name: str, caption: str, rows: Sequence[str], cols: Sequence[str],
                  values: Sequence[Sequence[float | None]], *, xlabel: str = "", vmax: float = 1.0) -> Chart:  # fmt: skip
    """A matrix of shares (a retention triangle): missing cells blank, each cell's value written as a percentage."""
    z = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in r] for r in values], dtype=float))
    fig, ax = _figure(7.0, max(2.2, 0.32 * len(rows) + 1.0))
    ax.grid(False)
    image = ax.imshow(z, cmap="Blues", vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(np.arange(len(cols)), cols, fontsize=8)
    ax.set_yticks(np.arange(len(rows)), rows, fontsize=8)
    ax.set_xlabel(xlabel)
    if z.size <= 400:
        for (i, j), v in np.ndenumerate(z.filled(np.nan)):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 * vmax else "#222")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.03)
    return Chart(name, png_bytes(fig), caption)


def histogram_chart(name: str, caption: str, lower: Sequence[float], upper: Sequence[float | None],
                    counts: Sequence[float], *, xlabel: str = "") -> Chart:  # fmt: skip
    """Counts per bin; an open last bin (``upper`` None) is drawn as one more bin of the same width, marked '+'."""
    fig, ax = _figure()
    width = next((u - lo for lo, u in zip(lower, upper, strict=True) if u is not None and u > lo), 1.0)
    ax.bar(lower, counts, width=width, align="edge", color="#4c78a8", edgecolor="white", linewidth=0.5)
    if upper and upper[-1] is None:
        ax.annotate("+", (lower[-1] + width / 2, counts[-1]), ha="center", va="bottom", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("customers")
    return Chart(name, png_bytes(fig), caption)


def radar_chart(name: str, caption: str, axes: Sequence[str], series: dict[str, Sequence[float]],
                colors: dict[str, str] | None = None) -> Chart:  # fmt: skip
    """One polygon per series over ``axes`` (values: lifts against the average user, 1 = average)."""
    fig, ax = _figure(6.0, 5.0, polar=True)
    angles = np.linspace(0, 2 * np.pi, len(axes), endpoint=False).tolist()
    for label, vals in series.items():
        v = list(vals)
        ax.plot([*angles, angles[0]], [*v, v[0]], label=label, linewidth=1.5, color=(colors or {}).get(label))
        ax.fill([*angles, angles[0]], [*v, v[0]], alpha=0.08, color=(colors or {}).get(label))
    ax.set_xticks(angles, axes, fontsize=8)
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.35, 1.1), frameon=False)
    return Chart(name, png_bytes(fig), caption)


# -- HTML ---------------------------------------------------------------------------------------------
def _img(chart: Chart) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(chart.caption)}'>"


def _table(t: Table) -> str:
    from services.reports.render import html_table

    cap = f"<h3>{html.escape(t.caption)}</h3>" if t.caption else ""
    return cap + html_table(t.header, [[str(c) for c in r] for r in t.rows])


def _part(p: Part) -> str:
    if isinstance(p, Chart):
        return f"<figure id='chart-{html.escape(p.name)}'>{_img(p)}<figcaption>{html.escape(p.caption)}</figcaption></figure>"
    if isinstance(p, Table):
        return _table(p)
    return f"<p>{html.escape(p)}</p>"


def _summary(title: str, subtitle: str, cards: list[Card], insights: list[str]) -> str:
    card_html = "".join(
        f"<div class=card><span>{html.escape(c.label)}</span><b>{html.escape(c.value)}</b>"
        + (_img(c.chart) if c.chart else "") + f"<p>{html.escape(c.sentence)}</p></div>"
        for c in cards
    )  # fmt: skip
    items = "".join(f"<li>{html.escape(s)}</li>" for s in insights)
    return (f"<section class='summary' id='summary'><h1>{html.escape(title)}</h1><p class=sub>{html.escape(subtitle)}</p>"
            f"<h2>Summary</h2><div class=cards>{card_html}</div><h2>What the numbers say</h2>"
            f"<ul class=insights>{items}</ul></section>")  # fmt: skip


def render_html(title: str, subtitle: str, sections: Sequence[Section], cards: list[Card], insights: list[str]) -> str:
    """The whole document as one self-contained HTML page (the PDF is made from this same text)."""
    toc = "".join(f"<li><a href='#{s.key}'>{html.escape(s.title)}</a></li>" for s in sections)
    body = [_summary(title, subtitle, cards, insights),
            f"<section class=toc-page><nav class=toc><h2>Contents</h2><ol>"
            f"<li><a href='#summary'>Summary</a></li>{toc}</ol></nav></section>"]  # fmt: skip
    for s in sections:
        parts = "".join(_part(p) for p in s.parts)
        body.append(f"<section class=major id='{s.key}'><h2>{html.escape(s.title)}</h2>{parts}"
                    f"<p class=meta>Source: {html.escape(s.source)}</p></section>")  # fmt: skip
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}{PRINT_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>"
    )


def render_pdf(document_html: str) -> bytes:
    """The PDF of :func:`render_html`'s text (WeasyPrint; nothing downloaded at run time)."""
    import logging

    # before the import, which already parses the user-agent stylesheets: progress steps and notes on
    # screen-only CSS properties are not the reader's business
    for noisy in ("weasyprint", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from weasyprint import HTML

    return HTML(string=document_html).write_pdf()


__all__ = [
    "PRINT_CSS",
    "Card",
    "Chart",
    "Part",
    "Section",
    "Table",
    "bar_chart",
    "heatmap_chart",
    "histogram_chart",
    "line_chart",
    "png_bytes",
    "radar_chart",
    "render_html",
    "render_pdf",
]
