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
  # Install Debian packages only when one of the given commands is missing.
  local missing=0 cmd
  for cmd in $1; do command -v "$cmd" >/dev/null 2>&1 || missing=1; done
  [ "$missing" = 0 ] && return 0
  shift
  say "installing $*"
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_python() {
  local extras=$1
  apt_install java openjdk-17-jre-headless
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
  say "computing per-user features"
  shoplens features
  say "training the segmentation model and scoring every user"
  shoplens train --truth data/incoming/_truth/users.csv
  if [ "${DEMO_DASHBOARD:-1}" = 1 ]; then
    say "starting the dashboard (Ctrl-C to stop)"
    shoplens dashboard --port "${DASHBOARD_PORT:-8501}"
  fi
}

cmd_test() {
  install_python "dashboard,test,bench"
  apt_install "prometheus prometheus-pushgateway" prometheus prometheus-pushgateway
  apt_install chromium chromium
  say "ruff"
  ruff check .
  say "pytest"
  python -m pytest "$@"
}

case "${1:-}" in
  demo) shift; cmd_demo "$@" ;;
  test) shift; cmd_test "$@" ;;
  *) echo "usage: $0 demo|test [pytest args]" >&2; exit 2 ;;
esac
