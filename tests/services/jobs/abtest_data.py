"""Synthetic experiment files with known truth (used by the abtest tests and benchmarks/abtest_bench.py).

One row per user: ``user_id`` (9-digit, like REES46), ``variant``, ``segment``, ``assigned_at``,
``purchased`` (0/1), ``revenue`` and its pre-period covariate ``pre_revenue``. Optionally appends
bad rows, one kind per rejection reason, whose counts are returned so tests can check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SEGMENTS = ("loyal", "new", "bargain")


@dataclass
class ExperimentFile:
    path: Path
    frame: pd.DataFrame  # every row written, in file order (text cells as written)
    bad: dict[str, int] = field(default_factory=dict)  # reason -> rows expected to be rejected


def experiment_frame(
    n: int,
    seed: int = 0,
    variants: tuple[str, ...] = ("control", "promo"),
    split: tuple[float, ...] | None = None,
    rate: float = 0.1,
    conversion_lift: float = 0.0,
    first_id: int = 100_000_000,
) -> pd.DataFrame:
    """``n`` clean users; the last variant converts ``conversion_lift`` (relative) more often."""
    rng = np.random.default_rng(seed)
    p = np.asarray(split if split is not None else [1.0] * len(variants), dtype=float)
    arm = rng.choice(len(variants), size=n, p=p / p.sum())
    arm[0] = 0  # the first row is the control, the default control of an analysis
    lift = np.where(arm == len(variants) - 1, 1.0 + conversion_lift, 1.0)
    pre = rng.gamma(0.6, 40.0, n)
    bought = rng.random(n) < rate * lift
    revenue = np.where(bought, np.round(0.6 * pre + rng.gamma(2.0, 20.0, n), 2), 0.0)
    seconds = rng.integers(0, 7 * 86_400, n)
    return pd.DataFrame({
        "user_id": (first_id + rng.permutation(n)).astype(str),
        "variant": np.asarray(variants)[arm],
        "segment": np.asarray(SEGMENTS)[rng.integers(0, len(SEGMENTS), n)],
        "assigned_at": (pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(seconds, unit="s")).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "purchased": bought.astype(int).astype(str),
        "revenue": revenue.astype(str),
        "pre_revenue": np.round(pre, 2).astype(str),
    })  # fmt: skip


def with_bad_rows(clean: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Append rows that break one rule each; returns the frame and the rejected rows per reason."""
    a, b, c = (clean.iloc[i].to_dict() for i in (1, 2, 3))  # row 0 stays clean: the control comes first
    other = "promo" if a["variant"] != "promo" else "control"
    rows = [
        {**a, "variant": other},  # a in two variants: both of a's rows go
        {**b},  # b repeated in the same variant: the repeat goes
        {**b, "revenue": "12"},  # and another repeat
        {**c, "user_id": "999000001", "variant": ""},  # no variant
        {**c, "user_id": "", "purchased": "1"},  # no user id
        {**c, "user_id": "999000002", "revenue": "n/a"},  # unparseable
        {**c, "user_id": "999000003", "purchased": ""},  # blank metric: unparseable
        {**c, "user_id": "999000004", "assigned_at": "yesterday"},  # bad time: unparseable
    ]
    bad = {"conflicting_variant": 2, "duplicate_user": 2, "missing_variant": 1, "missing_user_id": 1,
           "unparseable_value": 3}  # fmt: skip
    return pd.concat([clean, pd.DataFrame(rows)], ignore_index=True), bad


def write_experiment(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as CSV (every cell text) or Parquet (typed where the text allows) by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        typed = frame.assign(
            purchased=pd.to_numeric(frame["purchased"], errors="coerce"),
            revenue=pd.to_numeric(frame["revenue"], errors="coerce"),
            pre_revenue=pd.to_numeric(frame["pre_revenue"], errors="coerce"),
        )
        pq.write_table(pa.Table.from_pandas(typed, preserve_index=False), path)
    else:
        table = pa.Table.from_pandas(frame.astype(str), preserve_index=False)
        pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))
    return path


def experiment_file(path: Path, n: int, seed: int = 0, bad_rows: bool = True, **kw) -> ExperimentFile:
    frame = experiment_frame(n, seed, **kw)
    bad: dict[str, int] = {}
    if bad_rows:
        frame, bad = with_bad_rows(frame)
    return ExperimentFile(write_experiment(path, frame), frame, bad)
