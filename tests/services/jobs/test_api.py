"""The scoring API: FastAPI's TestClient for the behaviour, a real uvicorn for the wire and the logs."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from threadpoolctl import threadpool_limits

from etl.contract import RAW_COLUMNS
from etl.pseudonymize import pseudonymize
from services.core.catalog import SEGMENTATION_MODEL
from services.core.lake import Lake
from services.core.settings import ConfigError, Settings
from services.core.storage import LocalStore
from services.jobs.api import create_app, lookup_customer, score_events
from services.jobs.predict import predict_file
from tests.apiserver import start_api
from tests.conftest import REES46_SAMPLE, TEST_KEY
from tests.dashboard.fixtures import build_lake

REPO = Path(__file__).resolve().parents[3]
TOKEN = "test-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "lake"
    with threadpool_limits(limits=1):
        return build_lake(root, TEST_KEY.encode())


@pytest.fixture(scope="module")
def history(source, tmp_path_factory) -> tuple[list[dict], Path]:
    """200 real REES46 rows made one user's (the first row's user id), as events and as a CSV file."""
    lines = REES46_SAMPLE.read_text().splitlines()
    rows = list(csv.reader(lines[1:201]))
    uid = rows[0][7]
    rows = [[*r[:7], uid, *r[8:]] for r in rows]
    path = tmp_path_factory.mktemp("hist") / "history.csv"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([lines[0].split(","), *rows])
    path.write_text(buf.getvalue())
    return [dict(zip(RAW_COLUMNS, r, strict=True)) for r in rows], path


def settings_for(root: Path, tmp: Path, **extra) -> Settings:
    return Settings(lake=str(root), work_dir=tmp / "work", pseudonym_key=TEST_KEY, **{"api_key": TOKEN, **extra})


@pytest.fixture(scope="module")
def client(source, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    lake = Lake(LocalStore(source.root), tmp / "work")
    with TestClient(create_app(settings_for(source.root, tmp), lake, check_seconds=0.2)) as c:
        yield c


# ------------------------------------------------------------------------------------ auth
def test_v1_routes_need_the_bearer_token(client, history):
    events, _ = history
    assert client.post("/v1/score", json={"events": events}).status_code == 401
    wrong = client.post("/v1/score", json={"events": events}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/customers/1").status_code == 401
    assert client.post("/v1/score", json={"events": events}, headers=AUTH).status_code == 200
    for open_path in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        assert client.get(open_path).status_code == 200, open_path


def test_no_key_refuses_to_start_also_in_demo_mode(source, tmp_path):
    for demo in (False, True):
        with pytest.raises(ConfigError, match="SHOPLENS_API_KEY"):
            create_app(settings_for(source.root, tmp_path, api_key=None, demo=demo))


def test_openapi_documents_the_routes(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/customers/{user_id}", "/healthz"} <= set(spec["paths"])
    assert "bearer" in json.dumps(spec["components"]["securitySchemes"]).lower()


# ------------------------------------------------------------------------------------ scoring
def test_score_equals_shoplens_predict_for_the_same_history(client, source, history, tmp_path):
    events, path = history
    got = client.post("/v1/score", json={"events": events}, headers=AUTH)
    assert got.status_code == 200
    body = got.json()
    lake = Lake(LocalStore(source.root), tmp_path / "work")
    (expected,) = predict_file(path, lake).users
    for k in ("segment_id", "segment_name", "confidence", "model_version", "n_events", "status", "as_of"):
        assert body[k] == expected[k], k
    assert body["status"] == "scored" and body["model_version"] == lake.current_version(SEGMENTATION_MODEL)
    # and the command itself
    env = {"PATH": "/usr/bin:/bin", "SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_WORK_DIR": str(tmp_path / "w"),
           "SHOPLENS_LOG_LEVEL": "ERROR"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "services", "predict", "--events", str(path), "--lake",
                           str(source.root)], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (cli,) = json.loads(done.stdout)
    assert {k: body[k] for k in ("segment_id", "segment_name", "confidence", "model_version")} == {
        k: cli[k] for k in ("segment_id", "segment_name", "confidence", "model_version")}


def test_few_events_are_not_enough_activity(client, history):
    body = client.post("/v1/score", json={"events": history[0][:2]}, headers=AUTH).json()
    assert body["status"] == "not_enough_activity" and body["segment_id"] is None
    assert body["reason"].startswith("not enough activity yet (2 of")


def test_bad_rows_get_a_422_with_the_reason_of_each(client, history):
    events = [dict(e) for e in history[0][:6]]
    events[1]["price"] = "cheap"
    events[3]["event_type"] = "hover"
    events[4]["user_id"] = None
    r = client.post("/v1/score", json={"events": events}, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["rows"] == [{"row": 1, "reason": "bad_price"}, {"row": 3, "reason": "unknown_event_type"},
                                {"row": 4, "reason": "missing_user_id"}]  # fmt: skip
    two = [dict(e) for e in history[0][:3]]
    two[2]["user_id"] = "123"
    r = client.post("/v1/score", json={"events": two}, headers=AUTH)
    assert r.status_code == 422 and r.json()["rows"] == [{"row": 2, "reason": "another user_id than row 0"}]
    assert client.post("/v1/score", json={"events": []}, headers=AUTH).status_code == 422
    extra = [{**history[0][0], "colour": "red"}]
    assert client.post("/v1/score", json={"events": extra}, headers=AUTH).status_code == 422
    assert client.post("/v1/score", json={"events": history[0], "as_of": "yesterday-ish"},
                       headers=AUTH).status_code == 422  # fmt: skip


def test_json_numbers_and_strings_are_the_same_event(client, history):
    events = history[0][:30]
    typed = [{**e, "product_id": int(e["product_id"]), "price": float(e["price"]), "user_id": int(e["user_id"])}
             for e in events]  # fmt: skip
    a = client.post("/v1/score", json={"events": events}, headers=AUTH).json()
    b = client.post("/v1/score", json={"events": typed}, headers=AUTH).json()
    assert a == b


def test_score_events_is_a_plain_function(source, history, tmp_path):
    from services.core.readers import load_model

    model = load_model(Lake(LocalStore(source.root), tmp_path / "work"))
    assert score_events(history[0], model)["model_version"] == model.version


# ------------------------------------------------------------------------------------ customers
def test_customer_lookup_returns_the_published_segment(client, source):
    raw = source.raw_ids["known"]
    key = pseudonymize(raw, TEST_KEY.encode())
    row = source.segments.set_index("user_key").loc[key]
    r = client.get(f"/v1/customers/{raw}", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["segment_id"] == int(row["segment_id"]) and body["segment_name"] == row["segment_name"]
    assert body["confidence"] == pytest.approx(float(row["confidence"]), abs=0)
    assert body["n_events"] == int(row["n_events"]) and body["model_version"] == row["model_version"]
    assert "user_key" not in body and raw not in json.dumps(body)
    low = client.get(f"/v1/customers/{source.raw_ids['low']}", headers=AUTH).json()
    assert low["segment_id"] is None and low["segment_name"] == "Not enough activity yet"
    assert client.get(f"/v1/customers/{source.raw_ids['unknown']}", headers=AUTH).status_code == 404
    assert client.get("/v1/customers/not-a-number", headers=AUTH).status_code == 422
    assert lookup_customer(client.app.state.shoplens, raw)["segment_id"] == body["segment_id"]


def test_customer_lookup_carries_the_published_lifetime_value(client, source):
    clv = source.clv.set_index("user_key")
    segmented = source.segments["user_key"]
    buyer = next(k for k in segmented if k in clv.index)
    raw = str(500_000_000 + int(source.features.index[source.features["user_key"] == buyer][0]))
    assert pseudonymize(raw, TEST_KEY.encode()) == buyer
    body = client.get(f"/v1/customers/{raw}", headers=AUTH).json()
    assert body["p_alive"] == pytest.approx(float(clv.loc[buyer, "p_alive"]), abs=0)
    assert body["clv"] == pytest.approx(float(clv.loc[buyer, "clv"]), abs=0)
    assert body["clv_horizon_months"] == 12 and body["clv_version"] == source.clv_doc["version"]
    never_bought = next(k for k in segmented if k not in clv.index)
    raw = str(500_000_000 + int(source.features.index[source.features["user_key"] == never_bought][0]))
    body = client.get(f"/v1/customers/{raw}", headers=AUTH).json()
    assert body["p_alive"] is None and body["clv"] is None and body["clv_version"] is None


def _buyer_raw_id(source, bought: bool = True) -> tuple[str, str]:
    """A segmented user's raw id and key: one with a published lifetime value, or one without."""
    clv = source.clv.set_index("user_key")
    key = next(k for k in source.segments["user_key"] if (k in clv.index) == bought)
    raw = str(500_000_000 + int(source.features.index[source.features["user_key"] == key][0]))
    assert pseudonymize(raw, TEST_KEY.encode()) == key
    return raw, key


def test_score_and_predict_carry_a_known_customers_published_lifetime_value(client, source, history, tmp_path):
    """POST /v1/score and ``shoplens predict`` give a known customer the p_alive and clv of the published
    lifetime values (their pseudonym's row); an unknown user or one who never bought gets nulls."""
    clv = source.clv.set_index("user_key")
    raw, key = _buyer_raw_id(source)
    events = [{**e, "user_id": raw} for e in history[0][:40]]
    body = client.post("/v1/score", json={"events": events}, headers=AUTH).json()
    assert body["p_alive"] == pytest.approx(float(clv.loc[key, "p_alive"]), abs=0)
    assert body["clv"] == pytest.approx(float(clv.loc[key, "clv"]), abs=0)
    assert body["clv_horizon_months"] == 12 and body["clv_version"] == source.clv_doc["version"]
    assert raw not in json.dumps(body) and key not in json.dumps(body)
    never, _ = _buyer_raw_id(source, bought=False)
    for uid in (never, history[0][0]["user_id"]):  # a segmented user without a purchase; a stranger
        other = client.post("/v1/score", json={"events": [{**e, "user_id": uid} for e in events]}, headers=AUTH).json()
        assert other["p_alive"] is None and other["clv"] is None and other["clv_version"] is None
        assert other["segment_id"] == body["segment_id"]  # the value changes nothing of the segment
    path = tmp_path / "two.csv"
    rows = [[e[c] if e[c] is not None else "" for c in RAW_COLUMNS] for e in events]
    rows += [[*r[:7], never, *r[8:]] for r in rows]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([RAW_COLUMNS, *rows])
    path.write_text(buf.getvalue())
    lake = Lake(LocalStore(source.root), tmp_path / "work")
    users = {u["user_id"]: u for u in predict_file(path, lake, key=TEST_KEY.encode()).users}
    assert users[raw]["p_alive"] == body["p_alive"] and users[raw]["clv"] == body["clv"]
    assert users[raw]["clv_horizon_months"] == 12 and users[raw]["clv_version"] == source.clv_doc["version"]
    assert users[never]["p_alive"] is None and users[never]["clv"] is None
    assert "p_alive" not in predict_file(path, lake).users[0]  # no key: no lookup


def test_raw_ids_never_reach_the_logs(client, source, history, caplog):
    caplog.set_level(logging.DEBUG)
    raw = source.raw_ids["known"]
    client.get(f"/v1/customers/{raw}", headers=AUTH)
    client.get(f"/v1/customers/{source.raw_ids['unknown']}", headers=AUTH)
    client.post("/v1/score", json={"events": history[0]}, headers=AUTH)
    server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # the test's client
    text = json.dumps([{**r.__dict__, "message": r.getMessage()} for r in server], default=str)
    assert "/v1/customers/{user_id}" in text
    for secret in (raw, source.raw_ids["unknown"], history[0][0]["user_id"]):
        assert secret not in text


def test_metrics_expose_the_latency_histogram_by_route_template(client, source):
    client.get(f"/v1/customers/{source.raw_ids['known']}", headers=AUTH)
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'shoplens_api_request_duration_seconds_bucket{le="0.05",method="GET",route="/v1/customers/{user_id}",status="200"}' in text
    assert 'shoplens_api_requests_total{method="GET",route="unmatched",status="404"}' in text
    assert source.raw_ids["known"] not in text
    assert "shoplens_events_read_total" not in text  # only the API's own families


# ------------------------------------------------------------------------------------ hot swap
def test_a_newly_published_model_is_used_without_a_restart(source, history, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(source.root, root)
    lake = Lake(LocalStore(root), tmp_path / "work")
    with TestClient(create_app(settings_for(root, tmp_path), lake, check_seconds=0.2)) as c:
        before = c.post("/v1/score", json={"events": history[0]}, headers=AUTH).json()
        old = lake.current_version(SEGMENTATION_MODEL)
        new = "20200101T000000Z-hotswp"
        staged = tmp_path / "model"
        shutil.copytree(root / SEGMENTATION_MODEL / old, staged)
        art = json.loads((staged / "artifact.json").read_text())
        art["model_version"] = new
        art["segment_names"] = [f"{n} (v2)" for n in art["segment_names"]]
        (staged / "artifact.json").write_text(json.dumps(art))
        lake.publish_version(staged, SEGMENTATION_MODEL, new)
        deadline = time.monotonic() + 10
        while c.get("/healthz").json()["model_version"] != new:
            assert time.monotonic() < deadline, "the new model was not picked up"
            time.sleep(0.1)
        after = c.post("/v1/score", json={"events": history[0]}, headers=AUTH).json()
    assert before["model_version"] == old and after["model_version"] == new
    assert after["segment_name"] == f"{before['segment_name']} (v2)"
    assert after["confidence"] == before["confidence"]


# ------------------------------------------------------------------------------------ real server
@pytest.mark.slow
def test_a_real_uvicorn_server(source, history, tmp_path):
    env = {"SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_API_KEY": TOKEN, "SHOPLENS_WORK_DIR": str(tmp_path / "w"),
           "SHOPLENS_LOG_FORMAT": "json", "SHOPLENS_LOG_LEVEL": "DEBUG"}  # fmt: skip
    api = start_api(env, str(source.root))
    try:
        raw = source.raw_ids["known"]
        assert api.request("GET", f"/v1/customers/{raw}")[0] == 401
        status, body = api.request("GET", f"/v1/customers/{raw}", token=TOKEN)
        assert status == 200 and body["segments_version"]
        assert api.request("GET", f"/v1/customers/{source.raw_ids['unknown']}", token=TOKEN)[0] == 404
        status, scored = api.request("POST", "/v1/score", {"events": history[0]}, token=TOKEN)
        assert status == 200 and scored["status"] == "scored"
        assert api.request("POST", "/v1/score", {"events": history[0]})[0] == 401
        status, text = api.request("GET", "/metrics")
        assert status == 200 and 'route="/v1/score",status="200"' in text
        assert "shoplens_api_request_duration_seconds_bucket" in text
    finally:
        api.stop()
    log = api.log.read_text()
    assert "/v1/customers/{user_id}" in log and "Uvicorn running" in log
    for secret in (raw, source.raw_ids["unknown"], history[0][0]["user_id"], TOKEN):
        assert secret not in log, secret


@pytest.mark.slow
def test_several_workers_count_every_request_check_keys_and_swap_models(source, history, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(source.root, root)
    lake = Lake(LocalStore(root), tmp_path / "work")
    old = lake.current_version(SEGMENTATION_MODEL)
    env = {"SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_API_KEY": TOKEN, "SHOPLENS_WORK_DIR": str(tmp_path / "w"),
           "SHOPLENS_LOG_FORMAT": "json", "SHOPLENS_LOG_LEVEL": "INFO"}  # fmt: skip
    api = start_api(env, str(root), workers=2)
    body = {"events": history[0]}
    try:
        assert api.request("POST", "/v1/score", body)[0] == 401
        assert api.request("POST", "/v1/score", body, token="wrong-token")[0] == 401
        first = [api.request("POST", "/v1/score", body, token=TOKEN) for _ in range(12)]
        assert all(s == 200 and b["model_version"] == old for s, b in first)

        new = "20200101T000000Z-mlwrks"
        staged = tmp_path / "model"
        shutil.copytree(root / SEGMENTATION_MODEL / old, staged)
        art = json.loads((staged / "artifact.json").read_text())
        art["model_version"] = new
        (staged / "artifact.json").write_text(json.dumps(art))
        lake.publish_version(staged, SEGMENTATION_MODEL, new)
        sent, deadline = len(first), time.monotonic() + 30
        while api.request("POST", "/v1/score", body, token=TOKEN)[1]["model_version"] != new:
            sent += 1
            assert time.monotonic() < deadline, "no worker picked up the new model"
            time.sleep(0.2)
        time.sleep(6)  # every worker re-reads the pointer every 5 s
        after = [api.request("POST", "/v1/score", body, token=TOKEN) for _ in range(10)]
        assert all(s == 200 and b["model_version"] == new for s, b in after)
        sent += 1 + len(after)

        status, text = api.request("GET", "/metrics")
    finally:
        api.stop()
    assert status == 200
    counts = {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("shoplens_api_requests_total{") and 'route="/v1/score"' in line}  # fmt: skip
    assert counts == {'method="POST",route="/v1/score",status="200"': sent,
                      'method="POST",route="/v1/score",status="401"': 2}  # fmt: skip
    histogram = 'shoplens_api_request_duration_seconds_count{method="POST",route="/v1/score",status="200"}'
    assert f"{histogram} {sent}" in text
    started = {json.loads(line)["message"] for line in api.log.read_text().splitlines()
               if line.startswith("{") and "Started server process" in line}  # fmt: skip
    assert len(started) == 2, started  # two worker processes, each with its own pid


# ------------------------------------------------------------------------------------ one scoring use case
def _lifecycle_by_hand(events: list[dict]) -> str:
    """The lifecycle rules (model.segmentation.lifecycle's table) on raw events with pandas, as of the last event."""
    df = pd.DataFrame(events).drop_duplicates()
    t = pd.to_datetime(df["event_time"].str.replace(" UTC", ""), utc=True)
    as_of, day = t.max(), pd.Timedelta(days=1)
    buys = df["event_type"] == "purchase"
    frequency = df.loc[buys, "user_session"].nunique()
    inactive, tenure = (as_of - t.max()) // day, (as_of - t.min()) // day
    recency = (as_of - t[buys].max()) // day if frequency else None
    if inactive >= 60:
        return "lapsed"
    if frequency and recency < 45:
        return "repeat_buyer" if frequency >= 2 else "first_time_buyer"
    if frequency:
        return "at_risk"
    if (df["event_type"] == "cart").any():
        return "carted_not_bought"
    return "new_visitor" if tenure < 7 else "browsing"


def _dashboard_upload(source, payload: bytes, monkeypatch, tmp_path) -> dict:
    """The dashboard's upload scoring (dashboard.data.predict_upload) on the source lake."""
    import streamlit as st

    from dashboard import data
    from services.core.settings import get_settings

    monkeypatch.setenv("SHOPLENS_WORK_DIR", str(tmp_path / "dash-work"))
    monkeypatch.setenv("SHOPLENS_PSEUDONYM_KEY", TEST_KEY)
    get_settings.cache_clear()
    st.cache_resource.clear()
    lake = Lake(LocalStore(source.root), tmp_path / "w")
    try:
        result = data.predict_upload(str(source.root), lake.current_version(SEGMENTATION_MODEL), payload)
    finally:
        get_settings.cache_clear()
        st.cache_resource.clear()
    assert result.error is None, result.error
    (user,) = result.users
    return user["segment"]


def test_the_api_predict_and_the_dashboard_give_one_answer_with_lifecycle_and_trust(client, source, history,
                                                                                     monkeypatch, tmp_path):  # fmt: skip
    """The three entrances of one history (POST /v1/score, ``shoplens predict``, the dashboard upload) give
    the same segment, confidence, trust and lifecycle stage; the stage is the rules' on the raw events
    (pandas, by hand), over prefixes of the history that reach different stages."""
    events, _ = history
    lake = Lake(LocalStore(source.root), tmp_path / "work")
    first_buy = next(i for i, e in enumerate(events) if e["event_type"] == "purchase")
    assert first_buy > 0
    stages = set()
    for n in (first_buy, len(events)):  # the history before its first purchase, and all of it
        part = events[:n]
        body = client.post("/v1/score", json={"events": part}, headers=AUTH)
        assert body.status_code == 200
        api = body.json()
        path = tmp_path / f"h{n}.csv"
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([RAW_COLUMNS, *[[e[c] for c in RAW_COLUMNS] for e in part]])
        path.write_text(buf.getvalue())
        (cli,) = predict_file(path, lake).users
        dash = _dashboard_upload(source, path.read_bytes(), monkeypatch, tmp_path)
        fields = ("segment_id", "segment_name", "confidence", "trust", "lifecycle_stage", "n_events", "model_version")
        assert {k: api[k] for k in fields} == {k: cli[k] for k in fields} == {k: dash[k] for k in fields}
        assert api["lifecycle_stage"] == _lifecycle_by_hand(part)
        assert (api["lifecycle_label"], api["lifecycle_action"]) == (cli["lifecycle_label"], cli["lifecycle_action"])
        stages.add(api["lifecycle_stage"])
    assert stages == {"new_visitor", "first_time_buyer"}, stages
    spec = client.get("/openapi.json").json()["components"]["schemas"]["ScoreResponse"]
    assert {"trust", "lifecycle_stage", "lifecycle_label", "lifecycle_action"} <= set(spec["properties"])


def test_one_history_is_featurized_once_for_segment_lifecycle_and_propensity(source, history, monkeypatch, tmp_path):
    """score_events with a propensity model computes the features once (the features arithmetic of
    etl.local_features runs once), also when the propensity model's price reference differs (then only
    its price_level is computed again); trust and propensity equal their formulas on hand counts."""
    import etl.local_features as lf
    from model.propensity import MODEL_FEATURES, LightPropensityScorer
    from model.propensity.history import LoadedPropensity
    from model.segmentation.history import model_from_artifact
    from services.core.readers import load_model

    events, _ = history
    base = load_model(Lake(LocalStore(source.root), tmp_path / "work"))
    trust = {"intercept": -1.5, "coef_log_n": 0.6, "coef_confidence": 2.0}
    model = model_from_artifact({**base.artifact, "trust": trust}, base.version)
    coef = {"n_events": 0.01, "carts_28d": 0.25}
    artifact = {
        "artifact": "shoplens.propensity.light", "schema_version": 1, "model_version": "p-test", "kind": "logistic",
        "features": list(MODEL_FEATURES), "calibrator": None, "deciles": None, "metadata": {},
        "logistic": {"medians": [0.0] * len(MODEL_FEATURES), "missing_columns": [], "log_features": [],
                     "mean": [0.0] * len(MODEL_FEATURES), "scale": [1.0] * len(MODEL_FEATURES),
                     "coef": [coef.get(c, 0.0) for c in MODEL_FEATURES], "intercept": -2.0},
    }  # fmt: skip
    calls = {"features": 0, "price_level": 0}
    features, price_level = lf._coded_columns, lf._price_level

    def counted(name, fn):
        def inner(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return inner

    monkeypatch.setattr(lf, "_coded_columns", counted("features", features))
    monkeypatch.setattr(lf, "_price_level", counted("price_level", price_level))
    other_reference = model.category_means + 0.1
    for reference, price_levels in ((model.category_means, 1), (other_reference, 2)):
        calls.update(features=0, price_level=0)
        propensity = LoadedPropensity("p-test", LightPropensityScorer(artifact), reference)
        got = score_events(events, model, None, propensity)
        assert calls == {"features": 1, "price_level": price_levels}
        df = pd.DataFrame(events).drop_duplicates()
        t = pd.to_datetime(df["event_time"].str.replace(" UTC", ""), utc=True)
        n_carts_28d = int(((df["event_type"] == "cart") & (t > t.max() - pd.Timedelta(days=28))).sum())
        want = 1 / (1 + np.exp(-(-2.0 + 0.01 * np.float32(len(df)) + 0.25 * np.float32(n_carts_28d))))
        assert got["propensity"] == pytest.approx(want, rel=1e-12)
        assert got["propensity_model_version"] == "p-test" and got["n_events"] == len(df)
        assert got["trust"] == pytest.approx(
            1 / (1 + np.exp(-(-1.5 + 0.6 * np.log(len(df)) + 2.0 * got["confidence"]))), rel=1e-12)
    assert score_events(events, model)["lifecycle_stage"] == got["lifecycle_stage"]


def test_raw_price_level_is_the_features_price_level_with_that_reference(history):
    """The one feature a second reference changes, computed alone, equals the whole computation's."""
    from etl.lines import history_of, parse_fields
    from etl.local_features import raw_feature_columns, raw_price_level
    from services.jobs.api import event_columns

    rows = history_of(parse_fields(event_columns(history[0]))).table
    reference = pd.DataFrame({"category_id": rows["category_id"].drop_null().unique().to_pylist()})
    reference["mean_log_price"] = np.linspace(1.0, 5.0, len(reference))
    want = raw_feature_columns(rows, category_reference=reference)["price_level"]
    assert np.isfinite(want).all()
    np.testing.assert_array_equal(raw_price_level(rows, reference), want)
