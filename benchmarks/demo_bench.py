"""The demo's time, stage by stage: what ``DEMO_DASHBOARD=0 ./setup_project.sh demo`` runs after install
(generate 2 months for 20,000 users, ingest, describe, train (which computes the features first),
``shoplens run``), each command in its own process as the script runs it, ``shoplens run``'s stages
timed one by one in one process (one Spark session, as the CLI does; benchmarks/stage_meter.py). Against the issue's goal of 90 s on 2 cores.

    flock /work/bench.lock nice -n 10 python benchmarks/demo_bench.py [--src DIR] [--label NAME]

``--src`` is the tree whose code runs (default: this one; a checkout of main for today's figure).
Figures are appended to ``benchmarks/results/demo.jsonl`` (one object per run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stage_meter import bench_env, run_stages  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=HERE.parent)
    parser.add_argument("--label", default="this branch")
    parser.add_argument("--stages", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages:
        run_stages()
        return
    root = Path(tempfile.mkdtemp(prefix="demo-bench-"))
    env = bench_env(args.src, root, SHOPLENS_DEMO="1")
    incoming = root / "incoming"
    steps = [
        ("generate", ["generate", "--users", "20000", "--start", "2019-10-01", "--months", "2", "--seed", "42",
                      "--dirty-rate", "0.002", "--out", str(incoming)]),
        ("ingest", ["ingest", "GLOB"]),
        ("describe", ["describe", "--out", str(root / "reports")]),
        ("train", ["train", "--truth", str(incoming / "_truth" / "users.csv")]),
    ]
    result: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "label": args.label,
                    "load_before": os.getloadavg(), "commands": {}}  # fmt: skip
    for name, cmd in steps:
        if cmd[-1] == "GLOB":
            cmd = [*cmd[:-1], *map(str, sorted(incoming.glob("*.csv.gz")))]
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "services", *cmd], env=env, check=True, capture_output=True, cwd=root)
        result["commands"][name] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stages"], env=env, check=True,
                          capture_output=True, text=True, cwd=root)  # fmt: skip
    result["commands"]["run"] = round(time.monotonic() - t, 1)
    stages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    result["run_stages"] = {s["stage"]: s["wall_s"] for s in stages}
    result["run_peak_rss_mb"] = max(s["peak_rss_mb"] for s in stages)
    result["total_seconds"] = round(sum(result["commands"].values()), 1)
    result["load_after"] = os.getloadavg()
    with (HERE / "results" / "demo.jsonl").open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
