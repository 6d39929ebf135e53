"""infra/warehouse/init-readonly.sh against a real PostgreSQL: the read-only role the dashboard and the API
use may read every table the owner publishes (also those swapped in later) and change nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.pgserver import PG_BIN, USER, pg_server  # noqa: F401 - the session fixture

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "warehouse" / "init-readonly.sh"
READER = "sl_reader_test"


def _run_script(server, database: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{PG_BIN}:{os.environ['PATH']}", "PGHOST": "127.0.0.1", "PGPORT": str(server.port),
           "POSTGRES_USER": USER, "POSTGRES_DB": database, "WAREHOUSE_READER_USER": READER,
           "WAREHOUSE_READER_PASSWORD": "reader-password-0123"}  # fmt: skip
    return subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_the_reader_role_reads_every_published_table_and_writes_nothing(pg_server):  # noqa: F811
    import psycopg

    url = pg_server.new_database("roles")
    database = url.rsplit("/", 1)[1]
    owner = psycopg.connect(f"host=127.0.0.1 port={pg_server.port} user={USER} dbname={database}", autocommit=True)
    owner.execute("CREATE TABLE segments (user_key text PRIMARY KEY, segment_id int)")
    owner.execute("INSERT INTO segments VALUES ('k1', 1), ('k2', 2)")
    for _ in range(2):  # idempotent: running it again changes nothing and fails nowhere
        done = _run_script(pg_server, database)
        assert done.returncode == 0, done.stderr
    # a later publish swaps in a new table, as services/core/warehouse.py does (create, load, rename)
    owner.execute("CREATE TABLE funnel__next (step int, users int)")
    owner.execute("INSERT INTO funnel__next VALUES (1, 10), (2, 4)")
    owner.execute("DROP TABLE IF EXISTS funnel")
    owner.execute('ALTER TABLE funnel__next RENAME TO funnel')
    reader = psycopg.connect(f"host=127.0.0.1 port={pg_server.port} user={READER} dbname={database}", autocommit=True)
    assert reader.execute("SELECT sum(segment_id) FROM segments").fetchone()[0] == 3
    assert reader.execute("SELECT sum(users) FROM funnel").fetchone()[0] == 14
    for statement in ("INSERT INTO segments VALUES ('k3', 3)", "UPDATE funnel SET users = 0", "DELETE FROM segments",
                      "DROP TABLE segments", "CREATE TABLE mine (x int)", "TRUNCATE funnel"):  # fmt: skip
        with pytest.raises(psycopg.Error) as refused:
            reader.execute(statement)
        assert isinstance(refused.value, psycopg.errors.InsufficientPrivilege | psycopg.errors.ReadOnlySqlTransaction), statement
    role = owner.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s", (READER,)).fetchone()
    assert role == (False, False, False)
    owner.close()
    reader.close()
