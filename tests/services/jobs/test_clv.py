"""``shoplens clv fit`` end to end: the published CDNOW parameters through the order-file path, and a
generated clickstream lake whose RFM summary, holdout counts and exports are checked against pandas
on the raw files."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl.contract import ORDER_COLUMNS
from etl.pseudonymize import pseudonymize
from services.core.catalog import CLV, SEGMENTS
from services.core.publish import new_version
from services.jobs.stages import PipelineConfig, stage_named
from tests.conftest import TEST_KEY
from tests.jobcli import generated_lake, invoke

pytestmark = [pytest.mark.spark, pytest.mark.slow]

CDNOW = Path(__file__).resolve().parents[2] / "data" / "cdnow" / "CDNOW_sample.txt"
#: Published maximum-likelihood estimates on the CDNOW sample's 39-week calibration period (time in weeks).
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "v": 15.45}
#: The data contract refuses years before 2000, so the sample moves forward by this many whole days
#: (1997-01-01 -> 2020-01-01): every interval between purchases stays the same.
SHIFT = pd.Timestamp("2020-01-01") - pd.Timestamp("1997-01-01")
HOLDOUT_FROM = (pd.Timestamp("1997-10-01") + SHIFT).date()


def read_cdnow() -> pd.DataFrame:
    raw = pd.read_csv(CDNOW, sep=r"\s+", header=None, names=["master", "customer", "date", "cds", "value"],
                      dtype={"customer": str, "date": str})  # fmt: skip
    return raw.assign(day=pd.to_datetime(raw["date"]) + SHIFT)


def cdnow_as_orders(path: Path) -> pd.DataFrame:
    """The CDNOW sample as an Online Retail file: one invoice (of one line: its CDs at their dollar value) per purchase."""
    raw = read_cdnow()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ORDER_COLUMNS)
        for i, r in enumerate(raw.itertuples()):
            when = f"{r.day:%Y-%m-%d} 12:00:00"
            w.writerow([str(600000 + i), "CD", f"{r.cds} CDs", "1", when, f"{r.value:.2f}", r.customer, "USA"])
    return raw


@pytest.fixture(scope="module")
def cdnow(spark, tmp_path_factory):
    """The CDNOW sample ingested through ``ingest --format online-retail``, fitted with a holdout from week 40."""
    root = tmp_path_factory.mktemp("cdnow")
    raw = cdnow_as_orders(root / "cdnow.csv")
    ingest = invoke(root, "ingest", "--format", "online-retail", str(root / "cdnow.csv"))
    assert ingest["rows_accepted"] == len(raw), ingest
    return {"raw": raw, "result": invoke(root, "clv", "fit", "--holdout-from", str(HOLDOUT_FROM)), "root": root}


def test_cdnow_matches_the_published_parameters_within_two_percent(cdnow):
    h = cdnow["result"]["holdout"]
    assert h["customers"] == 2357 and h["calibration_end"] == str((pd.Timestamp("1997-09-30") + SHIFT).date())
    got = dict(h["parameters"])
    got["alpha"] /= 7  # the lake's time unit is the day; the published fit is in weeks
    for name, published in PUBLISHED.items():
        assert got[name] == pytest.approx(published, rel=0.02), name


def test_cdnow_holdout_counts_match_pandas(cdnow):
    raw, h = cdnow["raw"], cdnow["result"]["holdout"]
    days = raw.drop_duplicates(["customer", "day"])
    holdout = days[days["day"].dt.date >= HOLDOUT_FROM]
    assert h["actual_purchases"] == len(holdout)  # every CDNOW customer was born in the first quarter of 1997
    assert h["to"] == str(days["day"].max().date())
    assert h["mae"] < h["mae_naive"]  # the model beats the calibration rate
    assert 0.3 < h["correlation"] < 1
    groups = pd.DataFrame(h["by_frequency"])
    assert groups["customers"].sum() == 2357
    cal = days[days["day"].dt.date < HOLDOUT_FROM].groupby("customer").size() - 1
    assert groups.loc[groups["calibration_frequency"] == "0", "customers"].item() == int((cal == 0).sum())
    # the full-period fit (what is published per customer) also counts every customer
    assert cdnow["result"]["customers"] == 2357 and cdnow["result"]["warnings"] == []


# ------------------------------------------------------------------------------------ a generated lake
@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """Two generated months ingested, a hand-made segments version, and ``clv fit`` run by the CLI."""
    root = tmp_path_factory.mktemp("clvjob")
    lake, raw = generated_lake(spark, root, users=900, start=date(2019, 10, 1), months=2, seed=21)
    buyers = sorted(raw.loc[raw["event_type"] == "purchase", "user_id"].unique())
    segs = pd.DataFrame({"user_key": [pseudonymize(u, TEST_KEY.encode()) for u in buyers]})
    segs["segment_name"] = np.where(np.arange(len(segs)) % 2 == 0, "Loyal", "Bargain")
    segs["lifecycle_stage"] = np.where(np.arange(len(segs)) % 3 == 0, "new", "active")
    segs = segs.iloc[: len(segs) * 4 // 5]  # a fifth of the customers stay unsegmented
    with new_version(lake, SEGMENTS, model_version="m-test") as staged:
        staged.write_table("part-00000", segs)
    due_before = stage_named("clv").due(lake, PipelineConfig())
    result = invoke(root, "clv", "fit", "--holdout-from", "2019-11-01")
    return {"root": root, "lake": lake, "raw": raw, "result": result, "due_before": due_before,
            "key": TEST_KEY.encode(), "segments": segs}  # fmt: skip


def expected_rfm(raw: pd.DataFrame, end: str, key: bytes) -> pd.DataFrame:
    """The RFM summary by pandas on the raw CSV: one transaction per user and UTC day with a purchase."""
    p = raw[raw["event_type"] == "purchase"].assign(day=lambda d: pd.to_datetime(d["event_time"].str[:10]))
    p = p[p["day"] <= end]
    daily = p.groupby(["user_id", "day"], as_index=False)["price"].sum()
    rows = []
    for user, g in daily.groupby("user_id"):
        g = g.sort_values("day")
        n = len(g)
        rows.append({"user_key": pseudonymize(user, key), "frequency": n - 1,
                     "recency": (g["day"].iloc[-1] - g["day"].iloc[0]).days,
                     "T": (pd.Timestamp(end) - g["day"].iloc[0]).days,
                     "monetary_value": g["price"].iloc[1:].mean() if n > 1 else 0.0,
                     "revenue": g["price"].sum()})  # fmt: skip
    return pd.DataFrame(rows).sort_values("user_key", ignore_index=True)


def _customers(built) -> pd.DataFrame:
    lake = built["lake"]
    return pd.read_parquet(Path(built["root"]) / "lake" / CLV / lake.current_version(CLV) / "customers")


def test_rfm_summary_matches_pandas_on_the_raw_files(built):
    doc, got = built["result"], _customers(built)
    end = doc["observation_end"]
    assert end == built["raw"]["event_time"].str[:10].max()
    want = expected_rfm(built["raw"], end, built["key"])
    assert doc["customers"] == len(want) == len(got)
    assert doc["repeat_customers"] == int((want["frequency"] > 0).sum()) > 0
    cols = ["user_key", "frequency", "recency", "T", "monetary_value", "revenue"]
    as_float = dict.fromkeys(cols[1:], float)
    pd.testing.assert_frame_equal(got[cols].astype(as_float), want[cols].astype(as_float),
                                  check_exact=False, rtol=1e-9)  # fmt: skip


def test_json_keys_scores_and_groups(built):
    doc, got = built["result"], _customers(built)
    assert set(doc["parameters"]) == {"r", "alpha", "a", "b", "p", "q", "v"}
    assert all(v > 0 for v in doc["parameters"].values())
    h = doc["holdout"]
    assert {"from", "to", "actual_purchases", "predicted_purchases", "mae", "mae_naive"} <= set(h)
    assert (h["from"], h["to"]) == ("2019-11-01", doc["observation_end"])
    want_cal = expected_rfm(built["raw"], "2019-10-31", built["key"])
    assert h["customers"] == len(want_cal) and h["repeat_customers"] == int((want_cal["frequency"] > 0).sum())
    assert got["p_alive"].between(0, 1).all()
    assert (got["expected_purchases_30"] <= got["expected_purchases_90"] + 1e-12).all()
    assert (got["expected_purchases_90"] <= got["expected_purchases_365"] + 1e-12).all()
    assert (got["clv"] >= 0).all() and (got["expected_value"] > 0).all()
    assert (got["horizon_months"] == 12).all()
    # segments joined by key; the groups add up to the customers
    segs = built["segments"].set_index("user_key")
    joined = got.set_index("user_key")
    known = joined.index.isin(segs.index)
    assert (joined.loc[known, "segment"] == segs.loc[joined.index[known], "segment_name"]).all()
    assert (joined.loc[~known, "segment"] == "(unsegmented)").all()
    groups = pd.DataFrame(doc["groups"])
    for dim in ("segment", "lifecycle_stage"):
        part = groups[groups["breakdown"] == dim].set_index("value")
        assert part["customers"].sum() == len(got)
        assert part["clv_sum"].sum() == pytest.approx(got["clv"].sum(), rel=1e-9)
        assert part["clv_median"].to_dict() == pytest.approx(got.groupby(dim)["clv"].median().to_dict())
    assert doc["totals"]["clv_sum"] == pytest.approx(got["clv"].sum(), rel=1e-9)
    assert [c["user_key"] for c in doc["top_customers"]] == got.nlargest(20, "clv")["user_key"].tolist()


def test_holdout_actuals_match_pandas(built):
    raw, h = built["raw"], built["result"]["holdout"]
    p = raw[raw["event_type"] == "purchase"].assign(day=lambda d: d["event_time"].str[:10])
    days = p.drop_duplicates(["user_id", "day"])
    born = set(days.loc[days["day"] < "2019-11-01", "user_id"])
    assert h["actual_purchases"] == int(((days["day"] >= "2019-11-01") & days["user_id"].isin(born)).sum())
    assert sum(g["customers"] for g in h["by_frequency"]) == len(born)


def test_stage_export_report_and_warehouse(built, tmp_path):
    import sqlalchemy as sa

    from services.jobs.publish import publish, table_named

    lake = built["lake"]
    assert built["due_before"] == (True, "no lifetime values yet")
    assert stage_named("clv").due(lake, PipelineConfig()) == (False, "up to date")
    ptr = lake.pointer(CLV)
    assert ptr["run_ids"] == sorted(lake.committed_run_ids()) and ptr["holdout_from"] == "2019-11-01"
    out = tmp_path / "clv.csv"
    exported = invoke(built["root"], "export", "clv", "--out", str(out))
    assert exported["rows"] == built["result"]["customers"]
    csv_rows = pd.read_csv(out)
    assert set(csv_rows["user_key"]) == set(_customers(built)["user_key"])
    assert not csv_rows["user_key"].isin(built["raw"]["user_id"]).any()  # pseudonymized keys only
    seg_out = tmp_path / "segments.csv"
    invoke(built["root"], "export", "segments", "--out", str(seg_out))
    segs = pd.read_csv(seg_out).set_index("user_key")
    values = _customers(built).set_index("user_key")
    both = segs.index.intersection(values.index)
    assert len(both) == len(built["segments"])  # every segmented user here is a customer
    np.testing.assert_allclose(segs.loc[both, "clv"], values.loc[both, "clv"], rtol=1e-12)
    assert (segs["clv_horizon_months"] == 12).all()
    report = invoke(built["root"], "clv", "report", as_json=False)
    assert "## Holdout check" in report and "## By segment" in report
    again = invoke(built["root"], "clv", "report")
    assert again["version"] == built["result"]["version"]
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    summary = publish(lake, url, (table_named("customer_value"),))  # the hand-made segments lack the table's columns
    assert summary["tables"][0]["rows"] == built["result"]["customers"]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sql = pd.read_sql_table("customer_value", conn).sort_values("user_key", ignore_index=True)
    engine.dispose()
    lake_rows = _customers(built)
    np.testing.assert_allclose(sql["clv"], lake_rows["clv"], rtol=1e-12)
    assert sql["segment"].tolist() == lake_rows["segment"].tolist()
