"""Benchmark: the default user funnel with its breakdowns (``shoplens funnel``) against DuckDB, same run.

One generated month is ingested into a fresh lake (not timed). Then, on the same committed events:

* ``spark_job``: :func:`services.jobs.funnel.run_funnel` as the pipeline stage runs it (after one
  untimed warm-up run; with ``--repeat`` the median of runs alternating with DuckDB's): view -> cart ->
  purchase per user, ordered, 7-day window, every breakdown (week, category, brand, segment, cohort),
  time to convert, drivers, drop-off audiences, report, published as a version (warm SparkSession).
  Spark builds the per-unit frame; it is collected once and every table is counted from it in polars.
  The per-unit frame is walked over the lake's user timelines (:func:`etl.funnel.timeline_units`, a
  pass per bucket; the timelines are built by ingest, whose ``timelines`` phase is reported apart).
* ``spark_counts``: only the three step counts from the per-unit frame of
  :func:`services.jobs.funnel.unit_frame` (the core alone: the walk over the timelines, collected).
  (The job's event-file path, a shuffle by user, is retired: a lake without timelines is told to run
  ``shoplens timelines --backfill``; its last figures are in the git history of ``results/funnel.md``.)
  The job minus this is the collection, the polars tables, the report and the publish, plus what the
  job pays as the session's first Arrow work: starting the Python workers and loading the walk.
* ``duckdb``: the same user-level ordered funnel in SQL on the lake's Parquet files (2 threads):
  an ASOF join gives each cart the latest view at or before it, a second ASOF join gives each
  purchase the latest cart at or before it; a user reaches cart when some cart has a view no more
  than 7 days before it, and purchase when the latest cart at or before some purchase has a view no
  more than 7 days before that purchase (the latest view time never decreases with the cart's time,
  so the latest cart is the best one). The counts must equal Spark's, and the benchmark checks it.

Figures go to ``benchmarks/results/funnel.json`` and ``funnel.md`` with the load average, so a run on a
contended machine says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from datetime import UTC, date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEY = "bench-key-0123456789abcdef0123456789abcdef"
TARGET_EVENTS = 43_800_000
TARGET_SECONDS = 120

DUCKDB_SQL = """
WITH ev AS (
    SELECT user_key, event_type, event_time AS t FROM read_parquet({files})
    WHERE run_id IN ({runs})
),
views AS (SELECT user_key, t FROM ev WHERE event_type = 'view'),
carts AS (SELECT user_key, t FROM ev WHERE event_type = 'cart'),
buys AS (SELECT user_key, t FROM ev WHERE event_type = 'purchase'),
carts_lv AS (
    SELECT c.user_key, c.t, v.t AS lv FROM carts c ASOF JOIN views v ON c.user_key = v.user_key AND c.t >= v.t
),
buys_lv AS (
    SELECT b.user_key, b.t, c.lv FROM buys b ASOF JOIN carts_lv c ON b.user_key = c.user_key AND b.t >= c.t
),
reach2 AS (SELECT DISTINCT user_key FROM carts_lv WHERE epoch_us(t) - epoch_us(lv) <= 604800000000),
reach3 AS (SELECT DISTINCT user_key FROM buys_lv WHERE epoch_us(t) - epoch_us(lv) <= 604800000000)
SELECT (SELECT count(DISTINCT user_key) FROM views), (SELECT count(*) FROM reach2), (SELECT count(*) FROM reach3)
"""


def duckdb_counts(lake, threads: int = 2) -> tuple[list[int], float]:
    import duckdb

    from services.core.catalog import EVENTS

    root = Path(lake.local_mirror(EVENTS))
    files = sorted(str(p) for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))
    runs = ", ".join(f"'{r}'" for r in lake.committed_run_ids())
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    sql = DUCKDB_SQL.format(files="[" + ", ".join(f"'{f}'" for f in files) + "]", runs=runs)
    t0 = time.perf_counter()
    counts = [int(x) for x in con.execute(sql).fetchone()]
    return counts, time.perf_counter() - t0


def spark_counts(spark, lake) -> tuple[list[int], float]:
    from etl.funnel import FunnelSpec
    from services.jobs.funnel import unit_frame

    t0 = time.perf_counter()
    level = unit_frame(spark, lake, FunnelSpec.parse())["level"]
    return [int((level >= k).sum()) for k in (1, 2, 3)], time.perf_counter() - t0


def build_lake(spark, root: Path, users: int, seed: int):
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.ingest import ingest_files

    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=KEY)
    lake = open_lake(settings)
    if not lake.committed_run_ids():
        generate(root / "raw", users=users, start=date(2019, 11, 1), months=1, seed=seed)
        ingest_files(spark, lake, sorted((root / "raw").glob("*.csv.gz")), settings.key_bytes)
    return lake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200_000, help="generated users (about 15 events each)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/shoplens-bench/funnel"))
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of the job and of DuckDB, alternating")
    parser.add_argument("--job-only", action="store_true",
                        help="only the job against DuckDB: skip the Spark counts")
    args = parser.parse_args()

    from services.core.catalog import EVENTS, SEGMENTATION_MODEL
    from services.core.settings import Settings
    from services.core.spark import get_spark, read_run_dataset
    from services.jobs.funnel import run_funnel

    root = args.data_dir / f"users-{args.users}"
    spark = get_spark(Settings(spark_master="local[2]", spark_driver_memory="3g"), "funnel-bench")
    lake = build_lake(spark, root, args.users, args.seed)
    events = read_run_dataset(spark, lake, EVENTS).count()
    run_funnel(spark, lake)  # warm-up: the session's first Arrow job starts the Python workers
    load_before = os.getloadavg()
    job_runs, duck_runs = [], []
    for _ in range(args.repeat):  # the decisive pair, alternating
        job_t0 = time.perf_counter()
        job = run_funnel(spark, lake)
        job_runs.append(time.perf_counter() - job_t0)
        duck, duck_s = duckdb_counts(lake)
        duck_runs.append(duck_s)
    job_s, duck_s = statistics.median(job_runs), statistics.median(duck_runs)
    core, core_s = (duck, float("nan")) if args.job_only else spark_counts(spark, lake)
    load_after = os.getloadavg()
    job_counts = [s["count"] for s in job["steps"]]
    assert job_counts == core == duck, (job_counts, core, duck)
    build_s = sum(r.get("phase_seconds", {}).get("timelines", 0.0) for r in lake.runs() if r["status"] == "committed")
    ingest_s = sum(r.get("duration_seconds", 0.0) for r in lake.runs() if r["status"] == "committed")
    row = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "events": events, "users": args.users,
        "units": job_counts[0], "steps": job_counts, "spark_job_seconds": round(job_s, 1),
        "timeline_build_seconds_at_ingest": round(build_s, 1),
        "ingest_seconds": round(ingest_s, 1),
        "spark_counts_seconds": round(core_s, 1), "duckdb_seconds": round(duck_s, 1),
        "spark_job_runs": [round(x, 1) for x in job_runs], "duckdb_runs": [round(x, 1) for x in duck_runs],
        "job_minus_counts_seconds": round(job_s - core_s, 1),
        "job_vs_duckdb": round(job_s / duck_s, 2),
        "counts_vs_duckdb": round(core_s / duck_s, 2),
        "load_average_before": [round(x, 1) for x in load_before], "load_average_after": [round(x, 1) for x in load_after],
        "cpus": os.cpu_count(), "machine": platform.machine(), "spark_master": "local[2]", "duckdb_threads": 2,
        "segmentation_model": lake.current_version(SEGMENTATION_MODEL),  # None: no point-in-time traits ran
        "extrapolated_job_seconds_at_target": round(job_s * TARGET_EVENTS / events, 0),
    }  # fmt: skip
    row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}  # --job-only
    write_results(row, args.results)
    print(json.dumps(row))


def write_results(row: dict, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    # The load before the run says whether others were using the machine; the load after includes
    # the run itself (Spark and DuckDB saturate both cores), so it cannot.
    contended = row["load_average_before"][0] > 1.0
    loads = (f"1-min load average {row['load_average_before'][0]} before and {row['load_average_after'][0]} after "
             f"the run, which itself keeps the {row['cpus']} cores busy")
    note = (f"MEASURED UNDER CONTENTION: other jobs shared the machine ({loads}), so these wall times are "
            "pessimistic and noisy." if contended else f"Measured on a quiet machine: {loads}.")  # fmt: skip
    full_size = abs(row["events"] - TARGET_EVENTS) <= 0.02 * TARGET_EVENTS
    claimed = full_size and row["spark_job_seconds"] <= TARGET_SECONDS
    doc = {"note": note, "target": {"events": TARGET_EVENTS, "seconds": TARGET_SECONDS, "cores": 2,
                                    "claimed": claimed}, "rows": [row]}  # fmt: skip
    if full_size:
        size = (f"Size: **{row['events']:,} events** ({row['users']:,} generated users, one month), the issue's "
                f"size: the target (at most {TARGET_SECONDS} s on 2 cores) is **{'met' if claimed else 'not met'}** "
                "by this run.")  # fmt: skip
        scale = ""
    else:
        size = (f"Size: **{row['events']:,} events** ({row['users']:,} generated users, one month), not the issue's "
                f"{TARGET_EVENTS:,}-event month: the target (at most {TARGET_SECONDS} s on 2 cores) is **not claimed** "
                "by this run.")  # fmt: skip
        scale = (f"A linear extrapolation of the job to {TARGET_EVENTS:,} events would be "
                 f"~{row['extrapolated_job_seconds_at_target']:.0f} s under the same load; it is an extrapolation, "
                 "not a measurement. ")  # fmt: skip
    (results / "funnel.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Funnel benchmark", "",
        f"{note}", "",
        size, "",
        "| what | seconds |", "|---|---:|",
        f"| `shoplens funnel` job: default user funnel + 5 breakdowns, trend, time to convert, drivers, audiences, report, publish; walked over the user timelines | {row['spark_job_seconds']} |",
        f"| (apart) the timeline build inside ingest, of the ingest's {row['ingest_seconds']} s | {row['timeline_build_seconds_at_ingest']} |",
        f"| Spark core only: the three step counts from the per-unit frame (`unit_frame`) | {row['spark_counts_seconds']} |",
        f"| DuckDB: the same user-level ordered 7-day funnel (two ASOF joins), 2 threads | {row['duckdb_seconds']} |",
        "", f"Ratios: job / DuckDB = **{row['job_vs_duckdb']}x**, Spark counts / DuckDB = "
        f"**{row['counts_vs_duckdb']}x**. Step counts (identical in all three): {', '.join(f'{c:,}' for c in row['steps'])}.", "",
        f"{scale}The Spark counts are the core alone (the walk over the timelines, the per-unit frame collected); the job"
        " reads each bucket already cut by user and sorted, walks it, collects the per-unit frame"
        " (one row per unit) into polars and counts every table there (breakdowns, trend, quartiles, histograms,"
        " drivers, audiences), writes the report and publishes.", "",
        f"Spark `{row['spark_master']}` (warm session: JVM start and one warm-up run of the job not counted; "
        f"job runs {row['spark_job_runs']} s, DuckDB runs {row['duckdb_runs']} s, alternating, medians above), "
        f"measured {row['measured_at']}. "
        "Reproduce: `python benchmarks/funnel_bench.py --users N`.",
    ]  # fmt: skip
    (results / "funnel.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
