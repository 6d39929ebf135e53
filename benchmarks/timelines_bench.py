"""Timelines benchmark: what the timeline build adds to ingest, features from timelines against the
Spark features job (its peer, same lake, same session), and merged-on-read against compacted reads.

A generated month of about ``--events`` events is cut into ``--runs`` files of consecutive lines and
ingested as that many runs (daily ingests), so each bucket's timeline is ``--runs`` sorted runs until
compacted. Figures go to ``benchmarks/results/timelines.json`` and ``timelines.md``.

    nice -n 10 python benchmarks/timelines_bench.py --events 2000000 --runs 8

``--ingest-cost`` answers only what the timelines add to ingest: the same runs ingested into three
lakes, run by run in turn (so a shared machine's load falls on all three alike): without timelines
(the chunk tasks stage nothing, no build), with today's build (chunk tasks stage each group of
their events, then one sort task per group), and with the build as it was before (a separate pass
re-reading the run's event files, cutting them by group, then the same sort). Figures go to
``benchmarks/results/timelines_ingest.json`` and ``timelines_ingest.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
KEY = "benchmark-key-not-secret-0123456789abcdef"  # 32 bytes at least, as every key


def split_month(data_dir: Path, events: int, runs: int) -> list[Path]:
    """A generated month (cached), cut into ``runs`` plain files of consecutive lines."""
    from etl.generate import generate, users_for_events

    month = data_dir / f"events-{events}"
    if not (month / "_truth" / "users.csv").exists():
        shutil.rmtree(month, ignore_errors=True)
        generate(month, users=users_for_events(events, 1), months=1, seed=7)
    (source,) = sorted(month.glob("*.csv.gz"))
    with gzip.open(source, "rt") as fh:
        header, lines = fh.readline(), fh.readlines()
    pieces = []
    for i, part in enumerate(np.array_split(np.arange(len(lines)), runs)):
        path = data_dir / f"split-{events}-{runs}" / f"part-{i:02d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + "".join(lines[part[0] : part[-1] + 1]))
        pieces.append(path)
    return pieces


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.monotonic()
    out = fn(*args, **kwargs)
    return round(time.monotonic() - t, 2), out


def _count(_buckets: list[int], timeline: pa.Table) -> pa.Table:
    return pa.table({"rows": pa.array([timeline.num_rows], pa.int64())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--features-only", action="store_true",
                        help="Re-time only the features (the published job vs compacted timelines) on the lake a full run left.")
    parser.add_argument("--ingest-cost", action="store_true",
                        help="Time only ingest: without timelines, with today's build, with the re-reading build.")
    parser.add_argument("--no-rereading", action="store_true",
                        help="With --ingest-cost: leave out the re-reading build (two lakes, not three).")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "shoplens-bench")
    args = parser.parse_args()

    from services.core.catalog import FEATURES
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.core.spark import get_spark
    from services.core.timelines import compact_timelines, run_on_buckets
    from services.jobs import ingest
    from services.jobs.features import features_from_timelines, run_features

    ingest.compact_if_due = lambda *_a, **_k: None  # measured below: reads of uncompacted runs first
    root = args.data_dir / f"lake-{args.events}-{args.runs}"
    if args.features_only:
        rerun_features(root)
        return
    files = split_month(args.data_dir, args.events, args.runs)
    if args.ingest_cost:
        ingest_cost(args, files)
        return
    shutil.rmtree(root, ignore_errors=True)
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=KEY,
                        spark_master="local[2]", spark_driver_memory="4g")  # fmt: skip
    lake = open_lake(settings)
    spark = get_spark(settings, "timelines-bench")
    ingests = [ingest.ingest_files(spark, lake, [f], settings.key_bytes) for f in files]
    accepted = sum(s["rows_accepted"] for s in ingests)
    ingest_s = sum(s["duration_seconds"] for s in ingests)
    build_s = sum(s["phase_seconds"].get("timelines", 0.0) for s in ingests)

    job_s, job = _timed(run_features, spark, lake, full=True)
    merged_s, merged = _timed(features_from_timelines, spark, lake, "bench/features-merged")
    read_merged_s, _ = _timed(run_on_buckets, spark, lake, _count, pa.schema([("rows", pa.int64())]))
    compact_s, _ = _timed(compact_timelines, spark, lake)
    read_compact_s, _ = _timed(run_on_buckets, spark, lake, _count, pa.schema([("rows", pa.int64())]))
    compacted_s, compacted = _timed(features_from_timelines, spark, lake, "bench/features-compacted")
    spark.stop()
    assert merged["n_users"] == compacted["n_users"] == job["n_users"]

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, 2 cores (shared)",
        "python": sys.version.split()[0], "events_generated": args.events, "events_accepted": accepted,
        "runs": args.runs, "users": job["n_users"],
        "ingest_seconds": round(ingest_s, 2), "timeline_build_seconds": round(build_s, 2),
        "timeline_build_share_of_ingest": round(build_s / (ingest_s - build_s), 3),
        "features_job_seconds": job_s, "features_from_timelines_seconds": merged_s,
        "features_from_compacted_timelines_seconds": compacted_s,
        "read_all_buckets_merged_seconds": read_merged_s, "read_all_buckets_compacted_seconds": read_compact_s,
        "compaction_seconds": compact_s, "features_version": job["version"], "features_dataset": FEATURES,
    }  # fmt: skip
    out = HERE / "results"
    (out / "timelines.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Timelines benchmark", "",
        f"{result['when']}; {result['machine']}; {accepted:,} events accepted ({args.events:,} generated, one month)"
        f" ingested as {args.runs} runs; {result['users']:,} users; `nice -n 10`, other jobs sharing the cores.", "",
        "| what | seconds |", "|---|---|",
        f"| ingest, {args.runs} runs (timeline build included) | {ingest_s:.1f} |",
        f"| of which the timeline build | {build_s:.1f} (+{100 * result['timeline_build_share_of_ingest']:.0f}% on the rest) |",
        f"| features job, published (`run_features --full`: timelines since the Spark columns were retired) | {job_s:.1f} |",
        f"| features from timelines, {args.runs} runs merged on read | {merged_s:.1f} |",
        f"| features from timelines, compacted | {compacted_s:.1f} |",
        f"| read every bucket, {args.runs} runs merged | {read_merged_s:.1f} |",
        f"| read every bucket, compacted | {read_compact_s:.1f} |",
        f"| compaction | {compact_s:.1f} |", "",
    ]  # fmt: skip
    (out / "timelines.md").write_text("\n".join(md))
    print(json.dumps(result, indent=2))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ingest_cost(args: argparse.Namespace, files: list[Path]) -> None:
    """Ingest time per run without timelines, with the build in the chunk tasks, with the re-reading build."""
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.core.spark import get_spark
    from services.core.timelines import build_timelines, sort_groups, timeline_groups
    from services.jobs import ingest

    def rereading(spark, store, scratch, out, expected):  # the build before: a pass over the event files
        events = store.list(scratch.rsplit("/", 1)[0] + "/events")
        return build_timelines(spark, store, events, out, scratch, expected)

    variants = {  # (timeline groups staged by the chunk tasks, the build after the copies are dropped)
        "none": (lambda *_a: 0, lambda *_a: {}),
        "chunk_tasks": (timeline_groups, sort_groups),
        "rereading": (lambda *_a: 0, rereading),
    }
    if args.no_rereading:
        del variants["rereading"]
    ingest.compact_if_due = lambda *_a, **_k: None
    base = args.data_dir / f"ingest-cost-{args.events}-{args.runs}"
    shutil.rmtree(base, ignore_errors=True)
    lakes, spark = {}, None
    for name in variants:
        settings = Settings(lake=str(base / name / "lake"), work_dir=base / name / "work", pseudonym_key=KEY,
                            spark_master="local[2]", spark_driver_memory="4g")  # fmt: skip
        lakes[name] = (open_lake(settings), settings)
        spark = spark or get_spark(settings, "timelines-ingest-bench")
    load_before = _load()
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for i, f in enumerate(files):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in order:
            ingest.timeline_groups, ingest.sort_groups = variants[name]
            lake, settings = lakes[name]
            s = ingest.ingest_files(spark, lake, [f], settings.key_bytes)
            runs[name].append({"seconds": s["duration_seconds"], "timelines": s["phase_seconds"].get("timelines", 0.0),
                               "classify_and_write": s["phase_seconds"]["classify_and_write"],
                               "accepted": s["rows_accepted"]})  # fmt: skip
            print(name, i, runs[name][-1], flush=True)
    load_after = _load()
    spark.stop()
    accepted = {name: sum(r["accepted"] for r in rs) for name, rs in runs.items()}
    assert len(set(accepted.values())) == 1, accepted
    total = {name: round(sum(r["seconds"] for r in rs), 2) for name, rs in runs.items()}
    phase = {name: {k: round(sum(r[k] for r in rs), 2) for k in ("timelines", "classify_and_write")}
             for name, rs in runs.items()}  # fmt: skip
    added = {name: round(total[name] / total["none"] - 1, 3) for name in variants if name != "none"}
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, 2 cores (shared)",
        "events_generated": args.events, "events_accepted": accepted["none"], "runs": args.runs,
        "load_average_before": load_before, "load_average_after": load_after,
        "ingest_seconds": total, "phase_seconds": phase, "added_to_ingest": added, "per_run": runs,
    }  # fmt: skip
    out = HERE / "results"
    (out / "timelines_ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    labels = {"none": "no timelines", "chunk_tasks": "timelines staged by the chunk tasks (today)",
              "rereading": "timelines re-read from the event files (before)"}  # fmt: skip
    md = [
        "# What the timelines add to ingest", "",
        f"{result['when']}; {result['machine']}; {accepted['none']:,} events accepted ({args.events:,} generated,"
        f" one month) ingested as {args.runs} runs into three lakes, run by run in turn; `nice -n 10`; load average"
        f" (1, 5, 15 min) {load_before} before, {load_after} after: the machine was shared with other jobs.", "",
        "| ingest | seconds | of which chunk tasks | of which the timeline step | added to ingest |", "|---|---|---|---|---|",
        *(f"| {labels[n]} | {total[n]:.1f} | {phase[n]['classify_and_write']:.1f} | {phase[n]['timelines']:.1f} |"
          f" {'' if n == 'none' else f'+{100 * added[n]:.0f}%'} |" for n in variants),
        "",
    ]  # fmt: skip
    (out / "timelines_ingest.md").write_text("\n".join(md))
    shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result, indent=2))


def rerun_features(root: Path) -> None:
    """The published features job against unpublished features from compacted timelines, alternated twice, on
    the lake a full run left (both are the timeline implementation since the Spark columns were retired)."""
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.core.spark import get_spark
    from services.jobs.features import features_from_timelines, run_features

    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=KEY,
                        spark_master="local[2]", spark_driver_memory="4g")  # fmt: skip
    lake = open_lake(settings)
    spark = get_spark(settings, "timelines-bench")
    times: dict[str, list[float]] = {"features_job": [], "timelines_compacted": []}
    for i in range(2):
        times["features_job"].append(_timed(run_features, spark, lake, full=True)[0])
        times["timelines_compacted"].append(_timed(features_from_timelines, spark, lake, f"bench/again-{i}")[0])
    spark.stop()
    path = HERE / "results" / "timelines.json"
    result = json.loads(path.read_text())
    result["features_rerun"] = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": times}
    path.write_text(json.dumps(result, indent=2) + "\n")
    md = HERE / "results" / "timelines.md"
    md.write_text(md.read_text() + (
        f"\nFeatures re-timed on the same lake, compacted ({result['features_rerun']['when']}, alternating, two rounds;"
        " other jobs shared the cores): "
        f"features job {times['features_job']} s, from compacted timelines {times['timelines_compacted']} s.\n"))
    print(json.dumps(times))


if __name__ == "__main__":
    main()
