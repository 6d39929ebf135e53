"""``shoplens describe`` end to end: real ingest into a real lake, report checked against pandas on the CSV."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from etl.contract import EVENT_TYPES
from etl.pseudonymize import pseudonymize
from services.core.catalog import DESCRIBE_REPORT as DESCRIBE
from services.core.lake import Lake
from services.core.storage import LocalStore
from services.jobs.describe import FILES, run_describe
from services.jobs.ingest import ingest_files
from services.reports.describe import render_html, render_markdown
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.spark

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
GOOD = [
    "2019-10-02 10:00:00 UTC,view,100,2053013555631882655,electronics.smartphone,Apple,999.99,900000001,sess-a",
    "2019-10-02 10:01:00 UTC,cart,100,2053013555631882655,electronics.smartphone,Apple,999.99,900000001,sess-a",
    "2019-10-02 10:02:00 UTC,purchase,100,2053013555631882655,electronics.smartphone,Apple,999.99,900000001,sess-a",
    "2019-10-02 11:00:00 UTC,view,101,2053013555631882655,,,5.00,900000002,sess-b",
]
BAD = [
    "2019-10-02 11:00:00 UTC,teleport,101,2053013555631882655,,,5.00,900000002,sess-b",
    "2019-10-02 11:00:00 UTC,view,101,2053013555631882655,,,-5.00,900000002,sess-b",
    "garbage",
]


def _dirty_file(tmp: Path) -> Path:
    path = tmp / "dirty.csv"
    path.write_text(HEADER + "\n".join([GOOD[0], GOOD[1], GOOD[1], *GOOD[2:], *BAD]) + "\n")
    return path


def _expected(*csvs: Path) -> pd.DataFrame:
    """Accepted rows as pandas sees them: valid lines of the files, exact duplicates dropped."""
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False, on_bad_lines="skip") for p in csvs]
    raw = pd.concat(frames).drop_duplicates()
    valid = raw[raw["event_type"].isin(EVENT_TYPES) & (pd.to_numeric(raw["price"], errors="coerce") >= 0)]
    return valid.assign(date=lambda d: d["event_time"].str[:10], brand=lambda d: d["brand"].str.lower())


def _check_against_pandas(stats: dict, exp: pd.DataFrame) -> None:
    o = stats["overview"]
    assert o["events"] == len(exp)
    assert o["users"] == exp["user_id"].nunique()
    assert o["sessions"] == exp["user_session"].nunique()
    assert o["products"] == exp["product_id"].nunique()
    assert (o["first_date"], o["last_date"]) == (exp["date"].min(), exp["date"].max())
    assert stats["event_types"] == {t: int((exp["event_type"] == t).sum()) for t in EVENT_TYPES}
    assert stats["missing"]["brand"]["missing"] == int((exp["brand"] == "").sum())
    assert stats["missing"]["category_code"]["missing"] == int((exp["category_code"] == "").sum())
    brands = exp.loc[exp["brand"] != "", "brand"].value_counts()
    top = sorted(brands.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(t["name"], t["events"]) for t in stats["brands"]["top"][:5]] == top
    daily = exp.groupby("date").size()
    assert {d["date"]: d["events"] for d in stats["daily"]} == daily.to_dict()
    purchases = exp[exp["event_type"] == "purchase"]
    assert o["revenue"] == pytest.approx(purchases["price"].astype(float).sum(), abs=0.01)


@pytest.fixture(scope="module")
def described(spark, tmp_path_factory, rees46_sample):
    """One local lake with the real rows and a dirty file, described once."""
    tmp = tmp_path_factory.mktemp("describe")
    lake = Lake(LocalStore(tmp / "lake"), tmp / "work")
    dirty = _dirty_file(tmp)
    summaries = [ingest_files(spark, lake, [p], TEST_KEY.encode()) for p in (rees46_sample, dirty)]
    result = run_describe(spark, lake, tmp / "out")
    return {
        "lake": lake,
        "result": result,
        "summaries": summaries,
        "out": tmp / "out",
        "csvs": [rees46_sample, dirty],
    }


def test_statistics_match_pandas_on_the_ingested_files(described) -> None:
    _check_against_pandas(described["result"], _expected(*described["csvs"]))


def test_quality_sections_match_the_ingest_runs(described) -> None:
    result, summaries = described["result"], described["summaries"]
    by_reason: dict[str, int] = {}
    for s in summaries:
        for reason, n in s["quarantine_by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    assert result["quarantine"]["rows"] == len(BAD) == sum(s["rows_quarantined"] for s in summaries)
    assert result["quarantine"]["by_reason"] == by_reason
    assert set(by_reason) == {"unknown_event_type", "negative_price", "malformed_line"}
    assert result["duplicates"]["rows"] == sum(s["duplicates_removed"] for s in summaries) >= 1


def test_report_is_published_in_the_lake_and_copied_out(described) -> None:
    lake, result, out = described["lake"], described["result"], described["out"]
    version = result["report"]["version"]
    assert lake.current_version(DESCRIBE) == version
    assert lake.store.list(f"{DESCRIBE}/{version}") == sorted(f"{DESCRIBE}/{version}/{f}" for f in FILES)
    stored = json.loads(lake.store.read_bytes(f"{DESCRIBE}/{version}/report.json"))
    assert stored["overview"] == result["overview"]
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert (out / "report.html").read_bytes() == lake.store.read_bytes(f"{DESCRIBE}/{version}/report.html")


def test_html_is_self_contained_with_charts_and_markdown_has_every_section(described) -> None:
    html = (described["out"] / "report.html").read_text()
    assert "<script src=" not in html, "no external scripts: the page must open offline"
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js is inlined
    for section in (
        "overview",
        "event_types",
        "missing",
        "events_per_user",
        "events_per_session",
        "categories",
        "brands",
        "price_by_category",
        "daily",
        "quality",
    ):
        assert f'id="{section}"' in html, section
    body = re.sub(r"<script type='text/javascript'>.*?</script>", "", html, count=1, flags=re.S)
    # daily, events per user and per session, categories, brands, prices, quarantine reasons
    assert body.count("Plotly.newPlot(") == 7
    md = (described["out"] / "report.md").read_text()
    for title in (
        "At a glance",
        "Missing values",
        "Events per user",
        "Top brands",
        "Daily volume",
        "Data quality",
    ):
        assert f"## {title}" in md, title
    assert f"| Events | {described['result']['overview']['events']:,} |" in md


def test_no_raw_or_pseudonymized_id_in_any_report(described) -> None:
    raw = pd.concat(
        pd.read_csv(p, dtype=str, keep_default_na=False, on_bad_lines="skip") for p in described["csvs"]
    )
    key = TEST_KEY.encode()
    keys = {pseudonymize(v, key) for v in pd.concat([raw["user_id"], raw["user_session"]]).unique()}
    html = (described["out"] / "report.html").read_text()
    body = re.sub(r"<script type='text/javascript'>.*?</script>", "", html, count=1, flags=re.S)
    ids = {v for v in pd.concat([raw["user_id"], raw["user_session"]]).unique() if len(v) >= 6}
    texts = [(described["out"] / f).read_text() for f in ("report.md", "report.json")] + [body]
    for text in texts:
        assert not re.search(r"\b[0-9a-f]{64}\b", text), "a pseudonymized key leaked"
        leaked = [v for v in ids if v in text]
        assert leaked == []
        assert not any(k in text for k in keys)


def test_renderers_handle_a_lake_without_side_tables(described) -> None:
    stats = {**described["result"], "quarantine": None, "duplicates": None, "suspicious_users": None}
    assert "no quarantine data in the lake" in render_markdown(stats)
    assert "no quarantine data in the lake" in render_html(stats)


def test_describe_on_an_s3_lake(spark, s3_lake, tmp_path) -> None:
    dirty = _dirty_file(tmp_path)
    ingest_files(spark, s3_lake, [dirty], TEST_KEY.encode())
    result = run_describe(spark, s3_lake)
    _check_against_pandas(result, _expected(dirty))
    version = s3_lake.current_version(DESCRIBE)
    assert version == result["report"]["version"]
    assert result["report"]["lake"].startswith("s3://")
    stored = json.loads(s3_lake.store.read_bytes(f"{DESCRIBE}/{version}/report.json"))
    assert stored["quarantine"]["rows"] == len(BAD)
    assert not (s3_lake.work_dir / "cache").exists(), "Spark's tasks read the bucket: nothing mirrored to the driver"


def test_cli_describe_json_counts_match_pandas(cli_env, rees46_sample, tmp_path) -> None:
    env = {**os.environ, **cli_env}
    cli = [sys.executable, "-m", "services"]
    empty = subprocess.run([*cli, "describe"], env=env, capture_output=True, text=True, timeout=300)
    assert empty.returncode == 1
    assert empty.stderr.strip().splitlines()[-1].startswith("shoplens: error:")
    assert "no committed events" in empty.stderr

    done = subprocess.run(
        [*cli, "ingest", "--json", str(rees46_sample)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "report"
    done = subprocess.run(
        [*cli, "describe", "--json", "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    _check_against_pandas(result, _expected(rees46_sample))
    assert result["quarantine"]["rows"] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert json.loads((out / "report.json").read_text())["overview"] == result["overview"]
