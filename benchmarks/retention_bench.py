"""Retention benchmark: the weekly retention of ``shoplens retention`` (per user bucket of the lake's
timelines, in Spark tasks, shares added on the driver) against DuckDB doing the same computation over
the same lake's event files, in the same run; the two results must be equal.

Each lake is either generated (``--users N --months M``: ``etl.generate`` and one ingestion run, cached
under ``/tmp/shoplens-bench/retention-<users>-<months>``; a cached lake from before timelines gets them
with ``backfill_timelines``) or an existing one (``--lake DIR --key KEY``, e.g. the 43.8M-event month
of ``benchmarks/funnel_bench.py``), read only. Several lakes are timed in one run (``--lake`` and
``--size`` repeat). Timed for shoplens: :func:`services.jobs.retention.compute` for the default view
(weekly first-seen cohorts, rolling weeks, n-period, any event; users and revenue) with a warm
SparkSession (the session's start and one warm-up run not counted), median of ``--repeat`` runs
alternating with DuckDB's. DuckDB: one SQL query over the same Parquet files, 2 threads (users only).

Goal (issue 32): weekly retention over the 43.8M-event month and a two-month lake in at most DuckDB's
time for the same computation.

Each lake's row is appended to ``benchmarks/results/retention.json`` (earlier runs' rows are kept) and
``retention.md`` is written from all of them.

    flock /work/bench.lock nice -n 10 python benchmarks/retention_bench.py --size 100000:2 \\
        --lake /tmp/shoplens-bench/funnel/users-1740000/lake --key KEY
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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


def generated_lake(users: int, months: int, spark):
    """The cached generated lake of this size (built once), with timelines."""
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.core.timelines import backfill_timelines
    from services.jobs.ingest import ingest_files

    root = CACHE / f"retention-{users}-{months}"
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=KEY, spark_master="local[2]")
    the_lake = open_lake(settings)
    if not the_lake.committed_run_ids():
        print(f"generating and ingesting {users:,} users x {months} months into {root}", flush=True)
        generate(root / "raw", users=users, start=date(2019, 10, 1), months=months, seed=3)
        ingest_files(spark, the_lake, sorted((root / "raw").glob("*.csv.gz")), settings.key_bytes)
    backfill_timelines(spark, the_lake)  # a lake cached before timelines existed
    return the_lake


def existing_lake(path: Path, key: str):
    from services.core.runtime import open_lake
    from services.core.settings import Settings

    return open_lake(Settings(lake=str(path), work_dir=CACHE / "work", pseudonym_key=key, spark_master="local[2]"))


def measure(spark, the_lake, repeat: int) -> dict:
    """shoplens and DuckDB alternately on one lake; the results compared."""
    import duckdb
    import polars as pl

    from services.core.catalog import EVENTS
    from services.jobs.retention import OVERALL, RetentionConfig, compute

    files = [str(the_lake.store.local_path(k)) for k in the_lake.committed_files(EVENTS)]
    con = duckdb.connect()
    con.execute("SET threads = 2")
    events = con.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0]
    users = con.sql(f"SELECT count(DISTINCT user_key) FROM read_parquet({files!r})").fetchall()[0][0]
    months = con.sql(f"SELECT count(DISTINCT date_trunc('month', event_date)) FROM read_parquet({files!r}, "
                     "hive_partitioning = true)").fetchall()[0][0]  # fmt: skip
    cfg = RetentionConfig(breakdowns=())
    compute(spark, the_lake, cfg, None)  # warm-up: the JVM's and the Python workers' first jobs
    ours_s, peer_s = [], []
    load_before = os.getloadavg()
    for _ in range(repeat):
        t0 = time.perf_counter()
        table, _end = compute(spark, the_lake, cfg, None)
        ours_s.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        peer = con.sql(DUCKDB_SQL.format(files=repr(files))).pl()
        peer_s.append(time.perf_counter() - t1)
    load_after = os.getloadavg()
    ours = pl.from_pandas(table[table["breakdown"] == OVERALL][["cohort", "size", "period", "users"]])
    ours = ours.filter(pl.col("users") > 0).sort("cohort", "period")
    same = ours.with_columns(pl.col("cohort").cast(pl.Date)).equals(
        peer.with_columns(pl.col("cohort").cast(pl.Date), pl.col("size").cast(pl.Int64), pl.col("period").cast(pl.Int64),
                          pl.col("users").cast(pl.Int64)).sort("cohort", "period"))  # fmt: skip
    return {"users": int(users), "months": int(months), "events": int(events), "files": len(files),
            "shoplens_seconds": [round(x, 2) for x in ours_s], "duckdb_seconds": [round(x, 2) for x in peer_s],
            "shoplens_median": round(statistics.median(ours_s), 2), "duckdb_median": round(statistics.median(peer_s), 2),
            "results_equal": bool(same), "cohort_periods": ours.height,
            "load_before": [round(x, 1) for x in load_before], "load_after": [round(x, 1) for x in load_after]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", action="append", default=[], help="USERS:MONTHS of a generated lake (repeatable)")
    ap.add_argument("--lake", action="append", type=Path, default=[], help="an existing lake directory (repeatable)")
    ap.add_argument("--key", default=KEY, help="the pseudonym key of the --lake lakes")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from services.core.settings import Settings
    from services.core.spark import get_spark

    spark = get_spark(Settings(pseudonym_key=KEY, spark_master="local[2]", spark_driver_memory="3g",
                               work_dir=CACHE / "work"), "retention-bench")  # fmt: skip
    lakes = [generated_lake(*(int(x) for x in size.split(":")), spark) for size in args.size]
    lakes += [existing_lake(path, args.key) for path in args.lake]
    rows = []
    for the_lake in lakes:
        row = {"run_at": datetime.now(UTC).isoformat(timespec="seconds"), "repeat": args.repeat,
               **measure(spark, the_lake, args.repeat)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    spark.stop()
    print("\n".join(write_results(HERE / "results", rows)))


def previous_rows(path: Path) -> list[dict]:
    """The rows an earlier run wrote to ``path`` (none if there is no file), each with its ``repeat``
    (files written before rows carried it had it once, for all of them)."""
    if not path.exists():
        return []
    doc = json.loads(path.read_text(encoding="utf-8"))
    return [{"repeat": doc.get("repeat"), **r} for r in doc["rows"]]


def write_results(results: Path, rows: list[dict]) -> list[str]:
    """Append ``rows`` to ``retention.json`` (earlier runs' rows are kept: each row is one lake in one
    run, dated by ``run_at``) and write ``retention.md`` from all of them; returns the Markdown lines."""
    rows = previous_rows(results / "retention.json") + rows
    doc = {"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}
    (results / "retention.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    md = ["# Weekly retention: shoplens vs DuckDB", "",
          f"`benchmarks/retention_bench.py` on {doc['machine']} ({doc['cpus']} CPUs), `nice -n 10`, under the shared "
          "benchmark lock; the load averages (1, 5, 15 min) before and after each lake's timed runs say how shared "
          "the machine was (the runs themselves keep both cores busy). One row per lake and run, oldest first.", "",
          "| run at | users | months | events | shoplens s (median) | DuckDB s (median) | shoplens / DuckDB | "
          "equal results | load before | load after |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        md.append(f"| {r['run_at']} | {r['users']:,} | {r['months']} | {r['events']:,} | {r['shoplens_median']} "
                  f"{r['shoplens_seconds']} | {r['duckdb_median']} {r['duckdb_seconds']} | "
                  f"{r['shoplens_median'] / r['duckdb_median']:.2f} | {r['results_equal']} | {r['load_before']} | "
                  f"{r['load_after']} |")  # fmt: skip
    md += ["", "shoplens: one pass over the lake's timelines (64 user buckets, consecutive ones in two Spark tasks "
           "per core; a task reads only the columns it counts, its buckets' user keys as dictionaries, reduces "
           "batches of up to 2M events to user-days in array arithmetic over the sorted rows and counts their users' "
           "share of every cohort and period, users and revenue, in one polars group-by; the driver adds the "
           "shares), warm session, after one warm-up run. DuckDB: one query over the "
           "same Parquet event files, 2 threads, users only. The results (users per cohort and period of the default "
           "view) are compared for equality.",
           "", "Goal (issue 32): at most DuckDB's time over the 43.8M-event month and a two-month lake; each row's "
           "timed runs (`--repeat` alternating runs of each tool) are listed in brackets."]  # fmt: skip
    (results / "retention.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return md


if __name__ == "__main__":
    main()
