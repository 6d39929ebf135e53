"""The ``shoplens`` command line: one entry point, one subcommand per stage."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from etl.contract import ContractError
from services.core.logs import configure_logging
from services.core.settings import ConfigError, get_settings
from services.core.storage import StorageError

app = typer.Typer(
    name="shoplens",
    help="Customer intelligence for e-commerce clickstreams: ingest, describe, segment, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("shoplens.cli")

LakeOption = Annotated[
    str | None,
    typer.Option(
        "--lake",
        help="Lake root: a local path or s3://bucket/prefix. Defaults to $SHOPLENS_LAKE, else ./data/lake.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]


def _emit(obj: object, as_json: bool, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(obj, default=str))
    else:
        typer.echo(human)


def _say(as_json: bool) -> Callable[[str], None]:
    """Progress lines go to stderr, and not at all when stdout carries a JSON result."""
    return (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))


def _lake_stage(stage: str, lake: str | None, work: Callable[..., dict]) -> dict:
    """Run ``work(lake, settings)`` as one timed stage without Spark; push its metrics."""
    from services.core.metrics import push_run_metrics, time_stage
    from services.core.runtime import open_lake

    settings = get_settings()
    with time_stage(stage):
        result = work(open_lake(settings, lake), settings)
    push_run_metrics(f"shoplens-{stage}")
    return result


def _spark_stage(stage: str, lake: str | None, as_json: bool, work: Callable[..., dict]) -> dict:
    """Run ``work(spark, lake, settings)`` as one timed stage with progress lines; push its metrics."""
    from services.core.spark import get_spark, progress_lines

    def with_spark(the_lake, settings) -> dict:
        spark = get_spark(settings, f"shoplens-{stage}")
        with progress_lines(spark, stage, emit=_say(as_json)):
            return work(spark, the_lake, settings)

    return _lake_stage(stage, lake, with_spark)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show Spark's own log on the console (by default it goes to <work dir>/logs/spark.log).")
        ] = False) -> None:  # fmt: skip
    if verbose:
        os.environ["SHOPLENS_SPARK_CONSOLE"] = "true"
        get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, settings.log_stream)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Event files (REES46 CSV, plain or .gz).")],
    lake: LakeOption = None,
    input_format: Annotated[str, typer.Option("--format", help=(
        "rees46 (clickstream events) or online-retail (UCI/Kaggle order lines: InvoiceNo,StockCode,Description,"
        "Quantity,InvoiceDate,UnitPrice,CustomerID,Country; each line becomes a purchase)."))] = "rees46",
    as_json: JsonOption = False,
) -> None:
    """Validate, quarantine, dedupe, pseudonymize and add event files to the lake as one run.

    Files already ingested (same content hash) are skipped; a file with a bad header fails alone.
    Exit code 1 if any file failed.
    """
    from concurrent.futures import ThreadPoolExecutor

    from services.core.spark import get_spark, progress_lines

    settings = get_settings()
    key = settings.key_bytes
    # The JVM starts in the background, first thing, while Python imports the job and then hashes and
    # chunks the input files; its only work is scheduling the Arrow tasks, hence the quick start.
    with ThreadPoolExecutor(max_workers=1) as pool:
        spark = pool.submit(get_spark, settings, "shoplens-ingest", quick_start=True)
        from services.core.bounded_read import IngestLimits
        from services.core.metrics import push_run_metrics, record_ingest
        from services.core.runtime import open_lake
        from services.jobs.ingest import ingest_files

        the_lake = open_lake(settings, lake)
        say = _say(as_json)
        with progress_lines(spark.result, "ingest", emit=say):
            summary = ingest_files(spark.result, the_lake, paths, key, on_progress=say, input_format=input_format,
                                   limits=IngestLimits.from_settings(settings))
    record_ingest(summary)
    push_run_metrics("shoplens-ingest")
    failed = [f for f in summary["files"] if f["status"] == "failed"]
    human = _ingest_report(summary)
    _emit(summary, as_json, human)
    if failed:
        typer.echo(f"shoplens: error: {len(failed)} file(s) failed: {failed[0]['reason']}", err=True)
        raise typer.Exit(1)


def _ingest_report(s: dict) -> str:
    rate = s["rows_read"] / s["duration_seconds"] if s["duration_seconds"] else 0.0
    lines = [f"run {s['run_id']}: {s['status']} ({s['duration_seconds']:.1f}s)"]
    for f in s["files"]:
        detail = f" - {f['reason']}" if f["reason"] else ""
        lines.append(f"  {f['name']}: {f['status']}{detail}")
    lines.append(
        f"rows read {s['rows_read']:,} = accepted {s['rows_accepted']:,} + quarantined "
        f"{s['rows_quarantined']:,} + duplicates removed {s['duplicates_removed']:,}"
    )
    for reason, n in s["quarantine_by_reason"].items():
        lines.append(f"  quarantined {reason}: {n:,}")
    if s["suspicious_users"]:
        lines.append(f"suspicious (bot-like) users flagged: {s['suspicious_users']:,}")
    lines.append(f"{s['rows_read']:,} events in {s['duration_seconds']:.1f}s ({rate:,.0f} events/s)")
    return "\n".join(lines)


@app.command()
def features(
    lake: LakeOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="Recompute even when the features already hold every committed run.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Publish per-user features computed from the user timelines when runs were committed since the last.

    Definitions of every feature: docs/features.md.
    """
    from services.jobs.features import features_report, run_features

    summary = _spark_stage("features", lake, as_json, lambda spark, the_lake, _s: run_features(spark, the_lake, full=full))
    _emit(summary, as_json, features_report(summary))


@app.command()
def timelines(
    lake: LakeOption = None,
    compact: Annotated[bool, typer.Option("--compact", help="Fold every committed run into one file per bucket.")] = False,
    backfill: Annotated[bool, typer.Option(
        "--backfill", help="Build the timelines of runs ingested before timelines existed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show the user timelines (compacted version, runs merged on read, runs missing), or maintain them.

    Each ingestion run writes its own; design and layout: docs/timelines.md.
    """
    from services.core.timelines import backfill_timelines, compact_timelines, timelines_status

    def work(spark, the_lake, _settings) -> dict:
        done = {"backfilled": backfill_timelines(spark, the_lake) if backfill else {},
                "compacted": compact_timelines(spark, the_lake) if compact else None}  # fmt: skip
        return {**done, **timelines_status(the_lake)}

    if compact or backfill:
        summary = _spark_stage("timelines", lake, as_json, work)
    else:
        summary = _lake_stage("timelines", lake, lambda the_lake, _s: timelines_status(the_lake))
    _emit(summary, as_json, "\n".join(f"{k}: {v}" for k, v in summary.items()))


@app.command()
def generate(
    users: Annotated[int, typer.Option("--users", min=1, help=(
        "Number of synthetic users. About 20 clean events per user and month (the real feed has ~14), "
        "so 500,000 users give ~10M events for one month and 2,100,000 about the real October (42M)."
        ))] = 10_000,
    start: Annotated[str, typer.Option("--start", help="First day of the data (YYYY-MM-DD).")] = "2019-10-01",
    months: Annotated[int, typer.Option("--months", min=1, help="Number of months; one file each.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same arguments give identical files.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Output directory (files + _truth/).")] = Path("data/raw"),
    dirty_rate: Annotated[float, typer.Option("--dirty-rate", min=0.0, max=0.49, help=(
        "Fraction of rows that are faulty, 0 to 0.49 (duplicates, malformed lines, bad times, types, user ids, "
        "prices); each is listed in _truth/dirty.csv with the quarantine reason expected."))] = 0.0,
    marketing: Annotated[bool, typer.Option("--marketing", help=(
        "Also write spend.csv (six channels with flighting, seasonality and a holiday push) and "
        "_truth/mmm.json, and make purchases respond to that spend through known adstock, saturation and ROI."
        ))] = False,
    as_json: JsonOption = False,
) -> None:
    """Write synthetic REES46 files (2019-Oct.csv.gz, ...) with hidden personas in _truth/users.csv."""
    from datetime import date

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from etl.generate import generate as run_generate

    with Progress(TextColumn("generate"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
                  TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn(),
                  disable=as_json, transient=False) as bar:
        task = bar.add_task("generate", total=None, rows=0)
        summary = run_generate(
            out, users=users, start=date.fromisoformat(start), months=months, seed=seed,
            dirty_rate=dirty_rate, marketing=marketing,
            progress=lambda done, total, rows: bar.update(task, completed=done, total=total, rows=rows),
        )
    human = (f"wrote {summary.events:,} events (+{summary.dirty_rows:,} dirty rows) for {summary.users:,} "
             f"users in {len(summary.files)} file(s) under {summary.out_dir} in {summary.seconds:.1f}s")
    _emit(summary.to_dict(), as_json, human)


@app.command()
def describe(
    lake: LakeOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also copy report.md, report.html and report.json into this directory."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Data-quality and descriptive report of the lake (Markdown, HTML with charts, JSON).

    Published in the lake under reports/describe/<version>/ (reports/describe/_current.json points at it).
    """
    from services.jobs.describe import describe_summary, run_describe

    result = _spark_stage("describe", lake, as_json, lambda spark, the_lake, _s: run_describe(spark, the_lake, out))
    _emit(result, as_json, describe_summary(result))


@app.command()
def predict(
    events: Annotated[Path, typer.Option("--events", help="Raw event history (REES46 CSV, plain or .gz).")],
    lake: LakeOption = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help=(
        "Reference time of recency/tenure (ISO; naive = UTC) or 'last_event'; default: the file's latest event."
        ))] = None,
) -> None:
    """Segment each user of an event history with the current model, without Spark; prints a JSON array.

    One object per user: user_id (as in the file; not stored), segment_id, segment_name, confidence,
    trust, lifecycle_stage, lifecycle_label, lifecycle_action, model_version, n_events, status, reason;
    with a pseudonym key set, the published p_alive, clv, clv_horizon_months and clv_version of users
    the lake knows as customers (null otherwise). Invalid rows are skipped and counted on stderr.
    """
    from services.core.runtime import open_lake
    from services.jobs.predict import history_report, predict_file

    settings = get_settings()
    key = settings.key_bytes if settings.pseudonym_key is not None else None
    result = predict_file(events, open_lake(settings, lake), as_of=as_of, key=key)
    typer.echo(history_report(result.history), err=True)
    typer.echo(json.dumps(result.users, indent=2))


@app.command()
def train(
    lake: LakeOption = None,
    truth: Annotated[Path | None, typer.Option("--truth", help=(
        "A generator's _truth/users.csv: adds the adjusted Rand index vs the personas to the report "
        "(evaluation only, after fitting)."))] = None,
    as_json: JsonOption = False,
) -> None:
    """Bring the features up to date, fit the segmentation model on them, publish it with its report, then score.

    In the stack, `shoplens watch` retrains by itself when the model is missing or stale.
    """
    from services.jobs.segmentation import train as run_train
    from services.jobs.segmentation import train_report

    def work(spark, the_lake, settings) -> dict:
        return run_train(spark, the_lake, truth_csv=truth, key=settings.key_bytes if truth else None,
                         refresh_features=True)

    result = _spark_stage("train", lake, as_json, work)
    _emit(result, as_json, train_report(result))


@app.command()
def watch(
    incoming: Annotated[str | None, typer.Option("--incoming", help=(
        "Where event files are dropped: s3://bucket/prefix or a local directory. "
        "Defaults to $SHOPLENS_INCOMING."), show_default=False)] = None,
    quarantine: Annotated[str | None, typer.Option("--quarantine", help=(
        "Where rejected files go, each with <name>.error.json. Defaults to $SHOPLENS_QUARANTINE_FILES, "
        "else <incoming>/_failed/."), show_default=False)] = None,
    lake: LakeOption = None,
    poll: Annotated[float | None, typer.Option("--poll", min=0.1, help=(
        "Seconds between listings. Defaults to $SHOPLENS_POLL_SECONDS (5)."), show_default=False)] = None,
    settle: Annotated[float | None, typer.Option("--settle", min=0, help=(
        "Seconds a new file must keep the same size and time before it is taken (uploads in progress "
        "are left alone). Defaults to $SHOPLENS_SETTLE_SECONDS (5)."), show_default=False)] = None,
    retrain_runs: Annotated[int | None, typer.Option("--retrain-runs", min=0, help=(
        "Retrain after this many new ingestion runs; 0 = never for this reason. "
        "Defaults to $SHOPLENS_RETRAIN_NEW_RUNS (1)."), show_default=False)] = None,
    retrain_days: Annotated[float | None, typer.Option("--retrain-days", min=0, help=(
        "Retrain when the model is this many days old; 0 = never for this reason. "
        "Defaults to $SHOPLENS_RETRAIN_AGE_DAYS (7)."), show_default=False)] = None,
) -> None:
    """Run until stopped: ingest each file dropped into the incoming location exactly once, then
    update features and segments (retraining when the model is missing or stale).

    Processed files move to <incoming>/_processed/<run_id>/; rejected ones to the quarantine location.
    Serves Prometheus metrics on :$SHOPLENS_METRICS_PORT (9108). Stops cleanly on SIGTERM/SIGINT.
    """
    import signal
    import threading

    from services.core.bounded_read import IngestLimits
    from services.core.metrics import start_metrics_server
    from services.core.runtime import open_lake, open_location
    from services.core.spark import get_spark
    from services.jobs.watch import WatchConfig, Watcher

    settings = get_settings()
    incoming_uri = incoming or settings.incoming
    if not incoming_uri:
        raise ConfigError("no incoming location: pass --incoming or set SHOPLENS_INCOMING")
    quarantine_uri = quarantine or settings.quarantine_files or f"{incoming_uri.rstrip('/')}/_failed"
    cfg = WatchConfig(
        poll_seconds=poll if poll is not None else settings.poll_seconds,
        settle_seconds=settle if settle is not None else settings.settle_seconds,
        retrain_new_runs=retrain_runs if retrain_runs is not None else settings.retrain_new_runs,
        retrain_age_days=retrain_days if retrain_days is not None else settings.retrain_age_days,
        limits=IngestLimits.from_settings(settings),
    )
    key = settings.key_bytes
    the_lake = open_lake(settings, lake)
    the_lake.bind_key(key)  # a wrong key stops the watcher here, not at every file
    start_metrics_server(settings.metrics_port)
    spark = get_spark(settings, "shoplens-watch")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    watcher = Watcher(the_lake, open_location(settings, incoming_uri), open_location(settings, quarantine_uri),
                      lambda: spark, key, cfg)  # fmt: skip
    watcher.run(stop)
    log.info("watcher stopped", extra={"stage": "watch"})


@app.command()
def score(lake: LakeOption = None, as_json: JsonOption = False) -> None:
    """Assign every user to a segment with the current model (no retraining); publish segments and views.

    New committed runs are folded into the features first, so users first seen in new files are scored.
    """
    from services.jobs.segmentation import score as run_score
    from services.jobs.segmentation import score_report

    result = _spark_stage("score", lake, as_json, lambda spark, the_lake, _s: run_score(spark, the_lake))
    _emit(result, as_json, score_report(result))


@app.command()
def overview(lake: LakeOption = None, as_json: JsonOption = False) -> None:
    """Build the overview views (daily KPIs, recent runs, freshness) from the committed events."""
    from services.jobs.overview import build_overview, overview_report

    result = _spark_stage("overview", lake, as_json, lambda spark, the_lake, _s: build_overview(spark, the_lake))
    _emit(result, as_json, overview_report(result))


@app.command()
def funnel(
    steps: Annotated[str, typer.Option("--steps", help=(
        "2 to 10 event types, each optionally narrowed: view,cart\\[category_l1=electronics],purchase"))] = "view,cart,purchase",
    unit: Annotated[str, typer.Option("--unit", help="user, session or user_product")] = "user",
    order: Annotated[str, typer.Option("--order", help="ordered or any")] = "ordered",
    window_days: Annotated[float, typer.Option("--window-days", help=(
        "Conversion window in days (last step - first step); sessions have none."))] = 7.0,
    by: Annotated[str, typer.Option("--by", help=(
        "Breakdowns, comma-separated: week, category_l1, brand, segment, cohort ('' for none)."))] = "week,category_l1,brand,segment,cohort",
    top_brands: Annotated[int, typer.Option("--top-brands", help="Brands kept by name in the brand breakdown.")] = 10,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Where customers drop out: steps, breakdowns, weekly trend, time to convert, conversion drivers and
    drop-off audiences, published to funnel/ with its report (semantics: docs/funnels.md)."""
    from services.jobs.funnel import FunnelConfig, funnel_report, parse_by, run_funnel

    cfg = FunnelConfig(steps=steps, unit=unit, order=order, window_days=window_days, by=parse_by(by),
                       top_brands=top_brands)  # fmt: skip (ValueError before Spark starts)
    result = _spark_stage("funnel", lake, as_json, lambda spark, the_lake, _s: run_funnel(spark, the_lake, cfg))
    _emit(result, as_json, funnel_report(result))


@app.command("compare-models")
def compare_models(
    truth: Annotated[Path | None, typer.Option("--truth", help=(
        "A generator's _truth/users.csv: adds agreement with its personas (evaluation only)."))] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every sample, split and fit.")] = 42,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Weigh the shipped models against other families on the lake's own data (segmentation, assignment from
    the first n events, purchase propensity): one table per question with the winner and why (docs/dossier.md)."""
    from services.jobs.compare_models import CompareConfig, compare_models, comparison_text

    def work(spark, the_lake, settings) -> dict:
        return compare_models(spark, the_lake, CompareConfig(seed=seed), truth_csv=truth,
                              key=settings.key_bytes if truth is not None else None)  # fmt: skip

    result = _spark_stage("compare_models", lake, as_json, work)
    _emit(result, as_json, comparison_text(result))


@app.command()
def dossier(
    out: Annotated[Path | None, typer.Option("--out", help=(
        "Also copy dossier.html, dossier.pdf, dossier.json and charts/ into this directory."))] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """The whole approach and its results in one document (HTML and PDF), from what the lake has published:
    each section present when its result exists (docs/dossier.md). Published under reports/dossier/<version>/."""
    from services.jobs.dossier import dossier_text, run_dossier

    def work(the_lake, settings) -> dict:
        shown = settings.model_dump(include={"lake", "spark_master", "log_format", "retrain_new_runs", "retrain_age_days"})
        return run_dossier(the_lake, out, shown)

    result = _lake_stage("dossier", lake, work)
    _emit(result, as_json, dossier_text(result))


@app.command()
def retention(
    cohort: Annotated[str, typer.Option("--cohort", help="Cohorts by calendar week (Monday) or month of the start.")] = "week",
    cohort_event: Annotated[str, typer.Option("--cohort-event", help=(
        "any: start = first event (first seen); purchase: start = first purchase."))] = "any",
    period: Annotated[str, typer.Option("--period", help="day, week or month.")] = "week",
    mode: Annotated[str, typer.Option("--mode", help="n-period (returned in period n) or unbounded (in n or later).")] = "n-period",
    event: Annotated[str, typer.Option("--event", help="What counts as returning: any event, or a purchase.")] = "any",
    calendar: Annotated[bool, typer.Option("--calendar", help=(
        "Calendar periods instead of rolling ones measured from each user's start."))] = False,
    by: Annotated[str | None, typer.Option("--by", help="Breakdown in the output: segment, category or acquisition-month.")] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retention cohorts: users and revenue per cohort member in each period after their start, published
    to retention/ with every breakdown and its report (semantics: docs/retention.md)."""
    from etl.retention import RetentionSpec
    from services.jobs.retention import RetentionConfig, retention_report, run_retention

    spec = RetentionSpec(cohort, cohort_event, period, mode, event, calendar, by)  # type: ignore[arg-type]
    cfg = RetentionConfig(spec=spec)  # ValueError before Spark starts
    result = _spark_stage("retention", lake, as_json, lambda spark, the_lake, _s: run_retention(spark, the_lake, cfg))
    _emit(result, as_json, retention_report(result))

@app.command()
def run(
    lake: LakeOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the stages that are due, and why.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Run every pipeline stage that is due, in order (what the watcher does after each file).

    The stages and when each is due: services/jobs/stages.py (features, train, score, overview, publish).
    """
    from services.core.metrics import push_run_metrics
    from services.core.runtime import open_lake
    from services.jobs.stages import PipelineConfig, pending, run_pipeline

    settings = get_settings()
    the_lake = open_lake(settings, lake)
    cfg = PipelineConfig(settings.retrain_new_runs, settings.retrain_age_days)
    if dry_run:
        due = pending(the_lake, cfg)
        _emit([{"stage": n, "why": w} for n, w in due], as_json,
              "\n".join(f"{n}: {w}" for n, w in due) or "nothing is due")  # fmt: skip
        return

    def spark():
        from services.core.spark import get_spark

        return get_spark(settings, "shoplens-run")

    result = run_pipeline(spark, the_lake, cfg)
    push_run_metrics("shoplens-run")
    human = "\n".join(f"{n}: done ({result['why'][n]})" for n in result["ran"]) or "nothing was due"
    _emit(result, as_json, human)


@app.command()
def erase(
    user_id: Annotated[list[str] | None, typer.Option("--user-id", help=(
        "A raw user id to erase (repeatable). Keyed at once with the lake's key; never stored, logged "
        "or printed."))] = None,
    ids_file: Annotated[Path | None, typer.Option("--file", help="A file of raw user ids, one a line.")] = None,
    user_key: Annotated[list[str] | None, typer.Option("--key", help=(
        "A user key (the lake's 64-hex pseudonym) to erase, for requests that arrive keyed (repeatable)."))] = None,
    defer: Annotated[bool, typer.Option("--defer", help=(
        "Only record the requests; the pipeline's erasure stage carries them out in one batch "
        "(once the oldest has waited $SHOPLENS_ERASURE_MAX_AGE_HOURS, 24)."))] = False,
    status: Annotated[bool, typer.Option("--status", help="List the requests with their state and deadline.")] = False,
    check: Annotated[bool, typer.Option("--verify", help=(
        "Re-scan every store for every completed request and record the verification. Exit code 1 "
        "when anyone is found anywhere."))] = False,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Forget people on request: record each in the erasure ledger (a digest of the key, never the id)
    and remove them from the lake (every version), raw files, warehouse and caches; then rebuild what
    depended on them. Exit code 1 with --verify when a completed request is found anywhere.
    """
    from services.core import erasure_ledger
    from services.core.runtime import open_lake
    from services.jobs import erasure as job

    settings = get_settings()
    the_lake = open_lake(settings, lake)
    if status:
        rows = erasure_ledger.status_rows(the_lake)
        _emit(rows, as_json, "\n".join(
            f"{r['request_id']}  {r['person']}  {r['state']:<9}  deadline {r['deadline']}"
            f"  rows removed {r['rows_removed']:,}  verified {r['verified_at'] or '-'}" for r in rows)
            or "no erasure requests")  # fmt: skip
        return
    targets = job.targets_from(settings, settings.warehouse_url)
    if check:
        from services.jobs.erasure_verify import verify, verify_report

        result = verify(the_lake, settings.key_bytes, targets)
        _emit(result, as_json, verify_report(result))
        if not result["clean"]:
            raise typer.Exit(1)
        return
    ids = list(user_id or [])
    if ids_file is not None:
        ids += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids and not user_key:
        raise ValueError("nothing to erase: give --user-id, --file or --key (or --status / --verify)")
    source = "key" if user_key and not ids else ("file" if ids_file is not None else "user_id")
    sub = erasure_ledger.record(the_lake, job.digests_for(ids, list(user_key or []), settings.key_bytes), source)
    recorded = {"submission_id": sub.submission_id, "request_ids": [r.request_id for r in sub.requests]}
    if defer:
        _emit(recorded, as_json, f"recorded {len(sub.requests)} request(s), deadline {sub.requests[0].deadline}; "
              "the pipeline's erasure stage will carry them out")  # fmt: skip
        return
    from services.core.metrics import push_run_metrics
    from services.jobs.stages import STAGES, PipelineConfig, run_pipeline

    def spark():
        from services.core.spark import get_spark

        return get_spark(settings, "shoplens-erase")

    cfg = PipelineConfig(settings.retrain_new_runs, settings.retrain_age_days, erasure_max_age_hours=0)
    result = run_pipeline(spark, the_lake, cfg)
    push_run_metrics("shoplens-erase")
    if "erasure" not in result:  # not due: another process carried the batch out meanwhile
        _emit(recorded, as_json, "recorded; nothing left to erase here (see shoplens erase --status)")
        return
    rebuilding = {s.name for s in STAGES if s.rebuilds}
    summary = {**recorded, **result["erasure"], "rebuilt": [
        *result["erasure"].get("rebuilt", []), *(n for n in result["ran"] if n in rebuilding)]}
    _emit(summary, as_json, job.erasure_report(summary))


@app.command("retention-policy")
def retention_policy(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what the policy would delete.")] = False,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply the retention policy ($SHOPLENS_RETENTION_*): versions kept per dataset (3), events older
    than N days (keep all), processed and rejected raw files older than 30 days. The erasure ledger stays."""
    from services.core.runtime import open_lake
    from services.jobs.erasure import targets_from
    from services.jobs.retention_policy import Policy, apply_retention, retention_report

    settings = get_settings()
    result = apply_retention(open_lake(settings, lake), Policy.from_settings(settings),
                             targets_from(settings, settings.warehouse_url), dry_run=dry_run)  # fmt: skip
    _emit(result, as_json, retention_report(result))


@app.command()
def export(
    what: Annotated[str, typer.Argument(help="segments, features, propensity, funnel-dropoffs or clv")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    out: Annotated[Path, typer.Option("--out", help="Output file.")] = Path("export.csv"),
    step: Annotated[str | None, typer.Option("--step", help=(
        "funnel-dropoffs: the step (label such as cart, or its number) whose drop-off audience to write."))] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the current segments, features, propensity scores or a funnel step's drop-off audience
    (users who reached the step and not the next, with their segment) for CRM/BI tools (pseudonymized keys only)."""
    from services.core.runtime import open_lake
    from services.jobs.export import export_table

    result = export_table(open_lake(get_settings(), lake), what, fmt, out, step)
    _emit(result, as_json, f"wrote {result['rows']:,} {what} rows to {result['out']} ({fmt})")


@app.command()
def publish(
    url: Annotated[str | None, typer.Option("--url", help=(
        "SQLAlchemy URL of the warehouse, e.g. postgresql+psycopg://user:pw@host:5432/db. "
        "Defaults to $SHOPLENS_WAREHOUSE_URL, else sqlite:///./data/shoplens.db."), show_default=False)] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy the current segments, segment profiles, features and daily KPIs into the SQL warehouse.

    Only tables whose lake version changed are loaded (bulk, COPY on PostgreSQL) and swapped in, all
    in one transaction: BI queries see the old tables or the new ones. Table docs: docs/outputs.md.
    """
    from services.core.metrics import push_run_metrics, time_stage
    from services.core.runtime import open_lake
    from services.jobs.publish import publish as run_publish
    from services.jobs.publish import publish_report

    settings = get_settings()
    with time_stage("publish"):
        result = run_publish(open_lake(settings, lake), url or settings.warehouse_url)
    push_run_metrics("shoplens-publish")
    _emit(result, as_json, publish_report(result))


@app.command()
def api(
    port: Annotated[int, typer.Option("--port", help="Port of the HTTP server.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (0.0.0.0 inside a container).")] = "127.0.0.1",
    lake: LakeOption = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Worker processes (default SHOPLENS_API_WORKERS, 1).")
    ] = None,
) -> None:
    """Serve the scoring API (POST /v1/score, GET /v1/customers/{user_id}, /healthz, /metrics, /docs).

    Requires `Authorization: Bearer $SHOPLENS_API_KEY` outside demo mode. New models are picked up
    without a restart. Request logs name the route template only, never a user id.
    """
    from services.jobs.api import serve

    settings = get_settings()
    typer.echo(f"shoplens api: http://{host}:{port} (OpenAPI docs at /docs)", err=True)
    serve(settings, lake, host, port, workers or settings.api_workers)


@app.command()
def dashboard(
    lake: LakeOption = None,
    port: Annotated[int, typer.Option("--port", help="Port of the web server.")] = 8501,
    address: Annotated[
        str, typer.Option("--address", help="Interface to bind (0.0.0.0 inside a container).")
    ] = "127.0.0.1",
) -> None:
    """Serve the segment dashboard (Streamlit) on http://<address>:<port> until interrupted."""
    from dashboard.serve import serve

    typer.echo(f"shoplens dashboard: http://{address}:{port}", err=True)
    raise typer.Exit(serve(lake, port, address))


# -- A/B tests ------------------------------------------------------------------------------------------
abtest_app = typer.Typer(name="abtest", no_args_is_help=True,
                         help="A/B tests: analyze an experiment, plan the next one, simulate a promotion.")  # fmt: skip
app.add_typer(abtest_app, name="abtest")
WindowOption = Annotated[str | None, typer.Option("--window", help=(
    "How long after assignment metrics count, e.g. 14d, 36h, 2w (with --from-lake; default 14d)."))]  # fmt: skip


@abtest_app.command("analyze")
def abtest_analyze(
    file: Annotated[Path, typer.Argument(help="Experiment file, CSV or Parquet: user_id, variant, metrics...")],
    control: Annotated[str | None, typer.Option("--control", help="Control variant (default: the first in the file).")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help=(
        "Metric column (repeatable; default: every other numeric or boolean column)."))] = None,
    planned_split: Annotated[str | None, typer.Option("--planned-split", help=(
        "Planned split for the SRM check: control=50,promo=50 or 50/50 in file order (default: equal)."))] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level.")] = 0.05,
    alternative: Annotated[str, typer.Option("--alternative", help="two-sided, greater or less.")] = "two-sided",
    margin: Annotated[float, typer.Option("--margin", help=(
        "Non-inferiority margin in the metric's units (needs --alternative greater or less)."))] = 0.0,
    correction: Annotated[str, typer.Option("--correction", help="holm (family-wise) or bh (false discovery rate).")] = "holm",
    sequential: Annotated[bool, typer.Option("--sequential", help=(
        "Always-valid intervals and daily looks (needs assigned_at)."))] = False,
    no_cuped: Annotated[bool, typer.Option("--no-cuped", help="Ignore pre_<metric> covariates.")] = False,
    from_lake: Annotated[bool, typer.Option("--from-lake", help=(
        "FILE only assigns users (user_id, variant, assigned_at); purchased, revenue and sessions come from "
        "the lake's events after assignment, CUPED covariates from the 28 days before."))] = False,
    window: WindowOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Experiment name (default: the file name).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also copy result.json, report.md, report.html here.")] = None,
    channel: Annotated[str | None, typer.Option("--channel", help=(
        "Media channel whose spend the variant changed (with --spend-change and --period, the result.json "
        "is a lift test for `shoplens mmm fit --lift-tests`)."))] = None,
    spend_change: Annotated[float | None, typer.Option("--spend-change", help=(
        "Extra spend the variant's users got on --channel over --period (negative for a hold-out)."))] = None,
    period: Annotated[str | None, typer.Option("--period", help="Test period START:END (ISO dates, inclusive).")] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Analyze an A/B test: SRM check, lifts with intervals, p-values, chance to beat control, segments.

    Raw user ids are dropped on read (no raw id is kept). Published as experiments/<version>/ in the lake.
    """
    from services.jobs.abtest import AnalyzeOptions, analyze_report, media_block, run_analyze

    opts = AnalyzeOptions.build(control=control, metrics=metric or (), planned_split=planned_split, alpha=alpha,
                                alternative=alternative, margin=margin, correction=correction,
                                sequential=sequential, cuped=not no_cuped, name=name)  # fmt: skip
    media = media_block(channel, spend_change, period)

    def on_spark(spark, the_lake, settings) -> dict:
        return run_analyze(the_lake, file, opts, from_lake=True, window=window, out_dir=out, spark=spark,
                           key=settings.key_bytes, media=media)  # fmt: skip

    def on_file(the_lake, _settings) -> dict:  # no key: a file's users are keyed by ordinals
        return run_analyze(the_lake, file, opts, window=window, out_dir=out, media=media)

    # a file alone needs no JVM; metrics from the lake's events do
    result = _spark_stage("abtest", lake, as_json, on_spark) if from_lake else _lake_stage("abtest", lake, on_file)
    _emit(result, as_json, analyze_report(result))


@abtest_app.command("plan")
def abtest_plan(
    kind: Annotated[str, typer.Option("--kind", help="conversion (a rate) or mean (e.g. revenue per user).")] = "conversion",
    mde: Annotated[float, typer.Option("--mde", help="Minimum detectable effect (a magnitude).")] = 0.1,
    mde_kind: Annotated[str, typer.Option("--mde-kind", help="relative (0.1 = +10%) or absolute.")] = "relative",
    baseline: Annotated[float | None, typer.Option("--baseline", help="Baseline rate or mean (default: from the lake).")] = None,
    sd: Annotated[float | None, typer.Option("--sd", help="Per-user standard deviation of a mean.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level.")] = 0.05,
    power: Annotated[float, typer.Option("--power", help="Wanted power.")] = 0.8,
    alternative: Annotated[str, typer.Option("--alternative", help="two-sided, greater or less.")] = "two-sided",
    ratio: Annotated[float, typer.Option("--ratio", help="Variant users per control user.")] = 1.0,
    daily_users: Annotated[float | None, typer.Option("--daily-users", help="Users entering per day.")] = None,
    from_lake: Annotated[bool, typer.Option("--from-lake", help="Baseline and daily users from the lake's last window.")] = False,
    segment: Annotated[str | None, typer.Option("--segment", help="Only this published segment (implies --from-lake).")] = None,
    window: WindowOption = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Users per arm and days needed to detect an effect, with a power curve."""
    from services.jobs.abtest import PlanRequest, lake_baseline, parse_window, plan_report, run_plan

    if kind not in ("conversion", "mean"):
        raise ValueError(f"--kind must be conversion or mean, got {kind!r}")
    if mde_kind not in ("relative", "absolute"):
        raise ValueError(f"--mde-kind must be relative or absolute, got {mde_kind!r}")
    req = PlanRequest("conversion" if kind == "conversion" else "continuous", baseline, sd, mde, mde_kind,  # type: ignore[arg-type]
                      alpha, power, alternative, ratio, daily_users)  # type: ignore[arg-type]  # fmt: skip
    base = None
    if from_lake or segment is not None:
        seconds = parse_window(window or "14d")
        base = _spark_stage("abtest", lake, as_json, lambda spark, the_lake, _s: lake_baseline(spark, the_lake, segment, seconds))
    result = run_plan(req, base)
    _emit(result, as_json, plan_report(result))


@abtest_app.command("simulate")
def abtest_simulate(
    segment: Annotated[list[str] | None, typer.Option("--segment", help="Segment to include (repeatable; default: all).")] = None,
    responding: Annotated[list[str] | None, typer.Option("--responding", help=(
        "Segment that truly responds (repeatable; default: every included one)."))] = None,
    exposed_share: Annotated[float, typer.Option("--exposed-share", min=0.01, max=0.99, help="Share of users exposed.")] = 0.5,
    conversion_lift: Annotated[float, typer.Option("--conversion-lift", help="True relative conversion lift, e.g. 0.1.")] = 0.0,
    revenue_lift: Annotated[float, typer.Option("--revenue-lift", help="True relative lift of the order value.")] = 0.0,
    window: Annotated[str, typer.Option("--window", help="Experiment length, e.g. 14d.")] = "14d",
    repetitions: Annotated[int, typer.Option("--repetitions", min=10, help="Simulated experiments.")] = 500,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level.")] = 0.05,
    max_users: Annotated[int, typer.Option("--max-users", min=100, help="Sample at most this many users.")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Simulate a promotion on the lake's real users (their own baselines): power per segment.

    With no lift this is an A/A test: the rejection rate is the false-positive rate.
    """
    from services.core.runtime import open_lake
    from services.jobs.abtest import SimulationRequest, parse_window, run_simulate, simulate_report

    req = SimulationRequest(tuple(segment or ()), tuple(responding or ()), exposed_share, conversion_lift, revenue_lift,
                            parse_window(window) / 86_400, repetitions, alpha, max_users, seed)  # fmt: skip
    result = run_simulate(open_lake(get_settings(), lake), req)
    _emit(result, as_json, simulate_report(result))


# -- purchase propensity ------------------------------------------------------------------------------
propensity_app = typer.Typer(name="propensity", no_args_is_help=True,
                             help="Purchase propensity: who buys within the horizon (train and compare, score).")  # fmt: skip
app.add_typer(propensity_app, name="propensity")


@propensity_app.command("train")
def propensity_train(
    lake: LakeOption = None,
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="Label window in days after each cutoff.")] = 7,
    cutoffs: Annotated[int, typer.Option("--cutoffs", min=1, help="Weekly training cutoffs before the validation one.")] = 4,
    capacity: Annotated[float, typer.Option("--capacity", min=0.001, max=1.0, help=(
        "Campaign capacity: share of users targeted for the confusion matrix, precision and recall."))] = 0.10,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help=(
        "Threads for the model fits (default: every core; 1 on a busy shared machine)."))] = None,
    as_json: JsonOption = False,
) -> None:
    """Fit logistic regression and gradient boosting on weekly cutoffs, validate on the latest complete one,
    publish the better one (by validation ROC AUC) with its report to models/propensity/."""
    from services.jobs.propensity import PropensityConfig, train_report
    from services.jobs.propensity import train as run_train

    cfg = PropensityConfig(horizon_days=horizon, n_train_cutoffs=cutoffs, capacity=capacity, n_threads=threads)
    result = _spark_stage("propensity_train", lake, as_json, lambda spark, the_lake, _s: run_train(spark, the_lake, cfg))
    _emit(result, as_json, train_report(result))


@propensity_app.command("score")
def propensity_score(lake: LakeOption = None, as_json: JsonOption = False) -> None:
    """Score every user with the shipped propensity model (as of the lake's latest event); publish propensity/."""
    from services.jobs.propensity import score as run_score
    from services.jobs.propensity import score_report

    result = _spark_stage("propensity_score", lake, as_json, lambda spark, the_lake, _s: run_score(spark, the_lake))
    _emit(result, as_json, score_report(result))


# -- marketing-mix modelling --------------------------------------------------------------------------
mmm_app = typer.Typer(name="mmm", no_args_is_help=True,
                      help="Marketing-mix modelling: channel ROI with intervals, and a budget optimizer.")  # fmt: skip
app.add_typer(mmm_app, name="mmm")


def _channel_values(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        channel, sep, value = item.partition("=")
        if not sep or not channel.strip() or not value.strip():
            raise ValueError(f"{flag} expects CHANNEL=VALUE (e.g. search=5000 or search=1.2x), got {item!r}")
        out[channel.strip().lower()] = value.strip()
    return out


@mmm_app.command("fit")
def mmm_fit(
    spend: Annotated[Path, typer.Option("--spend", help="Spend CSV: date,channel,spend[,impressions].")],
    kpi: Annotated[Path | None, typer.Option("--kpi", help="Revenue CSV date,revenue (default: the lake's purchases).")] = None,
    controls: Annotated[Path | None, typer.Option("--controls", help="Controls CSV: date,name,value.")] = None,
    adstock: Annotated[str, typer.Option("--adstock", help="geometric or weibull_pdf.")] = "geometric",
    saturation: Annotated[str, typer.Option("--saturation", help="logistic or hill.")] = "logistic",
    draws: Annotated[int, typer.Option("--draws", min=50, help="Posterior draws per chain.")] = 1000,
    tune: Annotated[int, typer.Option("--tune", min=50, help="Tuning steps per chain.")] = 1000,
    chains: Annotated[int, typer.Option("--chains", min=1, help="Chains (2 fit the usual 2 cores).")] = 2,
    cv_folds: Annotated[int, typer.Option("--cv-folds", min=0, help="Rolling-origin folds (0: skip).")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.")] = 0,
    lift_tests: Annotated[Path | None, typer.Option("--lift-tests", help=(
        "Lift-test CSV: channel,start,end,spend_change,revenue_change,revenue_change_se, or the result.json "
        "of `abtest analyze --channel --spend-change --period`; calibrates the fit (PyMC-Marketing's "
        "lift-test likelihood)."))] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the model with PyMC-Marketing, validate it in time and publish mmm/<version>/ with its report."""
    from model.mmm import FitConfig
    from services.core.metrics import push_run_metrics, time_stage
    from services.core.runtime import open_lake
    from services.jobs.mmm import fit_mmm
    from services.reports.mmm import summary_text

    settings = get_settings()
    the_lake = open_lake(settings, lake)

    def spark():
        from services.core.spark import get_spark

        return get_spark(settings, "shoplens-mmm")

    cfg = FitConfig(adstock=adstock, saturation=saturation, draws=draws, tune=tune, chains=chains, seed=seed)
    with time_stage("mmm"):
        result = fit_mmm(the_lake, spend, kpi, controls, spark=spark, config=cfg, cv_folds=cv_folds,
                         lift_tests=lift_tests, on_progress=_say(as_json))
    push_run_metrics("shoplens-mmm")
    if not result["converged"]:
        typer.echo("shoplens: WARNING: the sampler did not converge; see the warnings before acting on this model",
                   err=True)
    _emit(result, as_json, summary_text(result))


@mmm_app.command("report")
def mmm_report(
    lake: LakeOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also copy report.md and report.html here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Channel ROI (90% intervals), out-of-sample fit, diagnostics and the default plan of the current model."""
    from services.core.catalog import MMM_MODEL
    from services.core.runtime import open_lake
    from services.jobs.mmm import read_report
    from services.reports.mmm import summary_text

    the_lake = open_lake(get_settings(), lake)
    doc = read_report(the_lake)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("report.md", "report.html"):
            (out / name).write_bytes(the_lake.store.read_bytes(f"{MMM_MODEL}/{doc['version']}/{name}"))
    if not doc["converged"]:
        typer.echo("shoplens: WARNING: the current model did not converge", err=True)
    _emit(doc, as_json, summary_text(doc))


@mmm_app.command("optimize")
def mmm_optimize(
    budget: Annotated[float, typer.Option("--budget", help="Total budget over the horizon.")],
    weeks: Annotated[int, typer.Option("--weeks", min=1, help="Horizon in weeks.")] = 13,
    minimum: Annotated[list[str] | None, typer.Option("--min", help=(
        "CHANNEL=VALUE, repeatable: minimum total over the horizon, absolute (5000) or relative to the "
        "channel's spend over the last N weeks (0.8x, 80%)."))] = None,
    maximum: Annotated[list[str] | None, typer.Option("--max", help="CHANNEL=VALUE, repeatable: maximum, as --min.")] = None,
    pattern: Annotated[str, typer.Option("--pattern", help="flat (even weekly spend) or free (optimize every week).")] = "flat",
    target_roi: Annotated[float | None, typer.Option("--target-roi", help=(
        "Instead: the largest plan (budget as a ceiling) whose expected revenue per unit spent is at least this."))] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Allocate a budget across channels and weeks to maximize expected revenue (carry-over included)."""
    from services.core.runtime import open_lake
    from services.jobs.mmm import run_optimize
    from services.reports.mmm import plan_text

    result = run_optimize(open_lake(get_settings(), lake), budget, weeks, _channel_values(minimum, "--min"),
                          _channel_values(maximum, "--max"), pattern, target_roi)
    _emit(result, as_json, plan_text(result))



# -- lifetime value -----------------------------------------------------------------------------------
clv_app = typer.Typer(name="clv", no_args_is_help=True,
                      help="Customer lifetime value: BG/NBD and Gamma-Gamma per customer, with a holdout check.")  # fmt: skip
app.add_typer(clv_app, name="clv")


@clv_app.command("fit")
def clv_fit(
    holdout_from: Annotated[str | None, typer.Option("--holdout-from", help=(
        "YYYY-MM-DD: also fit on the days before it and report predicted vs actual repeat purchases from it on."))] = None,
    model: Annotated[str, typer.Option("--model", help="bgnbd (BG/NBD) or pareto (Pareto/NBD).")] = "bgnbd",
    method: Annotated[str, typer.Option("--method", help="map (fast, the default) or mcmc (full sampling).")] = "map",
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit repeat-purchase and spend models on the lake's purchases; publish each customer's p_alive,
    expected purchases, expected value and discounted CLV to clv/ (horizon: SHOPLENS_CLV_HORIZON_MONTHS)."""
    from datetime import date

    try:  # before the models' imports, which log
        start = date.fromisoformat(holdout_from) if holdout_from else None
    except ValueError:
        raise ValueError(f"--holdout-from must be a date YYYY-MM-DD, got {holdout_from!r}") from None
    from services.jobs.clv import clv_report, config_from_settings, run_clv

    cfg = config_from_settings(holdout_from=start, model=model, method=method)
    result = _spark_stage("clv", lake, as_json, lambda spark, the_lake, _s: run_clv(spark, the_lake, cfg))
    _emit(result, as_json, clv_report(result))


@clv_app.command("report")
def clv_show(lake: LakeOption = None, as_json: JsonOption = False) -> None:
    """Print the current lifetime value fit (its report.md, or result.json with --json)."""
    from services.core.runtime import open_lake
    from services.jobs.clv import current_result
    from services.reports.clv import render_markdown

    doc = current_result(open_lake(get_settings(), lake))
    _emit(doc, as_json, render_markdown(doc))

def main() -> None:
    """Run the CLI; known failures exit 1 with a one-line reason instead of a traceback."""
    try:
        app()
    except Exception as err:
        # The warehouse module (and SQLAlchemy) load only for the commands that use them.
        warehouse = sys.modules.get("services.core.warehouse")
        known = (ContractError, ConfigError, StorageError, FileNotFoundError, ValueError,
                 *((warehouse.WarehouseError,) if warehouse else ()))  # fmt: skip
        if not isinstance(err, known):
            raise
        typer.echo(f"shoplens: error: {err}", err=True)
        sys.exit(1)


__all__ = ["JsonOption", "LakeOption", "Path", "app", "main"]
