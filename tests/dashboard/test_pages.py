"""AppTest of every dashboard page on a contract-shaped lake; expected values recomputed with pandas."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard.charts import fmt_int, fmt_money, fmt_pct, label
from etl.pseudonymize import pseudonymize
from services.core.catalog import RUNS
from services.core.lake import Lake
from services.core.storage import LocalStore
from tests.conftest import REES46_SAMPLE
from tests.dashboard.fixtures import APP, open_page


def metric(at, label: str) -> str:
    hits = [m.value for m in at.metric if m.label == label]
    assert hits, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return hits[0]


def texts(at) -> str:
    """Every visible text of the page (markdown, captions, alerts, metrics, titles)."""
    parts = [e.value for kind in ("title", "markdown", "caption", "info", "warning", "success", "subheader")
             for e in getattr(at, kind)]  # fmt: skip
    parts += [f"{m.label} {m.value} {m.delta}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


def plotly_count(at) -> int:
    return len(at.get("plotly_chart"))


def plotly_values(values: list | dict) -> np.ndarray:
    """A trace's numbers from a chart's JSON (plotly writes numpy arrays as base64 ``bdata``)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values, dtype=float)


# ------------------------------------------------------------------------------------ overview
@pytest.mark.parametrize("days", [7, 30])
def test_overview_kpis_match_a_pandas_recomputation(app, fixture_lake, days):
    at = app()
    if days != 7:
        at.segmented_control(key="overview_days").set_value(days).run()
    kpi = fixture_lake.kpi_daily.assign(event_date=pd.to_datetime(fixture_lake.kpi_daily["event_date"]))
    kpi = kpi.sort_values("event_date")
    cur, prev = kpi.tail(days), kpi.iloc[-2 * days : -days]
    assert metric(at, "Customers") == fmt_int(len(fixture_lake.features))
    assert metric(at, "Active users / day") == fmt_int(cur["active_users"].mean())
    assert metric(at, "Sessions") == fmt_int(cur["sessions"].sum())
    conv = (cur["conversion_rate"] * cur["sessions"]).sum() / cur["sessions"].sum()
    assert metric(at, "Conversion") == fmt_pct(conv, 2)
    assert metric(at, "Revenue") == fmt_money(cur["revenue"].sum())
    revenue_delta = next(m.delta for m in at.metric if m.label == "Revenue")
    if len(prev) == days:
        assert revenue_delta == f"{cur['revenue'].sum() / prev['revenue'].sum() - 1:+.1%}"
    else:
        assert revenue_delta is None or revenue_delta == ""
    assert plotly_count(at) == 1


def test_overview_shows_freshness_and_runs(app, fixture_lake):
    at = app()
    runs = at.dataframe[0].value
    assert len(runs) == len(fixture_lake.runs)
    assert list(runs["run_id"]) == sorted((r["run_id"] for r in fixture_lake.runs), reverse=True)
    assert (runs["status"] == "failed").sum() == 1
    assert "<small>Latest event</small><br><b>30 Nov 2019 23:00 UTC</b>" in texts(at)
    assert f"<small>Model version</small><br><b>{fixture_lake.model_doc.version}</b>" in texts(at)
    assert "4 most recent runs · 3 committed · 1 not committed" in texts(at)


# ------------------------------------------------------------------------------------ segments
def test_segments_table_sizes_and_movement(app, fixture_lake):
    at = app("segments")
    seg = fixture_lake.segments
    table = at.dataframe[0].value.set_index("segment_name")
    expected = seg["segment_name"].value_counts()
    assert table["users"].to_dict() == expected.to_dict()
    revenue = seg.merge(fixture_lake.features[["user_key", "monetary"]], on="user_key").groupby("segment_name")["monetary"].sum()
    np.testing.assert_allclose(table["share_revenue"].sort_index(), (revenue / revenue.sum()).sort_index())
    profiles = {p["name"]: p for p in fixture_lake.profiles}
    for p in profiles.values():  # a card per segment with its description
        assert p["description"] in texts(at)
    scored = int(seg["segment_id"].notna().sum())
    assert f"**{len(profiles)} segments**" in texts(at) and f"**{scored:,}** customers" in texts(at)
    both = fixture_lake.previous_segments.merge(seg, on="user_key", suffixes=("_a", "_b"))
    moved = int((both["segment_name_a"] != both["segment_name_b"]).sum())
    assert f"**{fmt_int(moved)}** of {fmt_int(len(both))} customers changed segment" in texts(at)
    for p in profiles.values():  # every recommended action is on the page
        for action in p["actions"]:
            assert f"- {action}" in texts(at)
    # shares, map, radar, bars, categories, sankey
    assert plotly_count(at) == 6


def test_segments_compare_feature_selection_changes_the_bars(app, fixture_lake):
    at = app("segments")
    at.selectbox(key="segments_feature").set_value("n_sessions").run()
    assert not at.exception
    at.multiselect(key="segments_compare").set_value([fixture_lake.profiles[0]["name"]]).run()
    assert not at.exception


# ------------------------------------------------------------------------------------ lookup
def _lookup(app, raw_id: str):
    at = app("lookup")
    at.text_input[0].input(raw_id)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_lookup_known_user_shows_segment_confidence_and_why(app, fixture_lake):
    raw = fixture_lake.raw_ids["known"]
    at = _lookup(app, raw)
    key = pseudonymize(raw, fixture_lake.key)
    row = fixture_lake.features.set_index("user_key").loc[[key]].reset_index()
    labels, conf = fixture_lake.model.predict_with_confidence(row)  # the fitted sklearn model, not the scorer
    name = fixture_lake.profiles[int(labels[0])]["name"]
    assert metric(at, "Segment") == name
    assert metric(at, "Confidence") == fmt_pct(conf[0], 0)
    assert metric(at, "Events") == fmt_int(row["n_events"].iat[0])
    why = at.dataframe[0].value
    medians = fixture_lake.profiles[int(labels[0])]["medians"]
    assert set(why["feature_label"]) and len(why) == len(fixture_lake.model_doc.features) - (
        "has_purchased" in fixture_lake.model_doc.features)
    n_sessions = why.set_index("feature_label").loc["Sessions"]
    assert n_sessions["median"] == fmt_int(medians["n_sessions"]) or n_sessions["median"] == f"{medians['n_sessions']:,.1f}"
    assert plotly_count(at) == 1
    # privacy: the raw id is not shown (the browser test checks the form clears the input box)
    assert raw not in texts(at)


def test_lookup_below_threshold_says_not_enough_activity(app, fixture_lake):
    raw = fixture_lake.raw_ids["low"]
    at = _lookup(app, raw)
    n = fixture_lake.features.set_index("user_key").loc[pseudonymize(raw, fixture_lake.key), "n_events"]
    assert n < 5
    warning = at.warning[0].value
    assert "Not enough activity yet" in warning and f"has {n} events" in warning and "from 5 events" in warning
    assert not [m for m in at.metric if m.label == "Segment"]


def test_lookup_unknown_id(app):
    at = _lookup(app, "999999999")
    assert "No customer with this id" in at.info[0].value


def test_lookup_without_key_warns(app, monkeypatch, fixture_lake):
    from services.core.settings import get_settings

    at = app("lookup")
    monkeypatch.delenv("SHOPLENS_PSEUDONYM_KEY")
    get_settings.cache_clear()
    at.text_input[0].input(fixture_lake.raw_ids["known"])
    at.button[0].click().run()
    assert not at.exception
    assert "pseudonymization key" in at.warning[0].value


def _user_history(min_events: int) -> tuple[str, bytes]:
    """The real REES46 rows of the most active user of the sample (header + their lines)."""
    lines = REES46_SAMPLE.read_text(encoding="utf-8").splitlines()
    df = pd.read_csv(REES46_SAMPLE, usecols=["user_id"])
    uid = int(df["user_id"].value_counts().index[0])
    assert df["user_id"].value_counts().iloc[0] >= min_events
    body = [ln for ln, u in zip(lines[1:], df["user_id"], strict=True) if u == uid]
    return str(uid), ("\n".join([lines[0], *body]) + "\n").encode()


def test_lookup_upload_scores_like_shoplens_predict(app, fixture_lake, rees46_sample, tmp_path):
    from services.jobs.predict import predict_file

    uid, payload = _user_history(5)
    at = app("lookup")
    at.file_uploader(key="lookup_upload").set_value(("history.csv", payload, "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    path = tmp_path / "history.csv"
    path.write_bytes(payload)
    expected = predict_file(path, Lake(LocalStore(fixture_lake.root), tmp_path / "w")).users[0]
    assert expected["segment_name"] is not None
    assert metric(at, "Segment") == expected["segment_name"]
    assert metric(at, "Confidence") == fmt_pct(expected["confidence"], 0)
    assert metric(at, "Events") == fmt_int(expected["n_events"])
    assert uid not in texts(at)


def test_lookup_upload_of_a_wrong_file_explains(app):
    at = app("lookup")
    at.file_uploader(key="lookup_upload").set_value(("x.csv", b"a,b\n1,2\n", "text/csv")).run()
    assert not at.exception
    assert "not a REES46 event file" in at.warning[0].value


# ------------------------------------------------------------------------------------ model
def test_model_page_metrics_curves_and_history(app, fixture_lake):
    at = app("model")
    doc = fixture_lake.model_doc
    assert metric(at, "Segments (k)") == str(doc.k)
    assert metric(at, "Silhouette") == f"{doc.metrics.silhouette:.3f}"
    assert metric(at, "Min. events") == "5"
    hist = at.dataframe[-1].value
    assert list(hist["version"]) == ["20191215T000000Z-bbbbbb", "20191201T000000Z-aaaaaa"]
    assert list(hist["current"]) == [True, False]
    assert plotly_count(at) == 3  # k selection, threshold, importance
    # the importance bars are the fitted model's own permutation importances (most important on top)
    bars = json.loads(at.get("plotly_chart")[2].proto.spec)["data"][0]
    ranked = fixture_lake.model.feature_importance_.ranked()[:15][::-1]
    assert list(bars["y"]) == [label(f) for f, _ in ranked]
    np.testing.assert_allclose(plotly_values(bars["x"]), [v for _, v in ranked], rtol=1e-12)


def test_the_model_document_refuses_what_a_fixture_or_job_gets_wrong(fixture_lake):
    """The fixture's model.json round-trips through the job's type; issue 31's drift (every importance row
    turned into {"feature": "feature", "importance": "importance"}) or a field the type does not know fails."""
    from pydantic import ValidationError

    from services.core.documents.segmentation import SegmentationModelDocument

    doc = fixture_lake.model_doc.to_dict()
    assert SegmentationModelDocument.from_dict(doc) == fixture_lake.model_doc
    for drifted in ({**doc, "feature_importance": [{"feature": "feature", "importance": "importance"}]},
                    {**doc, "k_choice": doc["k"]}):  # fmt: skip
        with pytest.raises(ValidationError):
            SegmentationModelDocument.from_dict(drifted)


# ------------------------------------------------------------------------------------ export
def test_export_page_and_csv_contents(app, fixture_lake):
    from dashboard import data

    at = app("export")
    top = fixture_lake.segments["segment_name"].value_counts()
    assert metric(at, "Customers") == fmt_int(top.iloc[0])
    assert at.get("download_button")
    seg = fixture_lake.segments
    sid = int(seg.loc[seg["segment_name"] == top.index[0], "segment_id"].iloc[0])
    version = json.loads((fixture_lake.root / "segments" / "_current.json").read_text())["version"]
    csv = pd.read_csv(pd.io.common.BytesIO(data.segment_members_csv(fixture_lake.uri, version, sid)))
    assert set(csv["user_key"]) == set(seg.loc[seg["segment_id"] == sid, "user_key"])
    assert csv["user_key"].str.fullmatch(r"[0-9a-f]{64}").all()
    low = pd.read_csv(pd.io.common.BytesIO(data.segment_members_csv(fixture_lake.uri, version, None)))
    assert set(low["user_key"]) == set(seg.loc[seg["segment_id"].isna(), "user_key"])
    # choosing another segment updates the page
    at.selectbox(key="export_segment").set_value(1).run()
    assert metric(at, "Customers") == fmt_int(top.iloc[1])


# ------------------------------------------------------------------------------------ failures
PAGES = [None, "segments", "lookup", "model", "export"]




@pytest.mark.parametrize("page", PAGES)
def test_empty_lake_shows_a_message(use_lake, tmp_path, page):
    use_lake(str(tmp_path / "nothing-here"))
    at = open_page(page)
    assert "No data yet" in at.info[0].value


@pytest.mark.parametrize("page", PAGES)
def test_lake_without_model_shows_a_message(use_lake, tmp_path, fixture_lake, page):
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "w")
    for path in sorted((fixture_lake.root / RUNS).glob("*.json")):
        lake.write_json(f"{RUNS}/{path.name}", json.loads(path.read_text()))
    use_lake(str(tmp_path / "lake"))
    at = open_page(page)
    if page is None:  # the overview still shows the runs
        assert len(at.dataframe[0].value) == len(fixture_lake.runs)
        assert "Daily KPIs appear once the overview views are built" in at.info[0].value
    else:
        assert "No segmentation model yet" in at.info[0].value


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("page", PAGES)
def test_storage_outage_shows_a_warning(use_lake, page):
    # a short retry budget (users keep the 30 s default): the warning must show once the budget is spent
    use_lake("s3://lake/shoplens", SHOPLENS_S3_ENDPOINT=f"127.0.0.1:{_closed_port()}",
             SHOPLENS_S3_ACCESS_KEY="k", SHOPLENS_S3_SECRET_KEY="s", SHOPLENS_S3_RETRY_SECONDS="0.5")  # fmt: skip
    at = open_page(page)
    assert "The lake cannot be read right now" in at.warning[0].value


def test_missing_view_file_is_not_a_traceback(use_lake, tmp_path, fixture_lake):
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(fixture_lake.root, root)
    views = root / "views" / "segments"
    version = json.loads((views / "_current.json").read_text())["version"]
    (views / version / "pca_sample.parquet").unlink()
    (views / version / "segment_flow.parquet").write_bytes(b"not parquet")
    use_lake(str(root))
    at = open_page("segments")
    assert "The lake cannot be read right now" in at.warning[0].value
    (views / version / "segment_flow.parquet").unlink()
    use_lake(str(root))
    at = open_page("segments")
    assert "No map sample" in texts(at) and "No movement to show yet" in texts(at)


def test_new_model_version_refreshes_without_restart(use_lake, tmp_path, fixture_lake, monkeypatch):
    import shutil

    from dashboard import data

    root = tmp_path / "lake"
    shutil.copytree(fixture_lake.root, root)
    use_lake(str(root))
    at = open_page("model")
    assert metric(at, "Segments (k)") == str(fixture_lake.model_doc.k)
    # publish "a new model": point _current.json at the old version
    (root / "models" / "segmentation" / "_current.json").write_text(json.dumps({"version": "20191201T000000Z-aaaaaa"}))
    monkeypatch.setattr(data, "POINTER_TTL", 0)
    data.pointers.clear()  # the pointer ttl elapsed
    at.run()
    assert metric(at, "Segments (k)") == "3"


def test_a_model_another_release_wrote_is_listed_and_explained(use_lake, tmp_path, fixture_lake, monkeypatch):
    """An older release's model.json (a field since renamed): the Versions tab lists it by its version, the
    page names the file and what to do when it is the current model, and the pipeline retrains."""
    import shutil

    from dashboard import data
    from services.core.documents import OutdatedDocument
    from services.core.documents.segmentation import SegmentationModelDocument
    from services.core.lake import Lake
    from services.core.storage import LocalStore
    from services.jobs.segmentation import staleness

    root = tmp_path / "lake"
    shutil.copytree(fixture_lake.root, root)
    old = root / "models" / "segmentation" / "20191201T000000Z-aaaaaa" / "model.json"
    doc = json.loads(old.read_text())
    doc["k_choice"] = doc.pop("k")
    old.write_text(json.dumps(doc))
    lake = Lake(LocalStore(root), tmp_path / "work")
    with pytest.raises(OutdatedDocument, match=r"model\.json does not have this release's fields \(k, k_choice\)"):
        SegmentationModelDocument.read(lake, "20191201T000000Z-aaaaaa")
    use_lake(str(root))
    at = open_page("model")
    hist = at.dataframe[-1].value
    assert list(hist["version"]) == ["20191215T000000Z-bbbbbb", "20191201T000000Z-aaaaaa"]
    assert hist["k"].iloc[0] == fixture_lake.model_doc.k and pd.isna(hist["k"].iloc[1])

    (root / "models" / "segmentation" / "_current.json").write_text(json.dumps({"version": "20191201T000000Z-aaaaaa"}))
    monkeypatch.setattr(data, "POINTER_TTL", 0)
    data.pointers.clear()
    at.run()
    assert not at.exception and "written by another shoplens release" in at.warning[0].value
    assert staleness(lake) == (True, "the model was written by another shoplens release")


def test_no_spark_import_in_dashboard():
    import subprocess
    import sys

    code = ("import sys, dashboard.data, dashboard.charts, dashboard.kpis, dashboard.explain, dashboard.ui; "
            "sys.exit(1 if any(m.startswith('pyspark') for m in sys.modules) else 0)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(APP).parents[1]).returncode == 0


# ------------------------------------------------------------------------------------ S3 lake
@pytest.mark.s3
def test_pages_read_a_lake_on_real_s3(use_lake, s3_server, fixture_lake):
    """The same lake in a SeaweedFS bucket: views through the store, lookups through the local mirror."""
    from services.core.storage import S3Store

    bucket = s3_server.new_bucket("dash")
    S3Store(s3_server.client(), bucket, "lake").put_dir(fixture_lake.root, "")
    use_lake(f"s3://{bucket}/lake", **s3_server.env)
    at = open_page(None)
    assert metric(at, "Customers") == fmt_int(len(fixture_lake.features))
    at = open_page("segments")
    table = at.dataframe[0].value.set_index("segment_name")
    assert table["users"].to_dict() == fixture_lake.segments["segment_name"].value_counts().to_dict()
    at = open_page("lookup")
    at.text_input[0].input(fixture_lake.raw_ids["known"])
    at.button[0].click().run()
    key = pseudonymize(fixture_lake.raw_ids["known"], fixture_lake.key)
    expected = fixture_lake.segments.set_index("user_key").loc[key, "segment_name"]
    assert metric(at, "Segment") == expected


def test_why_table_orders_by_closeness_and_skips_meaningless_ratios():
    from dashboard.explain import compare

    profile = {"medians": {"n_sessions": 10.0, "monetary": 100.0, "price_level": -0.8, "holiday_share": 0.0}}
    user = {"n_sessions": 11.0, "monetary": 400.0, "price_level": -0.5, "holiday_share": 0.1}
    rows = compare(user, profile, ["price_level", "monetary", "n_sessions", "holiday_share"])
    assert list(rows["feature"]) == ["n_sessions", "monetary", "price_level", "holiday_share"]
    assert rows["ratio"].tolist()[:2] == [1.1, 4.0]
    assert rows["ratio"].iloc[2:].isna().all()  # negative median, zero median: no "x times" reading
