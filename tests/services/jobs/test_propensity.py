"""``shoplens propensity train|score`` on a generated lake: what is published, predict agrees with the
batch scores, the pipeline stages, export, and the clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from etl.activity import as_of_micros
from etl.generate import generate
from etl.labels import (
    EVENT_COLUMNS,
    cutoff_prices,
    examples_of_users,
    key_codes,
    price_sums_by_period,
    weekly_cutoffs,
)
from etl.lines import read_history
from etl.pseudonymize import pseudonymize
from model.propensity import MODEL_FEATURES
from model.scoring import HistoryFeatures, propensity_scores
from services.core.catalog import EVENTS, PROPENSITY, PROPENSITY_MODEL, TIMELINE_RUNS
from services.core.lake import Lake
from services.core.readers import load_propensity, read_propensity
from services.core.storage import LocalStore
from services.jobs.export import export_table
from services.jobs.features import run_features
from services.jobs.ingest import ingest_files
from services.jobs.propensity import PropensityConfig, build_examples, score, train, train_due, train_stage
from services.jobs.stages import PipelineConfig, stage_named

pytestmark = [pytest.mark.spark, pytest.mark.slow]
KEY = b"propensity-test-key-0123456789abcdef"
CFG = PropensityConfig(n_train_cutoffs=3, n_threads=1)


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("feed")
    generate(out, users=600, months=2, seed=11)
    return out


@pytest.fixture(scope="module")
def lake(spark, feed, tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("plake")
    the_lake = Lake(LocalStore(root / "lake"), root / "work")
    ingest_files(spark, the_lake, sorted(feed.glob("*.csv.gz")), KEY)
    run_features(spark, the_lake)
    return the_lake


@pytest.fixture(scope="module")
def trained(spark, lake) -> dict:
    assert train_due(lake, 7.0) == (True, "no propensity model yet")
    summary = train(spark, lake, CFG)
    scored = score(spark, lake)
    return {"train": summary, "score": scored}


def test_train_publishes_both_models_and_ships_the_better_one(lake, trained):
    s = trained["train"]
    version = lake.current_version(PROPENSITY_MODEL)
    assert s["version"] == version and s["shipped"] in ("logistic", "boosted")
    doc = lake.read_json(f"{PROPENSITY_MODEL}/{version}/metrics.json")
    aucs = {k: m["roc_auc"] for k, m in doc["models"].items()}
    assert doc["shipped"] == max(aucs, key=aucs.get)
    assert all(c < doc["validation_cutoff"] for c in doc["train_cutoffs"]) and len(doc["train_cutoffs"]) == 3
    for name in ("artifact.json", "artifacts/logistic.json", "artifacts/boosted.json", "report.md", "report.html",
                 "views/roc.parquet", "views/grid.parquet", "views/calibration.parquet", "views/deciles.parquet"):  # fmt: skip
        assert lake.store.exists(f"{PROPENSITY_MODEL}/{version}/{name}"), name
    assert not [k for k in lake.store.list("_staging") if "propensity-examples" in k], "the examples' files stay"
    report = lake.store.read_bytes(f"{PROPENSITY_MODEL}/{version}/report.md").decode()
    assert "ROC AUC" in report and "Confusion matrix" in report and "predicted buyer" in report


def test_the_examples_from_timeline_buckets_are_those_of_every_event_in_one_process(spark, lake, trained):
    """The job's tasks each get a timeline bucket; the rows are those of every user's events at once,
    read from the event files (what the per-user function gives on any partition of whole users, the
    event-file shuffle of before included), sorted by cutoff and user."""
    got, cuts = build_examples(spark, lake, CFG)
    raw = pl.concat(pl.read_parquet(lake.store.read_bytes(k), columns=list(EVENT_COLUMNS))
                    for k in lake.committed_files(EVENTS))  # fmt: skip
    events = raw.with_columns(user_key=pl.Series(key_codes(raw["user_key"].to_arrow())),
                              session_key=pl.Series(key_codes(raw["session_key"].to_arrow())))  # fmt: skip
    events_time = raw["event_time"]
    assert cuts == weekly_cutoffs(events_time.min(), events_time.max(), CFG.horizon_days, CFG.n_train_cutoffs,
                                  CFG.step_days, CFG.min_history_days)  # the span of the event files  # fmt: skip
    prices = cutoff_prices(price_sums_by_period(raw.to_arrow()), cuts.all)
    cut_us = [as_of_micros(c) for c in cuts.all]
    want = examples_of_users(events, cut_us, CFG.horizon_days, prices, narrow=MODEL_FEATURES).to_pandas()
    pd.testing.assert_frame_equal(got, want.sort_values(["cutoff", "user_code"], ignore_index=True))
    assert trained["train"]["examples"] == len(want) > 1000 and want["label"].sum() > 50


def test_a_lake_without_timelines_is_told_to_backfill_them(spark, lake, trained, tmp_path):
    shutil.copytree(lake.store.root, tmp_path / "lake")
    old = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    old.store.delete_prefix(TIMELINE_RUNS)  # as if ingested before timelines existed
    with pytest.raises(ValueError, match=r"have no user timelines .*run `shoplens timelines --backfill` once"):
        build_examples(spark, old, CFG)
    with pytest.raises(ValueError, match=r"run `shoplens timelines --backfill` once"):
        score(spark, old)


def test_scores_cover_every_user_with_deciles(lake, trained):
    scores = read_propensity(lake)
    ptr = lake.pointer(PROPENSITY)
    assert ptr["model_version"] == lake.current_version(PROPENSITY_MODEL) and len(scores) == ptr["n_users"]
    assert scores["propensity"].between(0, 1).all() and set(scores["decile"]) == set(range(1, 11))
    top = scores.loc[scores["decile"] == 10, "propensity"].min()
    assert top >= scores.loc[scores["decile"] == 9, "propensity"].max()
    assert stage_named("propensity_score").due(lake, PipelineConfig()) == (False, "up to date")


def test_predict_agrees_with_the_batch_scores(lake, trained, feed):
    rows = pd.concat([read_history(p).rows for p in sorted(feed.glob("*.csv.gz"))], ignore_index=True)
    as_of = lake.pointer(PROPENSITY)["as_of"]
    # the batch reads only the last 28 days of event files, predict every event: users on both sides
    last = pd.to_datetime(rows["event_time"], utc=True).groupby(rows["user_id"].astype(str)).max()
    recent = last > pd.Timestamp(as_of) - pd.Timedelta(days=28)
    users = [*last[recent].sample(15, random_state=1).index, *last[~recent].sample(10, random_state=1).index]
    table = pa.concat_tables([read_history(p).table for p in sorted(feed.glob("*.csv.gz"))])
    history = table.filter(pc.is_in(table["user_id"].cast(pa.string()), pa.array(users, pa.string())))
    propensity = load_propensity(lake)
    got = propensity_scores(HistoryFeatures.of(history, as_of, propensity.category_means), propensity)
    batch = read_propensity(lake).set_index("user_key")
    for u in users:
        want = batch.loc[pseudonymize(u, KEY)]
        assert got[u]["propensity"] == pytest.approx(want["propensity"], rel=1e-9, abs=1e-12)
        assert got[u]["propensity_decile"] == want["decile"]


def test_export_propensity_writes_pseudonymized_keys(lake, trained, tmp_path):
    out = export_table(lake, "propensity", "csv", tmp_path / "p.csv")
    df = pd.read_csv(out["out"])
    assert list(df.columns) == ["user_key", "propensity", "decile", "model_version", "as_of"]
    assert df["user_key"].str.fullmatch(r"[0-9a-f]{64}").all()


def test_too_little_history_is_a_clear_error_and_a_pipeline_skip(spark, feed, tmp_path):
    short = tmp_path / "short"
    generate(short, users=100, months=1, seed=2, start=pd.Timestamp("2019-10-01").date())
    rows = pd.read_csv(next(short.glob("*.csv.gz")))
    rows = rows.loc[rows["event_time"] < "2019-10-15"]
    rows.to_csv(short / "two-weeks.csv", index=False)
    the_lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    ingest_files(spark, the_lake, [short / "two-weeks.csv"], KEY)
    run_features(spark, the_lake)
    with pytest.raises(ValueError, match="at least two are needed"):
        train(spark, the_lake, CFG)
    assert train_stage(spark, the_lake, CFG)["status"] == "skipped"
    assert train_due(the_lake, 7.0)[0] is False  # not retried until the features move
    with pytest.raises(FileNotFoundError, match="no propensity model yet"):
        score(spark, the_lake)


def test_no_model_means_nothing_to_score(tmp_path):
    empty = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    assert stage_named("propensity_score").due(empty, PipelineConfig()) == (False, "no propensity model yet")


def test_the_scoring_api_gives_the_propensity_shoplens_predict_gives(spark, lake, trained, feed, tmp_path):
    import csv
    import gzip
    from collections import Counter

    from services.core.readers import load_model
    from services.jobs.api import score_events
    from services.jobs.predict import predict
    from services.jobs.segmentation import train as train_segments

    train_segments(spark, lake)
    rows: list[dict[str, str]] = []
    for path in sorted(feed.glob("*.csv.gz")):
        with gzip.open(path, "rt", newline="") as fh:
            rows += list(csv.DictReader(fh))
    user = next(u for u, n in Counter(r["user_id"] for r in rows).most_common() if n <= 200)
    events = [r for r in rows if r["user_id"] == user]
    file = tmp_path / "one-user.csv"
    with open(file, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(events[0]))
        writer.writeheader()
        writer.writerows(events)
    as_of = lake.pointer(PROPENSITY)["as_of"]
    model, propensity = load_model(lake), load_propensity(lake)
    want = predict(file, model, as_of=as_of, propensity=propensity).users[0]
    got = score_events(events, model, as_of, propensity)
    assert got["propensity"] == pytest.approx(want["propensity"], rel=1e-12)
    assert got["propensity_decile"] == want["propensity_decile"]
    assert got["propensity_model_version"] == lake.current_version(PROPENSITY_MODEL)
    assert (got["segment_id"], got["model_version"]) == (want["segment_id"], want["model_version"])
    assert "propensity" not in score_events(events, model, as_of)  # no propensity model: no field


def test_two_users_sharing_a_key_code_stop_the_scoring_instead_of_merging():
    from services.jobs.propensity import score_features

    twins = ["0123456789abcdef" + "a" * 48, "0123456789abcdef" + "b" * 48]  # same first 16 hex digits
    features = pd.DataFrame({"user_key": twins, "as_of": pd.Timestamp("2019-11-01", tz="UTC")})
    with pytest.raises(ValueError, match="share the 64-bit code"):
        score_features(features, pd.DataFrame({"user_code": [81985529216486895]}), scorer=None)

