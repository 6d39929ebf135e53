"""``shoplens ingest --format online-retail``: a sample the test builds in the UCI/Kaggle layout goes
into the same lake as purchases; rejects, duplicates and counts checked against an independent pass."""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl.contract import ORDER_COLUMNS, ORDER_QUARANTINE_REASONS
from etl.pseudonymize import pseudonymize
from services.core.catalog import ORDER_LINES
from services.core.spark import read_run_dataset
from services.jobs.ingest import ingest_files

pytestmark = pytest.mark.spark

CODES = ["85123A", "71053", "84406B", "22423", "POST", "M", "21730", "84029G", "22752", "47566", "C2", "DOT"]


def build_sample(path: Path, customers: int = 240, seed: int = 4) -> list[str]:
    """Order lines with real-looking dirt: cancellations, no customer, duplicates, bad dates, junk rows."""
    rng = np.random.default_rng(seed)
    rows: list[list[str]] = []
    invoice = 536365
    start = datetime(2010, 12, 1, 8, 26)
    for c in range(customers):
        cust = str(12346 + c) + (".0" if c % 17 == 0 else "")
        for _ in range(1 + int(rng.geometric(0.35))):
            when = start + timedelta(minutes=int(rng.integers(0, 200 * 24 * 60)))
            stamp = f"{when.month}/{when.day}/{when.year} {when.hour}:{when.minute:02d}"
            for _line in range(int(rng.integers(1, 7))):
                code = CODES[int(rng.integers(len(CODES)))]
                rows.append([str(invoice), code, f"ITEM {code}, SET OF {int(rng.integers(2, 6))}",
                             str(int(rng.choice([1, 2, 3, 6, 12, 24, 48]))), stamp,
                             f"{rng.uniform(0.29, 15):.2f}", cust,
                             "United Kingdom" if rng.random() < 0.8 else "France"])
            invoice += 1
    dirty: list[list[str]] = []
    for i in range(8):  # cancellations: C invoices with negative quantities
        r = list(rows[i * 7])
        r[0], r[3] = "C" + r[0], "-" + r[3]
        dirty.append(r)
    for i in range(4):  # negative quantity without a C invoice (stock adjustments)
        r = list(rows[i * 11 + 3])
        r[3] = "-" + r[3]
        dirty.append(r)
    for i in range(9):  # no customer
        r = list(rows[i * 13 + 5])
        r[6] = ""
        dirty.append(r)
    for i in range(2):
        r = list(rows[i + 40])
        r[4] = "31/31/2011 25:00"
        dirty.append(r)
    r = list(rows[50])
    r[5] = "-11062.06"
    dirty.append(r)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(ORDER_COLUMNS)
    body = rows + dirty
    order = np.random.default_rng(seed + 1).permutation(len(body))
    w.writerows(body[i] for i in order)
    text = out.getvalue() + out.getvalue().split("\n")[1] + "\n" + out.getvalue().split("\n")[2] + "\n"  # 2 dups
    text += "536999,only,three fields\n"
    path.write_text(text)
    return text.split("\n")[1:-1]


def expected_reason(line: str) -> str | None:
    """The order rules as docs/outputs.md states them (first that applies wins), re-implemented."""
    f = next(csv.reader([line]))
    if len(f) != 8:
        return "malformed_line"
    inv, code, _desc, qty, when, unit, cust, _country = (x.strip() for x in f)
    if not inv:
        return "missing_invoice"
    if inv.upper().startswith("C"):
        return "cancelled_invoice"
    if not code:
        return "missing_stock_code"
    if not re.fullmatch(r"[+-]?\d{1,9}", qty):
        return "bad_quantity"
    if int(qty) <= 0:
        return "non_positive_quantity"
    try:
        datetime.strptime(when, "%m/%d/%Y %H:%M")
    except ValueError:
        return "bad_invoice_date"
    if not cust:
        return "missing_customer_id"
    if not re.fullmatch(r"\d{1,18}(\.0+)?", cust):
        return "bad_customer_id"
    if not math.isfinite(float(unit)):
        return "bad_unit_price"
    return "negative_unit_price" if float(unit) < 0 else None


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from tests.conftest import TEST_KEY

    root = tmp_path_factory.mktemp("retail")
    lines = build_sample(root / "Online Retail.csv")
    bad = root / "bad_header.csv"
    bad.write_text("Invoice,StockCode,Description,Quantity,InvoiceDate,Price,CustomerID,Country\n1,2,x,1,1/1/2011 1:00,1,1,UK\n")
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=TEST_KEY, spark_master="local[2]")
    lake = open_lake(settings)
    summary = ingest_files(spark, lake, [root / "Online Retail.csv", bad], settings.key_bytes,
                           input_format="online-retail")
    return {"lake": lake, "lines": lines, "summary": summary, "key": settings.key_bytes}


def test_counts_reconcile_and_every_reject_has_its_reason(ingested):
    s, lines = ingested["summary"], ingested["lines"]
    seen: set[str] = set()
    expected: dict[str, int] = {}
    dups = accepted = 0
    for ln in lines:
        reason = expected_reason(ln)
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
        elif ln in seen:
            dups += 1
        else:
            seen.add(ln)
            accepted += 1
    f = next(x for x in s["files"] if x["name"] == "Online Retail.csv")
    assert f["rows_read"] == len(lines) == f["rows_accepted"] + f["rows_quarantined"] + f["duplicates_removed"]
    assert (f["rows_accepted"], f["duplicates_removed"]) == (accepted, dups) and dups == 2
    assert s["quarantine_by_reason"] == expected
    assert {"cancelled_invoice", "non_positive_quantity", "missing_customer_id", "bad_invoice_date",
            "negative_unit_price", "malformed_line"} <= set(expected) <= set(ORDER_QUARANTINE_REASONS)
    header = next(x for x in s["files"] if x["name"] == "bad_header.csv")
    assert header["status"] == "failed"
    assert "missing InvoiceNo, UnitPrice; 2 unexpected columns" in header["reason"]


def test_events_are_purchases_with_line_revenue_and_pseudonymous_keys(spark, ingested):
    lake, key = ingested["lake"], ingested["key"]
    events = read_run_dataset(spark, lake, "events").toPandas()
    raw = pd.read_csv(io.StringIO("\n".join([",".join(ORDER_COLUMNS), *dict.fromkeys(
        ln for ln in ingested["lines"] if expected_reason(ln) is None)])), dtype=str)
    assert len(events) == len(raw) and set(events.event_type) == {"purchase"}
    revenue = (raw.Quantity.astype(int) * raw.UnitPrice.astype(float)).sum()
    assert events.price.sum() == pytest.approx(revenue, rel=1e-12)
    customers = {str(int(float(c))) for c in raw.CustomerID}
    assert set(events.user_key) == {pseudonymize(c, key) for c in customers}
    assert events.session_key.nunique() == raw.InvoiceNo.nunique()
    assert (events.loc[events.product_id.isin([71053, 22423])].shape[0]
            == raw.StockCode.isin(["71053", "22423"]).sum())
    assert events.event_time.min() >= pd.Timestamp("2010-12-01")

    order_lines = read_run_dataset(spark, lake, ORDER_LINES).toPandas()
    assert len(order_lines) == len(events) and order_lines.quantity.sum() == raw.Quantity.astype(int).sum()
    joined = events.merge(order_lines, on=["source_file", "line_number"])
    np.testing.assert_allclose(joined.price, joined.quantity * joined.unit_price)

    quarantine = read_run_dataset(spark, lake, "quarantine").toPandas()
    assert not quarantine.raw_line.str.contains(r"(?<!\d)12[3-5]\d\d(?:\.0)?(?!\d)", regex=True).any()


def test_features_and_rfm_work_on_an_order_lake(spark, ingested):
    from services.core.readers import read_features
    from services.jobs.features import run_features

    lake = ingested["lake"]
    run_features(spark, lake)
    features, _ = read_features(lake)
    events = read_run_dataset(spark, lake, "events").toPandas()
    monetary = events.groupby("user_key").price.sum()
    got = features.set_index("user_key").loc[monetary.index]
    np.testing.assert_allclose(got["monetary"], monetary.to_numpy())
    np.testing.assert_array_equal(got["frequency"], events.groupby("user_key").session_key.nunique().to_numpy())
    assert got["recency_days"].notna().all()


def test_segments_train_and_score_on_an_order_lake(spark, ingested):
    from services.core.catalog import FEATURES
    from services.core.readers import read_features, read_segments
    from services.jobs.segmentation import TrainConfig, train

    lake = ingested["lake"]
    # as `shoplens train`: the features first (a no-op when the previous test already folded the run)
    summary = train(spark, lake, TrainConfig(k_range=(3, 5), n_bootstrap=2, threshold_grid=(2, 4, 8), sample_size=5_000),
                    refresh_features=True)  # fmt: skip
    assert lake.pointer(FEATURES)["folded_run_ids"] == lake.committed_run_ids()
    features, _ = read_features(lake)
    segments = read_segments(lake)
    assert set(segments.user_key) == set(features.user_key)
    assert segments.segment_name.notna().all() and summary["k"] >= 3


@pytest.mark.s3
def test_an_s3_lake_gets_the_rows_of_the_local_lake(spark, ingested, s3_lake, tmp_path):
    """The order ingest stages its chunks in the bucket and its tasks write there: the same file gives the
    same counts and the same rows of every run-scoped dataset as on local disk, nothing left staged."""
    build_sample(tmp_path / "Online Retail.csv")
    summary = ingest_files(spark, s3_lake, [tmp_path / "Online Retail.csv"], ingested["key"],
                           input_format="online-retail")  # fmt: skip
    for k in ("rows_read", "rows_accepted", "rows_quarantined", "duplicates_removed", "quarantine_by_reason",
              "suspicious_users", "event_date_min", "event_date_max"):
        assert summary[k] == ingested["summary"][k], k
    for dataset in ("events", "quarantine", "duplicates", ORDER_LINES):
        s3, local = (read_run_dataset(spark, lake, dataset).drop("run_id").toPandas()
                     .sort_values(["source_file", "line_number"]).reset_index(drop=True)
                     for lake in (s3_lake, ingested["lake"]))  # fmt: skip
        pd.testing.assert_frame_equal(s3[sorted(s3.columns)], local[sorted(local.columns)], check_dtype=False)
    assert not s3_lake.store.list("_staging")
