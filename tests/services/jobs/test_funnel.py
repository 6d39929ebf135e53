"""``shoplens funnel`` end to end on a generated lake: the --json steps against pandas on the raw CSV,
the published tables, the drop-off export and the one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from etl.pseudonymize import pseudonymize
from services.core.catalog import EVENTS, FUNNEL, SEGMENTS, TIMELINE_RUNS, TIMELINES
from services.core.lake import Lake
from services.core.publish import new_version
from services.core.storage import LocalStore
from services.core.timelines import backfill_timelines
from services.jobs.funnel import BREAKDOWNS, DROPOFFS, TABLES
from services.jobs.stages import PipelineConfig, stage_named
from tests.conftest import TEST_KEY
from tests.jobcli import generated_lake, invoke, lake_env

WEEK = pd.Timedelta(days=7)
SEGMENT_NAMES = ("Loyal buyers", "Browsers", "Bargain hunters")


def expected_levels(raw: pd.DataFrame, window: pd.Timedelta = WEEK) -> pd.Series:
    """Per raw user with a view: the deepest step of view -> cart -> purchase (ordered, within ``window``).

    Independent of the Spark walk: for each cart, the latest view at or before it (merge_asof); a chain
    view -> cart -> purchase exists for a purchase when the latest cart at or before it has such a view
    no more than ``window`` before the purchase (the latest view time never decreases with the cart's time).
    """
    ev = raw.assign(t=pd.to_datetime(raw["event_time"].str.replace(" UTC", ""), utc=True))
    ev = ev.sort_values("t", kind="stable")
    views = ev.loc[ev["event_type"] == "view", ["user_id", "t"]].rename(columns={"t": "tv"})
    carts = ev.loc[ev["event_type"] == "cart", ["user_id", "t"]].rename(columns={"t": "tc"})
    buys = ev.loc[ev["event_type"] == "purchase", ["user_id", "t"]].rename(columns={"t": "tp"})
    carts = pd.merge_asof(carts, views, left_on="tc", right_on="tv", by="user_id", direction="backward")
    reach2 = carts.loc[carts["tv"].notna() & (carts["tc"] - carts["tv"] <= window), "user_id"]
    buys = pd.merge_asof(buys, carts.dropna(subset=["tv"]), left_on="tp", right_on="tc", by="user_id",
                         direction="backward")  # fmt: skip
    reach3 = buys.loc[buys["tv"].notna() & (buys["tp"] - buys["tv"] <= window), "user_id"]
    level = pd.Series(1, index=pd.Index(views["user_id"].unique(), name="user_id"))
    level[level.index.isin(reach2)] = 2
    level[level.index.isin(reach3)] = 3
    return level


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """One generated month ingested, a hand-made segments version, and the default funnel published by the CLI."""
    root = tmp_path_factory.mktemp("funneljob")
    lake, raw = generated_lake(spark, root, users=700, start=date(2019, 11, 1), months=1, seed=13)
    users = pd.Series(sorted(raw["user_id"].unique()))
    segs = pd.DataFrame({"user_key": [pseudonymize(u, TEST_KEY.encode()) for u in users],
                         "segment_id": np.arange(len(users)) % 3})  # fmt: skip
    segs = segs.iloc[: len(segs) * 9 // 10]  # a tenth of the users stay unsegmented
    segs["segment_name"] = segs["segment_id"].map(dict(enumerate(SEGMENT_NAMES)))
    due_before = stage_named("funnel").due(lake, PipelineConfig())
    with new_version(lake, SEGMENTS, model_version="m-test") as staged:
        staged.write_table("part-00000", segs)
    result = invoke(root, "funnel")
    return {"root": root, "lake": lake, "raw": raw, "segments": segs, "result": result, "due_before": due_before,
            "key": TEST_KEY.encode(), "levels": expected_levels(raw)}  # fmt: skip


pytestmark = pytest.mark.spark


def test_json_steps_match_pandas_on_the_raw_csv(built):
    doc, level = built["result"], built["levels"]
    assert (doc["unit"], doc["order"], doc["window_days"]) == ("user", "ordered", 7.0)
    counts = [int((level >= k).sum()) for k in (1, 2, 3)]
    assert counts[1] > 0 and counts[2] > 0
    assert [s["step"] for s in doc["steps"]] == ["view", "cart", "purchase"]
    assert [s["count"] for s in doc["steps"]] == counts
    assert [s["dropoff"] for s in doc["steps"]] == [0, counts[0] - counts[1], counts[1] - counts[2]]
    assert doc["steps"][0]["conversion_from_previous"] == pytest.approx(1.0)
    for k in (1, 2):
        s = doc["steps"][k]
        assert s["conversion_from_previous"] == pytest.approx(counts[k] / counts[k - 1], rel=1e-12)
        assert s["conversion_from_first"] == pytest.approx(counts[k] / counts[0], rel=1e-12)


def test_the_stage_is_due_until_published_and_again_for_new_segments(built):
    lake = built["lake"]
    assert built["due_before"] == (True, "no funnel yet")
    ptr = lake.pointer(FUNNEL)
    assert ptr["run_ids"] == sorted(lake.committed_run_ids())
    assert ptr["segments_version"] == lake.current_version(SEGMENTS)
    assert stage_named("funnel").due(lake, PipelineConfig()) == (False, "up to date")


def _table(built, name: str) -> pd.DataFrame:
    version = built["lake"].current_version(FUNNEL)
    return pq.read_table(Path(built["root"]) / "lake" / FUNNEL / version / f"{name}.parquet").to_pandas()


def test_published_tables_add_up(built):
    doc = built["result"]
    counts = [s["count"] for s in doc["steps"]]
    steps = _table(built, "steps")
    assert steps.sort_values("step")["count"].tolist() == counts
    br = _table(built, "breakdowns")
    assert set(br["breakdown"]) == set(BREAKDOWNS)
    for _dim, part in br.groupby("breakdown"):
        assert part.groupby("step")["count"].sum().tolist() == counts  # each breakdown partitions the units
    # the segment breakdown: users' segments recomputed from the hand-made table
    seg_of = dict(zip(built["segments"]["user_key"], built["segments"]["segment_name"], strict=True))
    level = built["levels"]
    keys = [pseudonymize(u, built["key"]) for u in level.index]
    per_seg = pd.DataFrame({"segment": [seg_of.get(k, "(unsegmented)") for k in keys], "level": level.to_numpy()})
    seg = br[(br["breakdown"] == "segment") & (br["step"] == 3)].set_index("value")["count"]
    assert seg.to_dict() == (per_seg["level"] >= 3).groupby(per_seg["segment"]).sum().to_dict()
    trend = _table(built, "trend")
    assert trend.groupby("step")["count"].sum().tolist() == counts
    ttc = _table(built, "time_to_convert")
    assert [(int(a), int(b)) for a, b in zip(ttc["from_step"], ttc["to_step"], strict=True)] == [(1, 2), (2, 3), (1, 3)]
    assert ttc.set_index("to_step")["units"].loc[[2, 3]].tolist()[:1] == [counts[1]]
    assert (ttc["p25_seconds"] <= ttc["median_seconds"]).all() and (ttc["median_seconds"] <= ttc["p75_seconds"]).all()
    assert (ttc["median_seconds"] <= 7 * 86400).all()
    hist = _table(built, "histogram")
    assert hist.groupby(["from_step", "to_step"])["units"].sum().tolist() == [counts[1], counts[2], counts[2]]
    drivers = _table(built, "drivers")
    assert set(drivers["attribute"]) <= {"category_l1", "brand", "price_band", "segment", "cohort"}
    assert ((drivers["ci_low"] <= drivers["odds_ratio"]) & (drivers["odds_ratio"] <= drivers["ci_high"])).all()
    version = built["lake"].current_version(FUNNEL)
    for name in ("result.json", "report.md", "report.html"):
        assert built["lake"].store.exists(f"{FUNNEL}/{version}/{name}")
    md = (Path(built["root"]) / "lake" / FUNNEL / version / "report.md").read_text()
    assert "t(ek) - t(e1) <= 7 days" in md and "## What drives conversion" in md
    assert {f"{n}.parquet" for n in TABLES} <= {p.name for p in (Path(built["root"]) / "lake" / FUNNEL / version).iterdir()}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns), kind="stable", ignore_index=True)


def test_the_timelines_give_the_tables_of_backfilled_timelines_and_duckdbs_counts(spark, built, tmp_path):
    """The published tables come from the walk over the user timelines ingest wrote; a lake without
    timelines is refused with the command that builds them, and once they are built from its event
    files (the backfill) every table is the same; the step counts are DuckDB's on the event files (two
    ASOF joins, no shoplens code)."""
    from services.jobs import funnel as job

    lake, cfg = built["lake"], job.FunnelConfig()
    segments = pl.from_pandas(built["segments"][["user_key", "segment_name"]]).rename({"segment_name": "segment"})
    walked = job.compute_tables(spark, lake, cfg, segments)
    shutil.copytree(Path(built["root"]) / "lake", tmp_path / "lake")
    old = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    old.store.delete_prefix(TIMELINE_RUNS)  # as a lake ingested before timelines existed
    old.store.delete_prefix(TIMELINES)
    with pytest.raises(ValueError, match=r"have no user timelines .*run `shoplens timelines --backfill` once"):
        job.compute_tables(spark, old, cfg, segments)
    backfill_timelines(spark, old)
    backfilled = job.compute_tables(spark, old, cfg, segments)
    for name in TABLES:
        pd.testing.assert_frame_equal(_sorted(getattr(walked, name)), _sorted(getattr(backfilled, name)))
    assert _sorted(walked.dropoffs.to_pandas()).equals(_sorted(backfilled.dropoffs.to_pandas()))
    assert walked.steps["count"].tolist() == [s["count"] for s in built["result"]["steps"]]

    files = [str(Path(built["root"]) / "lake" / k) for k in lake.committed_files(EVENTS)]
    duck = duckdb.sql(f"""
        WITH ev AS (SELECT user_key, event_type, event_time AS t FROM read_parquet({files!r})),
        views AS (SELECT user_key, t FROM ev WHERE event_type = 'view'),
        carts AS (SELECT c.user_key, c.t, v.t AS lv FROM ev c ASOF JOIN views v ON c.user_key = v.user_key
                  AND c.t >= v.t WHERE c.event_type = 'cart'),
        buys AS (SELECT b.user_key, b.t, c.lv FROM ev b ASOF JOIN carts c ON b.user_key = c.user_key AND b.t >= c.t
                 WHERE b.event_type = 'purchase')
        SELECT (SELECT count(DISTINCT user_key) FROM views),
               (SELECT count(DISTINCT user_key) FROM carts WHERE t - lv <= INTERVAL 7 DAY),
               (SELECT count(DISTINCT user_key) FROM buys WHERE t - lv <= INTERVAL 7 DAY)""").fetchall()[0]
    assert walked.steps["count"].tolist() == list(duck)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_dropoff_export_is_exactly_the_users_who_stopped_at_the_step(built, tmp_path, fmt):
    out = tmp_path / f"cart.{fmt}"
    res = invoke(built["root"], "export", "funnel-dropoffs", "--step", "cart", "--format", fmt, "--out", str(out))
    df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    level = built["levels"]
    expected = {pseudonymize(u, built["key"]) for u in level.index[level == 2]}
    assert res["rows"] == len(df) == len(expected)
    assert set(df["user_key"]) == expected
    assert list(df.columns) == ["user_key", "segment", "step", "label", "reached_at", "units"]
    seg_of = dict(zip(built["segments"]["user_key"], built["segments"]["segment_name"], strict=True))
    assert all(seg_of.get(k, "(unsegmented)") == s for k, s in zip(df["user_key"], df["segment"], strict=True))
    assert not set(df["user_key"]) & set(built["raw"]["user_id"])  # pseudonymized keys only
    version = built["lake"].current_version(FUNNEL)
    parts = pd.read_parquet(Path(built["root"]) / "lake" / FUNNEL / version / DROPOFFS)
    assert parts.groupby("step").size().to_dict() == {1: int((level == 1).sum()), 2: int((level == 2).sum())}


def test_known_errors_are_one_line_messages(built):
    env = {**os.environ, **lake_env(built["root"])}
    cli = [sys.executable, "-m", "services"]
    for args, message in [
        (["funnel", "--steps", "view,checkout"], "unknown event type 'checkout'"),
        (["funnel", "--window-days", "0"], "the window must be a positive number of days"),
        (["funnel", "--steps", "view"], "a funnel needs 2 to 10 steps, got 1"),
        (["funnel", "--by", "week,planet"], "unknown breakdown(s) planet"),
        (["export", "funnel-dropoffs", "--step", "purchase", "--out", "x.csv"], "the last step, purchase, has no next step"),
        (["export", "funnel-dropoffs", "--out", "x.csv"], "needs --step"),
    ]:
        done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 1, (args, done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("shoplens: error:") and message in last, (args, last)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
