"""The dossier's lifetime value, retention and erasure parts, on the dashboard's fixture lake.

The fixture lake (tests/dashboard/fixtures.py) publishes a ``clv`` version with a holdout check and a
``retention`` version counted by the production code, without Spark; here the erasure ledger gets a few
requests through its own functions. The dossier is then built from the sections under test (the fixture's
segmentation documents are shaped for the pages, not for the dossier's other sections; the pipeline
lake of test_dossier.py covers those and the full order) and its PDF text (``pdftotext``) and
``dossier.json`` are compared with the published results read straight from the lake (result.json and
the Parquet tables beside it) and with the ledger's documents. A lake without those results must have
no such sections. The full pipeline's dossier is checked in test_dossier.py.
"""

from __future__ import annotations

import json
import re
import subprocess

import pandas as pd
import pytest

from etl.erasure import key_digest
from model.segmentation.presentation import NOT_ENOUGH_NAME
from services.core import erasure_ledger
from services.core.catalog import CLV, RETENTION
from services.core.lake import Lake
from services.core.storage import LocalStore
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from services.jobs import dossier
    from services.jobs.dossier_sections import data_section, lifetime_value_section, retention_section
    from tests.dashboard.fixtures import build_lake

    root = tmp_path_factory.mktemp("dossier-value")
    fx = build_lake(root / "lake", TEST_KEY.encode(), n_users=400)
    lake = Lake(LocalStore(root / "lake"), root / "work")
    for r in fx.runs:  # the fixture's run summaries predate the event period fields ingestion now writes
        lake.write_run({**r, "event_date_min": "2019-10-01", "event_date_max": "2019-11-30"})
    keys = fx.features["user_key"].iloc[:3].tolist()
    sub = erasure_ledger.record(lake, [key_digest(k) for k in keys], "key")
    done = sub.requests[0]
    done.state, done.completed_at, done.verified_at = erasure_ledger.COMPLETED, done.requested_at, done.requested_at
    done.stores = {"events": {"state": "done", "rows_removed": 17}, "features": {"state": "done", "rows_removed": 1}}
    erasure_ledger.save(lake, sub)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dossier, "SECTIONS", (data_section, lifetime_value_section, retention_section))
        result = dossier.run_dossier(lake, root / "out")
    raw = subprocess.run(["pdftotext", str(root / "out" / "dossier.pdf"), "-"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return {"lake": lake, "fx": fx, "keys": keys, "out": root / "out", "result": result,
            "doc": json.loads((root / "out" / "dossier.json").read_text()), "text": re.sub(r"\s+", " ", raw),
            "html": (root / "out" / "dossier.html").read_text()}  # fmt: skip


def _section(doc: dict, key: str) -> dict:
    return next(s for s in doc["sections"] if s["key"] == key)


def _published(lake: Lake, dataset: str) -> tuple[str, dict]:
    version = lake.current_version(dataset)
    return version, lake.read_json(f"{dataset}/{version}/result.json")


def test_lifetime_value_and_retention_sections_follow_the_other_results(built) -> None:
    from services.jobs.dossier_sections import (
        SECTIONS,
        lifetime_value_section,
        mmm_section,
        retention_section,
    )

    assert SECTIONS[-3:] == (mmm_section, lifetime_value_section, retention_section)  # the reading order
    keys = [s["key"] for s in built["doc"]["sections"]]
    assert keys == ["data", "lifetime_value", "retention", "pipeline", "appendix"]
    assert {"clv-distribution", "clv-by-segment", "retention-triangle", "retention-curves"} <= set(built["result"]["charts"])
    for name in ("clv-distribution", "retention-triangle"):
        assert (built["out"] / "charts" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "Lifetime value" in built["text"] and "Retention rate by week since start" in built["text"]


def test_lifetime_value_figures_equal_the_published_fit(built) -> None:
    lake, text = built["lake"], built["text"]
    version, r = _published(lake, CLV)
    figures = _section(built["doc"], "lifetime_value")["figures"]
    assert figures["customers"] == r["customers"] and figures["repeat_customers"] == r["repeat_customers"]
    assert figures["parameters"] == r["parameters"] and figures["totals"] == r["totals"]
    h = r["holdout"]
    assert figures["holdout"]["mae"] == h["mae"] and figures["holdout"]["predicted_purchases"] == h["predicted_purchases"]
    assert f"{r['customers']:,} customers bought" in text and f"{r['repeat_customers']:,} of them" in text
    for v in r["parameters"].values():
        assert f"{v:.4g}" in text
    assert f"{r['totals']['clv_sum']:,.2f}" in text and f"{r['totals']['clv_median']:,.2f}" in text
    assert (f"actual {h['actual_purchases']:,.0f}, predicted {h['predicted_purchases']:,.2f}" in text
            and f"MAE {h['mae']:.3f} against {h['mae_naive']:.3f}" in text)  # fmt: skip
    # value per segment and lifecycle stage: the published groups table, independently of result.json
    groups = pd.read_parquet(lake.store.uri + f"/{CLV}/{version}/groups.parquet")
    assert set(groups["breakdown"]) == {"segment", "lifecycle_stage"}
    for g in groups.itertuples():
        assert f"{g.clv_sum:,.2f}" in text, (g.breakdown, g.value)
    # the customers behind the figures: every published customer once
    customers = pd.read_parquet(lake.store.uri + f"/{CLV}/{version}/customers")
    assert len(customers) == r["customers"] and customers["clv"].sum() == pytest.approx(r["totals"]["clv_sum"])


def test_retention_figures_equal_the_published_cohorts(built) -> None:
    lake, text = built["lake"], built["text"]
    version, r = _published(lake, RETENTION)
    figures = _section(built["doc"], "retention")["figures"]
    cohorts = pd.read_parquet(lake.store.uri + f"/{RETENTION}/{version}/cohorts.parquet")
    overall = cohorts[cohorts["breakdown"] == "overall"]
    assert set(figures["cohorts"]) == {str(c) for c in overall["cohort"]}
    for cohort, part in overall.groupby("cohort"):
        part = part.sort_values("period")
        f = figures["cohorts"][str(cohort)]
        assert f["size"] == int(part["size"].iloc[0]) and f["rates"] == pytest.approx(part["rate"].tolist())
        assert f"{cohort} {int(part['size'].iloc[0]):,}" in text  # the cohort's row of the table
    assert "Semantics: users in weekly cohorts by their first event" in text and f"data to {r['end']}" in text


def test_summary_carries_the_value_and_retention_insights(built) -> None:
    """The insight sentences name the published numbers: the top segment's share of value, the holdout, week 1."""
    lake, doc = built["lake"], built["doc"]
    _, r = _published(lake, CLV)
    top = max((g for g in r["groups"] if g["breakdown"] == "segment" and g["value"] != NOT_ENOUGH_NAME),
              key=lambda g: g["clv_sum"])  # the insight names a segment, not the users waiting for one
    share = f"{100 * top['clv_sum'] / r['totals']['clv_sum']:.1f}%"
    assert f"{top['value']} hold {share} of the expected 12-month customer value" in " ".join(doc["insights"])
    h = r["holdout"]
    assert any(f"against {h['actual_purchases']:,.0f} actual; it beats the naive" in i for i in doc["insights"])
    _, ret = _published(lake, RETENTION)
    ripe = [c for c in ret["cohorts"] if any(p["period"] == 1 and p["complete"] for p in c["periods"])]
    big = max(ripe, key=lambda c: c["size"])
    week1 = next(p["rate"] for p in big["periods"] if p["period"] == 1)
    assert f"{100 * week1:.1f}% of the {big['size']:,} users of the {big['cohort']} cohort" in " ".join(doc["insights"])
    assert {c["label"] for c in doc["cards"]} >= {"Lifetime value, 12 months", "Back in the second week"}




def test_the_value_insight_names_a_segment_not_the_users_waiting_for_one(built, monkeypatch) -> None:
    """On the demo lake the users with too little activity held the most value (29.6%) and the insight named them."""
    from services.jobs import dossier_sections

    lake = built["lake"]
    version, r = _published(lake, CLV)
    waiting = {**next(g for g in r["groups"] if g["breakdown"] == "segment"), "value": NOT_ENOUGH_NAME,
               "clv_sum": 2 * r["totals"]["clv_sum"]}  # fmt: skip
    doc = {**r, "groups": [*r["groups"], waiting]}
    monkeypatch.setattr(dossier_sections, "published", lambda _lake, _dataset, _name: (version, doc))
    insight = dossier_sections.lifetime_value_section(lake).insights[0]
    top = max((g for g in r["groups"] if g["breakdown"] == "segment"), key=lambda g: g["clv_sum"])
    assert insight.startswith(f"{top['value']} hold ") and NOT_ENOUGH_NAME not in insight

def test_summary_of_a_full_lake_keeps_the_value_and_retention_insights(built) -> None:
    """A full lake has more sections with an insight than the page's five: the value and retention ones stay.

    The fixture lake's own sections (data, lifetime value, retention) are built for real; the sections
    a full lake adds before them in reading order (the threshold study, segments, the comparison,
    funnel, propensity) stand in with one card and one sentence each, as their builders make them.
    """
    from services.jobs.dossier import MAX_INSIGHTS, build_sections, summary
    from services.jobs.dossier_sections import data_section, lifetime_value_section, retention_section
    from services.reports.dossier import Card, Section

    def earlier(key: str) -> Section:
        return Section(key, key, f"{key}/v", cards=[Card(key, "1", f"{key} card")], insights=[f"{key} insight."])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("services.jobs.dossier.SECTIONS", (data_section, lifetime_value_section, retention_section))
        data, value, retention = build_sections(built["lake"])
    sections = [data, *map(earlier, ("threshold", "segments", "comparison", "funnel", "propensity")), value, retention]
    cards, insights = summary(sections)
    assert len(insights) == MAX_INSIGHTS
    assert value.insights[0] in insights and retention.insights[0] in insights  # cut in reading order, both were lost
    assert insights == sorted(insights, key=lambda i: next(n for n, s in enumerate(sections) if i in s.insights))
    assert {"Lifetime value, 12 months", "Back in the second week"} <= {c.label for c in cards}

def test_data_section_counts_the_erasure_ledger_and_shows_no_key(built) -> None:
    reqs = [q for s in erasure_ledger.submissions(built["lake"]) for q in s.requests]
    erasure = _section(built["doc"], "data")["figures"]["erasure"]
    assert erasure == {"received": len(reqs), "completed": 1, "pending": len(reqs) - 1, "verified": 1,
                       "rows_removed": 18}  # fmt: skip
    assert len(reqs) == 3
    layout = subprocess.run(["pdftotext", "-layout", str(built["out"] / "dossier.pdf"), "-"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert re.search(r"Erasure requests\s+received\s+completed\s+pending\s+verified\s+rows removed\s+3\s+1\s+2\s+1\s+18\s",
                     layout)  # fmt: skip
    assert "Pseudonymization and erasure" in built["text"]
    for k in built["keys"]:
        assert k not in built["html"] and key_digest(k) not in built["html"] and key_digest(k)[:12] not in built["html"]


def test_sections_are_absent_without_their_results(tmp_path) -> None:
    from services.jobs.dossier_sections import data_section, lifetime_value_section, retention_section

    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    assert lifetime_value_section(lake) is None and retention_section(lake) is None
    lake.write_run({"run_id": "20191201T020000Z-000001", "status": "committed", "rows_read": 10, "rows_accepted": 9,
                    "rows_quarantined": 1, "duplicates_removed": 0, "event_date_min": "2019-10-01",
                    "event_date_max": "2019-10-02", "files": []})  # fmt: skip
    section = data_section(lake)
    assert section is not None
    assert section.figures["erasure"] == {"received": 0, "completed": 0, "pending": 0, "verified": 0, "rows_removed": 0}
