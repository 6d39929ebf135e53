"""Monitoring configuration proven against real binaries: promtool, Prometheus, Pushgateway.

Metrics are pushed with services/core/metrics.py to a real Pushgateway, a real Prometheus scrapes it every
second with the stack's own alert rules loaded, and every PromQL expression of the Grafana dashboard
and of alerts.yml must run without error and return data. Elasticsearch/Kibana/Fluent Bit files are
checked for structure here, and against a real server where a Docker engine runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from services.core import metrics
from tests.dockerengine import unavailable
from tests.promserver import ALERTS_YML, PROMETHEUS_YML, free_port, missing_binaries, start_stack

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "shoplens-pipeline.json"
#: Grafana's built-in interval variables, replaced as Grafana would for a short time range.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

needs_prometheus = pytest.mark.skipif(
    bool(missing_binaries()),
    reason=f"not installed: {missing_binaries()} (apt-get install prometheus prometheus-pushgateway)",
)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows included, macros substituted."""
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for macro, val in GRAFANA_MACROS.items():
                    expr = expr.replace(macro, val)
                found.append((panel["title"], expr))
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS_YML.read_text())["groups"] for rule in group["rules"]]


@needs_prometheus
@pytest.mark.prometheus
def test_promtool_accepts_config_and_rules():
    for args in (["check", "config", str(PROMETHEUS_YML)], ["check", "rules", str(ALERTS_YML)]):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 4 rules found" in done.stdout


def test_dashboard_covers_the_issue_and_uses_the_provisioned_datasource():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "shoplens-pipeline" and dash["title"] == "shoplens pipeline"
    exprs = " ".join(e for _, e in dashboard_exprs())
    for metric in (
        "shoplens_events_read_total",
        "shoplens_events_accepted_total",
        "shoplens_events_quarantined_total",
        "shoplens_files_processed_total",
        "shoplens_stage_duration_seconds_bucket",
        "shoplens_last_success_timestamp_seconds",
        "shoplens_lake_latest_event_timestamp_seconds",
        "shoplens_segment_users",
        "shoplens_model_silhouette",
        "shoplens_model_info",
        "shoplens_api_requests_total",
        "shoplens_api_request_duration_seconds_bucket",
    ):
        assert metric in exprs, metric
    assert "$" not in exprs, "an unsubstituted Grafana variable would not run in Prometheus"
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == uid
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/shoplens.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A fresh Prometheus (its own, so no other test's pushes blur the numbers) after two pushed runs.

    The ``shoplens-watcher`` job points at a port where nothing listens, so ``up == 0`` has data. The
    ``shoplens-scoring-api`` job scrapes a real ``shoplens api`` (on an empty lake) that a thread keeps
    busy with requests, so its request-rate and latency panels have data.
    """
    if missing_binaries():
        pytest.skip(f"not installed: {missing_binaries()}")
    import threading

    from tests.apiserver import start_api

    work = tmp_path_factory.mktemp("api")
    api = start_api({"SHOPLENS_PSEUDONYM_KEY": "k" * 40, "SHOPLENS_API_KEY": "t" * 40,
                     "SHOPLENS_WORK_DIR": str(work / "work")}, str(work / "lake"))  # fmt: skip
    stop_traffic = threading.Event()

    def traffic() -> None:
        while not stop_traffic.is_set():
            api.request("GET", "/healthz")
            api.request("POST", "/v1/score", {"events": [{"event_type": "view"}]}, token="t" * 40)  # 503
            api.request("GET", "/v1/customers/1")  # 401
            stop_traffic.wait(0.05)

    traffic_thread = threading.Thread(target=traffic, daemon=True)
    traffic_thread.start()
    try:
        stack = start_stack(targets={"shoplens-watcher": f"127.0.0.1:{free_port()}",
                                     "shoplens-scoring-api": f"127.0.0.1:{api.port}"})  # fmt: skip
    except BaseException:
        stop_traffic.set()
        api.stop()
        raise
    try:
        run1 = {
            "status": "committed",
            "rows_read": 1000,
            "rows_accepted": 985,
            "rows_quarantined": 10,
            "duplicates_removed": 5,
            "quarantine_by_reason": {"bad_price": 6, "missing_user_id": 4},
            "files": [{"name": "2019-Oct.csv.gz", "status": "ingested"}],
            "duration_seconds": 12.5,
            "event_date_max": "2019-10-31",
        }
        metrics.record_ingest(run1)
        metrics.record_model("seg-20261122", 0.42)
        metrics.record_segments({"loyal": 120, "browsers": 300, "bargain hunters": 80})
        stale = time.time() - 2 * 86400
        metrics.record_stage("train", 30.0, now=stale)
        assert metrics.push_run_metrics("shoplens-pipeline", gateway=stack.pushgateway)
        total1 = metrics.REGISTRY.get_sample_value("shoplens_events_read_total")
        stack.wait_for("shoplens_events_read_total", lambda r: r and float(r[0]["value"][1]) == total1)

        run2 = {
            "status": "committed",
            "rows_read": 1000,
            "rows_accepted": 650,
            "rows_quarantined": 300,
            "duplicates_removed": 50,
            "quarantine_by_reason": {"bad_event_time": 300},
            "files": [
                {"name": "2019-Nov.csv.gz", "status": "ingested"},
                {"name": "broken-1.csv", "status": "failed"},
                {"name": "broken-2.csv", "status": "failed"},
            ],
            "duration_seconds": 40.0,
        }
        metrics.record_ingest(run2)
        assert metrics.push_run_metrics("shoplens-pipeline", gateway=stack.pushgateway)
        total2 = metrics.REGISTRY.get_sample_value("shoplens_events_read_total")
        stack.wait_for("shoplens_events_read_total", lambda r: r and float(r[0]["value"][1]) == total2)
        stack.wait_for('up{job="shoplens-watcher"}')
        stack.wait_for('sum(shoplens_api_requests_total{job="shoplens-scoring-api"})',
                       lambda r: r and float(r[0]["value"][1]) > 0)  # fmt: skip
        time.sleep(2)  # two more evaluations so rules have seen the final state
        yield stack, {"stale_train": stale}
    finally:
        stop_traffic.set()
        traffic_thread.join(10)
        api.stop()
        stack.stop()


@pytest.mark.prometheus
@pytest.mark.slow
def test_every_dashboard_expression_returns_data(scraped):
    stack, _ = scraped
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    empty = [(title, expr) for title, expr in exprs if not stack.query(expr)]
    assert not empty, f"expressions without data: {empty}"


@pytest.mark.prometheus
@pytest.mark.slow
def test_dashboard_values_match_what_was_pushed(scraped):
    stack, info = scraped

    def by(label, expr):
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in stack.query(expr)}

    assert by("segment", "sum by (segment) (shoplens_segment_users)") == {
        "loyal": 120,
        "browsers": 300,
        "bargain hunters": 80,
    }
    assert by("", "max(shoplens_model_silhouette)") == {"": 0.42}
    assert set(by("version", "max by (version) (shoplens_model_info)")) == {"seg-20261122"}
    reg = metrics.REGISTRY
    mean = by(
        "stage",
        "sum by (stage) (shoplens_stage_duration_seconds_sum) "
        "/ sum by (stage) (shoplens_stage_duration_seconds_count)",
    )
    expected_mean = reg.get_sample_value("shoplens_stage_duration_seconds_sum", {"stage": "ingest"}) / (
        reg.get_sample_value("shoplens_stage_duration_seconds_count", {"stage": "ingest"})
    )
    assert mean["ingest"] == pytest.approx(expected_mean)
    freshness = by("", "time() - max(shoplens_lake_latest_event_timestamp_seconds)")[""]
    latest = reg.get_sample_value("shoplens_lake_latest_event_timestamp_seconds")
    assert freshness == pytest.approx(time.time() - latest, abs=5)
    assert latest >= datetime(2019, 10, 31, tzinfo=UTC).timestamp()
    since = by("stage", "time() - max by (stage) (shoplens_last_success_timestamp_seconds)")
    assert since["train"] == pytest.approx(time.time() - info["stale_train"], abs=5)


@pytest.mark.prometheus
@pytest.mark.slow
def test_every_alert_fires_on_the_scenario_that_should_trigger_it(scraped):
    """Run each alert expression through the query API, and check the rule engine loaded each rule."""
    stack, _ = scraped
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert set(rules) >= {"ShoplensPipelineStale", "ShoplensIngestFailureRate", "ShoplensQuarantineSpike"}
    results = {name: stack.query(expr) for name, expr in rules.items()}
    assert all(results.values()), {k: v for k, v in results.items() if not v}

    # only the stage that has not succeeded for two days is stale, not the one that just ran
    assert {r["metric"]["stage"] for r in results["ShoplensPipelineStale"]} == {"train"}
    # run 2 (after the first scrape): 2 failed of 3 files; 300 quarantined of 1000 rows read.
    # increase() extrapolates each series to the window edges, hence the tolerance.
    failure = float(results["ShoplensIngestFailureRate"][0]["value"][1])
    assert failure == pytest.approx(2 / 3, rel=0.2)
    spike = float(results["ShoplensQuarantineSpike"][0]["value"][1])
    assert spike == pytest.approx(0.3, rel=0.2)
    assert {r["metric"]["job"] for r in results["ShoplensServiceDown"]} == {"shoplens-watcher"}

    groups = stack.api("rules")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == set(rules)
    for name, rule in loaded.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        assert rule["state"] in ("pending", "firing"), (name, rule["state"])


# --- Elasticsearch, Kibana and the log shipper: structure here, real servers where Docker runs -------

ES_DIR = MONITORING / "elasticsearch"
KIBANA_OBJECTS = MONITORING / "kibana" / "saved-objects.ndjson"


def test_index_template_and_ilm_policy_fit_together():
    template = json.loads((ES_DIR / "index-template.json").read_text())
    policy = json.loads((ES_DIR / "ilm-policy.json").read_text())
    settings = template["template"]["settings"]
    assert template["index_patterns"] == ["shoplens-logs-*"]
    assert settings["index.lifecycle.name"] == "shoplens-logs"
    phases = policy["policy"]["phases"]
    assert "delete" in phases and "delete" in phases["delete"]["actions"]
    props = template["template"]["mappings"]["properties"]
    assert props["@timestamp"]["type"] == "date"
    for field in ("run_id", "stage", "level", "service", "file"):
        assert props[field]["type"] == "keyword", field
    # a field of an unexpected type must not make Elasticsearch reject (and so lose) a log line
    assert settings["index.mapping.ignore_malformed"] is True


def test_kibana_objects_reference_the_data_view():
    objects = [json.loads(line) for line in KIBANA_OBJECTS.read_text().splitlines() if line.strip()]
    by_type: dict[str, list[dict]] = {}
    for obj in objects:
        assert {"type", "id", "attributes"} <= set(obj)
        by_type.setdefault(obj["type"], []).append(obj)
    (view,) = by_type["index-pattern"]
    assert view["attributes"]["title"] == "shoplens-logs-*"
    assert view["attributes"]["timeFieldName"] == "@timestamp"
    searches = {s["attributes"]["title"]: s for s in by_type["search"]}
    assert set(searches) == {"shoplens run timeline", "shoplens errors"}
    for search in searches.values():
        source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        ref_name = source["indexRefName"]
        refs = {r["name"]: r for r in search["references"]}
        assert refs[ref_name]["id"] == view["id"] and refs[ref_name]["type"] == "index-pattern"
    errors = json.loads(
        searches["shoplens errors"]["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]
    )
    assert "ERROR" in errors["query"]["query"]


def test_log_shipper_buffers_on_disk_and_retries_forever():
    conf = (MONITORING / "fluent-bit" / "fluent-bit.conf").read_text()

    def settings(section: str) -> list[dict[str, str]]:
        found = []
        for block in re.split(r"^\[", conf, flags=re.M)[1:]:
            head, _, body = block.partition("]")
            if head.strip().upper() == section:
                pairs = (
                    line.split(None, 1)
                    for line in body.splitlines()
                    if line.strip() and not line.strip().startswith("#")
                )
                found.append({k.lower(): v.strip() for k, v in (p for p in pairs if len(p) == 2)})
        return found

    (service,) = settings("SERVICE")
    assert service["storage.path"].startswith("/")
    (tail,) = settings("INPUT")
    assert tail["name"] == "tail" and tail["storage.type"] == "filesystem" and "db" in tail
    (es,) = [o for o in settings("OUTPUT") if o["name"] == "es"]
    assert es["retry_limit"] == "no_limits"
    assert "storage.total_limit_size" not in es, "a size cap would drop buffered lines during an outage"
    assert es["http_passwd"] == "${ELASTIC_PASSWORD}"


@pytest.mark.docker
@pytest.mark.slow
def test_template_and_ilm_are_accepted_by_real_elasticsearch():
    import urllib.request

    from testcontainers.elasticsearch import ElasticSearchContainer

    image = re.search(
        r"image: (docker\.elastic\.co/elasticsearch/elasticsearch:\S+)",
        (REPO / "docker-compose.yml").read_text(),
    ).group(1)
    reason = unavailable(image)
    if reason:
        pytest.skip(reason)
    with ElasticSearchContainer(image, mem_limit="1g") as es:
        base = es.get_url()

        def put(path: str, body: dict) -> dict:
            req = urllib.request.Request(
                f"{base}{path}",
                data=json.dumps(body).encode(),
                method="PUT",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())

        assert put("/_ilm/policy/shoplens-logs", json.loads((ES_DIR / "ilm-policy.json").read_text()))[
            "acknowledged"
        ]
        assert put(
            "/_index_template/shoplens-logs", json.loads((ES_DIR / "index-template.json").read_text())
        )["acknowledged"]
        put(
            "/shoplens-logs-2026.01.01/_doc/1?refresh=true",
            {
                "@timestamp": "2026-01-01T00:00:00Z",
                "run_id": "r1",
                "stage": "ingest",
                "rows_read": "not a number",
            },
        )
        with urllib.request.urlopen(f"{base}/shoplens-logs-2026.01.01/_settings", timeout=30) as resp:
            index_settings = json.loads(resp.read())["shoplens-logs-2026.01.01"]["settings"]["index"]
        assert index_settings["lifecycle"]["name"] == "shoplens-logs"


def test_es_init_applies_exactly_these_files():
    """es-init (mounted at /monitoring in docker-compose.yml) must apply the files tested above."""
    script = (ES_DIR / "init.sh").read_text()
    for path in (ES_DIR / "ilm-policy.json", ES_DIR / "index-template.json", KIBANA_OBJECTS):
        assert f"$DIR/{path.relative_to(MONITORING)}" in script, path
    assert "_ilm/policy/shoplens-logs" in script and "_index_template/shoplens-logs" in script
    assert script.index("touch /tmp/es-ready") > script.index("_index_template")  # template before logs flow
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert "./monitoring:/monitoring:ro" in compose["services"]["es-init"]["volumes"]
