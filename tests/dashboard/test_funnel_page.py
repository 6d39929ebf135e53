"""The Funnel page: AppTest smoke tests on a lake whose funnel the production job published.

The contract-shaped fixture lake (segments, segment colours) gets one small generated month of events
whose users are the fixture's users, so the segment breakdown has the fixture's segments.
"""

from __future__ import annotations

import io
import shutil
from datetime import date

import pandas as pd
import pytest

from dashboard.charts import fmt_int
from services.core.catalog import FUNNEL
from tests.conftest import TEST_KEY
from tests.dashboard.fixtures import open_page


@pytest.fixture(scope="module")
def funnel_lake(spark, fixture_lake, tmp_path_factory):
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.funnel import run_funnel
    from services.jobs.ingest import ingest_files

    root = tmp_path_factory.mktemp("funnelpage")
    shutil.copytree(fixture_lake.root, root / "lake")
    generate(root / "raw", users=300, start=date(2019, 11, 1), months=1, seed=21)
    raw = pd.concat(pd.read_csv(f, dtype={"user_id": str}) for f in sorted((root / "raw").glob("*.csv.gz")))
    ids = {u: str(500_000_000 + i) for i, u in enumerate(sorted(raw["user_id"].unique()))}  # the fixture's users
    raw["user_id"] = raw["user_id"].map(ids)
    events = root / "events.csv"
    raw.to_csv(events, index=False)
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=TEST_KEY)
    lake = open_lake(settings)
    ingest_files(spark, lake, [events], settings.key_bytes)
    summary = run_funnel(spark, lake)
    return {"uri": str(root / "lake"), "lake": lake, "summary": summary}


def test_the_page_says_what_to_run_without_a_funnel(app):
    at = app("funnel")
    assert any("No funnel yet" in i.value for i in at.info)


@pytest.mark.spark
def test_a_published_funnel_shows_steps_charts_drivers_and_the_audience(use_lake, funnel_lake, fixture_lake):
    use_lake(funnel_lake["uri"])
    at = open_page("funnel")
    assert not at.error
    steps = funnel_lake["summary"]["steps"]
    values = {m.label: m.value for m in at.metric}
    assert [values[s["step"]] for s in steps] == [fmt_int(s["count"]) for s in steps]
    assert len(at.get("plotly_chart")) == 3  # funnel, trend, time-to-convert histogram
    assert len(at.dataframe) == 1  # the drivers table
    # a breakdown: the funnel by segment, with the fixture's segment names, and its table
    at.segmented_control(key="funnel_by").set_value("segment").run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert int(table["entered"].sum()) == steps[0]["count"]
    assert set(table["value"]) & set(fixture_lake.segments["segment_name"])
    at.selectbox(key="funnel_pair").set_value((2, 3)).run()
    assert not at.exception
    assert at.get("download_button")


@pytest.mark.spark
def test_the_downloaded_audience_is_the_published_one(use_lake, funnel_lake):
    from dashboard import data

    use_lake(funnel_lake["uri"])
    version = funnel_lake["lake"].current_version(FUNNEL)
    csv = pd.read_csv(io.BytesIO(data.funnel_dropoffs_csv(funnel_lake["uri"], version, 2)))
    steps = funnel_lake["summary"]["steps"]
    assert list(csv.columns) == ["user_key", "segment", "reached_at"]
    assert len(csv) == steps[1]["count"] - steps[2]["count"]  # user units: one row per user who stopped at cart
