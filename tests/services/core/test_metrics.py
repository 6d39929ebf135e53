"""services/core/metrics.py: what each recorder adds, bounded labels, and push/serve against real endpoints."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.core import metrics
from tests.promserver import free_port

REG = metrics.REGISTRY


def value(name: str, **labels: str) -> float:
    return REG.get_sample_value(name, labels) or 0.0


SUMMARY = {
    "run_id": "r1",
    "status": "committed",
    "rows_read": 1000,
    "rows_accepted": 940,
    "rows_quarantined": 45,
    "duplicates_removed": 15,
    "quarantine_by_reason": {"bad_price": 30, "missing_user_id": 10, "not_a_contract_reason": 2},
    "files": [
        {"name": "a.csv.gz", "status": "ingested"},
        {"name": "b.csv", "status": "failed"},
        {"name": "c.csv", "status": "weird"},
    ],
    "duration_seconds": 12.5,
    "event_date_max": "2019-10-31",
}


def test_record_ingest_adds_the_summary_counts():
    names = [
        "shoplens_events_read_total",
        "shoplens_events_accepted_total",
        "shoplens_duplicates_removed_total",
    ]
    before = {n: value(n) for n in names}
    q_before = {
        r: value("shoplens_events_quarantined_total", reason=r)
        for r in ("bad_price", "missing_user_id", "other")
    }
    f_before = {s: value("shoplens_files_processed_total", status=s) for s in ("ingested", "failed", "other")}
    d_before = value("shoplens_stage_duration_seconds_sum", stage="ingest")
    t0 = time.time()

    metrics.record_ingest(SUMMARY)

    assert value(names[0]) - before[names[0]] == 1000
    assert value(names[1]) - before[names[1]] == 940
    assert value(names[2]) - before[names[2]] == 15
    q = {r: value("shoplens_events_quarantined_total", reason=r) - q_before[r] for r in q_before}
    # 2 rows with an unknown reason and 3 rows not explained by any reason both land in "other"
    assert q == {"bad_price": 30, "missing_user_id": 10, "other": 5}
    assert sum(q.values()) == SUMMARY["rows_quarantined"]
    f = {s: value("shoplens_files_processed_total", status=s) - f_before[s] for s in f_before}
    assert f == {"ingested": 1, "failed": 1, "other": 1}
    assert value("shoplens_stage_duration_seconds_sum", stage="ingest") - d_before == pytest.approx(12.5)
    assert value("shoplens_last_success_timestamp_seconds", stage="ingest") >= t0
    expected_latest = datetime(2019, 10, 31, tzinfo=UTC).timestamp()
    assert value("shoplens_lake_latest_event_timestamp_seconds") >= expected_latest


def test_failed_run_counts_a_failure_and_keeps_last_success():
    metrics.record_stage("ingest", 1.0, now=1_700_000_000.0)
    failed_before = value("shoplens_runs_total", stage="ingest", status="failed")
    metrics.record_ingest(
        {"status": "failed", "files": [{"name": "x", "status": "failed"}], "duration_seconds": 2}
    )
    assert value("shoplens_runs_total", stage="ingest", status="failed") - failed_before == 1
    assert value("shoplens_last_success_timestamp_seconds", stage="ingest") == 1_700_000_000.0


def test_mark_alive_moves_last_success_without_a_run_or_a_duration():
    runs = value("shoplens_runs_total", stage="watch", status="success")
    count = value("shoplens_stage_duration_seconds_count", stage="watch")
    metrics.mark_alive("watch", now=1_800_000_000.0)
    assert value("shoplens_last_success_timestamp_seconds", stage="watch") == 1_800_000_000.0
    assert value("shoplens_runs_total", stage="watch", status="success") == runs
    assert value("shoplens_stage_duration_seconds_count", stage="watch") == count


def test_lake_latest_event_never_moves_back():
    metrics.record_lake_latest_event("2030-01-02T03:04:05Z")
    newest = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    metrics.record_lake_latest_event("2019-10-01")
    assert value("shoplens_lake_latest_event_timestamp_seconds") == newest


def test_time_stage_records_failure_and_reraises():
    ok, failed = (value("shoplens_runs_total", stage="features", status=s) for s in ("success", "failed"))
    with metrics.time_stage("features"):
        pass
    with pytest.raises(ZeroDivisionError), metrics.time_stage("features"):
        1 / 0  # noqa: B018
    assert value("shoplens_runs_total", stage="features", status="success") - ok == 1
    assert value("shoplens_runs_total", stage="features", status="failed") - failed == 1
    # an unknown stage name does not create an unbounded label value
    metrics.record_stage("stage-with-a-run-id-123", 1.0)
    assert value("shoplens_runs_total", stage="other", status="success") >= 1
    assert (
        REG.get_sample_value("shoplens_runs_total", {"stage": "stage-with-a-run-id-123", "status": "success"})
        is None
    )


def test_segments_and_model_replace_previous_values():
    metrics.record_segments({"a": 5, "b": 7})
    metrics.record_segments({"loyal": 120, "browsers": 300})
    assert value("shoplens_segment_users", segment="loyal") == 120
    assert value("shoplens_segment_users", segment="browsers") == 300
    assert REG.get_sample_value("shoplens_segment_users", {"segment": "a"}) is None
    metrics.record_model("v1", 0.3)
    metrics.record_model("v2", 0.45, trained_at="2026-01-01T00:00:00+00:00")
    assert value("shoplens_model_info", version="v2") == 1
    assert REG.get_sample_value("shoplens_model_info", {"version": "v1"}) is None
    assert value("shoplens_model_silhouette") == 0.45
    assert value("shoplens_model_trained_timestamp_seconds") == datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_only_recorded_families_are_pushed():
    """A training run must not push a zero ingest counter, nor an ingest run a silhouette of 0."""
    code = (
        "from prometheus_client import generate_latest\n"
        "import services.core.metrics as m\n"
        "m.record_model('v9', 0.5)\n"
        "print(generate_latest(m._TouchedFamilies()).decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = {f.name for f in text_string_to_metric_families(out)}
    assert names == {"shoplens_model_info", "shoplens_model_silhouette"}


def test_push_never_raises_when_the_gateway_is_down(caplog):
    metrics.record_stage("score", 1.0)
    with caplog.at_level(logging.WARNING, logger="shoplens.metrics"):
        ok = metrics.push_run_metrics("shoplens-test", gateway=f"127.0.0.1:{free_port()}", timeout=2)
    assert ok is False
    assert any("could not push metrics" in r.getMessage() for r in caplog.records)


def test_push_without_gateway_is_a_noop(monkeypatch):
    assert metrics.push_run_metrics("shoplens-test", gateway="") is False


@pytest.mark.prometheus
def test_push_reaches_a_real_pushgateway(prom_stack):
    metrics.record_segments({"loyal": 11, "new": 4})
    assert metrics.push_run_metrics("shoplens-unit", gateway=prom_stack.pushgateway) is True
    with urllib.request.urlopen(f"http://{prom_stack.pushgateway}/metrics", timeout=5) as resp:
        families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    pushed = {
        s.labels["segment"]: s.value
        for s in families["shoplens_segment_users"].samples
        if s.labels.get("job") == "shoplens-unit"
    }
    assert pushed == {"loyal": 11, "new": 4}
    read = [s for s in families["shoplens_events_read"].samples if s.labels.get("job") == "shoplens-unit"]
    if read:  # pushed only when this process recorded an ingest earlier in the session
        assert read[0].value == value("shoplens_events_read_total")


def test_metrics_server_serves_the_registry_and_disables_push(monkeypatch):
    monkeypatch.setattr(metrics, "_serving", False)
    port = free_port()
    server, thread = metrics.start_metrics_server(port, addr="127.0.0.1")
    try:
        metrics.record_segments({"serving": 3})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert [s.value for s in families["shoplens_segment_users"].samples] == [3]
        assert "shoplens_events_read_total" in text
        assert metrics.push_run_metrics("shoplens-test", gateway="127.0.0.1:1") is False
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
