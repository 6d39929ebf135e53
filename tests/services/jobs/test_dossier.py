"""``shoplens compare-models`` and ``shoplens dossier`` on a lake the real pipeline built.

The lake comes from the shared builder of the dashboard's browser test (tests/dashboard/pipeline_lake.py:
generate, ingest two months, run every due stage), then one model comparison. The dossier is checked
as a reader gets it: the PDF rendered page by page with poppler's ``pdftoppm``, its text read back with
``pdftotext`` and compared with the published results read straight from the lake (and the accepted
rows counted from the events' Parquet files with pyarrow); the HTML opened in a real Chromium.
Results that were never published (experiments, marketing mix) must have no section; the pipeline's
clv and retention stages publish lifetime value and retention, so those sections are there.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from services.core.catalog import (
    CLV,
    FUNNEL,
    MODEL_COMPARISON,
    PROPENSITY_MODEL,
    RETENTION,
    SEGMENTATION_MODEL,
)
from services.core.runtime import open_lake
from services.core.settings import Settings
from tests.conftest import TEST_KEY

# the lake is built by the real pipeline (about 4 minutes on 2 idle cores): far past the default timeout when shared
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(3600)]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def built(spark, pipeline_lake, tmp_path_factory):
    from services.jobs.compare_models import CompareConfig, compare_models
    from services.jobs.dossier import run_dossier

    root = tmp_path_factory.mktemp("dossier")
    pl = pipeline_lake.copy(root)  # the shared lake, copied: compare-models and the dossier publish into it
    lake = open_lake(Settings(lake=pl.uri, work_dir=root / "work", pseudonym_key=TEST_KEY))
    cfg = CompareConfig(cluster_sample=1_500, n_bootstrap=2, study_users=1_500, max_propensity_rows=50_000)
    comparison = compare_models(spark, lake, cfg, truth_csv=root / "raw" / "_truth" / "users.csv",
                                key=TEST_KEY.encode())  # fmt: skip
    # again, the questions with sampling and splits of their own (propensity reuses the training job's split)
    again = compare_models(spark, lake, replace(cfg, questions=("segmentation", "assignment")),
                           truth_csv=root / "raw" / "_truth" / "users.csv", key=TEST_KEY.encode())  # fmt: skip
    result = run_dossier(lake, root / "out", {"lake": pl.uri})
    return {"lake": lake, "root": root, "out": root / "out", "result": result, "comparison": comparison, "again": again}


def _text(pdf: Path) -> str:
    raw = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return re.sub(r"\s+", " ", raw)


def _pages(pdf: Path) -> list[str]:
    raw = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return [re.sub(r"\s+", " ", p) for p in raw.split("\f")]


# -- compare-models ---------------------------------------------------------------------------------
def test_comparison_answers_every_question_and_is_deterministic(built) -> None:
    doc = built["comparison"]
    assert set(doc["tables"]) == {"segmentation", "assignment", "propensity"}, doc["skipped"]
    seg, assign, prop = (doc["tables"][q] for q in ("segmentation", "assignment", "propensity"))
    assert seg["rows"][0]["family"] == "K-Means (shipped)" and len(seg["rows"]) == 4
    assert {r["family"].split(" (")[0] for r in assign["rows"]} >= {"Nearest centroid", "K-NN", "Decision tree",
                                                                    "SVM", "Random forest", "Gradient boosting", "MLP"}
    assert {f"agreement_n{n}" for n in (5, 10, 20)} <= set(assign["metrics"])
    assert len(prop["rows"]) == 4 and all(0.5 < r["roc_auc"] <= 1 for r in prop["rows"])
    assert all(r["ari_vs_truth"] is not None for r in seg["rows"])  # the truth file was given
    strip = lambda d: {q: [{k: v for k, v in r.items() if "seconds" not in k and "_ms" not in k and "_us" not in k}  # noqa: E731
                           for r in t["rows"]] for q, t in d["tables"].items()}  # fmt: skip
    again = strip(built["again"])
    assert {q: rows for q, rows in strip(doc).items() if q in again} == again


def test_shipped_rule_agreement_matches_the_segments_of_the_published_scorer(built) -> None:
    """Independently: the shipped row's agreement at the largest n lies within the threshold study's range,
    and the clustering row's K-Means reaches the model.json silhouette within sampling noise."""
    lake = built["lake"]
    version = lake.current_version(SEGMENTATION_MODEL)
    model = lake.read_json(f"{SEGMENTATION_MODEL}/{version}/model.json")
    seg = built["comparison"]["tables"]["segmentation"]["rows"][0]
    assert abs(seg["silhouette"] - model["metrics"]["silhouette"]) < 0.1
    assert seg["clusters"] == model["k"]


# -- the dossier ------------------------------------------------------------------------------------
def test_pdf_renders_every_page(built) -> None:
    pdf = built["out"] / "dossier.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 5
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(built["root"] / "page")], check=True)
    images = sorted(built["root"].glob("page-*.png"))
    assert len(images) == pages
    from PIL import Image

    for img in images:  # every page has ink on it
        lo, hi = Image.open(img).convert("L").getextrema()
        assert lo < 128 < hi, img.name


def test_pdf_holds_exactly_the_sections_whose_result_exists(built) -> None:
    text = _text(built["out"] / "dossier.pdf")
    doc = json.loads((built["out"] / "dossier.json").read_text())
    keys = [s["key"] for s in doc["sections"]]
    lake = built["lake"]
    value = [k for k, d in (("lifetime_value", CLV), ("retention", RETENTION)) if lake.current_version(d)]
    assert value == ["lifetime_value", "retention"]  # the pipeline's clv and retention stages published them
    assert keys == ["data", "features", "threshold", "segments", "comparison", "funnel", "propensity", *value,
                    "pipeline", "appendix"]  # fmt: skip
    for s in doc["sections"]:
        assert s["title"] in text, s["title"]
    assert "Experiments" not in text and "Marketing mix" not in text  # never published in this lake


def test_contents_list_gives_the_page_each_section_starts_on(built) -> None:
    pdf = built["out"] / "dossier.pdf"
    pages = _pages(pdf)
    doc = json.loads((built["out"] / "dossier.json").read_text())
    contents = next(p for p in pages if p.strip().startswith("Contents"))
    for s in doc["sections"]:
        m = re.search(re.escape(s["title"]) + r"[ .]*?(\d+)", contents)
        assert m, s["title"]
        assert pages[int(m.group(1)) - 1].lstrip().startswith(s["title"]) or s["title"] in pages[int(m.group(1)) - 1]
    assert f"page 1 of {len([p for p in pages if p.strip()])}" in pages[0]


def test_pdf_figures_equal_the_published_results(built) -> None:
    lake, text = built["lake"], _text(built["out"] / "dossier.pdf")
    root = Path(lake.store.uri)
    accepted = ds.dataset(root / "events", format="parquet", partitioning="hive").count_rows()
    assert f"{accepted:,}" in text  # counted from the events themselves
    seg_v = lake.current_version(SEGMENTATION_MODEL)
    for p in lake.read_json(f"{SEGMENTATION_MODEL}/{seg_v}/profiles.json"):
        assert p["name"] in text and f"{p['size']:,}" in text
        assert f"{100 * p['share_revenue']:.1f}%" in text
    chosen = lake.read_json(f"{SEGMENTATION_MODEL}/{seg_v}/model.json")["threshold"]["chosen_min_events"]
    assert f": {chosen} events. Users with fewer" in text  # the threshold section's own sentence
    metrics = lake.read_json(f"{PROPENSITY_MODEL}/{lake.current_version(PROPENSITY_MODEL)}/metrics.json")
    for m in metrics["models"].values():
        assert f"{m['roc_auc']:.3f}" in text and f"{m['pr_auc']:.3f}" in text
    funnel = lake.read_json(f"{FUNNEL}/{lake.current_version(FUNNEL)}/result.json")
    for st in funnel["steps"]:
        assert f"{st['count']:,}" in text
    clv = lake.read_json(f"{CLV}/{lake.current_version(CLV)}/result.json")
    assert f"{clv['customers']:,} customers bought" in text and f"{clv['totals']['clv_sum']:,.2f}" in text
    for v in clv["parameters"].values():
        assert f"{v:.4g}" in text
    for c in lake.read_json(f"{RETENTION}/{lake.current_version(RETENTION)}/result.json")["cohorts"]:
        assert f"{c['cohort']} {c['size']:,}" in text
    comparison = lake.read_json(f"{MODEL_COMPARISON}/{lake.current_version(MODEL_COMPARISON)}/comparison.json")
    for t in comparison["tables"].values():
        assert f"Winner: {t['winner']}" in text
        shipped = t["rows"][0]
        metric = next(m for m in t["metrics"] if shipped.get(m) is not None and m != "calinski_harabasz")
        assert f"{shipped[metric]:.3f}" in text


def test_summary_page_has_cards_and_three_to_five_insights(built) -> None:
    doc = json.loads((built["out"] / "dossier.json").read_text())
    assert 3 <= len(doc["insights"]) <= 5 and doc["cards"]
    first = _pages(built["out"] / "dossier.pdf")[0]
    for sentence in doc["insights"]:
        assert sentence[:40] in first and sentence[-40:] in first  # the whole summary on its one page
    assert any(re.search(r"\d", s) for s in doc["insights"])  # generated from numbers


def test_every_chart_is_also_its_own_file_and_the_html_embeds_the_same_image(built) -> None:
    out = built["out"]
    doc = json.loads((out / "dossier.json").read_text())
    html = (out / "dossier.html").read_text()
    names = [c for s in doc["sections"] for c in s["charts"]]
    assert {"segments-radar", "threshold-agreement", "pipeline"} <= set(names)
    for name in names:
        png = (out / "charts" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(png).decode() in html
    published = built["lake"].store.list(f"reports/dossier/{built['result']['version']}/charts")
    assert len(published) == len(set(names))


@pytest.mark.browser
def test_html_opens_in_chromium_without_errors(built) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((built["out"] / "dossier.html").as_uri(), wait_until="load")
            images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
            sections = page.evaluate("document.querySelectorAll('section.major').length")
        finally:
            browser.close()
    assert errors == []
    assert images and all(images)
    assert sections == len(json.loads((built["out"] / "dossier.json").read_text())["sections"])
    assert all(u.startswith(("file:", "data:")) for u in requests)  # self-contained: nothing fetched


# -- the notebooks, on the same lake ---------------------------------------------------------------
NOTEBOOKS = sorted((Path(__file__).resolve().parents[3] / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    assert len(NOTEBOOKS) == 3
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_on_the_lake(built, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each notebook runs top to bottom; their own asserts reconcile the lake (events = accepted rows,
    re-scored segments = published segments, the model's transforms = the generator's)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SHOPLENS_LAKE", built["lake"].store.uri)
    monkeypatch.setenv("PYTHONPATH", str(path.parents[1]))
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
