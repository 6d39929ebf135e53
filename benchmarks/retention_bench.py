"""Retention benchmark: the weekly retention of ``shoplens retention`` (Spark user-days + polars cohorts)
against DuckDB doing the same computation over the same lake files, in the same run; the two results
must be equal.

The lake is generated (``etl.generate``, ``--users`` over ``--months``) and ingested once, cached
under ``/tmp/shoplens-bench/retention-<users>-<months>``. Timed for shoplens: reading the committed
events on Spark, reducing them to user-days, collecting them and counting the default view (weekly
first-seen cohorts, rolling weeks, n-period, any event), with a warm SparkSession (its start is not
counted). DuckDB: one SQL query over the same Parquet files (hive partitions for ``event_date``).

Goal (issue 32): weekly retention over the 43.8M-event month and a two-month lake in at most DuckDB's
time for the same computation.

    nice -n 10 python benchmarks/retention_bench.py --users 20000 --months 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KEY = "benchmark-key-not-secret-0123456789"
CACHE = Path("/tmp/shoplens-bench")

DUCKDB_SQL = """
WITH days AS (
  SELECT user_key, event_date AS day FROM read_parquet({files}, hive_partitioning = true) GROUP BY 1, 2),
starts AS (SELECT user_key, min(day) AS start FROM days GROUP BY 1),
members AS (SELECT user_key, start, CAST(date_trunc('week', start) AS DATE) AS cohort FROM starts),
active AS (SELECT DISTINCT m.user_key, m.cohort, (d.day - m.start) // 7 AS period
           FROM days d JOIN members m USING (user_key)),
sizes AS (SELECT cohort, count(*) AS size FROM members GROUP BY 1)
SELECT a.cohort, s.size, a.period, count(*) AS users FROM active a JOIN sizes s USING (cohort)
GROUP BY 1, 2, 3 ORDER BY 1, 3
"""


def lake(users: int, months: int, spark):
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.ingest import ingest_files

    root = CACHE / f"retention-{users}-{months}"
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=KEY, spark_master="local[2]")
    the_lake = open_lake(settings)
    if not the_lake.committed_run_ids():
        print(f"generating and ingesting {users:,} users x {months} months into {root}", flush=True)
        generate(root / "raw", users=users, start=date(2019, 10, 1), months=months, seed=3)
        ingest_files(spark, the_lake, sorted((root / "raw").glob("*.csv.gz")), settings.key_bytes)
    return root, the_lake


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--months", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import duckdb
    import polars as pl

    from services.core.catalog import EVENTS
    from services.core.settings import Settings
    from services.core.spark import get_spark
    from services.jobs.retention import OVERALL, RetentionConfig, compute

    spark = get_spark(Settings(pseudonym_key=KEY, spark_master="local[2]", work_dir=CACHE / "work"), "retention-bench")
    root, the_lake = lake(args.users, args.months, spark)
    files = [str(root / "lake" / k) for k in the_lake.committed_files(EVENTS)]
    events = duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0]
    cfg = RetentionConfig(breakdowns=())
    compute(spark, the_lake, cfg, None)  # warm-up: the JVM's first jobs
    t0 = time.perf_counter()
    table, _end = compute(spark, the_lake, cfg, None)
    t_shoplens = time.perf_counter() - t0
    con = duckdb.connect()
    con.execute("SET threads = 2")
    t1 = time.perf_counter()
    peer = con.sql(DUCKDB_SQL.format(files=repr(files))).pl()
    t_duckdb = time.perf_counter() - t1
    ours = pl.from_pandas(table[table["breakdown"] == OVERALL][["cohort", "size", "period", "users"]])
    ours = ours.filter(pl.col("users") > 0).sort("cohort", "period")
    same = ours.with_columns(pl.col("cohort").cast(pl.Date)).equals(
        peer.with_columns(pl.col("cohort").cast(pl.Date), pl.col("size").cast(pl.Int64), pl.col("period").cast(pl.Int64),
                          pl.col("users").cast(pl.Int64)).sort("cohort", "period"))  # fmt: skip
    doc = {"run_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "users": args.users, "months": args.months, "events": int(events),
           "files": len(files), "shoplens_seconds": round(t_shoplens, 2), "duckdb_seconds": round(t_duckdb, 2),
           "results_equal": bool(same), "cohort_periods": ours.height}  # fmt: skip
    (HERE / "results" / "retention.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    md = ["# Weekly retention: shoplens vs DuckDB", "",
          f"Run {doc['run_at']} on {doc['machine']} ({doc['cpus']} CPUs), `nice -n 10`, on a shared machine.", "",
          "| users | months | events | files | shoplens s | DuckDB s | equal results |", "|---|---|---|---|---|---|---|",
          f"| {args.users:,} | {args.months} | {events:,} | {len(files)} | {doc['shoplens_seconds']} | "
          f"{doc['duckdb_seconds']} | {same} |", "",
          "shoplens: Spark reads the committed events, reduces them to user-days and the driver counts the cohorts "
          "in polars (warm session). DuckDB: one query over the same Parquet files, 2 threads."]  # fmt: skip
    (HERE / "results" / "retention.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    spark.stop()


if __name__ == "__main__":
    main()
