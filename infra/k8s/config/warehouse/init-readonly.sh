#!/bin/sh
# warehouse init: the read-only role the dashboard, the scoring API and BI tools use; only POSTGRES_USER
# (the watcher's role, which owns every table it publishes) writes. Run by the postgres image from
# /docker-entrypoint-initdb.d on the first start of an empty data volume; on an existing volume run it
# once by hand (docs/security.md). Idempotent. Tables created later by POSTGRES_USER (each publish swaps
# in new ones) are readable by the role through its default privileges.
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" \
  -v reader="$WAREHOUSE_READER_USER" -v reader_password="$WAREHOUSE_READER_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'reader') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') \gexec
ALTER ROLE :"reader" WITH LOGIN PASSWORD :'reader_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER ROLE :"reader" SET default_transaction_read_only = on;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL
echo "warehouse: read-only role $WAREHOUSE_READER_USER ready"
