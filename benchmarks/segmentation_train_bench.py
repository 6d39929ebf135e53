"""Segmentation fit time on a 3-million-user features table (2 cores shared; ``n_threads=1`` as in train).

Setup (not timed): a generated feed's per-user features (Spark-free twin), or ``--features`` (a Parquet
features table, e.g. a lake's), tiled to ``--rows`` users with every user's counts and rates kept and
a small jitter on the continuous columns (so rows are not exact copies). Timed: ``SegmentationModel.fit``
with the production defaults (sample 50k, bootstrap 5, k 3..10) and 35k truncation rows to weigh the
features by (5,000 users x 7 n, the study's size), then assigning every row with the light
scorer (what ``shoplens score`` does). Results: ``benchmarks/results/segmentation_train.{json,md}``.

    python benchmarks/segmentation_train_bench.py --rows 3000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def base_features(path: Path | None, users: int, seed: int) -> pd.DataFrame:
    if path is not None:
        return pd.read_parquet(path)
    from etl.generate import generate
    from etl.lines import read_history
    from etl.local_features import compute_features_local, raw_to_events

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), users=users, start=date(2019, 10, 1), months=2, seed=seed)
        rows = pd.concat([read_history(p).rows for p in sorted(Path(tmp).glob("*.csv.gz"))], ignore_index=True)
    return compute_features_local(raw_to_events(rows))


def tiled(base: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), rows)
    df = base.iloc[idx].reset_index(drop=True)
    for c in ("median_session_duration_s", "price_level", "brand_concentration"):
        if c in df:
            df[c] = df[c] * (1 + rng.normal(0, 0.01, rows))
    df["user_key"] = np.arange(rows).astype(str)
    return df


def truncations(df: pd.DataFrame, users: int, grid: int, seed: int) -> pd.DataFrame:
    """Stand-ins for the study's first-n features (``users`` users x ``grid`` n, as ``shoplens train``
    builds at most): the same users' rows with their continuous columns jittered by 20%."""
    rng = np.random.default_rng(seed + 1)
    part = df.iloc[rng.choice(len(df), users, replace=False)]
    out = pd.concat([part] * grid, ignore_index=True)
    for c in out.columns:
        if c != "user_key" and pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c] * (1 + rng.normal(0, 0.2, len(out)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--features", type=Path, default=None)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    from model.segmentation import LightScorer, SegmentationModel, export_artifact

    df = tiled(base_features(args.features, args.users, args.seed), args.rows, args.seed)
    truncated = truncations(df, 5_000, 7, args.seed)
    load_before = os.getloadavg()[0]
    with threadpool_limits(limits=1):
        t0 = time.perf_counter()
        model = SegmentationModel(min_events=5, n_threads=1).fit(df, truncated=truncated)
        fit_s = time.perf_counter() - t0
        scorer = LightScorer.from_dict(export_artifact(model, "bench", min_events=15))
        t1 = time.perf_counter()
        seg, _ = scorer.predict(df)
        score_s = time.perf_counter() - t1
    report = {
        "meta": {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
                 "cpus": os.cpu_count(), "load_average_1m_before": round(load_before, 2),
                 "load_average_1m_after": round(os.getloadavg()[0], 2), "rows": args.rows,
                 "rows_trained": int(model.n_train_), "k": int(model.k_), "features": list(model.features_)},
        "fit_seconds": round(fit_s, 1),
        "score_all_seconds": round(score_s, 1),
        "scored": int((seg >= 0).sum()),
    }  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "segmentation_train.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["meta"]
    (args.results / "segmentation_train.md").write_text(
        "# Segmentation training on a 3M-user features table\n\n"
        f"{m['rows']:,} users ({m['rows_trained']:,} with >= 5 events trained), k = {m['k']}; one thread "
        f"(`n_threads=1`), {m['cpus']} CPUs shared with other work (1-min load average {m['load_average_1m_before']} "
        f"before, {m['load_average_1m_after']} after), {m['generated_at']}.\n\n"
        "| step | seconds |\n|---|---:|\n"
        f"| `SegmentationModel.fit` (sample 50k, k 3..10, 5 bootstraps, derived rates, feature weights from 35k truncations, surrogate tree) | {report['fit_seconds']} |\n"
        f"| assign every user with the light scorer | {report['score_all_seconds']} |\n\n"
        "The Spark parts of `shoplens train` (features, the first-n truncations of <= 5,000 users, here "
        "stood in for by jittered rows) are not included.\n"
    )  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
