#!/usr/bin/env bash
# shoplens set-up: `./setup_project.sh demo` (install, generate sample months, run the pipeline, open
# the dashboard; DEMO_DASHBOARD=0 skips the dashboard) or `./setup_project.sh test` (install what the
# tests need and run the whole suite).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${SHOPLENS_VENV:-.venv}
PY=${PYTHON:-python3}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

apt_install() {
  # Install Debian packages only when one of the given commands (or lib:<name> shared libraries) is missing.
  local missing=0 cmd
  for cmd in $1; do
    case $cmd in
      lib:*) ldconfig -p 2>/dev/null | grep -q "${cmd#lib:}" || missing=1 ;;
      *) command -v "$cmd" >/dev/null 2>&1 || missing=1 ;;
    esac
  done
  [ "$missing" = 0 ] && return 0
  shift
  say "installing $*"
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_python() {
  local extras=$1
  apt_install java openjdk-17-jre-headless
  apt_install lib:libpangoft2-1.0 libpango-1.0-0 libpangoft2-1.0-0   # the dossier's PDF (WeasyPrint)
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  local stamp="$VENV/.shoplens-installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing shoplens[$extras] (pyspark builds once, about a minute)"
    python -m pip install -q --upgrade pip
    python -m pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
  # Spark's classes recorded once, so that every JVM starts ~2 s sooner (services/core/jvm_archive.py)
  python -m services.core.jvm_archive || echo "warning: no JVM class archive; Spark starts without it" >&2
  export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
  export PYSPARK_PYTHON="$VENV/bin/python"
}

cmd_demo() {
  install_python "dashboard"
  export SHOPLENS_DEMO=${SHOPLENS_DEMO:-1}
  export SHOPLENS_LOG_FORMAT=${SHOPLENS_LOG_FORMAT:-text}
  export SHOPLENS_LOG_LEVEL=${SHOPLENS_LOG_LEVEL:-WARNING}
  local users=${DEMO_USERS:-20000} months=${DEMO_MONTHS:-2}
  say "generating $months months of events for $users users into data/incoming"
  shoplens generate --users "$users" --start 2019-10-01 --months "$months" --seed 42 \
    --dirty-rate 0.002 --out data/incoming
  say "ingesting into the lake at ${SHOPLENS_LAKE:-./data/lake}"
  shoplens ingest data/incoming/*.csv.gz
  say "describing the lake"
  shoplens describe --out data/reports
  say "computing per-user features, training the segmentation model and scoring every user"
  shoplens train --truth data/incoming/_truth/users.csv
  say "building the dashboard's overview and anything else due"
  shoplens run
  if [ "${DEMO_DASHBOARD:-1}" = 1 ]; then
    say "starting the dashboard (Ctrl-C to stop)"
    shoplens dashboard --port "${DASHBOARD_PORT:-8501}"
  fi
}

start_docker() {
  # `pytest -m stack` (tests/integration/test_stack.py) runs the stack in a real engine: install Debian's
  # and start it where this machine allows; without one those tests are skipped with the reason.
  apt_install "dockerd debootstrap" docker.io debootstrap || { echo "warning: no Docker engine installed" >&2; return 0; }
  docker info >/dev/null 2>&1 && return 0
  say "starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/shoplens-dockerd.log 2>&1 &' || return 0
  local _
  for _ in $(seq 30); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  echo "warning: dockerd did not answer within 30 s; the stack tests will be skipped" >&2
}

cmd_test() {
  install_python "dashboard,test,bench"
  apt_install "prometheus prometheus-pushgateway" prometheus prometheus-pushgateway
  apt_install chromium chromium
  apt_install "pdftoppm pdftotext" poppler-utils   # the dossier's PDF is rendered and read back
  apt_install dot graphviz   # docs/pipeline.png from docs/pipeline.dot
  apt_install "pg_ctlcluster psql" postgresql   # tests/pgserver.py runs its own server from the binaries
  start_docker
  say "ruff"
  ruff check .
  say "import contracts (layers, Spark-free dashboard, no cycles)"
  lint-imports
  say "duplicate code"
  pylint --rcfile=pyproject.toml --score=n etl model services dashboard
  say "pytest"
  python -m pytest --durations=25 "$@"   # the slowest tests in the log: CI has a 40-minute budget
}

cmd_stack() {
  # `./setup_project.sh stack [--env-only]`: .env with fresh secrets, then the whole platform in Docker
  # (docker-compose.yml). --env-only stops after .env, e.g. to feed infra/k8s (docs/kubernetes.md).
  say "configuration"
  # Generated in Python for O_EXCL (an existing .env, with the key the lake was written with, is never
  # overwritten, not even by a concurrent run) and for the secrets module's CSPRNG.
  "$PY" - <<'PY' || return 1
import os, re, secrets, sys
required = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):\?", open("docker-compose.yml").read()))
if os.path.exists(".env"):
    have = {k for k, _, v in (l.partition("=") for l in open(".env").read().splitlines()) if v.strip()}
    missing = sorted(required - have)
    print("keeping the existing .env (never rewritten: it holds the key every user id in the lake depends on)")
    if missing:
        print(f"warning: .env has no value for {', '.join(missing)}: add them (see .env.example), "
              "or docker compose refuses to start", file=sys.stderr)
    sys.exit(0)

def fresh(name):
    # Hex only: never starts with "-" (these reach mc, pg_isready and curl as arguments) and needs no
    # escaping in SHOPLENS_WAREHOUSE_URL or a shell. Passwords are 40 characters (160 bits) and names 18
    # (64 bits), within the 40 and 20 some MinIO credential paths allow; names start with a letter, as
    # PostgreSQL identifiers and S3 access keys do.
    if name == "SHOPLENS_PSEUDONYM_KEY":
        return secrets.token_hex(32)
    if name.endswith(("_USER", "_DB", "_ACCESS_KEY")):
        return "sl" + secrets.token_hex(8)
    return secrets.token_hex(20)

lines, generated = [], []
for line in open(".env.example").read().splitlines():
    key, sep, value = line.partition("=")
    if sep and not line.lstrip().startswith("#") and key.strip() in required and not value.strip():
        line = f"{key.strip()}={fresh(key.strip())}"
        generated.append(key.strip())
    lines.append(line)
fd = os.open(".env", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as out:
    out.write("\n".join(lines) + "\n")
print(f"wrote .env (mode 600) with fresh values for {', '.join(generated)}")
print("keep it safe: SHOPLENS_PSEUDONYM_KEY keys every user in the lake, and a new one makes old keys unmatchable")
PY
  [ "${1:-}" = "--env-only" ] && return 0

  say "checking Docker"
  # Say everything that is missing at once, in plain words, rather than failing on the first.
  local problems=() err
  local -a compose=(docker compose)
  if ! command -v docker >/dev/null 2>&1; then
    problems+=("Docker is not installed (no 'docker' command): install Docker Engine, https://docs.docker.com/engine/install/, or Docker Desktop")
  else
    if ! docker compose version >/dev/null 2>&1; then
      if command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
        compose=(docker-compose)
      else
        problems+=("Docker Compose v2 is missing ('docker compose' does not work): install the docker-compose-plugin package, https://docs.docker.com/compose/install/")
      fi
    fi
    if ! err=$(docker info 2>&1 >/dev/null); then
      problems+=("no Docker engine answers (docker info: ${err%%$'\n'*}): start it (sudo systemctl start docker, or open Docker Desktop) and make sure this user may use it (the docker group)")
    fi
  fi
  if [ ${#problems[@]} -gt 0 ]; then
    local p
    for p in "${problems[@]}"; do echo "shoplens: missing: $p" >&2; done
    echo "shoplens: .env is ready; run './setup_project.sh stack' again once Docker works (or use infra/k8s, see docs/kubernetes.md)" >&2
    return 1
  fi

  say "starting the stack (the first build downloads about 1 GB)"
  "${compose[@]}" up -d --build
  cat <<'URLS'

shoplens is starting (`docker compose ps` shows when every service is healthy; logins are in .env):
  dashboard          http://localhost:8501
  scoring API        http://localhost:8000/docs    Authorization: Bearer SHOPLENS_API_KEY
  Grafana            http://localhost:3000    admin / GRAFANA_ADMIN_PASSWORD
  Kibana             http://localhost:5601    elastic / ELASTIC_PASSWORD
  MinIO console      http://localhost:9001    MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (drop files in "incoming")
  Prometheus         http://localhost:9090
  Pushgateway        http://localhost:9091
  Spark master       http://localhost:8080
  Elasticsearch      http://localhost:9200
  warehouse (SQL)    postgresql://localhost:5432/POSTGRES_DB    POSTGRES_USER / POSTGRES_PASSWORD
URLS
}

case "${1:-}" in
  demo) shift; cmd_demo "$@" ;;
  test) shift; cmd_test "$@" ;;
  stack) shift; cmd_stack "$@" ;;
  *) echo "usage: $0 demo|test [pytest args]" >&2; exit 2 ;;
esac
