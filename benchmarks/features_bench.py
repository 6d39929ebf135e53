"""Features benchmark: ``shoplens features`` from the timelines (this tree) against the Spark column job it
retired (a checkout of main before the change, ``--baseline-src``), on the same lake, one after the other.

The lake (e.g. the generated 43.8M-event month with its timelines) is copied with hard links into
``--scratch`` (no bytes copied: both jobs only add files), so the source is never changed. Each job runs
in its own process (its own Spark session, ``local[2]``, 4 GB driver) with ``full=True``: every committed
run from scratch; the time is the job's own call, Spark start-up excluded (given separately). The
baseline is stopped after ``--timeout`` seconds and then reported as "more than". When both finish,
their features are compared column by column. Figures go to ``benchmarks/results/features.json`` and
``features.md``.

    flock /work/bench.lock nice -n 10 python benchmarks/features_bench.py \\
        --lake /work/data/month/users-1740000/lake --baseline-src /tmp/main-488cd79 --scratch /work/data/features-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def child(lake_dir: Path, work: Path) -> None:
    """One job on the lake (whichever ``services`` PYTHONPATH gives), timed; prints one JSON line."""
    t0 = time.monotonic()
    from services.core.lake import Lake
    from services.core.settings import Settings
    from services.core.spark import get_spark
    from services.core.storage import LocalStore
    from services.jobs.features import run_features

    spark = get_spark(Settings(spark_master="local[2]", spark_driver_memory="4g"), "features-bench")
    started = time.monotonic() - t0
    lake = Lake(LocalStore(lake_dir), work)
    t = time.monotonic()
    summary = run_features(spark, lake, full=True)
    seconds = time.monotonic() - t
    spark.stop()
    print(json.dumps({"seconds": round(seconds, 2), "spark_start_seconds": round(started, 2),
                      "version": summary["version"], "n_users": summary["n_users"], "n_events": summary["n_events"],
                      "phase_seconds": summary.get("phase_seconds")}))  # fmt: skip


def _run(src: Path, lake: Path, work: Path, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--lake", str(lake), "--work", str(work)]
    load = os.getloadavg()
    t = time.monotonic()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"stopped_after_seconds": round(time.monotonic() - t, 1), "load_before": load, "load_after": os.getloadavg()}
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_seconds": round(time.monotonic() - t, 1),
            "load_before": load, "load_after": os.getloadavg()}  # fmt: skip


def _compare(lake: Path, new_version: str, old_version: str) -> dict:
    """Every column of the two features versions: largest float gap, integers and nulls exact."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as ds

    def read(version: str):
        table = ds.dataset(str(lake / "features" / version), format="parquet", exclude_invalid_files=True).to_table()
        cols = {c: (table[c].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()) if pa.types.is_timestamp(table[c].type)
                    else table[c]) for c in table.column_names}  # fmt: skip
        return pa.table(cols).sort_by("user_key")

    new, old = read(new_version), read(old_version)
    assert new["user_key"].equals(old["user_key"]), "different users"
    worst = 0.0
    for c in new.column_names:
        a, b = new[c].to_numpy(zero_copy_only=False), old[c].to_numpy(zero_copy_only=False)
        assert (new[c].is_null().to_numpy(zero_copy_only=False) == old[c].is_null().to_numpy(zero_copy_only=False)).all(), c
        if pa.types.is_floating(old[c].type):
            gap = np.abs(a.astype(float) - b.astype(float))
            rel = gap / np.maximum(np.abs(b.astype(float)), 1.0)
            assert np.nanmax(rel, initial=0.0) <= 1e-12, c
            worst = max(worst, float(np.nanmax(rel, initial=0.0)))
        elif c != "user_key":
            assert new[c].equals(old[c].cast(new[c].type)), c
    return {"users": new.num_rows, "largest_relative_float_gap": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-src", type=Path, help="a checkout of main with the Spark column job")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/features-bench"))
    parser.add_argument("--timeout", type=float, default=3600.0, help="stop the baseline after this many seconds")
    parser.add_argument("--label", default="", help="what the lake is, for the results")
    args = parser.parse_args()
    if args.child:
        child(args.lake, args.work)
        return

    lake = args.scratch / "lake"
    shutil.rmtree(args.scratch, ignore_errors=True)
    args.scratch.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(args.lake), str(lake)], check=True)  # hard links: no bytes copied
    for derived in ("features", "aggregates", "category_prices"):
        shutil.rmtree(lake / derived, ignore_errors=True)
    result: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, "
                    f"{os.cpu_count()} cores", "lake": args.label or str(args.lake)}  # fmt: skip
    result["timelines"] = _run(REPO, lake, args.scratch / "work-new", args.timeout)
    print(json.dumps(result), flush=True)
    if args.baseline_src:
        result["spark_job"] = _run(args.baseline_src, lake, args.scratch / "work-old", args.timeout)
        print(json.dumps(result), flush=True)
        if "seconds" in result["spark_job"]:
            result["equal"] = _compare(lake, result["timelines"]["version"], result["spark_job"]["version"])
    (HERE / "results" / "features.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(args.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
