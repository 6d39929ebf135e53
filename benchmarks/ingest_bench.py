"""Ingestion benchmark: shoplens on Spark against pandas and DuckDB baselines, in the same run.

Each tool runs as its own process on the same generated month (one ``.csv.gz``), and the harness
samples the resident memory of the whole process tree (the Spark JVM included) to report the peak.
Figures go to ``benchmarks/results/ingest.json`` and ``ingest.md``.

    python benchmarks/ingest_bench.py --events 5000000 20000000
    python benchmarks/ingest_bench.py --events 42000000 --tools spark   # one real-size month
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

from etl.generate import generate, users_for_events

HERE = Path(__file__).resolve().parent
KEY = "benchmark-key-not-secret-0123456789abcdef"
TOOLS = ("spark", "pandas", "duckdb")


def dataset(data_dir: Path, events: int, seed: int = 7) -> list[Path]:
    """A generated one-month file of about ``events`` events, cached between runs."""
    target = data_dir / f"events-{events}"
    done = target / "_truth" / "users.csv"
    if not done.exists():
        shutil.rmtree(target, ignore_errors=True)
        print(f"generating ~{events:,} events into {target}", flush=True)
        generate(target, users=users_for_events(events, 1), months=1, seed=seed)
    return sorted(target.glob("*.csv.gz"))


def command(tool: str, files: list[Path], work: Path) -> list[str]:
    if tool == "spark":
        return [
            sys.executable,
            "-m",
            "services",
            "ingest",
            "--json",
            "--lake",
            str(work / "lake"),
            *map(str, files),
        ]
    script = HERE / f"baseline_{tool}.py"
    return [sys.executable, str(script), *map(str, files), "--out", str(work / "out"), "--key", KEY]


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, float | str]:
    """Wall time and peak resident memory of ``cmd`` and all its children."""
    started = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {err[-2000:]}")
    return {"wall_seconds": round(wall, 2), "peak_rss_mb": round(peak / 2**20), "stdout": out}


def run(sizes: list[int], tools: list[str], data_dir: Path, results: Path) -> list[dict]:
    env = {
        **os.environ,
        "SHOPLENS_PSEUDONYM_KEY": KEY,
        "SHOPLENS_LOG_LEVEL": "WARNING",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    rows = []
    for events in sizes:
        files = dataset(data_dir, events)
        for tool in tools:
            with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-", dir=data_dir) as tmp:
                env["SHOPLENS_WORK_DIR"] = str(Path(tmp) / "work")
                print(f"{tool}: {events:,} events ...", flush=True)
                m = measure(command(tool, files, Path(tmp)), env)
                row = {"tool": tool, "target_events": events, **{k: v for k, v in m.items() if k != "stdout"}}
                result = json.loads(str(m["stdout"]).strip().splitlines()[-1])
                row["rows_read"] = result["rows_read"]
                row["rows_accepted"] = result["rows_accepted"]
                if tool == "spark":
                    row["in_job_seconds"] = result["duration_seconds"]
                    row["phase_seconds"] = result["phase_seconds"]
                row["events_per_second"] = round(row["rows_read"] / row["wall_seconds"])
                print(f"  {row}", flush=True)
                rows.append(row)
    write_results(rows, results)
    return rows


def write_results(rows: list[dict], results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
    }
    previous = json.loads((results / "ingest.json").read_text()) if (results / "ingest.json").exists() else {}
    merged = {(r["tool"], r["target_events"]): r for r in previous.get("rows", [])}
    merged.update({(r["tool"], r["target_events"]): r for r in rows})
    ordered = sorted(merged.values(), key=lambda r: (r["target_events"], TOOLS.index(r["tool"])))
    (results / "ingest.json").write_text(json.dumps({"meta": meta, "rows": ordered}, indent=2))
    lines = [
        "# Ingestion benchmark",
        "",
        f"{meta['cpus']} cores, {meta['memory_gb']} GiB, Python {meta['python']}, run {meta['when']}. "
        "Wall time is the whole process (Spark includes JVM start-up); peak RSS covers the process tree.",
        "",
        "| events | tool | wall s | events/s | peak RSS MB | speed-up vs pandas |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in ordered:
        base = merged.get(("pandas", r["target_events"]))
        speedup = f"{base['wall_seconds'] / r['wall_seconds']:.2f}x" if base else "n/a"
        lines.append(
            f"| {r['rows_read']:,} | {r['tool']} | {r['wall_seconds']:.1f} | {r['events_per_second']:,} "
            f"| {r['peak_rss_mb']:,} | {speedup} |"
        )
    phases = [r for r in ordered if r.get("phase_seconds")]
    if phases:
        lines += ["", "Where shoplens's time goes (seconds per phase of the run summary; the rest of the wall time "
                  "is process and JVM start-up):", ""]
        for r in phases:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r["phase_seconds"].items())
            lines.append(f"- {r['rows_read']:,} events: {parts}")
    (results / "ingest.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, nargs="+", default=[5_000_000, 20_000_000])
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    run(args.events, args.tools, args.data_dir.resolve(), args.results)


if __name__ == "__main__":
    main()
