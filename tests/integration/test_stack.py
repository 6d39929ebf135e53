"""`docker compose up -d` for real: our images built and run in containers, files dropped, results out.

What a user does, on a machine that reaches no image registry: infra/local-images/build.sh builds the
base image from Debian packages, the stand-ins (SeaweedFS for MinIO, Debian's PostgreSQL, Prometheus and
Pushgateway) and the three shoplens images; docker-compose.yml then runs with
infra/local-images/compose.local.yml (which leaves out Elasticsearch, Kibana, Fluent Bit and Grafana:
they have no Debian or PyPI package and cannot run here). A test-only override moves the published ports
to free ones on 127.0.0.1, so a developer's own servers cannot collide with the stack.

The test drops two generated REES46 months into the ``incoming`` bucket and checks, against independent
computations (the generated files read with pandas, the lake's own files, HMAC keys computed here): the
runs committed in the lake, the segments in the warehouse (queried inside the warehouse container), a
customer answered by the scoring API, the dashboard's overview in Chromium, the pipeline metrics in
Prometheus, and both Spark workers having run tasks. Then faults: a worker killed mid-ingest, the
watcher restarted mid-run, the whole stack stopped and started; counts still reconcile exactly and the
warehouse matches the lake. Finally everything is torn down, leaving no container, network or volume.

Figures (image sizes, build times, time from `up` to first segments, memory at rest) are printed and
written to benchmarks/results/stack.json. Skipped with the reason where no Docker engine answers.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from etl.pseudonymize import pseudonymize
from tests.integration.test_compose import COMPOSE_FILE, REPO, compose_binary, env_example
from tests.promserver import free_port

# the fixture builds, starts and runs a whole pass; a loaded 2-core machine needs far more than the default
pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(2400)]

LOCAL = REPO / "infra" / "local-images"
OVERRIDE = LOCAL / "compose.local.yml"
PROJECT = "shoplens-stacktest"  # not the users' `shoplens` project: their stack and volumes stay untouched
RESULTS = REPO / "benchmarks" / "results" / "stack.json"
USERS = 3_000
MONTHS = ["2019-Oct", "2019-Nov", "2019-Dec", "2020-Jan"]  # two for the run, two for the faults
LONG_RUNNING = {"minio", "warehouse", "pushgateway", "prometheus", "spark-master", "spark-worker",
                "shoplens-watcher", "scoring-api", "dashboard"}  # fmt: skip
PUBLISHED = {"minio": 9000, "spark-master": 8080, "dashboard": 8501, "scoring-api": 8000, "warehouse": 5432,
             "pushgateway": 9091, "prometheus": 9090}  # fmt: skip
HEALTH_TIMEOUT_S = 420
PROBE_S, PROBE_RETRIES = 2, 60  # health probes every 2 s, unhealthy after 120 s of failures (users' file: 50-120 s)
PIPELINE_TIMEOUT_S = 1200  # a loaded 2-core machine; about 4 min when it is quiet


def _engine_problem() -> str | None:
    """Why no stack can run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI (apt-get install docker.io, then start dockerd)"
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=30)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer within 30 s"
    if done.returncode != 0:
        return f"no Docker engine answers (docker info: {done.stderr.strip()[:200]})"
    base = re.search(r"^FROM (\S+) AS base$", (REPO / "infra" / "Dockerfile").read_text(), re.M).group(1)
    have_base = subprocess.run(["docker", "image", "inspect", base], capture_output=True).returncode == 0
    if not have_base and (shutil.which("debootstrap") is None or os.geteuid() != 0):
        return f"no {base} image and no way to build one (needs root and debootstrap)"
    return None


@dataclass
class Stack:
    """The compose project under test: the users' file, the local-images override, free host ports."""

    binary: Path
    env_file: Path
    ports_file: Path
    env: dict[str, str]
    ports: dict[str, int]
    figures: dict = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.binary), "-p", PROJECT, "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE), "-f", str(self.ports_file),
               "--env-file", str(self.env_file), *args]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env={**os.environ, "PIP_CERT": pip_cert()})  # fmt: skip
        if check and done.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def exec(self, service: str, *cmd: str, index: int = 1, timeout: float = 120) -> str:
        return self.compose("exec", "-T", "--index", str(index), service, *cmd, timeout=timeout).stdout

    def containers(self, service: str | None = None) -> list[dict]:
        """``docker compose ps -a`` rows (every container of the project, or of one service)."""
        out = self.compose("ps", "-a", "--format", "json", *([service] if service else [])).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def s3(self):
        from minio import Minio

        return Minio(f"127.0.0.1:{self.ports['minio']}", self.env["MINIO_ROOT_USER"], self.env["MINIO_ROOT_PASSWORD"],
                     secure=False)  # fmt: skip

    def sql(self, query: str) -> list[list[str]]:
        """Rows of ``query`` from psql inside the warehouse container."""
        out = self.exec("warehouse", "psql", "-U", self.env["POSTGRES_USER"], "-d", self.env["POSTGRES_DB"],
                        "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query)  # fmt: skip
        return [line.split("\t") for line in out.splitlines() if line]

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", "--tail", "80", service, check=False).stdout

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> float:
        """Seconds until every long-running container is healthy and minio-init exited 0."""
        started = time.monotonic()
        rows: list[dict] = []
        while time.monotonic() - started < timeout:
            rows = self.containers()
            by_service: dict[str, list[dict]] = {}
            for row in rows:
                by_service.setdefault(row["Service"], []).append(row)
            init = by_service.get("minio-init", [])
            init_done = bool(init) and all(r["State"] == "exited" and r["ExitCode"] == 0 for r in init)
            healthy = all(by_service.get(s) and all(r["Health"] == "healthy" for r in by_service[s])
                          for s in LONG_RUNNING)  # fmt: skip
            if init_done and healthy and len(by_service["spark-worker"]) == 2:
                return time.monotonic() - started
            time.sleep(2)
        unhealthy = [r["Service"] for r in rows if r["Service"] in LONG_RUNNING and r["Health"] != "healthy"]
        detail = "\n".join(f"--- {s}\n{self.logs(s)[-1500:]}" for s in sorted(set(unhealthy)) or ["minio-init"])
        pytest.fail(f"not healthy within {timeout:.0f} s: {[(r['Service'], r['State'], r['Health']) for r in rows]}"
                    f"\n{detail}")  # fmt: skip


def pip_cert() -> str:
    """The CA bundle pip is configured with (a build secret of the images), or /dev/null."""
    cert = os.environ.get("PIP_CERT")
    if not cert:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True,
                              text=True)  # fmt: skip
        cert = done.stdout.strip() if done.returncode == 0 else ""
    return cert if cert and Path(cert).is_file() else "/dev/null"


# ------------------------------------------------------------------------------------ the lake, read back
def _objects(client, bucket: str, prefix: str = "") -> list[str]:
    return sorted(o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True))


def _bytes(client, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _json(client, bucket: str, key: str):
    return json.loads(_bytes(client, bucket, key))


def _runs(client) -> list[dict]:
    return [_json(client, "lake", k) for k in _objects(client, "lake", "runs/") if k.endswith(".json")]


def _committed(client) -> list[dict]:
    return [r for r in _runs(client) if r["status"] == "committed"]


def _parquet(client, prefix: str) -> pd.DataFrame:
    parts = [k for k in _objects(client, "lake", prefix) if k.endswith(".parquet")]
    assert parts, f"no parquet under lake/{prefix}"
    return pd.concat(pq.read_table(io.BytesIO(_bytes(client, "lake", k))).to_pandas() for k in parts)


def _lake_segments(client) -> tuple[dict, pd.DataFrame]:
    pointer = _json(client, "lake", "segments/_current.json")
    return pointer, _parquet(client, f"segments/{pointer['version']}/")


def _wait_for(what: str, done, stack: Stack, timeout: float = PIPELINE_TIMEOUT_S, every: float = 2.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception, pytest.fail.Exception):  # a service may be restarting
            if done():
                return time.monotonic() - started
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{stack.logs('shoplens-watcher')[-4000:]}")


def _settled(client, stack: Stack, names: list[str], runs: int) -> None:
    """Wait until ``names`` are archived, ``runs`` runs are committed and every downstream stage has
    published for exactly those runs (the watcher's pass is over)."""

    def done() -> bool:
        archived = {k.rsplit("/", 1)[-1] for k in _objects(client, "incoming", "_processed/")}
        committed = _committed(client)
        if not (set(names) <= archived and len(committed) == runs):
            return False
        overview = _json(client, "lake", "views/overview/_current.json")
        pointer = _json(client, "lake", "segments/_current.json")
        rows = stack.sql("SELECT lake_version FROM shoplens_publications WHERE table_name = 'segments'")
        return bool(overview) and rows == [[pointer["version"]]] and _pass_over(stack)

    _wait_for(f"{names} to be ingested, segmented and published", done, stack)


def _pass_over(stack: Stack) -> bool:
    """The watcher is idle: nothing is due (asked inside its container, from the lake it writes)."""
    out = stack.exec("shoplens-watcher", "python", "-c", (
        "from services.core.settings import Settings; from services.core.runtime import open_lake;"
        "from services.jobs.stages import PipelineConfig, pending; import os;"
        "print(bool(pending(open_lake(Settings()), PipelineConfig("
        "int(os.environ['SHOPLENS_RETRAIN_NEW_RUNS']), float(os.environ['SHOPLENS_RETRAIN_AGE_DAYS'])))))"))
    return out.strip() == "False"


def _file_lines(path: Path) -> int:
    with gzip.open(path, "rt") as fh:
        return sum(1 for _ in fh) - 1


# ------------------------------------------------------------------------------------ the fixture
@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    reason = _engine_problem()
    if reason:
        pytest.skip(reason)
    binary = compose_binary()
    root = tmp_path_factory.mktemp("stack")
    values = {k: v or "sl" + secrets.token_hex(10) for k, v in env_example().items()}
    values["SHOPLENS_PSEUDONYM_KEY"] = secrets.token_hex(32)
    env_file = root / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    ports = {service: free_port() for service in PUBLISHED}
    # moves each published port (compose's !override replaces the list), and probes health more often:
    # Docker's first probe comes one interval after a start, so docker-compose.yml's 10-15 s intervals are
    # mostly waiting here; the same checks run, with at least the failures the users' file tolerates
    ports_file = root / "ports.yml"
    ports_file.write_text("services:\n" + "".join(
        f"  {s}:\n    healthcheck: {{interval: {PROBE_S}s, retries: {PROBE_RETRIES}}}\n"
        + (f"    ports: !override [\"127.0.0.1:{ports[s]}:{PUBLISHED[s]}\"]\n" if s in PUBLISHED else "")
        for s in sorted(LONG_RUNNING)))  # fmt: skip
    stack = Stack(binary, env_file, ports_file, values, ports)

    # 1. build: the base by debootstrap (once per machine), then every image through compose (layer cache)
    started = time.monotonic()
    done = subprocess.run([str(LOCAL / "build.sh"), str(env_file)], capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "COMPOSE": str(binary), "PIP_CERT": pip_cert()}, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stack.figures["build_s"] = round(time.monotonic() - started)
    stack.figures["images"] = [line for line in done.stdout.splitlines() if line.startswith("image ")]

    data = root / "data"
    subprocess.run([str(Path(sys.executable).parent / "shoplens"), "generate", "--users", str(USERS), "--start",
                    "2019-10-01", "--months", str(len(MONTHS)), "--seed", "29", "--out", str(data)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    stack.figures["data"] = data
    stack.compose("down", "-v", "--remove-orphans", check=False)  # a previous run killed half-way
    try:
        up = time.monotonic()
        stack.compose("up", "-d", "--scale", "spark-worker=2")
        stack.figures["up_to_healthy_s"] = round(stack.wait_healthy())
        client = stack.s3()
        for month in MONTHS[:2]:
            client.fput_object("incoming", f"{month}.csv.gz", str(data / f"{month}.csv.gz"))
        stack.figures["dropped"] = MONTHS[:2]  # the months in the lake so far (the fault drill adds two)
        _wait_for("the first segments", lambda: _objects(client, "lake", "segments/_current.json"), stack)
        stack.figures["up_to_first_segments_s"] = round(time.monotonic() - up)
        _settled(client, stack, [f"{m}.csv.gz" for m in MONTHS[:2]], runs=2)
        stack.figures["up_to_two_months_published_s"] = round(time.monotonic() - up)
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", "-t", "20", check=False)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        figures = {k: v for k, v in stack.figures.items() if k not in ("data", "dropped")}
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))


# ------------------------------------------------------------------------------------ the fixed phases
def test_images_carry_no_build_secret(stack: Stack) -> None:
    """The CA bundle was a build secret: no image has it, nor a variable or layer naming it."""
    images = {line.split()[1] for line in stack.figures["images"]}
    assert {"shoplens/spark:0.1.0", "shoplens/pipeline:0.1.0", "shoplens/dashboard:0.1.0"} <= images
    for image in images:
        config = json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True,
                                           check=True).stdout)[0]["Config"]  # fmt: skip
        assert not [e for e in config["Env"] or [] if e.startswith("PIP_CERT=")], image
        history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "BEGIN CERTIFICATE" not in history and "ca-certificates.crt" not in history, image
    inside = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", "shoplens/pipeline:0.1.0", "-c",
                             "test ! -e /run/secrets/pip_cert && (env; pip config list) | grep -ci cert"],
                            capture_output=True, text=True)  # fmt: skip
    assert inside.stdout.split() == ["0"], inside.stdout + inside.stderr  # no secret file, variable or pip setting


def test_two_months_committed_and_counts_reconcile(stack: Stack) -> None:
    client, data = stack.s3(), stack.figures["data"]
    runs = {r["files"][0]["name"]: r for r in _committed(client)}
    assert set(runs) == {f"{m}.csv.gz" for m in MONTHS[:2]}
    for name, run in runs.items():
        lines = _file_lines(data / name)
        assert run["rows_read"] == lines
        assert run["rows_read"] == run["rows_accepted"] + run["rows_quarantined"] + run["duplicates_removed"]
        assert run["rows_quarantined"] == run["duplicates_removed"] == 0  # generated clean (dirty rate 0)
    assert _objects(client, "incoming") == sorted(f"_processed/{r['run_id']}/{n}" for n, r in runs.items())


def test_the_warehouse_holds_the_lake_segments(stack: Stack) -> None:
    """Queried inside the warehouse container; compared with the lake's segments and the generated users."""
    client, data = stack.s3(), stack.figures["data"]
    pointer, segments = _lake_segments(client)
    rows = stack.sql("SELECT user_key, segment_id FROM segments")
    warehouse = pd.DataFrame(rows, columns=["user_key", "segment_id"])
    assert len(warehouse) == warehouse["user_key"].nunique() == pointer["n_users"] == len(segments)
    lake = segments[["user_key", "segment_id"]].astype({"segment_id": "Int64"}).astype(str)
    wh = warehouse.replace("", "<NA>")
    assert set(map(tuple, lake.to_numpy())) == set(map(tuple, wh.to_numpy()))
    key = stack.env["SHOPLENS_PSEUDONYM_KEY"].encode()
    users = pd.concat(pd.read_csv(data / f"{m}.csv.gz", usecols=["user_id"], dtype=str) for m in MONTHS[:2])
    assert set(warehouse["user_key"]) == {pseudonymize(u, key) for u in users["user_id"].unique()}


def _known_user(stack: Stack, months: list[str]) -> tuple[str, pd.DataFrame]:
    """The generated user with the most events in the months dropped, and those events."""
    data = stack.figures["data"]
    events = pd.concat(pd.read_csv(data / f"{m}.csv.gz", dtype=str, keep_default_na=False) for m in months)
    user = events["user_id"].value_counts().index[0]
    return user, events[events["user_id"] == user]


def test_the_scoring_api_answers_a_customer(stack: Stack) -> None:
    _customer_is_answered(stack, MONTHS[:2])


def _customer_is_answered(stack: Stack, months: list[str]) -> None:
    """The busiest user by GET /v1/customers and by POST /v1/score of its events: the warehouse's segment."""
    import httpx

    user, events = _known_user(stack, months)
    key = stack.env["SHOPLENS_PSEUDONYM_KEY"].encode()
    [[segment]] = stack.sql(f"SELECT segment_id FROM segments WHERE user_key = '{pseudonymize(user, key)}'")
    auth = {"Authorization": f"Bearer {stack.env['SHOPLENS_API_KEY']}"}
    api = stack.url("scoring-api")
    assert httpx.get(f"{api}/v1/customers/{user}", timeout=30).status_code == 401
    answer = httpx.get(f"{api}/v1/customers/{user}", headers=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert str(body["segment_id"]) == segment
    assert body["segments_version"] == _json(stack.s3(), "lake", "segments/_current.json")["version"]
    records = [{k: (v if v != "" else None) for k, v in row.items()} for row in events.to_dict("records")]
    scored = httpx.post(f"{api}/v1/score", headers=auth, json={"events": records, "as_of": body["as_of"]},
                        timeout=60)  # fmt: skip
    assert scored.status_code == 200, scored.text
    assert scored.json()["status"] == "scored" and scored.json()["n_events"] == body["n_events"] == len(events)
    assert str(scored.json()["segment_id"]) == segment  # the same user, the same events: the batch's segment
    assert scored.json()["confidence"] == pytest.approx(body["confidence"], abs=1e-9)
    assert httpx.get(f"{api}/v1/customers/999999999999", headers=auth, timeout=30).status_code == 404


def test_the_dashboard_overview_in_chromium(stack: Stack) -> None:
    from dashboard.charts import fmt_int
    from tests.dashboard.test_browser import ARGS, CHROMIUM, open_page, settle

    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    client = stack.s3()
    views = _json(client, "lake", "views/segments/_current.json")["version"]
    summary = _parquet(client, f"views/segments/{views}/")
    customers = int(summary["users"].sum())
    assert customers == _json(client, "lake", "segments/_current.json")["n_users"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = open_page(browser, stack.url("dashboard"), height=1500)
            settle(page, 1)
            body = page.inner_text("body")
        finally:
            browser.close()
    assert "Traceback" not in body and "Last pipeline runs" in body
    assert fmt_int(customers) in body


def _prom(stack: Stack, expr: str) -> list[dict]:
    url = f"{stack.url('prometheus')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]["result"]


def _prom_value(stack: Stack, expr: str, expected: float, timeout: float = 90) -> float:
    """The scalar of ``expr`` once Prometheus has scraped a value equal to ``expected`` (or the last seen)."""
    seen = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = _prom(stack, expr)
        seen = float(result[0]["value"][1]) if result else None
        if seen == expected:
            break
        time.sleep(3)
    return seen


def test_prometheus_answers_the_pipeline_metrics(stack: Stack) -> None:
    runs = _committed(stack.s3())
    job = '{job="shoplens-watcher"}'
    assert _prom_value(stack, f"sum(shoplens_events_read_total{job})", sum(r["rows_read"] for r in runs)) == sum(
        r["rows_read"] for r in runs)
    accepted = sum(r["rows_accepted"] for r in runs)
    assert _prom_value(stack, f"sum(shoplens_events_accepted_total{job})", accepted) == accepted
    ingested = _prom_value(stack, 'sum(shoplens_files_processed_total{job="shoplens-watcher",status="ingested"})', 2)
    assert ingested == 2
    n_users = _json(stack.s3(), "lake", "segments/_current.json")["n_users"]
    assert _prom_value(stack, f"sum(shoplens_segment_users{job})", n_users) == n_users
    up = {r["metric"]["job"]: r["value"][1] for r in _prom(stack, "up")}
    assert up == {"pushgateway": "1", "shoplens-watcher": "1", "shoplens-scoring-api": "1", "spark-master": "1",
                  "prometheus": "1"}, up  # fmt: skip


def _executor_tasks(stack: Stack) -> dict[str, int]:
    """Tasks run per executor host, from the watcher's Spark driver (its REST API, inside the container)."""
    script = ("import json,urllib.request as u; g=lambda p: json.load(u.urlopen('http://localhost:4040/api/v1/'+p));"
              "a=g('applications')[0]['id']; print(json.dumps([(e['hostPort'],e['totalTasks']) for e in "
              "g(f'applications/{a}/allexecutors') if e['id']!='driver']))")  # fmt: skip
    tasks: dict[str, int] = {}
    for host_port, n in json.loads(stack.exec("shoplens-watcher", "python", "-c", script)):
        host = host_port.rsplit(":", 1)[0]
        tasks[host] = tasks.get(host, 0) + n
    return tasks


def _worker_ips(stack: Stack) -> set[str]:
    ips = set()
    for row in stack.containers("spark-worker"):
        out = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                              row["Name"]], capture_output=True, text=True, check=True).stdout  # fmt: skip
        ips.add(out.strip())
    return ips


def test_both_spark_workers_ran_tasks(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.url('spark-master')}/json/", timeout=10) as response:
        master = json.loads(response.read())
    alive = [w for w in master["workers"] if w["state"] == "ALIVE"]
    assert len(alive) == 2
    tasks = _executor_tasks(stack)
    ran = {host for host, n in tasks.items() if n > 0}
    assert ran == _worker_ips(stack) == {w["host"] for w in alive}, (tasks, alive)


def test_memory_at_rest_within_limits(stack: Stack) -> None:
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    usage = {}
    for line in out.splitlines():
        row = json.loads(line)
        if row["Name"].startswith(PROJECT + "-"):
            used, limit = row["MemUsage"].split(" / ")
            usage[row["Name"][len(PROJECT) + 1:]] = {"used": used, "limit": limit, "percent": row["MemPerc"]}
    stack.figures["memory_at_rest"] = usage
    assert {re.sub(r"-\d+$", "", name) for name in usage} == LONG_RUNNING
    over = {name: u for name, u in usage.items() if float(u["percent"].rstrip("%")) >= 95}
    assert not over, f"at their memory limit: {over}"


# ------------------------------------------------------------------------------------ faults
def _assert_reconciled(stack: Stack, months: list[str]) -> None:
    """Every dropped month committed once with every line; the lake's events are exactly those lines;
    the warehouse holds exactly the lake's segments, one per generated user seen."""
    client, data = stack.s3(), stack.figures["data"]
    committed = _committed(client)
    by_file = {r["files"][0]["name"]: r for r in committed}
    assert len(committed) == len(by_file) == len(months)
    assert set(by_file) == {f"{m}.csv.gz" for m in months}
    lines = {name: _file_lines(data / name) for name in by_file}
    for name, run in by_file.items():
        assert run["rows_read"] == run["rows_accepted"] == lines[name], name
    rows_by_run: dict[str, int] = {}  # events/event_date=D/run_id=R/*.parquet, counted from the files
    for key_ in _objects(client, "lake", "events/"):
        if key_.endswith(".parquet"):
            run_id = re.search(r"/run_id=([^/]+)/", key_).group(1)
            rows = pq.ParquetFile(io.BytesIO(_bytes(client, "lake", key_))).metadata.num_rows
            rows_by_run[run_id] = rows_by_run.get(run_id, 0) + rows
    for name, run in by_file.items():  # nothing lost, nothing doubled
        assert rows_by_run.get(run["run_id"]) == lines[name], name
    pointer, segments = _lake_segments(client)
    rows = stack.sql("SELECT user_key, coalesce(segment_id::text, '') FROM segments")
    lake = {(k, "" if pd.isna(s) else str(int(s))) for k, s in zip(segments["user_key"], segments["segment_id"],
                                                                     strict=True)}  # fmt: skip
    assert {tuple(r) for r in rows} == lake
    assert stack.sql("SELECT lake_version FROM shoplens_publications WHERE table_name = 'segments'") == [
        [pointer["version"]]]
    key = stack.env["SHOPLENS_PSEUDONYM_KEY"].encode()
    users = pd.concat(pd.read_csv(data / f"{m}.csv.gz", usecols=["user_id"], dtype=str) for m in months)
    assert {k for k, _ in lake} == {pseudonymize(u, key) for u in users["user_id"].unique()}


def _when_ingesting(stack: Stack, name: str, fault, timeout: float = PIPELINE_TIMEOUT_S) -> None:
    """Run ``fault`` once the watcher has taken ``name`` (its local copy exists: the ingest is under way)."""
    deadline = time.monotonic() + timeout
    [watcher] = [row["Name"] for row in stack.containers("shoplens-watcher")]
    while time.monotonic() < deadline:  # `docker exec`: compose parses every file first (10x the time)
        if subprocess.run(["docker", "exec", watcher, "test", "-e", f"/work/incoming/{name}"],
                          capture_output=True).returncode == 0:  # fmt: skip
            fault()
            return
        time.sleep(0.2)
    pytest.fail(f"the watcher never took {name}:\n{stack.logs('shoplens-watcher')[-3000:]}")


def test_a_worker_killed_and_the_watcher_restarted_mid_ingest_lose_nothing(stack: Stack) -> None:
    """Two more months dropped together (one pass ingests both, in name order): a Spark worker is killed
    while the first is ingested, the watcher restarted while the second is."""
    client, data = stack.s3(), stack.figures["data"]
    first, second = (f"{m}.csv.gz" for m in MONTHS[2:])
    for name in (first, second):
        client.fput_object("incoming", name, str(data / name))
    victim = stack.containers("spark-worker")[0]["Name"]
    _when_ingesting(stack, first, lambda: subprocess.run(["docker", "kill", victim], check=True,
                                                         capture_output=True))  # fmt: skip
    _when_ingesting(stack, second, lambda: stack.compose("restart", "-t", "1", "shoplens-watcher"))
    stack.figures["dropped"] = MONTHS
    _settled(client, stack, [first, second], runs=4)
    subprocess.run(["docker", "start", victim], check=True, capture_output=True)  # if its policy did not
    stack.wait_healthy()
    _assert_reconciled(stack, MONTHS)


def test_the_whole_stack_stopped_and_started_keeps_everything(stack: Stack) -> None:
    client = stack.s3()
    before = _json(client, "lake", "segments/_current.json")["version"]
    stack.compose("stop", "-t", "30")
    assert all(r["State"] == "exited" for r in stack.containers())
    stack.compose("start")
    stack.wait_healthy()
    client, dropped = stack.s3(), stack.figures["dropped"]
    _assert_reconciled(stack, dropped)
    # the same content again, under another name: recognised by its hash, archived, not ingested twice
    resent = "resent-october.csv.gz"
    client.fput_object("incoming", resent, str(stack.figures["data"] / f"{MONTHS[0]}.csv.gz"))
    _wait_for("the re-sent file to be archived", lambda: any(
        k.endswith("/" + resent) for k in _objects(client, "incoming", "_processed/")), stack)  # fmt: skip
    _assert_reconciled(stack, dropped)
    assert _json(client, "lake", "segments/_current.json")["version"] == before
    _customer_is_answered(stack, dropped)


def test_teardown_leaves_no_container_network_or_volume(stack: Stack) -> None:
    stack.compose("down", "-v", "--remove-orphans", "-t", "20")
    label = f"label=com.docker.compose.project={PROJECT}"
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        left = subprocess.run(["docker", *kind, "-q", "--filter", label], capture_output=True, text=True,
                              check=True).stdout.split()  # fmt: skip
        assert left == [], f"docker {' '.join(kind)} still lists {left}"
