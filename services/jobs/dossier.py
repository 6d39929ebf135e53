"""``shoplens dossier``: the whole approach and its results in one document, HTML and PDF.

Reads only what the lake has published (:data:`services.jobs.dossier_sections.SECTIONS`, each section
present when its result exists), adds a one-page summary (the sections' key-figure cards and 3 to 5
of their insight sentences), the pipeline diagram and an appendix (versions, settings, the commands
that reproduce the document), and publishes::

    reports/dossier/<version>/{dossier.html, dossier.pdf, dossier.json, charts/<name>.png}
    reports/dossier/_current.json                                   (the commit point)

``dossier.json`` holds every section's key figures exactly as read, with the version of each input.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from services.core.catalog import DOSSIER, VERSIONED
from services.core.lake import Lake, new_run_id, utc_now_iso
from services.core.publish import new_version
from services.jobs.dossier_sections import SECTIONS
from services.jobs.stages import STAGES
from services.reports.dossier import Card, Section, Table, render_html, render_pdf
from services.reports.pipeline_diagram import pipeline_chart

log = logging.getLogger("shoplens.dossier")

#: At most this many insight sentences on the summary page (the issue asks for three to five).
MAX_INSIGHTS = 5
MAX_CARDS = 6
#: Which sections' cards and insights the summary page takes first when it cannot hold them all: the
#: customers and what they are worth, then what the models decide, then how the data was prepared.
SUMMARY_PRIORITY = ("segments", "lifetime_value", "retention", "funnel", "comparison", "propensity", "mmm",
                    "experiments", "data", "threshold", "features")
FILES = ("dossier.html", "dossier.pdf", "dossier.json")
PACKAGES = ("shoplens", "pyspark", "scikit-learn", "pandas", "numpy", "pymc-marketing", "matplotlib", "weasyprint")


def _published_versions(lake: Lake) -> dict[str, str]:
    return {d: v for d in VERSIONED if d != DOSSIER and (v := lake.current_version(d)) is not None}


def pipeline_section(lake: Lake) -> Section:
    published = set(_published_versions(lake)) | ({"events"} if lake.committed_run_ids() else set())
    s = Section("pipeline", "The pipeline", "services/core/catalog.py and services/jobs/stages.py")
    s.parts = [
        "Events are validated, pseudonymized and appended to the lake by ingestion runs; each later stage reads "
        "published datasets and publishes its own as a new version whose pointer is written last, so a reader "
        "never sees a half-written result. The stages below run in this order whenever they are due.",
        pipeline_chart([st.name for st in STAGES], published),
    ]
    return s


def appendix_section(lake: Lake, versions: dict[str, str], settings: dict[str, Any] | None) -> Section:
    s = Section("appendix", "Appendix: versions, settings and how to reproduce", "the lake's pointers")
    packages = []
    for name in PACKAGES:
        try:
            packages.append([name, metadata.version(name)])
        except metadata.PackageNotFoundError:
            continue
    s.parts = [
        Table("Published versions read", ["dataset", "version"], [[d, v] for d, v in sorted(versions.items())]),
        Table("Software", ["package", "version"], [["python", platform.python_version()], *packages]),
    ]
    if settings:
        s.parts.append(Table("Settings (no secrets)", ["setting", "value"], [[k, str(v)] for k, v in sorted(settings.items())]))
    s.parts += [
        "Reproduce this document on the same lake: `shoplens run` (ingested runs to features, segments, "
        "propensity, funnel, overview), `shoplens compare-models`, then `shoplens dossier --out DIR`. "
        "Other sections come from `shoplens describe`, `shoplens abtest analyze` and `shoplens mmm fit` when run.",
        f"Lake: {lake.store.uri}.",
    ]
    s.figures = {"versions": versions}
    return s


def summary(sections: list[Section]) -> tuple[list[Card], list[str]]:
    """The summary page: the first card and the first insight of the sections that matter most, in reading order.

    A full lake has more sections with an insight than the page holds; cutting in reading order dropped
    the last ones (lifetime value, retention), so the page takes them by :data:`SUMMARY_PRIORITY`
    (what a reader acts on first), one per section before any second sentence, and shows them in reading order.
    """
    rank = {key: i for i, key in enumerate(SUMMARY_PRIORITY)}
    order = {s.key: i for i, s in enumerate(sections)}
    by_priority = sorted(sections, key=lambda s: (rank.get(s.key, len(rank)), order[s.key]))
    chosen_cards = [s for s in by_priority if s.cards][:MAX_CARDS]
    cards = [s.cards[0] for s in sorted(chosen_cards, key=lambda s: order[s.key])]
    picks = [(s.key, 0) for s in by_priority if s.insights]
    picks += [(s.key, j) for s in by_priority for j in range(1, len(s.insights))]
    chosen = sorted(picks[:MAX_INSIGHTS], key=lambda p: (order[p[0]], p[1]))
    by_key = {s.key: s for s in sections}
    return cards, [by_key[key].insights[j] for key, j in chosen]


def build_sections(lake: Lake) -> list[Section]:
    """Every section whose result the lake has published, in reading order."""
    out = []
    for builder in SECTIONS:
        try:
            section = builder(lake)
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"dossier: {builder.__name__} cannot read its published result ({err!r})") from err
        if section is not None:
            out.append(section)
    return out


def run_dossier(lake: Lake, out_dir: Path | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the document from the lake's published results, publish it, copy it to ``out_dir``."""
    t0 = time.monotonic()
    versions = _published_versions(lake)
    if not versions and not lake.committed_run_ids():
        raise ValueError("dossier: the lake has published nothing yet: run `shoplens ingest` and `shoplens run`")
    sections = build_sections(lake)
    sections += [pipeline_section(lake), appendix_section(lake, versions, settings)]
    cards, insights = summary(sections)
    version, created = new_run_id(), utc_now_iso()
    html_text = render_html("shoplens dossier", f"Version {version}, made {created} from {lake.store.uri}",
                            sections, cards, insights)  # fmt: skip
    pdf = render_pdf(html_text)
    doc = {
        "version": version, "created_at": created, "inputs": versions, "insights": insights,
        "cards": [{"label": c.label, "value": c.value, "sentence": c.sentence} for c in cards],
        "sections": [{"key": s.key, "title": s.title, "source": s.source, "figures": s.figures,
                      "charts": [c.name for c in s.charts()]} for s in sections],
    }  # fmt: skip
    charts = {c.name: c for s in sections for c in s.charts()}
    with new_version(lake, DOSSIER, version, created_at=created, sections=[s.key for s in sections]) as staged:
        (staged.dir / "dossier.html").write_text(html_text, encoding="utf-8")
        (staged.dir / "dossier.pdf").write_bytes(pdf)
        staged.write_json("dossier.json", doc)
        (staged.dir / "charts").mkdir()
        for name, chart in charts.items():
            (staged.dir / "charts" / f"{name}.png").write_bytes(chart.png)
        if out_dir is not None:
            out_dir = Path(out_dir)
            (out_dir / "charts").mkdir(parents=True, exist_ok=True)
            for name in FILES:
                shutil.copyfile(staged.dir / name, out_dir / name)
            for name in charts:
                shutil.copyfile(staged.dir / "charts" / f"{name}.png", out_dir / "charts" / f"{name}.png")
    seconds = round(time.monotonic() - t0, 3)
    log.info("dossier %s published", version, extra={"stage": "dossier", "version": version, "seconds": seconds})
    return {"status": "published", "version": version, "path": f"{DOSSIER}/{version}",
            "sections": [s.key for s in sections], "charts": sorted(charts), "pdf_bytes": len(pdf),
            "out_dir": str(out_dir) if out_dir else None, "seconds": seconds}  # fmt: skip


def dossier_text(r: dict[str, Any]) -> str:
    where = f"{r['path']}" + (f" (copied to {r['out_dir']})" if r["out_dir"] else "")
    return (f"dossier {r['version']}: {where}\n  sections: {', '.join(r['sections'])}\n"
            f"  {len(r['charts'])} charts, PDF {r['pdf_bytes'] / 1024:.0f} KiB, {r['seconds']:.1f} s")  # fmt: skip


__all__ = ["build_sections", "dossier_text", "run_dossier", "summary"]
