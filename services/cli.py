"""The ``shoplens`` command line: one entry point, one subcommand per stage."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from etl.contract import ContractError
from services.logs import configure_logging
from services.settings import ConfigError, get_settings
from services.storage import StorageError

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


@app.callback()
def _setup() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, settings.log_stream)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Event files (REES46 CSV, plain or .gz).")],
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate, quarantine, dedupe, pseudonymize and add event files to the lake as one run.

    Files already ingested (same content hash) are skipped; a file with a bad header fails alone.
    Exit code 1 if any file failed.
    """
    from concurrent.futures import ThreadPoolExecutor

    from services.ingest_job import ingest_files
    from services.metrics import push_run_metrics, record_ingest
    from services.runtime import open_lake
    from services.spark import get_spark, progress_lines

    settings = get_settings()
    key = settings.key_bytes
    the_lake = open_lake(settings, lake)
    say = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    # The JVM starts in the background while Python hashes and chunks the input files.
    with ThreadPoolExecutor(max_workers=1) as pool:
        spark = pool.submit(get_spark, settings, "shoplens-ingest")
        with progress_lines(spark.result, "ingest", emit=say):
            summary = ingest_files(spark.result, the_lake, paths, key, on_progress=say)
    record_ingest(summary)
    push_run_metrics("shoplens-ingest")
    failed = [f for f in summary["files"] if f["status"] == "failed"]
    human = _ingest_report(summary)
    _emit(summary, as_json, human)
    if failed:
        typer.echo(f"shoplens: error: {len(failed)} file(s) failed: {failed[0]['reason']}", err=True)
        raise typer.Exit(1)


def _ingest_report(s: dict) -> str:
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
    return "\n".join(lines)


@app.command()
def features(
    lake: LakeOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="Recompute from scratch instead of folding new runs.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Update per-user features: fold newly committed ingestion runs into the aggregates and publish.

    Definitions of every feature: docs/features.md.
    """
    from services.features_job import features_report, run_features
    from services.runtime import open_lake
    from services.spark import get_spark, progress_lines

    settings = get_settings()
    the_lake = open_lake(settings, lake)
    spark = get_spark(settings, "shoplens-features")
    say = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    with progress_lines(spark, "features", emit=say):
        summary = run_features(spark, the_lake, full=full)
    _emit(summary, as_json, features_report(summary))


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
            dirty_rate=dirty_rate,
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
    from services.reporting import describe_summary, run_describe
    from services.runtime import open_lake
    from services.spark import get_spark, progress_lines

    settings = get_settings()
    the_lake = open_lake(settings, lake)
    spark = get_spark(settings, "shoplens-describe")
    say = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    with progress_lines(spark, "describe", emit=say):
        result = run_describe(spark, the_lake, out)
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
    model_version, n_events, status, reason. Invalid rows are skipped and counted on stderr.
    """
    from services.predict import history_report, predict_file
    from services.runtime import open_lake

    result = predict_file(events, open_lake(get_settings(), lake), as_of=as_of)
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
    """Fit the segmentation model on the current features, publish it with its report, then score.

    In the stack, `shoplens watch` retrains by itself when the model is missing or stale.
    """
    from services.metrics import push_run_metrics, time_stage
    from services.runtime import open_lake
    from services.segmentation_job import train as run_train
    from services.segmentation_job import train_report
    from services.spark import get_spark, progress_lines

    settings = get_settings()
    the_lake = open_lake(settings, lake)
    spark = get_spark(settings, "shoplens-train")
    say = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    with progress_lines(spark, "train", emit=say), time_stage("train"):
        result = run_train(spark, the_lake, truth_csv=truth, key=settings.key_bytes if truth else None)
    push_run_metrics("shoplens-train")
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

    from services.metrics import start_metrics_server
    from services.runtime import open_lake, open_location
    from services.spark import get_spark
    from services.watcher import WatchConfig, Watcher

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
    )
    key = settings.key_bytes
    the_lake = open_lake(settings, lake)
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
    from services.metrics import push_run_metrics, time_stage
    from services.runtime import open_lake
    from services.segmentation_job import score as run_score
    from services.segmentation_job import score_report
    from services.spark import get_spark, progress_lines

    settings = get_settings()
    the_lake = open_lake(settings, lake)
    spark = get_spark(settings, "shoplens-score")
    say = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    with progress_lines(spark, "score", emit=say), time_stage("score"):
        result = run_score(spark, the_lake)
    push_run_metrics("shoplens-score")
    _emit(result, as_json, score_report(result))


@app.command()
def export(
    what: Annotated[str, typer.Argument(help="segments or features")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    out: Annotated[Path, typer.Option("--out", help="Output file.")] = Path("export.csv"),
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the current segments or features for CRM/BI tools (pseudonymized user keys only)."""
    from services.runtime import open_lake
    from services.segmentation_job import export_table

    result = export_table(open_lake(get_settings(), lake), what, fmt, out)
    _emit(result, as_json, f"wrote {result['rows']:,} {what} rows to {result['out']} ({fmt})")


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


def main() -> None:
    """Run the CLI; known failures exit 1 with a one-line reason instead of a traceback."""
    try:
        app()
    except (ContractError, ConfigError, StorageError, FileNotFoundError, ValueError) as err:
        typer.echo(f"shoplens: error: {err}", err=True)
        sys.exit(1)


__all__ = ["JsonOption", "LakeOption", "Path", "app", "main"]
