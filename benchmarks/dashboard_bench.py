"""Dashboard benchmark: how fast each page opens on a lake with 3 million scored users.

Builds (once, cached under ``--data``) a contract-shaped lake with ``--users`` scored users: the
segments and features Parquet tables plus the views (tests/dashboard/fixtures.py at scale; the model
is fitted on 20,000 users and the light scorer assigns everyone). Then, per page:

- ``load_cold_s``: the page's data reads with empty caches (what the first visitor waits for);
- ``render_cold_s``: a full AppTest run of the page with empty caches (reads + layout + charts);
- ``render_warm_s``: the same run again (caches filled: what every later visit costs);
- for the lookup page the run includes submitting the id of the *last* scored user in the file (the
  worst case for the key scan; reads only the user_key column per row group, then one row group);
- for the export page, ``export_csv_s`` is the CSV of the largest segment, built on click.

Figures go to ``benchmarks/results/dashboard.json`` and ``dashboard.md``. Goal: every page usable
within 3 s. Run: ``python benchmarks/dashboard_bench.py [--users 3000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
KEY = "benchmark-key-not-secret-0123456789"
GOAL_S = 3.0


def build(path: Path, users: int) -> dict:
    """The lake (cached: rebuilt only if missing) and facts about it."""
    from threadpoolctl import threadpool_limits

    from tests.dashboard.fixtures import build_lake

    done = path / "_bench.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.monotonic()
    with threadpool_limits(limits=1):
        lake = build_lake(path / "lake", KEY.encode(), n_users=users, fit_users=min(users, 20_000), seed=1)
    facts = {
        "users": users, "build_seconds": round(time.monotonic() - t0, 1), "lake": lake.uri,
        "known_id": lake.raw_ids["known"], "largest_segment": lake.summary.iloc[0]["segment_name"],
        "largest_segment_id": None if lake.summary.iloc[0]["segment_id"] is None else int(lake.summary.iloc[0]["segment_id"]),
        "largest_segment_users": int(lake.summary.iloc[0]["users"]),
        "segments_bytes": sum(p.stat().st_size for p in (path / "lake" / "segments").rglob("*.parquet")),
        "features_bytes": sum(p.stat().st_size for p in (path / "lake" / "features").rglob("*.parquet")),
    }  # fmt: skip
    done.write_text(json.dumps(facts, indent=2))
    return facts


def last_scored_id(lake: str) -> str:
    """The raw id of the last scored user in the segments file: the worst case for a key scan."""
    import pyarrow.parquet as pq

    root = Path(lake) / "segments"
    version = json.loads((root / "_current.json").read_text())["version"]
    seg = pq.read_table(next((root / version).glob("*.parquet")), columns=["segment_id"]).column(0)
    last = max(i for i in range(len(seg) - 1, len(seg) - 1000, -1) if seg[i].is_valid)
    return str(500_000_000 + last)  # tests/dashboard/fixtures.py numbers users from 500,000,000 in row order


def _clear() -> None:
    import streamlit as st

    from services.core.settings import get_settings

    st.cache_data.clear()
    st.cache_resource.clear()
    get_settings.cache_clear()


def _load(page: str, uri: str, facts: dict) -> None:
    """The reads a page makes, called directly (no layout)."""
    from dashboard import data
    from etl.pseudonymize import pseudonymize
    from services.core.catalog import OVERVIEW_VIEWS, SEGMENT_VIEWS

    p = data.pointers(uri)
    overview, views = p.version(OVERVIEW_VIEWS), p.version(SEGMENT_VIEWS)
    if page in ("overview", "segments", "export"):
        data.view(uri, SEGMENT_VIEWS, views, "segment_summary")
    if page == "overview":
        for name in ("kpi_daily", "runs"):
            data.view(uri, OVERVIEW_VIEWS, overview, name)
        data.document(uri, OVERVIEW_VIEWS, overview, "freshness.json")
    if page in ("segments", "lookup", "model"):
        data.model_docs(uri, p.model)
    if page == "segments":
        for name in ("pca_sample", "segment_flow"):
            data.view(uri, SEGMENT_VIEWS, views, name)
    if page == "model":
        data.model_history(uri, p.model)
    if page == "lookup":
        model, _ = data.model_docs(uri, p.model)
        data.lookup(uri, p.segments, p.features, pseudonymize(facts["known_id"], KEY.encode()),
                    tuple(model.features))  # fmt: skip


def _render(page: str, facts: dict) -> float:
    from streamlit.testing.v1 import AppTest

    t0 = time.perf_counter()
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py").run()
    if page == "lookup":
        at.text_input[0].input(facts["known_id"])
        at.button[0].click().run()
        assert [m for m in at.metric if m.label == "Segment"], "lookup did not find the user"
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")
    return elapsed


def measure(facts: dict, repeat: int) -> list[dict]:
    from dashboard import data

    uri = facts["lake"]
    rows = []
    for page in ("overview", "segments", "lookup", "model", "export"):
        loads, colds, warms = [], [], []
        for _ in range(repeat):
            _clear()
            t0 = time.perf_counter()
            _load(page, uri, facts)
            loads.append(time.perf_counter() - t0)
            _clear()
            colds.append(_render(page, facts))
            warms.append(_render(page, facts))
        row = {"page": page, "load_cold_s": round(min(loads), 3), "render_cold_s": round(min(colds), 3),
               "render_cold_max_s": round(max(colds), 3), "render_warm_s": round(min(warms), 3)}  # fmt: skip
        if page == "export":
            p = data.pointers(uri)
            t0 = time.perf_counter()
            csv = data.segment_members_csv(uri, p.segments, facts["largest_segment_id"])
            row["export_csv_s"] = round(time.perf_counter() - t0, 3)
            row["export_rows"] = csv.count(b"\n") - 1
            row["export_bytes"] = len(csv)
        row["within_goal"] = row["render_cold_max_s"] <= GOAL_S
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def report(facts: dict, rows: list[dict], out: Path, repeat: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "dashboard", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "goal_seconds": GOAL_S, "repeat": repeat, "lake": {k: v for k, v in facts.items() if k not in ("known_id", "lake")}, "pages": rows,
    }  # fmt: skip
    (out / "dashboard.json").write_text(json.dumps(meta, indent=2))
    lines = [
        "# Dashboard benchmark", "",
        f"{facts['users']:,} scored users (segments Parquet {facts['segments_bytes'] / 1e6:,.0f} MB, features "
        f"{facts['features_bytes'] / 1e6:,.0f} MB), {os.cpu_count()} CPUs shared, {meta['date']}. "
        f"Goal: each page usable within {GOAL_S:.0f} s. {meta['repeat']} repeats; `python benchmarks/dashboard_bench.py`.", "",
        "| page | data load, cold (s) | page render, cold (s), best / worst | page render, warm (s) | within goal |",
        "|---|---:|---:|---:|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['page']} | {r['load_cold_s']:.2f} | {r['render_cold_s']:.2f} / {r['render_cold_max_s']:.2f} | "
                     f"{r['render_warm_s']:.2f} | "
                     f"{'yes' if r['within_goal'] else 'NO'} |")  # fmt: skip
    ex = next(r for r in rows if r["page"] == "export")
    lines += ["", f"Export of the largest segment ({facts['largest_segment']}, {ex['export_rows']:,} keys, "
              f"{ex['export_bytes'] / 1e6:,.0f} MB CSV) is built when the button is clicked: {ex['export_csv_s']:.2f} s.",
              "", "Lookup = page render + hashing a raw id + finding the last user of the file: only the user_key column "
              "is scanned, row group by row group, then one row group is read (segments, then the model's feature "
              "columns of the features table). Cold = empty Streamlit caches (the OS file cache is warm); "
              "warm = second visit. Render times are AppTest runs of the real page scripts.", ""]  # fmt: skip
    (out / "dashboard.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--data", type=Path, default=REPO / "data" / "bench" / "dashboard")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    os.environ["SHOPLENS_PSEUDONYM_KEY"] = KEY
    data_dir = args.data / f"users-{args.users}"
    facts = build(data_dir, args.users)
    facts["known_id"] = last_scored_id(facts["lake"])
    print(json.dumps(facts), flush=True)
    os.environ["SHOPLENS_LAKE"] = facts["lake"]
    os.environ["SHOPLENS_WORK_DIR"] = str(data_dir / "work")
    rows = measure(facts, args.repeat)
    report(facts, rows, args.out, args.repeat)


if __name__ == "__main__":
    main()
