"""The model comparison's report (``report.md``, ``report.html``) and its tables, shared with the dossier."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.reports.render import fmt_float, html_table, md_table, page

TITLES = {"segmentation": "Segmentation: which clustering family",
          "assignment": "Assigning a customer to a segment from the first n events",
          "propensity": "Purchase propensity: which model"}  # fmt: skip
LABELS = {
    "silhouette": "silhouette", "davies_bouldin": "Davies-Bouldin", "calinski_harabasz": "Calinski-Harabasz",
    "stability_ari": "stability (ARI)", "fit_seconds": "fit (s)", "ari_vs_truth": "ARI vs personas",
    "mean_agreement": "mean agreement", "batch_us_per_user": "batch (µs/user)", "single_call_ms": "one call (ms)",
    "roc_auc": "ROC AUC", "pr_auc": "PR AUC", "log_loss": "log loss", "ece": "ECE", "top_decile_lift": "top-decile lift",
}  # fmt: skip


def label(metric: str) -> str:
    if metric.startswith("agreement_n"):
        return f"agreement n={metric.removeprefix('agreement_n')}"
    return LABELS.get(metric, metric)


def _cell(metric: str, value: Any) -> str:
    if value is None:
        return "-"
    if metric == "calinski_harabasz":
        return f"{value:,.0f}"
    if metric in ("fit_seconds", "single_call_ms", "batch_us_per_user"):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    return fmt_float(float(value), 3)


def table_cells(table: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one comparison table, the winner marked; metrics with no value anywhere left out."""
    metrics = [m for m in table["metrics"] if any(r.get(m) is not None for r in table["rows"])]
    header = ["family", *(label(m) for m in metrics)]
    rows = [[(r["family"] + (" ✓" if r["family"] == table["winner"] else "")), *(_cell(m, r.get(m)) for m in metrics)]
            for r in table["rows"]]  # fmt: skip
    return header, rows


def write_comparison_report(out_dir: Path, doc: Mapping[str, Any]) -> None:
    """``report.md`` and ``report.html``: per question the table, the rule, the winner and why."""
    md = [f"# Model comparison {doc['version']}", "",
          f"Computed {doc['computed_at']} on features {doc['inputs']['features_version']} (seed {doc['seed']}).", ""]  # fmt: skip
    body = [f"<h1>Model comparison</h1><p class=sub>version {html.escape(doc['version'])}, computed "
            f"{html.escape(doc['computed_at'])}, seed {doc['seed']}</p>"]  # fmt: skip
    for name, t in doc["tables"].items():
        header, rows = table_cells(t)
        md += [f"## {TITLES.get(name, name)}", "", md_table(header, rows), "",
               f"**Winner: {t['winner']}** (shipped: {t['shipped']}). {t['why']}", "", f"Rule: {t['rule']}.",
               *(f"- {n}" for n in t["notes"]), ""]  # fmt: skip
        body.append(f"<section><h2>{html.escape(TITLES.get(name, name))}</h2>{html_table(header, rows)}"
                    f"<p><b>Winner: {html.escape(t['winner'])}</b> (shipped: {html.escape(t['shipped'])}). "
                    f"{html.escape(t['why'])}</p><p class=note>Rule: {html.escape(t['rule'])}. "
                    f"{' '.join(html.escape(n) for n in t['notes'])}</p></section>")  # fmt: skip
    for name, why in doc["skipped"].items():
        md += [f"## {TITLES.get(name, name)}", "", f"Not answered: {why}", ""]
        body.append(f"<section><h2>{html.escape(TITLES.get(name, name))}</h2><p>Not answered: {html.escape(why)}</p></section>")
    (out_dir / "report.md").write_text("\n".join(md), encoding="utf-8")
    (out_dir / "report.html").write_text(page("Model comparison", "".join(body)), encoding="utf-8")


__all__ = ["LABELS", "TITLES", "label", "table_cells", "write_comparison_report"]
