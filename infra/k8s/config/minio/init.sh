#!/bin/sh
# minio-init: create the stack's buckets, the watcher's user (writes) and the readers' user (the
# dashboard and the scoring API: reads the lake only).
# Idempotent: safe on every `docker compose up`.
set -eu
until mc alias set local "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  echo "waiting for minio..."; sleep 1
done
for bucket in incoming lake quarantine-files; do
  mc mb --ignore-existing "local/$bucket"
done
mc admin user add local "$SHOPLENS_S3_ACCESS_KEY" "$SHOPLENS_S3_SECRET_KEY"
mc admin policy attach local readwrite --user "$SHOPLENS_S3_ACCESS_KEY" 2>/dev/null \
  || echo "policy readwrite already attached to $SHOPLENS_S3_ACCESS_KEY"
# The dashboard's and the scoring API's user: reads the lake bucket, nothing else (no writes, no raw
# input files in incoming/ or quarantine-files/).
cat > /tmp/shoplens-lake-read.json <<'POLICY'
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"], "Resource": ["arn:aws:s3:::lake"]},
  {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::lake/*"]}]}
POLICY
mc admin policy create local shoplens-lake-read /tmp/shoplens-lake-read.json
mc admin user add local "$SHOPLENS_S3_READER_ACCESS_KEY" "$SHOPLENS_S3_READER_SECRET_KEY"
mc admin policy attach local shoplens-lake-read --user "$SHOPLENS_S3_READER_ACCESS_KEY" 2>/dev/null \
  || echo "policy shoplens-lake-read already attached to $SHOPLENS_S3_READER_ACCESS_KEY"
# Raw input files keep raw user ids: once ingested (moved to incoming/_processed/ by the watcher) they
# expire after INCOMING_RETENTION_DAYS. `ilm import` replaces the bucket's rules, so this is idempotent.
printf '{"Rules":[{"ID":"expire-processed-raw-files","Status":"Enabled","Filter":{"Prefix":"_processed/"},"Expiration":{"Days":%d}}]}' \
  "${INCOMING_RETENTION_DAYS:-30}" | mc ilm import local/incoming
touch /tmp/minio-init.done
echo "buckets ready: incoming lake quarantine-files"
