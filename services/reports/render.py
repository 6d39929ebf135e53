"""The one report renderer: number formats, Markdown and HTML tables, the page shell, plotly charts.

Every report (describe, segmentation, and each later analysis) builds its sections from these, so a
table, a percentage or a chart looks the same in all of them. HTML pages are self-contained:
plotly.js is inlined once, so a report opens offline and can be mailed as one file.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#222}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin-bottom:4px}.sub{color:#666;margin-top:0}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 3px #0001}
h2{font-size:1.2em;margin:0 0 6px}.note{color:#555;margin:0 0 10px;font-size:.93em}
table{border-collapse:collapse;font-size:.9em;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child,.t{text-align:left}th{background:#fafafa}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{flex:1 1 140px;background:#fff;border-radius:8px;padding:12px;box-shadow:0 1px 3px #0001}
.card b{display:block;font-size:1.4em}.card span{color:#666;font-size:.85em}
details summary{cursor:pointer;color:#4c78a8;margin-top:8px}
pre{background:#f4f4f4;padding:12px;overflow:auto}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px}
"""


# -- numbers ------------------------------------------------------------------------------------------
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt_count(value: float | None) -> str:
    """Thousands separators; a fractional value keeps two decimals."""
    if _missing(value):
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    return "-" if _missing(value) else f"{100 * value:.{digits}f}%"


def fmt_money(value: float | None) -> str:
    return "-" if _missing(value) else f"{value:,.2f}"


def fmt_float(value: Any, digits: int = 3) -> str:
    """A metric with ``digits`` decimals; non-floats as they are."""
    if _missing(value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# -- tables -------------------------------------------------------------------------------------------
def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _align(cell: object) -> str:
    """Numbers right-aligned (the default), words left-aligned."""
    return "" if re.fullmatch(r"[-+\d,.%\s]*", str(cell)) else ' class="t"'


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    first = rows[0] if rows else header
    head = "".join(f"<th{_align(c)}>{html.escape(h)}</th>" for h, c in zip(header, first, strict=False))
    body = "".join(
        "<tr>" + "".join(f"<td{_align(c)}>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- charts and pages ---------------------------------------------------------------------------------
def layout(fig: Any, title: str, height: int = 340, **kw: Any) -> Any:
    """The house style of a report chart."""
    fig.update_layout(title=title, height=height, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 50, "b": 40}, **kw)  # fmt: skip
    return fig


def chart_html(fig: Any | None) -> str:
    """A figure as an HTML fragment (plotly.js comes once, from :func:`page`)."""
    if fig is None:
        return ""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


def page(title: str, body: str) -> str:
    """A whole self-contained HTML page around ``body``."""
    from plotly.offline import get_plotlyjs

    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body><main>{body}</main></body></html>"
    )


def closing_sections(semantics: Sequence[str], markdown: str) -> str:
    """A report page's last two sections: the definitions as a list, and the whole report as text."""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in semantics)
    return (f"<section><h2>Semantics</h2><ul>{items}</ul></section>"
            f"<section><details><summary>All figures as text</summary><pre>{html.escape(markdown)}</pre>"
            "</details></section>")  # fmt: skip


def write_report_files(out_dir: Path, markdown: str, html_page: str) -> None:
    """``report.md`` and ``report.html`` into ``out_dir`` (a version's ``result.json`` is the JSON rendering)."""
    (Path(out_dir) / "report.md").write_text(markdown, encoding="utf-8")
    (Path(out_dir) / "report.html").write_text(html_page, encoding="utf-8")


__all__ = [
    "CSS",
    "chart_html",
    "closing_sections",
    "fmt_count",
    "fmt_float",
    "fmt_money",
    "fmt_pct",
    "html_table",
    "layout",
    "md_table",
    "page",
    "write_report_files",
]
