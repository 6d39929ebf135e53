"""shoplens train/score/export against a real local Spark and a lake built from generated files."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from model.segmentation import NOT_ENOUGH_NAME
from model.segmentation.scorer import LightScorer
from services.core.catalog import EVENTS, OVERVIEW_VIEWS, SEGMENT_VIEWS
from services.core.catalog import SEGMENTATION_MODEL as MODEL_DATASET
from services.core.documents.segmentation import SegmentationModelDocument
from services.core.readers import read_features as read_features_pandas
from services.core.readers import read_segments
from services.jobs.export import export_table
from services.jobs.segmentation import (
    TrainConfig,
    score,
    train,
)

pytestmark = pytest.mark.spark

FAST = TrainConfig(k_range=(3, 8), n_bootstrap=2, threshold_grid=(5, 10, 20, 40), sample_size=20_000)
VOLATILE = {"version", "trained_at", "previous_version"}


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """A lake with one month of 1,200 generated users, features, and two trainings on the same data."""
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.features import run_features
    from services.jobs.ingest import ingest_files
    from tests.conftest import TEST_KEY

    root = tmp_path_factory.mktemp("segjob")
    generate(root / "raw", users=1_200, start=date(2019, 11, 1), months=1, seed=11)
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=TEST_KEY)
    lake = open_lake(settings)
    ingest_files(spark, lake, sorted((root / "raw").glob("*.csv.gz")), settings.key_bytes)
    run_features(spark, lake)
    first = train(spark, lake, FAST)
    second = train(spark, lake, FAST)
    return {"root": root, "lake": lake, "settings": settings, "first": first, "second": second}


def _doc(lake, version: str, name: str):
    return lake.read_json(f"{MODEL_DATASET}/{version}/{name}")


def test_retrain_on_same_data_gives_same_model_ids_and_names(built):
    lake, a, b = built["lake"], built["first"]["version"], built["second"]["version"]
    assert a != b and built["second"]["previous_version"] == a
    ma, mb = _doc(lake, a, "model.json"), _doc(lake, b, "model.json")
    assert {k: v for k, v in ma.items() if k not in VOLATILE} == {k: v for k, v in mb.items() if k not in VOLATILE}
    assert SegmentationModelDocument.read(lake, b).to_dict() == mb  # read back through its type: nothing lost or retyped
    assert _doc(lake, a, "profiles.json") == _doc(lake, b, "profiles.json")
    aa, ab = _doc(lake, a, "artifact.json"), _doc(lake, b, "artifact.json")
    assert {k: v for k, v in aa.items() if k != "model_version"} == {k: v for k, v in ab.items() if k != "model_version"}
    assert ma["segment_ids"] == mb["segment_ids"] and ma["segment_names"] == mb["segment_names"]
    assert len(set(ma["segment_names"])) == ma["k"] and ma["threshold"]["curve"]
    for name in ("report.md", "report.html", "category_reference.parquet"):
        assert lake.store.exists(f"{MODEL_DATASET}/{b}/{name}")


def test_segments_follow_the_threshold_and_match_an_independent_scoring(built):
    lake = built["lake"]
    seg = read_segments(lake)
    feats, _ = read_features_pandas(lake)
    model_version = lake.current_version(MODEL_DATASET)
    artifact = _doc(lake, model_version, "artifact.json")
    assert len(seg) == len(feats) and set(seg["user_key"]) == set(feats["user_key"])
    assert (seg["model_version"] == model_version).all()
    low = seg["n_events"] < artifact["min_events"]
    assert low.any() and (~low).any()
    assert seg.loc[low, "segment_id"].isna().all() and (seg.loc[low, "segment_name"] == NOT_ENOUGH_NAME).all()
    assert seg.loc[low, ["confidence", "pc1", "pc2"]].isna().all().all()
    assert seg.loc[~low, "segment_id"].notna().all()
    # independent: nearest centroid by hand from the artifact's numbers
    merged = seg.merge(feats, on="user_key", suffixes=("", "_f"))
    merged = merged.loc[merged["n_events"] >= artifact["min_events"]]
    scorer = LightScorer.from_dict(artifact)
    raw = merged[list(scorer.input_features)].astype(float).to_numpy()
    P = scorer.transform(raw)
    d = ((P[:, None, :] - np.array(artifact["centroids"])[None]) ** 2).sum(axis=2)
    expected = np.array(artifact["segment_ids"])[d.argmin(axis=1)]
    np.testing.assert_array_equal(merged["segment_id"].astype(int).to_numpy(), expected)
    np.testing.assert_allclose(merged["pc1"].to_numpy(), P[:, 0])
    assert ((merged["confidence"] >= 0) & (merged["confidence"] <= 1)).all()


def test_views_match_the_raw_file(spark, built):
    from services.jobs.overview import build_overview

    lake = built["lake"]
    build_overview(spark, lake)


    def read_view(lake, name):  # the overview views are their own stage; the rest come with the scores
        dataset = OVERVIEW_VIEWS if name in ("kpi_daily", "runs") else SEGMENT_VIEWS
        return pd.read_parquet(lake.store.local_path(f"{dataset}/{lake.current_version(dataset)}/{name}.parquet"))

    raw = pd.concat(pd.read_csv(p) for p in sorted((built["root"] / "raw").glob("*.csv.gz")))
    raw["event_date"] = pd.to_datetime(raw["event_time"].str.slice(0, 19)).dt.date
    kpi = read_view(lake, "kpi_daily").set_index("event_date")
    buy = raw.loc[raw["event_type"] == "purchase"]
    expected = buy.groupby("event_date")["price"].sum()
    np.testing.assert_allclose(kpi.loc[expected.index, "revenue"].to_numpy(), expected.to_numpy(), rtol=1e-9)
    exp_users = raw.groupby("event_date")["user_id"].nunique()
    np.testing.assert_array_equal(kpi.loc[exp_users.index, "active_users"].to_numpy(), exp_users.to_numpy())
    summary = read_view(lake, "segment_summary")
    seg = read_segments(lake)
    assert summary["users"].sum() == len(seg)
    assert summary["segment_id"].isna().sum() == 1
    assert abs(summary["share_users"].sum() - 1) < 1e-9
    pca = read_view(lake, "pca_sample")
    assert "user_key" not in pca.columns and len(pca) == seg["segment_id"].notna().sum()
    flow = read_view(lake, "segment_flow")  # second model vs first: same data, same names
    assert (flow["from_segment_name"] == flow["to_segment_name"]).all() and flow["users"].sum() == len(seg)
    assert len(read_view(lake, "runs")) == 1


def test_export_round_trips(built, tmp_path: Path):
    lake = built["lake"]
    seg = read_segments(lake)
    pq_out = export_table(lake, "segments", "parquet", tmp_path / "s.parquet")
    back = pq.read_table(pq_out["out"]).to_pandas()
    pd.testing.assert_frame_equal(back, seg)
    csv_out = export_table(lake, "segments", "csv", tmp_path / "s.csv")
    back = pd.read_csv(csv_out["out"])
    assert list(back["user_key"]) == list(seg["user_key"])
    assert back["segment_id"].isna().sum() == seg["segment_id"].isna().sum()
    np.testing.assert_allclose(back["confidence"].to_numpy(), seg["confidence"].to_numpy(), equal_nan=True)
    feats, _ = read_features_pandas(lake)
    back = pd.read_csv(export_table(lake, "features", "csv", tmp_path / "f.csv")["out"])
    np.testing.assert_allclose(back["monetary"].to_numpy(), feats["monetary"].to_numpy())
    with pytest.raises(ValueError):
        export_table(lake, "segments", "xlsx", tmp_path / "s.xlsx")


def test_outputs_hold_no_raw_ids(built):
    root = built["root"]
    raw_ids = set(pd.read_csv(root / "raw" / "_truth" / "users.csv", usecols=["user_id"])["user_id"].astype(str))
    lake_dir = Path(built["settings"].lake)
    for sub in ("models", "segments", "views"):
        for path in (lake_dir / sub).rglob("*"):
            if path.suffix == ".parquet":
                df = pq.read_table(path).to_pandas()
                for col in df.columns:
                    if df[col].dtype == object:
                        assert not raw_ids & set(df[col].dropna().astype(str)), (path, col)
            elif path.suffix in (".json", ".md", ".html"):
                text = path.read_text()
                tokens = set(__import__("re").findall(r"\b\d{9}\b", text))
                assert not raw_ids & tokens, path


def test_score_after_new_ingest_includes_new_users_without_retraining(built, spark):
    from etl.generate import generate
    from services.jobs.ingest import ingest_files

    lake, root = built["lake"], built["root"]
    model_before = lake.current_version(MODEL_DATASET)
    before = set(read_segments(lake)["user_key"])
    generate(root / "raw2", users=300, start=date(2019, 12, 1), months=1, seed=12)
    ingest_files(spark, lake, sorted((root / "raw2").glob("*.csv.gz")), built["settings"].key_bytes)
    result = score(spark, lake)
    after = read_segments(lake)
    assert result["model_version"] == model_before == lake.current_version(MODEL_DATASET)
    new_keys = set(after["user_key"]) - before
    assert new_keys, "new users must be scored"
    from etl.pseudonymize import pseudonymize

    truth = pd.read_csv(root / "raw2" / "_truth" / "users.csv", dtype={"user_id": str})
    expected = {pseudonymize(u, built["settings"].key_bytes) for u in truth["user_id"]}
    assert expected <= set(after["user_key"])
    assert json.loads(json.dumps(result))["users"] == len(after)


def test_truncations_weigh_the_model_features(built, spark):
    """The study's first-n features: n events each, only users with >= long_factor x n events; their
    noise sets the weights published in model.json (RMS 1, noisier features lighter)."""
    from services.jobs.features import category_reference
    from services.jobs.segmentation import truncated_features

    lake = built["lake"]
    features, ptr = read_features_pandas(lake)
    cut = truncated_features(spark, lake, category_reference(lake, ptr["category_prices_version"]), features, FAST)
    assert set(cut["n"]) <= set(FAST.threshold_grid) and len(cut)
    assert (cut["n_events"] == cut["n"]).all()
    full_n = features.set_index("user_key").loc[cut["user_key"], "n_events"].to_numpy()
    assert (full_n >= FAST.long_factor * cut["n"].to_numpy()).all()
    assert not cut.duplicated(["user_key", "n"]).any()
    # each row is its user's first n events (pandas on the event files, in time order with the
    # study's tie-breaks): first and last event time and spend of the first n
    root = lake.store.local_path("")
    e = pd.concat([pq.read_table(root / k, columns=["user_key", "event_time", "event_type", "product_id",
                                                     "session_key", "price"]).to_pandas() for k in lake.committed_files(EVENTS)])  # fmt: skip
    e = e[e["user_key"].isin(set(cut["user_key"]))].sort_values(["user_key", "event_time", "event_type", "product_id",
                                                                   "session_key"])  # fmt: skip
    for n, part in cut.groupby("n"):
        head = e.groupby("user_key").head(n)
        head = head[head["user_key"].isin(set(part["user_key"]))].groupby("user_key")
        got = part.set_index("user_key").sort_index()
        assert (got["first_event_time"] == head["event_time"].min()).all()
        assert (got["last_event_time"] == got["as_of"]).all() and (got["last_event_time"] == head["event_time"].max()).all()
        spend = head.apply(lambda g: g.loc[g["event_type"] == "purchase", "price"].sum(), include_groups=False)
        np.testing.assert_allclose(got["monetary"], spend.sort_index(), rtol=1e-12)

    doc = _doc(lake, built["second"]["version"], "model.json")
    weights = {w["feature"]: w for w in doc["feature_weights"]}
    assert list(weights) == doc["features"]
    w = np.array([v["weight"] for v in weights.values()])
    noise = np.array([v["truncation_noise"] for v in weights.values()])
    assert np.sqrt(np.mean(w**2)) == pytest.approx(1.0) and (noise > 0).all()
    assert np.corrcoef(np.log(w), np.log(noise))[0, 1] < -0.99
    assert "truncation noise" in lake.store.read_bytes(f"{MODEL_DATASET}/{built['second']['version']}/report.md").decode()
