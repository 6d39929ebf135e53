"""Propensity benchmark: training (3M users x 4 cutoffs) and scoring (3M users), with a peer in the same run.

What is measured (``python benchmarks/propensity_bench.py [--users 3000000] [--lake-users 20000]``):

1. **Model side at scale** on a synthetic feature matrix (quick, no lake needed; part 3 times the
   real commands on a real lake): ``users x cutoffs`` rows with every
   ``MODEL_FEATURES`` column, labels from a known logistic rule. Timed: ``compare_models`` (both models,
   the base fitted on at most ``max_train_rows`` rows of the earlier cutoffs, early stopping and
   calibration on the latest training cutoff, full evaluation and permutation importance on the
   validation cutoff = 3M users) and scoring 3M users with the light JSON scorer (numpy). Peer:
   scikit-learn's own ``decision_function`` of the same fitted model on the same matrix (the raw
   scores: the estimator itself applies its trees in numpy, :mod:`model.propensity.trees`).
2. **Training examples** as ``propensity train`` builds them (:func:`services.jobs.propensity.build_examples`)
   on a lake of ``--lake-users`` generated users (two months, ingested once and kept under ``--data-dir``), vs
   a peer computing the same examples with the same functions in one pandas process, without Spark.
3. **The two commands end to end** (``--job-users``, e.g. 3000000): on such a lake, ``propensity
   train`` (examples, both models, report, publish) and then ``propensity score`` (features table +
   recent activity -> scores for every user -> publish) exactly as the CLI runs them. The features
   job runs once before scoring (setup, cached with the lake, not timed).

Results go to benchmarks/results/propensity.{json,md}. The machine is shared: the load average at
start and end is recorded next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from model.propensity import (
    MODEL_FEATURES,
    LightPropensityScorer,
    compare_models,
    design_matrix,
    export_artifact,
)

OUT = Path(__file__).resolve().parent / "results"


def _cutoff_frame(users: int, cutoffs: list[pd.Timestamp], rng: np.random.Generator) -> pd.DataFrame:
    """``users x len(cutoffs)`` rows: float32 feature columns (one contiguous array each, no concat)."""
    n = users * len(cutoffs)
    values = np.empty((len(MODEL_FEATURES), n), dtype=np.float32)
    for j in range(len(MODEL_FEATURES)):
        values[j] = rng.gamma(2.0, 2.0, n)
    df = pd.DataFrame(values.T, columns=list(MODEL_FEATURES), copy=False)  # columns stay views of `values`
    col = {c: values[j] for j, c in enumerate(MODEL_FEATURES)}
    logit = -3.0 + 0.35 * col["carts_7d"] + 0.15 * col["sessions_28d"] - 0.05 * col["days_since_last_event"]
    df["label"] = (rng.random(n, dtype=np.float32) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    df["cutoff"] = pd.DatetimeIndex(cutoffs).repeat(users)
    return df


def synthetic_examples(users: int, cutoffs: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows: ``users`` x ``cutoffs`` weekly cutoffs, validation rows: ``users`` at the next one).

    Feature columns are float32, what :func:`services.jobs.propensity.build_examples` hands to the
    models (it narrows the Spark output to float32 too), built in place: the two frames are all the
    memory the input takes (3M users: 2.8 + 0.7 GB).
    """
    rng = np.random.default_rng(seed)
    days = list(pd.date_range("2019-10-05", periods=cutoffs + 1, freq="7D", tz="UTC"))
    return _cutoff_frame(users, days[:-1], rng), _cutoff_frame(users, days[-1:], rng)


def _rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # Linux: KiB


def model_side(users: int, cutoffs: int, max_train_rows: int) -> dict:
    t = time.monotonic()
    train, val = synthetic_examples(users, cutoffs)
    build = time.monotonic() - t
    rss_input = _rss_gib()
    t = time.monotonic()
    params = {k: {"max_train_rows": max_train_rows} for k in ("logistic", "boosted")}
    comp = compare_models(train, val, params=params)
    fit = time.monotonic() - t
    rss_train = _rss_gib()
    model = comp.best.model
    scorer = LightPropensityScorer(export_artifact(model, "bench"))
    t = time.monotonic()
    scorer.predict_proba(val)
    light = time.monotonic() - t
    t = time.monotonic()
    A = design_matrix(val, model.features_)
    raw_sk = model.base_.decision_function(A)  # scikit-learn's own (the estimator applies the numpy trees)
    sk = time.monotonic() - t
    reports = comp.reports
    importance = importance_peer(scorer, A, val["label"].to_numpy(dtype=int))
    return {
        "users": users, "cutoffs_train": cutoffs, "rows_total": len(train) + len(val), "max_train_rows": max_train_rows,
        "synthetic_matrix_seconds": round(build, 2), "train_compare_seconds": round(fit, 2),
        "shipped": comp.shipped, "roc_auc": {k: r.metrics["roc_auc"] for k, r in reports.items()},
        "ece": {k: r.metrics["ece"] for k, r in reports.items()},
        "calibration": {k: r.metrics["calibration"] for k, r in reports.items()},
        "n_train": {k: r.metrics["n_train"] for k, r in reports.items()},
        "validation_rows": {k: r.metrics["users"] for k, r in reports.items()},
        "boosted_iterations": int(reports["boosted"].model.base_.n_iter_) if "boosted" in reports else None,
        "score_light_seconds": round(light, 2), "score_sklearn_seconds": round(sk, 2),
        "light_vs_sklearn_max_abs_diff": float(np.max(np.abs(scorer.decision(A) - raw_sk))),
        "peak_rss_gib": {"input_frames": rss_input, "after_training": rss_train, "after_scoring": _rss_gib()},
        "importance": importance,
    }  # fmt: skip


def importance_peer(scorer: LightPropensityScorer, A: np.ndarray, y: np.ndarray) -> dict:
    """The shipped model's permutation importance as ``propensity train`` computes it (a shuffled
    column re-applies only the trees that read it) against re-scoring every shuffled copy whole (the
    peer), on the same sample and shuffles: seconds of each and whether the tables are equal."""
    from model.propensity import permutation_importance_auc

    t = time.monotonic()
    whole = permutation_importance_auc(scorer.proba_matrix, A, y, MODEL_FEATURES)
    whole_s = time.monotonic() - t
    t = time.monotonic()
    changed = permutation_importance_auc(scorer.proba_matrix, A, y, MODEL_FEATURES, column_change=scorer.column_change)
    changed_s = time.monotonic() - t
    return {"whole_seconds": round(whole_s, 2), "column_change_seconds": round(changed_s, 2),
            "equal": bool(whole.equals(changed))}  # fmt: skip


KEY = "propensity-bench-key-0123456789abcdef0123456789abcdef"


def _lake(spark, root: Path, users: int):
    """A lake of two generated months for ``users`` users, ingested once (cached under ``root``)."""
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.ingest import ingest_files

    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=KEY)
    lake = open_lake(settings)
    if not lake.committed_run_ids():
        generate(root / "raw", users=users, months=2, seed=4)
        ingest_files(spark, lake, sorted((root / "raw").glob("*.csv.gz")), settings.key_bytes)
    return lake


#: Above this many events the one-process peer is skipped: its frames alone would take most of the memory.
PEER_MAX_EVENTS = 15_000_000


def label_building(lake_users: int, data_dir: Path) -> dict:
    import polars as pl
    import pyarrow.parquet as pq

    from etl.labels import EVENT_COLUMNS, examples_of_users
    from services.core.catalog import EVENTS
    from services.core.settings import Settings
    from services.core.spark import get_spark
    from services.jobs.propensity import PropensityConfig, build_examples, split_examples

    spark = get_spark(Settings(spark_master="local[2]", spark_driver_memory="4g"), "propensity-bench")
    lake = _lake(spark, data_dir / f"users-{lake_users}", lake_users)
    load_before = os.getloadavg()
    t = time.monotonic()
    # what `propensity train` runs before fitting: cutoffs, price references, examples, float32 collect
    got, cuts = build_examples(spark, lake, PropensityConfig())
    spark_s = time.monotonic() - t
    spark.stop()
    keys = lake.committed_files(EVENTS)
    n_events = sum(pq.read_metadata(lake.store.local_path(k)).num_rows for k in keys)
    pandas_s = peer_rows = None
    if n_events <= PEER_MAX_EVENTS:
        # peer: the same per-cutoff computation (the same twins) in one pandas process on the same files
        from etl.activity import as_of_micros
        from etl.labels import key_codes

        t = time.monotonic()
        events = pl.concat([pl.read_parquet(lake.store.read_bytes(k), columns=list(EVENT_COLUMNS)) for k in keys])
        events = events.with_columns(user_key=pl.Series(key_codes(events["user_key"].to_arrow())),
                                     session_key=pl.Series(key_codes(events["session_key"].to_arrow())))  # fmt: skip
        cut_us = [as_of_micros(c) for c in cuts.all]
        peer_rows = examples_of_users(events, cut_us, 7, _pandas_prices(events, cut_us)).num_rows
        pandas_s = round(time.monotonic() - t, 2)
        del events
    t = time.monotonic()
    comp = compare_models(*split_examples(got, cuts.validation))
    quality = {k: {"roc_auc": round(r.metrics["roc_auc"], 4), "ece": round(r.metrics["ece"], 4),
                   "calibration": r.metrics["calibration"], "validation_users": r.metrics["users"]}
               for k, r in comp.reports.items()}  # fmt: skip
    quality_s = time.monotonic() - t
    return {
        "lake_users": lake_users, "events": n_events, "cutoffs": len(cuts.all), "examples": len(got),
        "spark_examples_seconds": round(spark_s, 2), "pandas_examples_seconds": pandas_s,
        "pandas_rows": peer_rows, "load_average_before": load_before,
        "note": "both build every feature, window and label of every cutoff; the peer in one process, no Spark",
        "generator_models": quality, "generator_shipped": comp.shipped, "generator_train_compare_seconds": round(quality_s, 2),
    }  # fmt: skip


def jobs(users: int, data_dir: Path, lake_dir: Path | None = None) -> dict:
    """``propensity train`` then ``propensity score`` on the cached lake of ``users`` users, timed.

    With ``lake_dir`` (``<lake_dir>/lake`` and ``/work``: a copy of an ingested lake, e.g. the generated
    43.8M-event month; its users are counted, ``users`` is ignored) only ``propensity train`` is timed
    when the lake has no features (scoring needs them; the features job is not run there).
    """
    from services.core.catalog import EVENTS, FEATURES
    from services.core.lake import Lake
    from services.core.settings import Settings
    from services.core.spark import get_spark, read_run_dataset
    from services.core.storage import LocalStore
    from services.jobs.features import run_features
    from services.jobs.propensity import PropensityConfig, score, train

    spark = get_spark(Settings(spark_master="local[2]", spark_driver_memory="4g"), "propensity-bench")
    if lake_dir is None:
        lake = _lake(spark, data_dir / f"users-{users}", users)
        if lake.pointer(FEATURES) is None:
            run_features(spark, lake)
    else:
        lake = Lake(LocalStore(lake_dir / "lake"), lake_dir / "work")
        users = read_run_dataset(spark, lake, EVENTS).select("user_key").distinct().count()
    load_before = os.getloadavg()
    t = time.monotonic()
    trained = train(spark, lake, PropensityConfig())
    train_s = time.monotonic() - t
    scored, score_s = None, None
    if lake.pointer(FEATURES) is not None:
        t = time.monotonic()
        scored = score(spark, lake)
        score_s = round(time.monotonic() - t, 1)
    load_after = os.getloadavg()
    spark.stop()
    import pyarrow.parquet as pq

    events = sum(pq.read_metadata(lake.store.local_path(k)).num_rows for k in lake.committed_files(EVENTS))
    return {
        "lake_users": users, "events": events, "load_average_before": load_before, "load_average_after": load_after,
        "train_seconds": round(train_s, 1), "examples_seconds": trained["examples_seconds"],
        "fit_seconds": trained["fit_seconds"], "examples": trained["examples"], "shipped": trained["shipped"],
        "examples_phases": trained["examples_phase_seconds"],
        "models": {k: {"roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"], "ece": m["ece"], "calibration": m["calibration"]}
                   for k, m in trained["models"].items()},
        "score_seconds": score_s, "scored_users": None if scored is None else scored["users"],
        "score_phases": None if scored is None else scored["phase_seconds"],
    }  # fmt: skip


def _pandas_prices(events, cuts: list[int]) -> dict[int, pd.Series]:
    """The category means of etl.labels.cutoff_prices, in pandas (the peer has no Spark)."""
    from etl.local_features import reference_means

    ev = events.select("event_time", "price", "category_id").to_pandas()
    us = ev["event_time"].dt.as_unit("us").astype("int64").to_numpy()
    priced = ev.loc[(ev["price"] > 0) & ev["category_id"].notna()]
    priced = priced.assign(mean_log_price=np.log(priced["price"]))
    out = {}
    for c in cuts:
        means = priced.loc[us[priced.index] <= c].groupby("category_id")["mean_log_price"].mean()
        out[c] = reference_means(means.rename_axis("category_id").reset_index())
    return out


def _model_lines(m: dict) -> list[str]:
    return [
        f"- Training: {m['users']:,} users x {m['cutoffs_train']} training cutoffs + 1 validation cutoff "
        f"({m['rows_total']:,} rows, base fitted on {m['max_train_rows']:,}): **{m['train_compare_seconds']} s** for both "
        f"models with calibration, evaluation and permutation importance on the {m['users']:,}-user validation cutoff "
        "(goal <= 300 s).",
        f"- Scoring {m['users']:,} users with the light JSON scorer: **{m['score_light_seconds']} s** "
        f"(peer: the design matrix and scikit-learn's decision_function {m['score_sklearn_seconds']} s; max |diff| of the raw "
        f"scores {m['light_vs_sklearn_max_abs_diff']:.1e}; "
        "the model step alone: the whole `propensity score` command is timed below with --job-users).",
        f"- Validation ROC AUC {', '.join(f'{k} {v:.3f}' for k, v in m['roc_auc'].items())}; ECE "
        f"{', '.join(f'{k} {v:.4f}' for k, v in m['ece'].items())}; boosted iterations {m['boosted_iterations']} "
        "(synthetic labels: a logistic rule of three columns, not the generator's personas).",
        f"- Permutation importance of the shipped model (20,000 validation rows, 3 shuffles per column): "
        f"**{m['importance']['column_change_seconds']} s** re-applying only the trees that read the shuffled "
        f"column (peer: every shuffled copy scored whole {m['importance']['whole_seconds']} s; tables "
        f"{'equal' if m['importance']['equal'] else 'DIFFERENT'}).",
        f"- Peak RSS of the Python process: {m['peak_rss_gib']['input_frames']} GiB after building the input "
        f"frames, {m['peak_rss_gib']['after_training']} GiB after training, "
        f"{m['peak_rss_gib']['after_scoring']} GiB after scoring.",
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=3_000_000)
    ap.add_argument("--cutoffs", type=int, default=4)
    ap.add_argument("--max-train-rows", type=int, default=1_000_000)
    ap.add_argument("--lake-users", type=int, nargs="+", default=[20_000])
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/shoplens-bench/propensity"))
    ap.add_argument("--skip-spark", action="store_true")
    ap.add_argument("--job-users", type=int, nargs="*", default=[],
                    help="lake sizes on which to time `propensity train` and `propensity score` end to end")
    ap.add_argument("--only-jobs", action="store_true", help="time only the commands (--job-users), nothing else")
    ap.add_argument("--lake-dir", type=Path, help="time the commands on this ingested lake instead (see jobs)")
    ap.add_argument("--name", default="propensity", help="results file name (benchmarks/results/<name>.{json,md})")
    a = ap.parse_args()
    load0 = os.getloadavg()
    res = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "cores": os.cpu_count(),
           "load_average_start": load0}  # fmt: skip
    if not a.only_jobs:
        res["model_side"] = model_side(a.users, a.cutoffs, a.max_train_rows)
    if not a.skip_spark:
        res["label_building"] = [] if a.only_jobs else [label_building(n, a.data_dir) for n in a.lake_users]
        res["jobs"] = [jobs(n, a.data_dir) for n in a.job_users] + ([jobs(0, a.data_dir, a.lake_dir)] if a.lake_dir else [])
    res["load_average_end"] = os.getloadavg()
    OUT.mkdir(exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    lines = [
        "# Propensity benchmark", "",
        f"Run {res['started_at']} on {res['cores']} cores; load average {load0[0]:.1f} at start, "
        f"{res['load_average_end'][0]:.1f} at end (shared machine: figures are under contention when > 2).", "",
    ]  # fmt: skip
    if "model_side" in res:
        lines += _model_lines(res["model_side"])
    for lb in res.get("label_building", []):
        peer = (f"peer, the same computation in one pandas process on the same files: {lb['pandas_examples_seconds']} s"
                if lb["pandas_examples_seconds"] is not None else
                f"no peer (above {PEER_MAX_EVENTS:,} events one pandas process would hold every event)")  # fmt: skip
        lines.append(f"- Training examples (what `propensity train` builds before fitting: cutoffs, category price "
                     f"references, every feature, window and label of {lb['cutoffs']} cutoffs, collected as float32) "
                     f"on an ingested lake of {lb['lake_users']:,} generated users / {lb['events']:,} events: "
                     f"**{lb['spark_examples_seconds']} s** on Spark for {lb['examples']:,} examples; {peer}.")  # fmt: skip
        q = lb["generator_models"]
        lines.append("  Both models trained on those examples (the generator's personas; issue floors: boosted "
                     "ROC AUC >= 0.80 and above logistic, ECE <= 0.03): "
                     + "; ".join(f"{k} ROC AUC {v['roc_auc']:.3f}, ECE {v['ece']:.4f} ({v['calibration'] or 'uncalibrated'})"
                                 for k, v in q.items())
                     + f" on {next(iter(q.values()))['validation_users']:,} validation users; shipped {lb['generator_shipped']}.")  # fmt: skip
    for j in res.get("jobs", []):
        scored = ("" if j["score_seconds"] is None else f" **`propensity score`: {j['score_seconds']} s** for "
                  f"{j['scored_users']:,} users (goal <= 60 s; phases "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in j["score_phases"].items()) + ").")  # fmt: skip
        lines.append(f"- **`propensity train` on {j['lake_users']:,} users / {j['events']:,} events: {j['train_seconds']} s**: "
                     f"examples {j['examples_seconds']:.1f} s for {j['examples']:,} rows ("
                     + ", ".join(f"{k} {v:.1f} s" for k, v in j["examples_phases"].items()) + "), both models "
                     f"{j['fit_seconds']:.1f} s; " + "; ".join(f"{k} ROC AUC {v['roc_auc']:.6f}, PR AUC {v['pr_auc']:.6f}, "
                                                           f"ECE {v['ece']:.4f}" for k, v in j["models"].items())
                     + f"; shipped {j['shipped']}.{scored} Load average {j['load_average_before'][0]:.1f} "
                     f"before, {j['load_average_after'][0]:.1f} after.")  # fmt: skip
    if res.get("label_building") and not res.get("jobs") and "model_side" in res:
        big = max(res["label_building"], key=lambda lb: lb["events"])
        per_user = big["spark_examples_seconds"] / big["lake_users"]
        m = res["model_side"]
        total = per_user * m["users"] + m["train_compare_seconds"]
        lines.append(f"- Extrapolated, not measured: examples for {m['users']:,} users at the largest lake's rate "
                     f"({per_user * 1e6:.1f} s per million users) take {per_user * m['users']:.0f} s; with the model "
                     f"side above, training takes about {total:.0f} s (goal <= 300 s).")  # fmt: skip
    (OUT / f"{a.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
