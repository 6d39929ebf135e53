"""The study's scale: seven generated months at real monthly volumes (about 411M events), ingested one
month at a time as the watcher would, then ``describe`` and every stage of ``shoplens run``, each measured
for wall time, CPU time and peak memory of its whole process tree. Against issue 31's goal of 90 minutes
in all on 2 cores.

    shoplens generate --users 2930000 --months 7 --seed 7 --out DATA/raw
    flock /work/bench.lock python benchmarks/scale_bench.py --raw DATA/raw --root DATA [--label NAME]

``--root`` receives ``lake/``, ``work/`` and ``reports/`` (kept, so a later run can start from the lake
with ``--skip-ingest``). One object per step is appended to ``benchmarks/results/scale.jsonl`` as it
finishes, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stage_meter import bench_env, metered_command, run_stages  # noqa: E402

KEY = "scale-bench-key-0123456789abcdef0123456789abcdef"


def _record(run: str, label: str, step: str, figures: dict[str, Any]) -> None:
    row = {"run": run, "label": label, "when": datetime.now(UTC).isoformat(timespec="seconds"), "step": step,
           "load": [round(x, 1) for x in os.getloadavg()], **figures}  # fmt: skip
    with (HERE / "results" / "scale.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _run_phases(lake: Path) -> dict[str, Any]:
    """The newest ingest run's events and seconds per phase, from its run record (where the timeline
    build's share of an ingest is read)."""
    summary = json.loads(max((lake / "runs").glob("*.json")).read_text())
    return {"rows_accepted": summary["rows_accepted"], "phase_s": summary["phase_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw", type=Path)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--label", default="2 cores, local")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--stages", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages:
        run_stages()
        return
    if args.root is None or (args.raw is None and not args.skip_ingest):
        parser.error("--root is required, and --raw unless --skip-ingest")
    root = args.root.resolve()
    env = bench_env(HERE.parent, root, SHOPLENS_PSEUDONYM_KEY=KEY)
    run = uuid.uuid4().hex[:8]
    shoplens = [sys.executable, "-m", "services"]
    if not args.skip_ingest:
        for month in sorted(args.raw.resolve().glob("*.csv.gz"), key=lambda p: p.stat().st_mtime):
            figures = metered_command([*shoplens, "ingest", str(month)], env=env, cwd=root,
                                      stdout=subprocess.DEVNULL)  # fmt: skip
            _record(run, args.label, f"ingest {month.name}", {**figures, **_run_phases(root / "lake")})
    figures = metered_command([*shoplens, "describe", "--out", str(root / "reports")], env=env, cwd=root,
                              stdout=subprocess.DEVNULL)  # fmt: skip
    _record(run, args.label, "describe", figures)
    with subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--stages"], env=env, cwd=root,
                          stdout=subprocess.PIPE, text=True) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                stage = json.loads(line)
                _record(run, args.label, f"run {stage.pop('stage')}", stage)
    if proc.returncode:
        raise SystemExit(f"shoplens run's stages failed (exit {proc.returncode})")


if __name__ == "__main__":
    main()
