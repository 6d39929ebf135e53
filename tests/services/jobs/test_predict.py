"""``shoplens predict``: row rules, per-user results, threshold, model loading, and no Spark import.

The model is fitted here on a generated feed and published to a temporary lake the way the contract
says (models/segmentation/<version>/artifact.json + _current.json); expectations come from
SegmentationModel itself and from plain pandas counts on the CSV.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl.contract import HEADER_LINE, ContractError
from etl.lines import read_history, validate_line
from etl.local_features import compute_features_local, raw_to_events
from model.segmentation import SegmentationModel, export_artifact
from model.segmentation.history import model_from_artifact
from services.core.catalog import SEGMENTATION_MODEL as MODEL_DATASET
from services.core.lake import Lake
from services.core.readers import REFERENCE_FILE, load_model
from services.core.storage import LocalStore
from services.jobs.predict import predict

REPO = Path(__file__).resolve().parents[3]
GOOD = "2019-11-05 10:00:00 UTC,view,1004856,2053013555631882655,Electronics.Smartphone,Samsung,130.76,512345678,aa-bb"
VERSION = "20191231T000000Z-abc123"
MIN_EVENTS = 20
pytestmark = pytest.mark.filterwarnings("ignore::model.segmentation.selection.SegmentationWarning")


@pytest.fixture(scope="module")
def feed(tmp_path_factory) -> Path:
    """A clean generated month (plain CSV), ~20 events per user."""
    import gzip

    from etl.generate import generate

    out = tmp_path_factory.mktemp("feed")
    summary = generate(out, users=200, start=date(2019, 11, 1), months=1, seed=11)
    plain = out / "history.csv"
    plain.write_bytes(gzip.decompress((out / summary.files[0]).read_bytes()))
    return plain


@pytest.fixture(scope="module")
def fitted(feed):
    """(model, artifact, twin features) fitted on the feed; the reference is the feed's own prices."""
    events = raw_to_events(read_history(feed).rows)
    features = compute_features_local(events)
    model = SegmentationModel(k_range=(3, 5), n_bootstrap=2, n_init=4, seed=2, n_threads=1).fit(features)
    ids = [7 + 2 * i for i in range(model.k_)]
    art = export_artifact(model, VERSION, segment_ids=ids, segment_names=[f"Seg {i}" for i in ids],
                          min_events=MIN_EVENTS)  # fmt: skip
    priced = events[(events["price"] > 0) & events["category_id"].notna()]
    lp = np.log(priced["price"]).groupby(priced["category_id"].astype("int64"))
    art["category_price_reference"] = [
        {"category_id": int(c), "mean_log_price": float(m), "n": int(n)}
        for c, m, n in zip(lp.mean().index, lp.mean(), lp.size(), strict=True)
    ]
    return model, art, features


def publish(lake_root: Path, artifact: dict, tmp: Path, sibling: pd.DataFrame | None = None) -> Lake:
    lake = Lake(LocalStore(lake_root), tmp / "work")
    local = tmp / "model-out"
    local.mkdir(parents=True, exist_ok=True)
    (local / "artifact.json").write_text(json.dumps(artifact))
    if sibling is not None:
        sibling.to_parquet(local / REFERENCE_FILE)
    lake.publish_version(local, MODEL_DATASET, VERSION)
    return lake


@pytest.fixture
def lake(fitted, tmp_path) -> Lake:
    return publish(tmp_path / "lake", fitted[1], tmp_path)


# -- row rules ------------------------------------------------------------------------------------------------


def _with(**changes: str) -> str:
    fields = dict(zip(HEADER_LINE.split(","), GOOD.split(","), strict=True))
    fields.update(changes)
    return ",".join(fields.values())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (GOOD, None),
        (_with(category_id="", category_code="", brand=""), None),
        ("", "malformed_line"),
        (GOOD + ",extra", "malformed_line"),
        (GOOD.rsplit(",", 1)[0], "malformed_line"),
        (_with(event_time="2019-11-05T10:00:00Z"), "bad_event_time"),
        (_with(event_time="2019-11-05 10:00:00"), "bad_event_time"),
        (_with(event_time="1970-11-05 10:00:00 UTC"), "bad_event_time"),
        (_with(event_time="2019-02-30 10:00:00 UTC"), "bad_event_time"),
        (_with(event_type="click"), "unknown_event_type"),
        (_with(product_id="12a"), "bad_product_id"),
        (_with(product_id="99999999999999999999"), "bad_product_id"),
        (_with(category_id="9999999999999999999"), "bad_category_id"),  # 19 digits but > 2**63 - 1
        (_with(user_id=""), "missing_user_id"),
        (_with(user_id="user-1"), "bad_user_id"),
        (_with(user_session=" "), "missing_user_session"),
        (_with(price=""), "missing_price"),
        (_with(price="NaN"), "bad_price"),
        (_with(price="12,5"), "malformed_line"),  # the comma splits the line into ten fields
        (_with(price="abc"), "bad_price"),
        (_with(price="-1"), "negative_price"),
        (_with(price="100000.01"), "absurd_price"),
        (_with(price="1e3"), None),
    ],
)
def test_row_rules_follow_the_contract_order(line, reason):
    got, row = validate_line(line)
    assert got == reason
    assert (row is None) == (reason is not None)


def test_valid_row_is_typed():
    _, row = validate_line(_with(category_id="", price="1e3"))
    when, etype, product, category, _code, brand, price, user, session = row
    assert (when.isoformat(), etype, product, category, brand, price, user, session) == (
        "2019-11-05T10:00:00+00:00", "view", 1004856, None, "Samsung", 1000.0, "512345678", "aa-bb",
    )  # fmt: skip


def test_bad_header_is_a_contract_error(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("event_time,event_type\n" + GOOD + "\n")
    with pytest.raises(ContractError, match="bad header"):
        read_history(f)


# -- results -------------------------------------------------------------------------------------------------


def test_one_result_per_user_with_model_segments_and_threshold(feed, fitted, lake):
    model, art, features = fitted
    result = predict(feed, load_model(lake))
    raw = pd.read_csv(feed, dtype=str).drop_duplicates()  # exact copies of a line are dropped
    counts = raw.groupby("user_id", sort=False).size()
    assert [r["user_id"] for r in result.users] == list(counts.index)  # first-appearance order
    assert [r["n_events"] for r in result.users] == counts.tolist()

    by_user = features.set_index("user_key")
    labels = pd.Series(model.predict(features), index=by_user.index)
    conf = pd.Series(model.confidence(features), index=by_user.index)
    ids = np.asarray(art["segment_ids"])
    low = high = 0
    for r in result.users:
        assert r["model_version"] == VERSION
        if r["n_events"] < MIN_EVENTS:
            low += 1
            assert r["segment_id"] is None and r["segment_name"] is None and r["confidence"] is None
            assert r["status"] == "not_enough_activity"
            assert r["reason"] == f"not enough activity yet ({r['n_events']} of {MIN_EVENTS} events)"
        else:
            high += 1
            want = int(ids[labels[r["user_id"]]])
            assert (r["segment_id"], r["segment_name"], r["status"]) == (want, f"Seg {want}", "scored")
            assert r["confidence"] == pytest.approx(conf[r["user_id"]], abs=1e-12)
    assert low > 10 and high > 10


def test_single_user_history_and_invalid_rows_are_counted_not_fatal(feed, lake, tmp_path):
    lines = feed.read_text().splitlines()
    first_user = lines[1].split(",")[7]
    mine = [ln for ln in lines[1:] if ln.split(",")[7] == first_user]
    clean = tmp_path / "one.csv"
    clean.write_text("\n".join([lines[0], *mine]) + "\n")

    def broken(index: int, value: str) -> str:
        fields = mine[0].split(",")
        fields[index] = value
        return ",".join(fields)

    bad = ["garbage", mine[0].replace(" UTC", ""), broken(1, "click"), broken(6, "-3"), broken(7, "")]
    dirty = tmp_path / "dirty.csv"
    dirty.write_text("\r\n".join([lines[0], *mine[:3], *bad, mine[0], *mine[3:]]) + "\r\n")  # + a duplicate

    model = load_model(lake)
    want = predict(clean, model)
    got = predict(dirty, model)
    assert got.users == want.users and len(got.users) == 1
    assert got.users[0]["user_id"] == first_user
    assert got.users[0]["n_events"] == len(mine) - want.history.duplicates
    assert got.history.invalid == {
        "malformed_line": 1,
        "bad_event_time": 1,
        "unknown_event_type": 1,
        "negative_price": 1,
        "missing_user_id": 1,
    }
    assert got.history.duplicates == want.history.duplicates + 1
    assert got.history.rows_read == len(mine) + len(bad) + 1


def test_as_of_moves_recency_not_the_file(feed, lake):
    model = load_model(lake)
    default = predict(feed, model)
    later = predict(feed, model, as_of="2020-06-01")
    assert {r["as_of"] for r in later.users} == {"2020-06-01T00:00:00+00:00"}
    assert len({r["as_of"] for r in default.users}) == 1
    assert default.users[0]["as_of"] < "2019-12-01"
    assert [r["n_events"] for r in later.users] == [r["n_events"] for r in default.users]


# -- model loading -------------------------------------------------------------------------------------------


def test_no_published_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="shoplens train"):
        load_model(Lake(LocalStore(tmp_path / "empty"), tmp_path / "w"))


def test_reference_from_sibling_parquet_equals_inline(feed, fitted, tmp_path):
    _, art, _ = fitted
    inline = predict(feed, model_from_artifact(art)).users
    without = {k: v for k, v in art.items() if k != "category_price_reference"}
    with pytest.raises(ValueError, match="category_price_reference"):
        model_from_artifact(without)
    sibling = pd.DataFrame(art["category_price_reference"])
    lake = publish(tmp_path / "lake2", without, tmp_path, sibling=sibling)
    assert predict(feed, load_model(lake)).users == inline


# -- the CLI, in a fresh interpreter: output and no pyspark ----------------------------------------------------


def test_cli_prints_json_and_never_imports_pyspark(feed, lake, cli_env, tmp_path):
    script = (
        "import sys\n"
        "from services.cli import app\n"
        "app(sys.argv[1:], standalone_mode=False)\n"
        "loaded = sorted(m for m in sys.modules if m == 'pyspark' or m.startswith('pyspark.'))\n"
        "print('PYSPARK_MODULES=' + ','.join(loaded), file=sys.stderr)\n"
    )
    lake_root = str(lake.store.local_path(""))
    proc = subprocess.run(
        [sys.executable, "-c", script, "predict", "--events", str(feed), "--lake", lake_root],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **cli_env}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "PYSPARK_MODULES=\n" in proc.stderr
    assert "read " in proc.stderr and " used" in proc.stderr
    out = json.loads(proc.stdout)
    want = predict(feed, load_model(lake)).users
    value = ("p_alive", "clv", "clv_horizon_months", "clv_version")  # looked up under the key: no fit in this lake
    assert [{k: v for k, v in u.items() if k not in value} for u in out] == want
    assert all(u[k] is None for u in out for k in value)
    assert set(out[0]) >= {"user_id", "segment_id", "segment_name", "confidence", "model_version", "n_events"}


def test_cli_without_model_exits_1(feed, cli_env, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "services", "predict", "--events", str(feed), "--lake", str(tmp_path / "none")],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **cli_env}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no published model" in proc.stderr
