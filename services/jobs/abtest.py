"""``shoplens abtest``: analyze an experiment, plan the next one, simulate a promotion on real users.

- ``analyze``: an experiment file (CSV or Parquet, one row per user) is read and validated with polars
  (``etl.experiments.classify_experiment``), reduced to sufficient statistics per segment and variant
  (and assignment day for ``--sequential``), and analyzed by ``model.experiments.analyze_statistics``;
  no Spark session is started. With ``--from-lake`` the file only assigns users (``user_id, variant,
  assigned_at``), pseudonymized on read so that they meet the lake's keys, and Spark computes each
  user's metrics from the lake's committed events (``etl.experiment_metrics.window_metrics``). Every analysis is published as ``experiments/<version>/``
  (``result.json``, ``report.md``, ``report.html``; docs/outputs.md).
- ``plan``: users per arm and days for a minimum detectable effect; the baseline and the daily traffic
  may come from the lake, for one segment.
- ``simulate``: promotion scenarios drawn from each real user's own baseline (published features and
  segments, no Spark), analyzed like a real experiment, repeated.

Raw user ids are dropped as the rules finish (replaced by ordinals for a file, by their HMAC for the lake
path) and exist nowhere else: not in the lake, the logs, the reports or the returned documents.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import polars as pl
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.experiment_metrics import LAKE_METRICS, PRE_PERIOD_DAYS, window_metrics
from etl.experiments import (
    NO_SEGMENT,
    Reduced,
    accepted_rows,
    classify_experiment,
    default_metrics,
    read_experiment,
    reduce_classified,
    require_assignment_time,
    sufficient_statistics,
)
from model.experiments import (
    AnalysisSettings,
    MdeKind,
    MetricKind,
    Population,
    Scenario,
    analysis_document,
    plan_means,
    plan_proportions,
    power_means,
    power_proportions,
    simulate_promotion,
)
from model.experiments.frequentist import Alternative
from services.core.catalog import EVENTS, EXPERIMENTS, SEGMENTS
from services.core.lake import Lake, utc_now_iso
from services.core.publish import new_version
from services.core.readers import read_features, read_segments
from services.core.spark import read_parquet, read_run_dataset
from services.reports.abtest import render_html, render_json, render_markdown

log = logging.getLogger("shoplens.abtest")

REPORT_FILES = ("result.json", "report.md", "report.html")
#: Label of users the segmentation model could not place yet (``segments.segment_name``).
UNSCORED = "(not in segments)"


# -- options ------------------------------------------------------------------------------------------
def parse_window(text: str) -> int:
    """``14d``, ``36h``, ``2w`` or a bare number of days, as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhw]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--window must look like 14d, 36h or 2w, got {text!r}")
    unit = {"": 86_400, "d": 86_400, "h": 3_600, "w": 7 * 86_400}[match.group(2)]
    return int(float(match.group(1)) * unit)


@dataclass(frozen=True)
class AnalyzeOptions:
    """What ``shoplens abtest analyze`` was asked (everything but the input)."""

    control: str | None = None
    metrics: tuple[str, ...] = ()
    planned_split: str | None = None
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    name: str | None = None

    @classmethod
    def build(
        cls,
        *,
        control: str | None = None,
        metrics: Sequence[str] = (),
        planned_split: str | None = None,
        alpha: float = 0.05,
        alternative: str = "two-sided",
        margin: float = 0.0,
        correction: str = "holm",
        sequential: bool = False,
        cuped: bool = True,
        name: str | None = None,
    ) -> AnalyzeOptions:
        """Options from command-line values; bad choices fail here, before any data is read."""
        if alternative not in get_args(Alternative):
            raise ValueError(f"--alternative must be one of {list(get_args(Alternative))}, got {alternative!r}")
        corrections = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh"}
        if correction not in corrections:
            raise ValueError(f"--correction must be holm or bh, got {correction!r}")
        settings = AnalysisSettings(alpha=alpha, alternative=alternative, margin=margin,  # type: ignore[arg-type]
                                    correction=corrections[correction], cuped=cuped, sequential=sequential)  # type: ignore[arg-type]
        settings.hypothesis  # noqa: B018 - validates alpha, margin and alternative together
        return cls(control, tuple(metrics), planned_split, settings, name)


# -- analyze: a file, or assignments with metrics from the lake ---------------------------------------
def analyze_reduced(reduced: Reduced, opts: AnalyzeOptions) -> dict[str, Any]:
    """The analysis document of reduced rows: SRM, rejections, every metric, segments, sequential looks."""
    return analysis_document(
        reduced.stats, reduced.kinds, reduced.rejections, reduced.rows, control=opts.control,
        settings=opts.settings, planned_split=opts.planned_split, segmented=reduced.segmented,
    )  # fmt: skip


def analyze_rows(rows: pl.DataFrame, opts: AnalyzeOptions) -> dict[str, Any]:
    """Classify, reduce and analyze an experiment table (``read_experiment``'s columns), without Spark.

    Users are keyed by ordinals: the analysis joins them to nothing, so no pseudonym is needed, and the
    raw ids are dropped as the rules finish.
    """
    metrics = list(opts.metrics) or default_metrics(rows)
    if not metrics:
        raise ValueError(f"no metric column found: the file has {[c for c in rows.columns if c != 'line_number']}")
    if opts.settings.sequential and "assigned_at" not in rows.columns:
        raise ValueError("--sequential needs an assigned_at column (the time each user was assigned)")
    classified = classify_experiment(rows, metrics, key=None)
    reduced = reduce_classified(classified, metrics, segmented="segment" in rows.columns, daily=opts.settings.sequential)
    return analyze_reduced(reduced, opts)


def _with_segments(lake: Lake, assigned: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    """Attach each user's published segment name when the file has no segment column."""
    segments = read_segments(lake)
    if segments is None:
        return assigned, False
    names = pl.from_pandas(segments[["user_key", "segment_name"]].astype({"segment_name": str}))
    joined = assigned.drop("segment").join(names, on="user_key", how="left", maintain_order="left")
    return joined.with_columns(pl.col("segment_name").fill_null(UNSCORED).alias("segment")).drop("segment_name"), True


def _to_spark(spark: SparkSession, frame: pl.DataFrame) -> DataFrame:
    """A small polars table as a Spark DataFrame, through Arrow."""
    return spark.createDataFrame(frame.to_arrow())


def analyze_lake_rows(
    spark: SparkSession, lake: Lake, rows: pl.DataFrame, key: bytes, opts: AnalyzeOptions, window_seconds: int
) -> dict[str, Any]:
    """Assignments (``user_id, variant, assigned_at`` [, ``segment``]) with metrics from committed events.

    The assignments are checked and pseudonymized with the file rules (their HMAC keys meet the lake's);
    Spark joins the accepted users to the events; the per-user metrics come back for the reduction.
    """
    unknown = sorted(set(opts.metrics) - set(LAKE_METRICS))
    if unknown:
        raise ValueError(f"--from-lake computes the metrics {list(LAKE_METRICS)}; unknown: {unknown}")
    if "assigned_at" not in rows.columns:
        raise ValueError("--from-lake needs an assigned_at column (metrics are counted from that time)")
    events = read_run_dataset(spark, lake, EVENTS)
    if events is None:
        raise FileNotFoundError(f"{lake.store.uri}: no committed events in the lake (run `shoplens ingest` first)")
    metrics = list(opts.metrics) or list(LAKE_METRICS)
    assignment_columns = [c for c in rows.columns if c in ("user_id", "variant", "segment", "assigned_at", "line_number")]
    classified = require_assignment_time(classify_experiment(rows.select(assignment_columns), [], key))
    assigned = accepted_rows(classified)
    segmented = "segment" in rows.columns
    if not segmented:
        assigned, segmented = _with_segments(lake, assigned)
    first, last = assigned["assigned_at"].min(), assigned["assigned_at"].max()
    if first is not None:
        lo = (first - timedelta(days=PRE_PERIOD_DAYS + 1)).date()
        hi = (last + timedelta(seconds=window_seconds, days=1)).date()
        events = events.where(F.col("event_date").between(F.lit(lo), F.lit(hi)))
    table = pl.from_arrow(window_metrics(_to_spark(spark, assigned), events, window_seconds).toArrow())
    kinds = {m: "conversion" if m == "purchased" else "continuous" for m in metrics}
    reduced = reduce_classified(
        classified, metrics, segmented=segmented, daily=opts.settings.sequential, kinds=kinds, accepted=table
    )
    doc = analyze_reduced(reduced, opts)
    window_end = (last + timedelta(seconds=window_seconds)).isoformat() if last is not None else None
    doc["window"] = {"seconds": window_seconds, "pre_period_days": PRE_PERIOD_DAYS,
                     "first_assigned_at": first.isoformat() if first else None, "window_end": window_end}  # fmt: skip
    return doc


def publish_analysis(lake: Lake, doc: dict[str, Any], out_dir: Path | None = None) -> dict[str, Any]:
    """Render and publish ``experiments/<version>/``; copy the files to ``out_dir``; return the doc."""
    srm = doc.get("srm") or {}
    meta = {
        "name": doc["experiment"],
        "analyzed_at": doc["analyzed_at"],
        "source": doc["source"]["kind"],
        "users": doc["users"],
        "variants": list((srm.get("observed") or {}).keys()),
        "metrics": [m["metric"] for m in doc["metrics"]],
        "srm_mismatch": bool(srm.get("mismatch")),
    }
    with new_version(lake, EXPERIMENTS, **meta) as staged:
        doc = {**doc, "version": staged.version}
        (staged.dir / "result.json").write_text(render_json(doc), encoding="utf-8")
        (staged.dir / "report.md").write_text(render_markdown(doc), encoding="utf-8")
        (staged.dir / "report.html").write_text(render_html(doc), encoding="utf-8")
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in REPORT_FILES:
                shutil.copyfile(staged.dir / name, out_dir / name)
    log.info("experiment %s published as %s", doc["experiment"], staged.version,
             extra={"stage": "abtest", "version": staged.version, "users": doc["users"]})  # fmt: skip
    return {**doc, "report": {"lake": f"{lake.store.uri}/{EXPERIMENTS}/{staged.version}", "files": list(REPORT_FILES),
                              "out_dir": str(out_dir) if out_dir else None}}  # fmt: skip


def media_block(channel: str | None, spend_change: float | None, period: str | None) -> dict[str, Any] | None:
    """The ``media`` block of a result: which channel's spend the variant changed, by how much, when.

    With it the result is a lift test ``shoplens mmm fit --lift-tests result.json`` reads
    (:func:`model.mmm.data.lift_test_from_experiment`). All three values or none.
    """
    given = [v is not None for v in (channel, spend_change, period)]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("--channel, --spend-change and --period go together (the media change the variant got)")
    start, sep, end = str(period).partition(":")
    try:
        first, last = date.fromisoformat(start.strip()), date.fromisoformat(end.strip())
    except ValueError:
        first = last = None
    if not sep or first is None or last is None or last < first:
        raise ValueError(f"--period must be START:END in ISO dates with END >= START, got {period!r}")
    if not str(channel).strip() or not math.isfinite(float(spend_change)) or float(spend_change) == 0:
        raise ValueError("--channel must be named and --spend-change a finite non-zero amount")
    return {"channel": str(channel).strip().lower(), "spend_change": float(spend_change),
            "start": first.isoformat(), "end": last.isoformat()}


def run_analyze(
    lake: Lake,
    path: Path,
    opts: AnalyzeOptions,
    *,
    from_lake: bool = False,
    window: str | None = None,
    out_dir: Path | None = None,
    spark: SparkSession | None = None,
    key: bytes | None = None,
    media: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``shoplens abtest analyze`` does: read, analyze, publish; returns the published document.

    ``spark`` and the pseudonymization ``key`` are needed by the lake path only: a file alone is
    analyzed without a session and keys its users by ordinals. ``media``: :func:`media_block`.
    """
    t0 = time.monotonic()
    path = Path(path)
    if from_lake and window is None:
        window = "14d"
    if window is not None and not from_lake:
        raise ValueError("--window applies to --from-lake (metrics counted from the lake's events)")
    rows = read_experiment(path)
    if from_lake:
        if spark is None or key is None:
            raise ValueError("--from-lake needs a Spark session and the pseudonymization key")
        doc = analyze_lake_rows(spark, lake, rows, key, opts, parse_window(window or "14d"))
    else:
        doc = analyze_rows(rows, opts)
    doc = {
        "srm": doc.pop("srm"),  # first in every output: a mismatch invalidates everything below it
        "experiment": opts.name or path.name.split(".")[0],
        "analyzed_at": utc_now_iso(),
        "source": {"kind": "lake" if from_lake else "file", "file": path.name, "window": window},
        **doc,
        **({"media": media} if media else {}),
        "duration_seconds": round(time.monotonic() - t0, 3),
    }
    return publish_analysis(lake, doc, out_dir)


# -- human summaries ----------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f}%"


def analyze_report(doc: Mapping[str, Any]) -> str:
    """A few human lines: the SRM verdict first, then each comparison."""
    srm = doc.get("srm") or {}
    lines = []
    if not srm:
        lines.append("SRM: not computed (no accepted rows)")
    elif srm.get("mismatch"):
        lines.append(f"SRM: MISMATCH p={srm['p_value']:.2g} < {srm['threshold']}: assignment did not deliver the "
                     f"planned split; do not trust the lifts. observed {srm['observed']}")  # fmt: skip
    elif srm.get("p_value") is None:
        lines.append(f"SRM: not testable ({', '.join(srm.get('warnings', []))}); observed {srm['observed']}")
    else:
        lines.append(f"SRM: ok (p={srm['p_value']:.3g}); observed {srm['observed']}")
    rejected = doc.get("rejected") or {}
    lines.append(f"{doc.get('users', 0):,} users analyzed of {doc.get('rows_read', 0):,} rows; rejected: "
                 + (", ".join(f"{k} {v:,}" for k, v in rejected.items()) or "none"))  # fmt: skip
    lines += [f"warning: {w}" for w in doc.get("warnings", [])]
    for m in doc.get("metrics", []):
        means = ", ".join(f"{v['variant']} {v['mean']:.4g} (n={v['users']:,})" for v in m["variants"] if v["mean"] is not None)
        lines.append(f"{m['metric']} ({m['kind']}): {means}")
        for c in m["comparisons"]:
            if c["p_value"] is None:
                lines.append(f"  {c['variant']} vs {c['control']}: not testable ({', '.join(c['warnings'])})")
                continue
            flags = f" [{', '.join(c['warnings'])}]" if c["warnings"] else ""
            lines.append(
                f"  {c['variant']} vs {c['control']}: lift {c['lift_abs']:+.4g} ({_pct(c['lift_rel'])}), "
                f"CI [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}], p={c['p_value']:.3g} "
                f"(adjusted {_fmt(c['p_value_adjusted'], '.3g')}), P(beat control)={_fmt(c['chance_to_beat_control'], '.3f')}"
                + (f", CUPED saved {c['variance_reduction']:.0%} of the variance" if c.get("variance_reduction") else "")
                + flags
            )  # fmt: skip
    report = doc.get("report")
    if report:
        lines.append(f"published {doc.get('version')}: {report['lake']}/" + (f" (copied to {report['out_dir']})" if report.get("out_dir") else ""))
    return "\n".join(lines)


def _fmt(x: float | None, spec: str = ".4g") -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else format(x, spec)


# -- plan ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanRequest:
    """What ``shoplens abtest plan`` was asked."""

    kind: MetricKind = "conversion"
    baseline: float | None = None
    sd: float | None = None
    mde: float = 0.1
    mde_kind: MdeKind = "relative"
    alpha: float = 0.05
    power: float = 0.8
    alternative: Alternative = "two-sided"
    ratio: float = 1.0
    daily_users: float | None = None


#: Multiples of the needed sample at which the power curve is shown.
CURVE_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


def lake_baseline(spark: SparkSession, lake: Lake, segment: str | None, window_seconds: int) -> dict[str, Any]:
    """Baseline of the last ``window`` of events (for one segment): the users active in it, their
    conversion within it, revenue per user (mean, sd) and users per day = active users / window days.

    The correlation of each metric with the same metric over the 28 days before tells how much CUPED
    would save (rho²).
    """
    events = read_run_dataset(spark, lake, EVENTS)
    if events is None:
        raise FileNotFoundError(f"{lake.store.uri}: no committed events in the lake (run `shoplens ingest` first)")
    latest = events.agg(F.max("event_time")).first()[0]
    start = latest - timedelta(seconds=window_seconds)
    recent = events.where(F.col("event_date") >= F.lit((start - timedelta(days=PRE_PERIOD_DAYS + 1)).date()))
    active = recent.where(F.col("event_time") > F.lit(start)).select("user_key").distinct()
    if segment is not None:
        version = lake.current_version(SEGMENTS)
        segments = read_parquet(spark, lake, f"{SEGMENTS}/{version}") if version else None
        if segments is None:
            raise FileNotFoundError("no published segments: run `shoplens train` (or `shoplens score`) first")
        names = sorted(r[0] for r in segments.select("segment_name").distinct().collect())
        if segment not in names:
            raise ValueError(f"no segment {segment!r}; published segments: {names}")
        members = segments.where(F.col("segment_name") == segment).select("user_key")
        active = active.join(members, on="user_key", how="inner")
    assigned = active.select(
        "user_key", F.lit("all").alias("variant"), F.lit(NO_SEGMENT).alias("segment"),
        F.lit(start).cast("timestamp").alias("assigned_at"), F.lit(0).cast("long").alias("line_number"),
    )  # fmt: skip
    table = pl.from_arrow(window_metrics(assigned, recent, window_seconds).toArrow())
    rows = sufficient_statistics(table, list(LAKE_METRICS))
    days = window_seconds / 86_400
    out: dict[str, Any] = {"segment": segment, "window_days": days, "window_start": start.isoformat(),
                           "window_end": latest.isoformat(), "users": 0, "daily_users": 0.0}  # fmt: skip
    for r in rows.to_dict("records"):
        n = int(r["n"])
        mean = r["sum"] / n
        var = (r["sum_squares"] - r["sum"] ** 2 / n) / (n - 1) if n > 1 else float("nan")
        pre_var = (r["pre_sum_squares"] - r["pre_sum"] ** 2 / n) / (n - 1) if n > 1 else float("nan")
        cov = (r["sum_products"] - r["sum"] * r["pre_sum"] / n) / (n - 1) if n > 1 else float("nan")
        rho2 = cov**2 / (var * pre_var) if var > 0 and pre_var > 0 else 0.0
        out["users"], out["daily_users"] = n, n / days
        out[r["metric"]] = {"mean": mean, "sd": math.sqrt(var) if var == var else None, "cuped_rho2": rho2}
    return out


def run_plan(req: PlanRequest, baseline_doc: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plan (users per arm, total, days) and a power curve around it, as one JSON-able document."""
    metric = "purchased" if req.kind == "conversion" else "revenue"
    from_lake = (baseline_doc or {}).get(metric) or {}
    baseline = req.baseline if req.baseline is not None else from_lake.get("mean")
    sd = req.sd if req.sd is not None else from_lake.get("sd")
    daily = req.daily_users if req.daily_users is not None else (baseline_doc or {}).get("daily_users")
    if baseline is None:
        raise ValueError("give --baseline, or --from-lake / --segment to take it from the lake")
    common = {"mde_kind": req.mde_kind, "alpha": req.alpha, "alternative": req.alternative, "ratio": req.ratio}
    if req.kind == "conversion":
        plan = plan_proportions(baseline, req.mde, power=req.power, daily_users=daily, **common)
    else:
        if sd is None:
            raise ValueError("a plan for a mean needs --sd (the per-user standard deviation), or --from-lake")
        plan = plan_means(baseline, sd, req.mde, power=req.power, daily_users=daily, **common)
    curve = []
    if plan.users_per_arm is not None:
        for factor in CURVE_FACTORS:
            n = max(2, math.ceil(plan.users_per_arm * factor))
            if req.kind == "conversion":
                power = power_proportions(baseline, req.mde, n, **common)
            else:
                power = power_means(baseline, sd, req.mde, n, **common)
            total = n + math.ceil(n * req.ratio)
            curve.append({"users_per_arm": n, "users_total": total, "power": float(power),
                          "days": math.ceil(total / daily) if daily else None})  # fmt: skip
    doc = {"plan": dataclasses.asdict(plan), "power_curve": curve, "baseline_source": "lake" if baseline_doc else "given",
           "lake_baseline": dict(baseline_doc) if baseline_doc else None, "sd": sd}  # fmt: skip
    rho2 = from_lake.get("cuped_rho2")
    if rho2 and plan.users_per_arm is not None:
        doc["with_cuped"] = {"rho2": rho2, "users_per_arm": math.ceil(plan.users_per_arm_exact * (1 - rho2))}
    return _clean(doc)


def _clean(value: Any) -> Any:
    """JSON-able: nan and inf as None, numpy scalars as Python numbers, tuples as lists."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plan_report(doc: Mapping[str, Any]) -> str:
    p = doc["plan"]
    src = doc.get("lake_baseline")
    lines = []
    if src:
        lines.append(f"baseline from the lake ({src['segment'] or 'all users'}, {src['window_days']:g} days to "
                     f"{src['window_end']}): {src['users']:,} active users, {src['daily_users']:,.0f} per day")  # fmt: skip
    what = "conversion rate" if p["kind"] == "conversion" else "mean"
    lines.append(f"{what} baseline {p['baseline']:.4g}; detect {p['mde_abs']:+.4g} ({_pct(p['mde_rel'])}) "
                 f"at alpha={p['alpha']} ({p['alternative']}), power={p['power']}")  # fmt: skip
    if p["users_per_arm"] is None:
        lines.append(f"no plan: {', '.join(p['warnings'])}")
        return "\n".join(lines)
    days = f", {p['days']:,} days" if p["days"] is not None else " (give --daily-users or --from-lake for days)"
    lines.append(f"needs {p['users_per_arm']:,} users per arm, {p['users_total']:,} in total{days}")
    if doc.get("with_cuped"):
        c = doc["with_cuped"]
        lines.append(f"with CUPED on the 28-day pre-period (rho²={c['rho2']:.2f}): about {c['users_per_arm']:,} per arm")
    lines.append("power curve:")
    lines.append(f"  {'users/arm':>12} {'total':>12} {'days':>6} {'power':>7}")
    for r in doc["power_curve"]:
        lines.append(f"  {r['users_per_arm']:>12,} {r['users_total']:>12,} {r['days'] if r['days'] is not None else '-':>6} {r['power']:>7.1%}")
    return "\n".join(lines)


# -- simulate -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulationRequest:
    """A promotion scenario: who, how many exposed, the true relative lifts, and how often to repeat."""

    segments: tuple[str, ...] = ()
    responding: tuple[str, ...] = ()
    exposed_share: float = 0.5
    conversion_lift: float = 0.0
    revenue_lift: float = 0.0
    window_days: float = 14.0
    repetitions: int = 500
    alpha: float = 0.05
    max_users: int = 100_000
    seed: int = 0


#: Prior strength of the per-user purchase rate, in days: a user with a short history is pulled
#: towards their segment's rate (empirical Bayes, a gamma-Poisson mean).
PRIOR_DAYS = 30.0


def population_from_features(features: pd.DataFrame, segments: pd.DataFrame | None, window_days: float) -> pd.DataFrame:
    """Per user: ``segment``, ``conversion_rate`` (chance of a purchase within the window), ``order_value``.

    The purchase-session rate per day is (frequency + PRIOR_DAYS x segment rate) / (tenure_days + 1 +
    PRIOR_DAYS), and a purchase within ``window_days`` has probability 1 - exp(-rate x window) (a
    Poisson process). The order value is the user's monetary / n_purchases, the segment's median for
    users who never bought.
    """
    df = features[["user_key", "frequency", "monetary", "n_purchases", "tenure_days"]].copy()
    if segments is not None and len(segments):
        df = df.merge(segments[["user_key", "segment_name"]], on="user_key", how="left")
        df["segment"] = df["segment_name"].fillna(UNSCORED).astype(str)
    else:
        df["segment"] = NO_SEGMENT
    days = df["tenure_days"].fillna(0).clip(lower=0).astype(float) + 1.0
    freq = df["frequency"].fillna(0).astype(float)
    seg_rate = freq.groupby(df["segment"]).transform("sum") / days.groupby(df["segment"]).transform("sum")
    rate = (freq + PRIOR_DAYS * seg_rate) / (days + PRIOR_DAYS)
    purchases = df["n_purchases"].fillna(0).astype(float)
    value = (df["monetary"].fillna(0).astype(float) / purchases).where(purchases > 0)
    seg_value = value.groupby(df["segment"]).transform("median")
    fallback = float(value.median()) if value.notna().any() else 1.0
    return pd.DataFrame({
        "segment": df["segment"],
        "conversion_rate": 1.0 - np.exp(-rate.to_numpy() * window_days),
        "order_value": value.fillna(seg_value).fillna(fallback).to_numpy(),
    })  # fmt: skip


def run_simulate(lake: Lake, req: SimulationRequest) -> dict[str, Any]:
    """Simulate the scenario on the lake's users (published features and segments; no Spark)."""
    features, ptr = read_features(lake)
    pop = population_from_features(features, read_segments(lake), req.window_days)
    available = sorted(pop["segment"].unique())
    chosen = list(req.segments) or available
    unknown = sorted(set(chosen) - set(available)) + sorted(set(req.responding) - set(chosen))
    if unknown:
        raise ValueError(f"unknown or unchosen segment(s) {unknown}; segments: {available}")
    pop = pop[pop["segment"].isin(chosen)]
    sampled = len(pop) > req.max_users
    if sampled:
        pop = pop.sample(req.max_users, random_state=req.seed)
    responding = list(req.responding) or chosen
    scenario = Scenario(
        exposed_share=req.exposed_share,
        conversion_lift={s: req.conversion_lift for s in responding},
        revenue_lift={s: req.revenue_lift for s in responding},
    )
    population = Population(pop["conversion_rate"].to_numpy(float), pop["order_value"].to_numpy(float),
                            pop["segment"].to_numpy(str))  # fmt: skip
    t0 = time.monotonic()
    result = simulate_promotion(population, scenario, req.repetitions, req.alpha, req.seed)
    aa = req.conversion_lift == 0 and req.revenue_lift == 0

    def row(r: Any) -> dict[str, Any]:
        responds = r.true_lift is not None and abs(r.true_lift) > 1e-12
        verdict = ("false positives" if not responds else "detectable" if r.power >= 0.8 else "underpowered")
        return {**dataclasses.asdict(r), "responds": responds, "verdict": verdict,
                "baseline_conversion": float(pop.loc[pop["segment"] == r.segment, "conversion_rate"].mean())
                if r.segment else float(pop["conversion_rate"].mean())}  # fmt: skip

    return _clean({
        "scenario": dataclasses.asdict(req) | {"segments": chosen, "responding": responding},
        "aa_test": aa,
        "features_version": ptr["version"],
        "users": len(pop),
        "sampled": sampled,
        "repetitions": result.repetitions,
        "alpha": result.alpha,
        "overall": [row(r) for r in result.overall],
        "segments": [row(r) for r in result.segments],
        "duration_seconds": round(time.monotonic() - t0, 3),
    })  # fmt: skip


def simulate_report(doc: Mapping[str, Any]) -> str:
    s = doc["scenario"]
    head = "A/A test (no true effect)" if doc["aa_test"] else (
        f"promotion: conversion {_pct(s['conversion_lift'])}, revenue {_pct(s['revenue_lift'])} for {', '.join(s['responding'])}")
    lines = [f"{head}; {s['exposed_share']:.0%} exposed, {doc['users']:,} users"
             + (" (sampled)" if doc["sampled"] else "") + f", {doc['repetitions']:,} repetitions, alpha={doc['alpha']}"]  # fmt: skip
    rate = "rejection rate" if doc["aa_test"] else "power"
    lines.append(f"  {'metric':<10} {'segment':<28} {'users':>9} {'true lift':>10} {'estimated':>10} {rate:>15} {'coverage':>9}  verdict")
    for r in [*doc["overall"], *doc["segments"]]:
        lines.append(f"  {r['metric']:<10} {(r['segment'] or 'all chosen users')[:28]:<28} {r['users']:>9,} "
                     f"{_pct(r['true_lift']):>10} {_pct(r['mean_estimated_lift']):>10} {r['power']:>15.1%} "
                     f"{r['coverage']:>9.1%}  {r['verdict']}")  # fmt: skip
    return "\n".join(lines)


__all__ = [
    "AnalyzeOptions",
    "PlanRequest",
    "SimulationRequest",
    "analyze_report",
    "default_metrics",
    "lake_baseline",
    "media_block",
    "parse_window",
    "plan_report",
    "population_from_features",
    "read_experiment",
    "run_analyze",
    "run_plan",
    "run_simulate",
    "simulate_report",
]

