"""Scoring one uploaded history gives the lake's features, column by column: the history path
(services.jobs.predict's validation + etl.local_features.raw_to_events + compute_features_local) against
the lake path (the ingest's events as a timeline, etl.local_features.timeline_features, what the
features job runs on each bucket).

Events come from the real ingest transformation (etl.lines.classify_batch on raw lines) for the lake
path, so the comparison also covers the row rules and the normalization. Data: a generated two-month feed (Nov-Dec, so the
holiday window matters) with dirty rows, and the real REES46 sample (nulls in brand and category).
"""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from etl.local_features import (
    CATEGORY_BUCKETS,
    FEATURE_DTYPES,
    HOUR_BANDS,
    CutoffFeatures,
    compute_features_local,
    raw_to_events,
    reference_means,
    timeline_features,
)
from etl.timeline import to_timeline
from model.segmentation.estimator import SegmentationModel
from model.segmentation.scorer import LightScorer, export_artifact
from services.jobs.predict import read_history

KEY = b"local-features-test-key"
pytestmark = pytest.mark.filterwarnings("ignore::model.segmentation.selection.SegmentationWarning")


# -- registry ---------------------------------------------------------------------------------------------


def test_columns_and_constants_match_the_registry():
    from etl.contract import CATEGORY_BUCKETS as CONTRACT_BUCKETS
    from etl.contract import HOUR_BANDS as CONTRACT_BANDS
    from etl.features import FEATURES

    assert {f.name: f.dtype for f in FEATURES} == FEATURE_DTYPES
    assert list(FEATURE_DTYPES) == [f.name for f in FEATURES]
    assert HOUR_BANDS == CONTRACT_BANDS and CATEGORY_BUCKETS == CONTRACT_BUCKETS


def test_reference_forms_agree():
    prices = pd.DataFrame(
        {
            "user_key": ["a", "b", "a"],
            "category_id": [1, 1, 2],
            "n_priced": [2, 1, 4],
            "sum_log_price": [3.0, 3.0, 2.0],
        }
    )
    want = pd.Series({1: 2.0, 2: 0.5})
    for form in (
        prices,
        want.to_dict(),
        [
            {"category_id": 1, "mean_log_price": 2.0, "n": 3},
            {"category_id": 2, "mean_log_price": 0.5, "n": 4},
        ],
        {"category_id": [1, 2], "mean_log_price": [2.0, 0.5]},
    ):
        got = reference_means(form).sort_index()
        pd.testing.assert_series_equal(got, want, check_names=False, check_index_type=False)


# -- the data ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated_file(tmp_path_factory) -> Path:
    from etl.generate import generate

    out = tmp_path_factory.mktemp("gen")
    summary = generate(out, users=300, start=date(2019, 11, 1), months=2, seed=5, dirty_rate=0.04)
    files = [out / f for f in summary.files]
    merged = out / "nov-dec.csv"  # one history file: header + both months
    with merged.open("wb") as dst:
        for i, f in enumerate(files):
            lines = gzip.decompress(f.read_bytes()).split(b"\n", 1)
            dst.write((lines[0] + b"\n" if i == 0 else b"") + lines[1])
    return merged


def spark_events(spark, path: Path):
    """(outcome per line, accepted events, the same events in Arrow) of ``path`` as the ingest computes
    them: the Arrow code each Spark task runs (etl.lines.classify_batch), its events read back by Spark
    from Parquet."""
    import tempfile

    from etl.lines import classify_batch
    from services.jobs.ingest_tasks import parquet_bytes

    body = path.read_bytes().split(b"\n", 1)[1]
    out = classify_batch(body, KEY, path.name, 2)
    where = Path(tempfile.mkdtemp(prefix="ingest-events-")) / "events.parquet"
    where.write_bytes(parquet_bytes(out.events))
    outcomes = ([("accepted", None)] * out.events.num_rows + [("duplicate", None)] * out.duplicates.num_rows
                + [("quarantined", r) for r in out.quarantine["reason"].to_pylist()])  # fmt: skip
    classified = spark.createDataFrame(outcomes, "outcome string, reason string")
    return classified, spark.read.parquet(str(where)).drop("line_number"), out.events


@pytest.fixture(scope="module", params=["generated", "rees46"])
def both(request, spark, generated_file):
    """(Spark events, Spark classified lines, local events, local history, the ingest's events in Arrow)
    of one data set."""
    path = generated_file if request.param == "generated" else request.getfixturevalue("rees46_sample")
    classified, events, arrow = spark_events(spark, path)
    history = read_history(path)
    local = raw_to_events(history.rows, key=KEY)
    return events.cache(), classified, local, history, arrow


def lake_features(events: pa.Table, as_of=None, reference=None) -> pd.DataFrame:
    """The lake path: the ingest's events as one timeline bucket, the features job's function on it."""
    return local_to_comparable(timeline_features(to_timeline(events), as_of, reference).to_pandas())


def local_to_comparable(df: pd.DataFrame) -> pd.DataFrame:
    out = df.set_index("user_key").sort_index().copy()
    for c, t in FEATURE_DTYPES.items():
        if t == "timestamp":
            micros = out[c].astype("datetime64[us, UTC]").astype("int64").astype(float)
            out[c] = micros.where(out[c].notna())
    return out


def assert_same_features(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every column of every user: floats within 1e-9, nulls in the same places, the rest exact."""
    assert list(got.columns) == list(want.columns) == list(FEATURE_DTYPES)[1:]
    assert got.index.tolist() == want.index.tolist()
    for c, t in FEATURE_DTYPES.items():
        if c == "user_key":
            continue
        g, w = got[c], want[c]
        np.testing.assert_array_equal(g.isna().to_numpy(), w.isna().to_numpy(), err_msg=f"nulls of {c}")
        if t == "boolean":
            np.testing.assert_array_equal(g.to_numpy(bool), w.to_numpy(bool), err_msg=c)
            continue
        gv = g.astype(float).to_numpy()
        wv = w.astype(float).to_numpy()
        if t == "double":
            np.testing.assert_allclose(gv, wv, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=c)
        else:
            np.testing.assert_array_equal(gv, wv, err_msg=c)


# -- row rules and normalization ----------------------------------------------------------------------------


def test_rows_are_validated_and_normalized_like_the_ingest(both):
    events, classified, local, history, _ = both
    by_outcome = {r["outcome"]: r["count"] for r in classified.groupBy("outcome").count().collect()}
    assert history.rows_read == sum(by_outcome.values())
    assert len(history.rows) == by_outcome.get("accepted", 0) > 0
    assert history.duplicates == by_outcome.get("duplicate", 0)
    reasons = classified.where("outcome = 'quarantined'").groupBy("reason").count().collect()
    assert history.invalid == {r["reason"]: r["count"] for r in reasons}

    cols = ["user_key", "session_key", "event_type", "product_id", "category_id", "category_code",
            "category_l1", "category_l2", "category_l3", "brand", "price"]  # fmt: skip
    from pyspark.sql import functions as F

    want = events.select(F.unix_micros("event_time").alias("us"), *cols).toPandas()
    got = local.assign(us=local["event_time"].astype("datetime64[us, UTC]").astype("int64"))[["us", *cols]]
    key = ["user_key", "us", "product_id", "event_type", "session_key", "price"]
    want = want.sort_values(key).reset_index(drop=True)
    got = got.sort_values(key).reset_index(drop=True)
    for c in ["us", *cols]:
        np.testing.assert_array_equal(
            got[c].astype(object).where(got[c].notna(), None).to_numpy(),
            want[c].astype(object).where(want[c].notna(), None).to_numpy(),
            err_msg=c,
        )


# -- the features -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_of", [None, "last_event", datetime(2019, 12, 10, 12, 30, tzinfo=UTC)])
def test_history_path_equals_the_lake_path_for_every_user_and_column(both, as_of):
    _, _, local, _, events = both
    want = lake_features(events, as_of)
    got = local_to_comparable(compute_features_local(local, as_of=as_of))
    assert len(got) > 250
    assert_same_features(got, want)
    # the data exercise nullable columns both ways (buyers and non-buyers, carts and none)
    for c in ("recency_days", "last_purchase_time", "cart_to_purchase_rate"):
        assert 0 < want[c].isna().sum() < len(want), c


def test_lake_wide_reference_with_categories_unknown_to_it(both):
    """A reference built from part of the data: unknown categories drop out of price_level."""
    _, _, local, _, events = both
    priced = local.loc[(local["price"] > 0) & local["category_id"].notna() & (local["category_id"] % 3 != 0)]
    ref = pd.DataFrame({"category_id": priced["category_id"].astype("int64"), "n_priced": 1,
                        "sum_log_price": np.log(priced["price"])})  # fmt: skip
    want = lake_features(events, reference=reference_means(ref))
    got = local_to_comparable(compute_features_local(local, category_reference=ref))
    assert_same_features(got, want)
    # compact forms of the same reference give the same result
    compact = reference_means(ref).rename("mean_log_price").rename_axis("category_id").reset_index()
    again = local_to_comparable(compute_features_local(local, category_reference=compact))
    assert_same_features(again, want)
    # some users have priced events only in categories the reference lacks -> null
    own = lake_features(events)
    assert (want["price_level"].isna() & own["price_level"].notna()).any()


def test_cutoff_features_equal_the_twin_on_the_events_up_to_each_cutoff(both):
    """One coding for several cutoffs (the training examples) = coding each cutoff's events anew."""
    _, _, local, _, _ = both
    ref = reference_means(local.assign(n_priced=1, sum_log_price=np.log(local["price"].where(local["price"] > 0)))
                          .dropna(subset=["sum_log_price", "category_id"]).iloc[::2])  # fmt: skip
    micros = local["event_time"].astype("datetime64[us, UTC]").astype("int64")
    history = CutoffFeatures(local.sample(frac=1.0, random_state=3))  # any input order
    first = int(micros.min())
    for cut in [first - 1, first, *np.quantile(micros, [0.3, 0.7, 1.0]).astype(int).tolist()]:
        got = history.at(cut, ref)
        inside = local.loc[micros <= cut]
        if inside.empty:
            assert got.empty and list(got.columns) == list(FEATURE_DTYPES)
            continue
        when = pd.Timestamp(cut, unit="us", tz="UTC").to_pydatetime()
        want = compute_features_local(inside, as_of=when, category_reference=ref)
        assert_same_features(local_to_comparable(got), local_to_comparable(want))
        assert len(got) == inside["user_key"].nunique()


# -- the scorer on both ----------------------------------------------------------------------------------


def test_light_scorer_same_segments_on_the_history_and_the_lake_features(both):
    _, _, local, _, events = both
    lake_f = timeline_features(to_timeline(events)).to_pandas()  # the lake's features
    local_f = compute_features_local(local)
    assert lake_f["user_key"].tolist() == local_f["user_key"].tolist()
    model = SegmentationModel(k_range=(3, 5), n_bootstrap=2, n_init=4, seed=1).fit(local_f)
    ids = [10 + i for i in range(model.k_)]
    art = export_artifact(model, "test-v1", segment_ids=ids, segment_names=[f"s{i}" for i in ids])
    scorer = LightScorer.from_dict(art)
    seg_local, conf_local = scorer.predict(local_f)
    seg_lake, conf_lake = scorer.predict(lake_f)
    labels = model.predict(lake_f)
    np.testing.assert_array_equal(seg_local, seg_lake)
    np.testing.assert_array_equal(seg_lake, np.asarray(ids)[labels])
    np.testing.assert_allclose(conf_local, conf_lake, rtol=1e-9, atol=1e-12)
    assert len(set(seg_local)) == model.k_ >= 3


def test_nineteen_digit_category_ids_stay_distinct():
    """Real category ids exceed 2**53: two ids one apart must keep separate price means."""
    a, b = 2053013555631882655, 2053013555631882656
    events = pd.DataFrame(
        {
            "user_key": ["u", "u", "v", "v"],
            "session_key": ["s", "s", "t", "t"],
            "event_time": pd.to_datetime(["2019-10-01 10:00"] * 4, utc=True),
            "event_type": ["view"] * 4,
            "price": [10.0, 20.0, 100.0, 200.0],
            "category_l1": ["electronics"] * 4,
            "brand": [None] * 4,
            "category_id": pd.array([a, b, a, b], dtype="Int64"),
        }
    )
    got = compute_features_local(events).set_index("user_key")["price_level"]
    # u is cheaper than the mean in both categories by the same log ratio; v dearer by as much
    half = np.log(10.0) / 2
    np.testing.assert_allclose(got.to_numpy(), [-half, half], rtol=1e-12)
    ref = reference_means({a: np.log(10.0), b: np.log(20.0)})
    at_ref = compute_features_local(events, category_reference=ref).set_index("user_key")
    np.testing.assert_allclose(at_ref["price_level"].to_numpy(), [0.0, np.log(10.0)], atol=1e-12)
