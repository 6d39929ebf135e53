"""A/B test analysis benchmark: ``shoplens abtest analyze`` on a 10-million-row file vs peers, same run.

Each tool runs as its own process on the same generated experiment file (CSV and Parquet, one row per
user, with covariate and segments) and does the same work: read, apply the rejection rules (missing id
or variant, user in two variants, unparseable values, repeats), reduce to sufficient statistics per
segment and variant, analyze. No tool pseudonymizes: the analysis outputs nothing per user, so shoplens
compares raw ids in memory only and keys users by ordinals (the lake path, which joins users to the
lake, computes the HMAC). Wall time is the whole process (interpreter start included); peak memory is
sampled over the process tree.

- ``shoplens``: the command itself (polars on Arrow; it also renders and publishes the report to a lake).
- ``duckdb``: the same rules and reduction in DuckDB SQL, then the same ``model.experiments`` maths.
- ``pandas``: ``benchmarks/abtest_pandas.py``, the same rules in pandas, on the whole file.

Floor (issue 13): the shoplens analysis of 10 million rows in at most 30 s on 2 cores.

    python benchmarks/abtest_bench.py --rows 10000000
    python benchmarks/abtest_bench.py --rows 1000000 --tools shoplens duckdb --formats csv
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KEY = "benchmark-key-not-secret-0123456789abcdef"
TOOLS = ("shoplens", "duckdb", "pandas")
FORMATS = ("csv", "parquet")
FLOOR_SECONDS = 30.0


def dataset(data_dir: Path, rows: int, fmt: str, seed: int = 7) -> Path:
    """A generated experiment file of ``rows`` users (plus the handful of bad rows), cached between runs."""
    sys.path.insert(0, str(REPO))
    from tests.services.jobs.abtest_data import experiment_frame, with_bad_rows, write_experiment

    path = data_dir / f"experiment-{rows}.{fmt}"
    if not path.exists():
        print(f"generating {rows:,} rows into {path}", flush=True)
        frame, _bad = with_bad_rows(experiment_frame(rows, seed, conversion_lift=0.03))
        tmp = write_experiment(path.with_suffix(f".tmp.{fmt}"), frame)
        tmp.rename(path)
    return path


# -- peers --------------------------------------------------------------------------------------------
def _number_sql(column: str) -> str:
    text = f"lower(trim(CAST({column} AS VARCHAR)))"
    value = f"CASE WHEN {text} = 'true' THEN 1.0 WHEN {text} = 'false' THEN 0.0 ELSE TRY_CAST({text} AS DOUBLE) END"
    return f"CASE WHEN isfinite({value}) THEN {value} END"


def run_duckdb(path: Path, metrics: list[str]) -> dict:
    """The rules of etl.experiments in SQL; returns the analysis summary."""
    import duckdb

    from model.experiments import analyze_statistics

    con = duckdb.connect()
    source = f"read_parquet('{path}')" if path.suffix == ".parquet" else f"read_csv('{path}', all_varchar=true, header=true)"
    columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    covariates = {m: f"pre_{m}" in columns for m in metrics}
    values = [*metrics, *(f"pre_{m}" for m in metrics if covariates[m])]
    con.execute(f"""
        CREATE TABLE parsed AS SELECT
            row_number() OVER () AS line_number,
            NULLIF(trim(CAST(user_id AS VARCHAR)), '') AS user_key,
            NULLIF(trim(CAST(variant AS VARCHAR)), '') AS variant,
            COALESCE(NULLIF(trim(CAST(segment AS VARCHAR)), ''), '(none)') AS segment,
            NULLIF(trim(CAST(assigned_at AS VARCHAR)), '') AS raw_time,
            TRY_CAST(NULLIF(trim(CAST(assigned_at AS VARCHAR)), '') AS TIMESTAMPTZ) AS assigned_at,
            {", ".join(f"{_number_sql(c)} AS {c}" for c in values)}
        FROM {source}
    """)  # fmt: skip
    unparseable = " OR ".join([f"{c} IS NULL" for c in values] + ["(raw_time IS NOT NULL AND assigned_at IS NULL)"])
    con.execute(f"""
        CREATE TABLE classified AS
        WITH staged AS (
            SELECT *, CASE
                WHEN user_key IS NULL THEN 'missing_user_id'
                WHEN variant IS NULL THEN 'missing_variant'
                WHEN min(variant) OVER (PARTITION BY user_key) <> max(variant) OVER (PARTITION BY user_key)
                    THEN 'conflicting_variant'
                WHEN {unparseable} THEN 'unparseable_value' END AS reason
            FROM parsed)
        SELECT * EXCLUDE (reason), CASE WHEN reason IS NULL AND row_number() OVER (
            PARTITION BY user_key, variant, reason IS NULL ORDER BY line_number) > 1 THEN 'duplicate_user'
            ELSE reason END AS reason
        FROM staged
    """)  # fmt: skip
    rejected = dict(con.execute("SELECT reason, count(*) FROM classified WHERE reason IS NOT NULL GROUP BY 1").fetchall())
    parts = []
    for m in metrics:
        x = f"pre_{m}" if covariates[m] else "CAST(NULL AS DOUBLE)"
        parts.append(f"""SELECT segment, variant, '{m}' AS metric, count(*) AS n, sum({m}) AS sum,
            sum({m} * {m}) AS sum_squares, sum({x}) AS pre_sum, sum({x} * {x}) AS pre_sum_squares,
            sum({m} * {x}) AS sum_products, min(line_number) AS first_line
            FROM classified WHERE reason IS NULL GROUP BY segment, variant""")  # fmt: skip
    stats = con.execute(" UNION ALL ".join(parts)).df()
    kinds = {m: "conversion" if m == "purchased" else "continuous" for m in metrics}
    _result, doc = analyze_statistics(stats.astype({"n": "int64", "first_line": "int64"}), kinds, segmented=True)
    users = int(stats.loc[stats["metric"] == metrics[0], "n"].sum())
    return {"users": users, "rejected": rejected, "srm_p": (doc["srm"] or {}).get("p_value")}


def run_pandas(path: Path, metrics: list[str]) -> dict:
    import numpy as np
    import pandas as pd
    from abtest_pandas import (
        accepted_rows_local,
        classify_experiment_local,
        rejection_counts_local,
        sufficient_statistics_local,
    )

    from model.experiments import analyze_statistics

    if path.suffix == ".parquet":
        rows = pd.read_parquet(path)
    else:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False, engine="pyarrow")
    rows["line_number"] = np.arange(2, len(rows) + 2)
    classified = classify_experiment_local(rows, metrics, None)
    rejected = dict(rejection_counts_local(classified)[["reason", "rows"]].itertuples(index=False))
    stats = sufficient_statistics_local(accepted_rows_local(classified), metrics, ("segment",))
    kinds = {m: "conversion" if m == "purchased" else "continuous" for m in metrics}
    _result, doc = analyze_statistics(stats, kinds, segmented=True)
    users = int(stats.loc[stats["metric"] == metrics[0], "n"].sum())
    return {"users": users, "rejected": {k: int(v) for k, v in rejected.items()}, "srm_p": (doc["srm"] or {}).get("p_value")}


# -- harness ------------------------------------------------------------------------------------------
def command(tool: str, path: Path, work: Path) -> list[str]:
    if tool == "shoplens":
        return [sys.executable, "-m", "services", "abtest", "analyze", str(path), "--metric", "purchased",
                "--metric", "revenue", "--json", "--lake", str(work / "lake")]  # fmt: skip
    return [sys.executable, __file__, "--peer", tool, "--file", str(path)]


def measure(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``, sampling the RSS of its whole process tree every 0.2 s; wall time and peak."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:6]} failed ({proc.returncode}): {err[-2000:]}")
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20), "result": json.loads(line)}


def summary_of(tool: str, result: dict) -> dict:
    if tool == "shoplens":
        return {"users": result["users"], "rejected": result["rejected"], "srm_p": result["srm"]["p_value"]}
    return result


def write_results(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "abtest.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    m = results["machine"]
    lines = [
        "# A/B test analysis benchmark",
        "",
        f"`python benchmarks/abtest_bench.py --rows {results['rows']}` on {m['cpus']} cores "
        f"({m['platform']}), {results['date']}. Whole-process wall time (interpreter start "
        "included) and peak resident memory of the process tree. Floor: shoplens at most "
        f"{FLOOR_SECONDS:.0f} s for 10 million rows on 2 cores.",
        "",
    ]
    if m.get("load_before") is not None:
        lines += [f"**Machine load**: 1-minute load average {m['load_before']:.1f} before and {m['load_after']:.1f} "
                  f"after the run on {m['cpus']} cores. {m['note']}", ""]  # fmt: skip
    lines += ["| file | tool | seconds | vs shoplens | peak RSS (MB) | users | rejected rows | floor |", "|---|---|---|---|---|---|---|---|"]
    for fmt, runs in results["runs"].items():
        base = runs.get("shoplens", {}).get("seconds")
        for tool, r in runs.items():
            ratio = f"{r['seconds'] / base:.2f}x" if base else "-"
            floor = ("pass" if r["seconds"] <= FLOOR_SECONDS else "FAIL") if tool == "shoplens" else ""
            lines.append(f"| {fmt} | {tool} | {r['seconds']:.1f} | {ratio} | {r['peak_rss_mb']:,} | "
                         f"{r['summary']['users']:,} | {sum(r['summary']['rejected'].values()):,} | {floor} |")  # fmt: skip
    lines += ["", "All tools agree on the users analyzed and the rejected rows per reason (checked by the harness).", ""]
    (out_dir / "abtest.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "shoplens-bench")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--peer", choices=("duckdb", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.peer:
        run = run_duckdb if args.peer == "duckdb" else run_pandas
        print(json.dumps(run(args.file, ["purchased", "revenue"]), default=str))
        return

    env = {**os.environ, "SHOPLENS_PSEUDONYM_KEY": KEY, "SHOPLENS_SPARK_MASTER": "local[2]",
           "SHOPLENS_LOG_FORMAT": "json", "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}  # fmt: skip
    load_before = os.getloadavg()[0]
    results: dict = {"rows": args.rows, "date": datetime.now(UTC).isoformat(timespec="seconds"), "runs": {}}
    for fmt in args.formats:
        path = dataset(args.data_dir, args.rows, fmt)
        results["runs"][fmt] = {}
        for tool in args.tools:
            work = Path(tempfile.mkdtemp(prefix=f"abtest-{tool}-"))
            try:
                env["SHOPLENS_WORK_DIR"] = str(work / "work")
                print(f"{fmt} {tool} ...", flush=True)
                r = measure(command(tool, path, work), env)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            r["summary"] = summary_of(tool, r.pop("result"))
            results["runs"][fmt][tool] = r
            print(f"{fmt} {tool}: {r['seconds']:.1f}s, peak {r['peak_rss_mb']:,} MB, users {r['summary']['users']:,}", flush=True)
        summaries = {t: (r["summary"]["users"], r["summary"]["rejected"]) for t, r in results["runs"][fmt].items()}
        if len({json.dumps(s, sort_keys=True) for s in summaries.values()}) != 1:
            raise SystemExit(f"tools disagree on {fmt}: {summaries}")
    load_after = os.getloadavg()[0]
    cpus = os.cpu_count() or 0
    contended = max(load_before, load_after) > cpus
    results["machine"] = {
        "cpus": cpus, "platform": platform.platform(), "python": platform.python_version(),
        "load_before": load_before, "load_after": load_after,
        "note": ("The machine was shared with other jobs during this run (load above the core count), so "
                 "every figure is slower than on a quiet machine; the ratios between tools are the fairer "
                 "comparison.") if contended else "The machine was otherwise idle.",
    }  # fmt: skip
    write_results(results, args.out)
    print(f"wrote {args.out / 'abtest.md'}")


if __name__ == "__main__":
    main()
