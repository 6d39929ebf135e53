"""``shoplens retention`` end to end on a generated lake: the --json cohorts against pandas on the raw
CSV files (an independent implementation of the documented semantics), the published table, the stage,
the warehouse table and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from services.core.catalog import RETENTION
from services.jobs.stages import PipelineConfig, stage_named
from tests.conftest import TEST_KEY
from tests.jobcli import generated_lake, invoke

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("retentionjob")
    lake, raw = generated_lake(spark, root, users=500, start=date(2019, 10, 1), months=2, seed=5)
    due_before = stage_named("retention").due(lake, PipelineConfig())
    default = invoke(root, "retention")
    monthly = invoke(root, "retention", "--cohort", "month", "--cohort-event", "purchase", "--period", "week",
                      "--calendar", "--mode", "unbounded", "--event", "purchase", "--by", "category")  # fmt: skip
    return {"root": root, "lake": lake, "raw": raw, "default": default, "monthly": monthly, "due_before": due_before}


def pandas_retention(raw: pd.DataFrame, cohort: str, cohort_event: str, calendar: bool, mode: str, event: str,
                     by_category: bool = False) -> dict:  # fmt: skip
    """Weekly periods by pandas: {(group, cohort, period): (size, users, revenue per member)}."""
    ev = raw.assign(day=pd.to_datetime(raw["event_time"].str[:10]), t=raw["event_time"])
    end = ev["day"].max()
    kind = ev if cohort_event == "any" else ev[ev["event_type"] == "purchase"]
    first = kind.sort_values(["t"], kind="stable").drop_duplicates("user_id").set_index("user_id")  # the first event
    starts = first["day"]
    cohorts = starts - pd.to_timedelta(starts.dt.weekday, "D") if cohort == "week" else starts.dt.to_period("M").dt.start_time
    group = first["category_code"].str.split(".").str[0].fillna("(none)") if by_category else pd.Series("all", starts.index)
    ev = ev[ev["user_id"].isin(starts.index)]
    ev = ev.assign(start=ev["user_id"].map(starts))
    ev = ev[ev["day"] >= ev["start"]]
    monday = ev["day"] - pd.to_timedelta(ev["day"].dt.weekday, "D")
    start_monday = ev["start"] - pd.to_timedelta(ev["start"].dt.weekday, "D")
    ev["period"] = ((monday - start_monday).dt.days // 7) if calendar else ((ev["day"] - ev["start"]).dt.days // 7)
    ret = ev if event == "any" else ev[ev["event_type"] == "purchase"]
    periods = ret.groupby("user_id")["period"].unique()
    out: dict = {}
    size = pd.DataFrame({"cohort": cohorts, "group": group}).value_counts()
    revenue = ev[ev["event_type"] == "purchase"].groupby(["user_id", "period"])["price"].sum()
    for (c, g), n in size.items():
        members = cohorts.index[(cohorts == c) & (group == g)]
        cm = c - pd.Timedelta(days=c.weekday())
        last = ((end - pd.Timedelta(days=end.weekday()) - cm).days // 7) if calendar else (end - c).days // 7
        for p in range(last + 1):
            if mode == "n-period":
                users = sum(p in periods.get(m, []) for m in members)
            else:
                users = sum(len(periods.get(m, [])) > 0 and max(periods.get(m)) >= p for m in members)
            rev = sum(revenue.get((m, p), 0.0) for m in members)
            out[(g, str(c.date()), p)] = (int(n), users, rev / n)
    return out


def _flatten(cohorts: list[dict], group: str = "all") -> dict:
    return {(group, c["cohort"], p["period"]): (c["size"], p["users"], p["revenue"]) for c in cohorts for p in c["periods"]}


def _close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, (size, users, revenue) in want.items():
        assert got[k][:2] == (size, users), k
        assert got[k][2] == pytest.approx(revenue, rel=1e-9, abs=1e-9), k


def test_default_view_matches_pandas(built):
    doc = built["default"]
    assert (doc["period"], doc["mode"], doc["cohort"], doc["event"], doc["periods"]) == ("week", "n-period", "week", "any", "rolling")
    _close(_flatten(doc["cohorts"]), pandas_retention(built["raw"], "week", "any", False, "n-period", "any"))
    assert all(c["periods"][0]["rate"] == 1.0 for c in doc["cohorts"])  # everyone is seen in period 0


def test_monthly_purchase_cohorts_calendar_unbounded_by_category_match_pandas(built):
    doc = built["monthly"]
    want = pandas_retention(built["raw"], "month", "purchase", True, "unbounded", "purchase", by_category=True)
    got = {}
    for g in doc["groups"]:
        got.update(_flatten(g["cohorts"], g["group"]))
    _close(got, want)
    overall = pandas_retention(built["raw"], "month", "purchase", True, "unbounded", "purchase")
    _close(_flatten(doc["cohorts"]), overall)


def test_published_table_stage_and_warehouse(built, tmp_path):
    from services.jobs.publish import publish, table_named

    lake = built["lake"]
    assert built["due_before"] == (True, "no retention yet")
    assert stage_named("retention").due(lake, PipelineConfig()) == (False, "up to date")
    table = pd.read_parquet(Path(built["root"]) / "lake" / RETENTION / lake.current_version(RETENTION) / "cohorts.parquet")
    assert set(table["breakdown"]) == {"overall", "segment", "category", "acquisition-month"}
    for _, part in table.groupby("breakdown"):  # every breakdown splits the same members
        assert part[part["period"] == 0].groupby("cohort")["size"].sum().to_dict() == \
            table[(table["breakdown"] == "overall") & (table["period"] == 0)].set_index("cohort")["size"].to_dict()  # fmt: skip
    summary = publish(lake, f"sqlite:///{tmp_path / 'wh.db'}", (table_named("retention"),))
    assert summary["tables"][0]["rows"] == len(table)


def test_known_errors_are_one_line_messages(built):
    env = {**os.environ, "SHOPLENS_LAKE": str(built["root"] / "lake"), "SHOPLENS_WORK_DIR": str(built["root"] / "work"),
           "SHOPLENS_PSEUDONYM_KEY": TEST_KEY}  # fmt: skip
    for args, message in [(["retention", "--period", "year"], "unknown period 'year'"),
                          (["retention", "--by", "brand"], "unknown breakdown 'brand'"),
                          (["clv", "fit", "--holdout-from", "soon"], "--holdout-from must be a date")]:  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "services", *args], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("shoplens: error:") and message in lines[0], (args, lines)
