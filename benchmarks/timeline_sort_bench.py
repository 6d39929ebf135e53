"""CPU profile of one timeline sort task (``services.core.timelines.sort_groups``' work on one group), and
proof that a revision's timelines equal today's on it.

A lake's event files are staged the way an ingest's chunk tasks stage them (one piece per chunk: text
and the user and session keys dictionary-encoded, cut by :func:`etl.timeline.by_group`, kept: group 0),
cached under ``--work``. Then, per round, CPU seconds (``time.process_time``: they say where the work
goes on a shared machine) of each part: read the IPC pieces, concatenate, sort and cut into bucket
timelines, write Parquet. With ``--against REV`` the same group is sorted by ``etl/timeline.py`` of
that git revision too, and every bucket's table (schema, dictionaries, rows, order) and Parquet bytes
must be equal. Figures go to ``benchmarks/results/timeline_sort.json``.

    python benchmarks/timeline_sort_bench.py --lake /work/data/month/users-1740000/lake --groups 32 \\
        --work /work/data/timelines/sort --against 533f733
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def stage(lake: Path, groups: int, work: Path) -> list[Path]:
    """Group 0's piece of every chunk of ``lake``'s event files (cached in ``work``)."""
    from etl.timeline import KEY_COLUMNS, TIMELINE_SCHEMA, by_group, ipc_bytes, with_dictionaries

    done = work / "_staged"
    if not done.exists():
        work.mkdir(parents=True, exist_ok=True)
        chunks: dict[int, list[Path]] = defaultdict(list)
        for f in lake.glob("events/*/*/part-*.parquet"):
            chunks[int(re.search(r"part-(\d+)", f.name).group(1))].append(f)
        for c, files in sorted(chunks.items()):
            events = pa.concat_tables([pq.read_table(f, columns=TIMELINE_SCHEMA.names) for f in files])
            for k in KEY_COLUMNS:  # as classify_batch gives them to the chunk task
                events = events.set_column(events.schema.get_field_index(k), k, pc.dictionary_encode(events[k]))
            for g, part in by_group(with_dictionaries(events), groups):
                if g == 0:
                    (work / f"part-{c:05d}.arrow").write_bytes(ipc_bytes(part))
        done.touch()
    return sorted(work.glob("part-*.arrow"))


def _module_at(rev: str):
    """``etl/timeline.py`` as it was at ``rev``, imported under another name."""
    source = subprocess.run(["git", "-C", str(HERE.parent), "show", f"{rev}:etl/timeline.py"],
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"timeline_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"timeline_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--against", help="a git revision whose etl/timeline.py must give equal timelines")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import etl.timeline as today
    from services.core.timelines import write_parquet

    pieces = [p.read_bytes() for p in stage(args.lake, args.groups, args.work)]
    load_before = [round(x, 2) for x in os.getloadavg()]
    modules = {"today": today, **({args.against: _module_at(args.against)} if args.against else {})}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in modules}
    timelines: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, module in modules.items():
            s, t = {}, time.process_time()
            parts = [today.read_ipc(p) for p in pieces]
            s["read_ipc"], t = time.process_time() - t, time.process_time()
            rows = pa.concat_tables(parts, promote_options="permissive").unify_dictionaries()
            s["concat_unify"], t = time.process_time() - t, time.process_time()
            timelines[name] = list(module.timelines_by_bucket(rows))
            s["sort_cut"], t = time.process_time() - t, time.process_time()
            for _, x in timelines[name]:
                write_parquet(x)
            s["parquet"] = time.process_time() - t
            s["total"] = sum(s.values())
            cpu[name].append({k: round(v, 3) for k, v in s.items()})
            print(name, cpu[name][-1], flush=True)
    if args.against:
        for (b, x), (c, y) in zip(timelines["today"], timelines[args.against], strict=True):
            assert b == c and x.schema.equals(y.schema, check_metadata=True) and x.equals(y), b
            assert all(x[n].chunk(0).equals(y[n].chunk(0)) for n in x.column_names), b  # dictionaries too
            assert write_parquet(x) == write_parquet(y), b
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "python": sys.version.split()[0],
        "lake": str(args.lake), "groups": args.groups, "pieces": len(pieces),
        "events": sum(x.num_rows for _, x in timelines["today"]), "buckets": len(timelines["today"]),
        "parquet_bytes": sum(len(write_parquet(x)) for _, x in timelines["today"]),
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_seconds": cpu, "equal_to": args.against,
    }  # fmt: skip
    (HERE / "results" / "timeline_sort.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
