"""The lake's user timelines: built by each ingestion run, merged on read, compacted now and then.

Layout (``TIMELINE_RUNS`` is run-scoped, ``TIMELINES`` versioned; see :mod:`services.core.catalog`)::

    timelines/runs/bucket=B/run_id=R/part-00000.parquet   one sorted run per bucket per ingestion run
    timelines/compacted/<version>/bucket=B.parquet        every run folded in, one file per bucket
    timelines/compacted/_current.json                     version, folded_run_ids

A bucket's timeline is its compacted file plus the files of the committed runs not folded into it,
merged (:func:`etl.timeline.merge_timelines`). An ingestion run writes only its own events: its
chunk tasks stage their accepted events cut by bucket group, and :func:`sort_groups` sorts each
group into its buckets' timelines (one task per group), so the build never re-reads the run's event
files and never touches the history; compaction rewrites every bucket and is
worth it once reading many small runs costs more than one file per bucket (benchmarks/timelines_bench.py).

Every Spark task here reads and writes the store itself (local disk or S3): the driver and the
executors share no directory. :func:`run_on_buckets` is the task runner the per-user jobs use: it hands
a Spark-free function one whole bucket as Arrow and writes (or collects) the table it returns.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from etl.timeline import (
    BUCKETS,
    ORDER,
    TIMELINE_SCHEMA,
    by_group,
    group_part,
    ipc_bytes,
    merge_timelines,
    read_ipc,
    sort_indices,
    timelines_by_bucket,
)
from services.core.catalog import EVENTS, STAGING, TIMELINE_RUNS, TIMELINES
from services.core.lake import Lake, new_run_id, utc_now_iso
from services.core.spark_tasks import one_task_each

__all__ = [
    "BUCKETS", "COMPACT_AFTER_RUNS", "backfill_timelines", "bucket_sources", "build_timelines",
    "compact_if_due", "compact_timelines", "in_tasks", "read_bucket", "read_written", "require_timelines", "run_on_buckets",
    "sort_groups",
    "timeline_groups", "timelines_status", "write_parquet",
]  # fmt: skip

#: Uncompacted runs after which an ingestion run compacts the timelines (see the module docstring).
COMPACT_AFTER_RUNS: Final[int] = 8
#: Tasks per core of a pass over buckets (each task takes consecutive buckets).
TASKS_PER_CORE: Final[int] = 2
#: The most events one timeline sort task holds (its pieces, concatenated, sorted and cut: a few
#: hundred bytes an event at its peak; a 39M-event month in four groups peaked at 9.2 GB).
EVENTS_PER_GROUP: Final[int] = 4_000_000
#: Staged event files read by one task of a build's first stage.
_FILES_PER_TASK: Final[int] = 8
#: Parquet's default dictionary page (1 MiB) holds ~15,000 user keys (64 hex characters), fewer than a
#: bucket of the 43.8M-event month (~27,000 users): past it the writer falls back to plain strings. With
#: every key in the dictionary a sorted bucket's key column is a few runs of indices, and a reader
#: that asks for it as a dictionary (``run_on_buckets(dictionary=...)``) decodes no strings.
_DICTIONARY_PAGE_BYTES: Final[int] = 64 << 20
#: Columns of a timeline written delta-encoded (with their types): a dictionary of times was the
#: largest and slowest part of a timeline file; deltas made the build's writes about a third faster
#: and the files a sixth smaller (benchmarks/results/timelines_ingest.md).
_DELTA: Final[dict[str, tuple[pa.DataType, ...]]] = {
    "event_time": (pa.timestamp("us", tz="UTC"),), "line_number": (pa.int64(),),
}
_WRITTEN: Final[T.StructType] = T.StructType(
    [T.StructField("bucket", T.IntegerType(), False), T.StructField("rows", T.LongType(), False)]
)
_WRITTEN_ARROW: Final[pa.Schema] = pa.schema([("bucket", pa.int32(), False), ("rows", pa.int64(), False)])


def write_parquet(table: pa.Table) -> bytes:
    """A timeline (or a per-bucket result) as Parquet: zstd level 1, the Arrow schema stored so the
    dictionaries come back as dictionaries, the sort order declared, and a dictionary page large
    enough for every key of a bucket (:data:`_DICTIONARY_PAGE_BYTES`). A timeline's times and line
    numbers, ascending within each user, are delta-encoded (:data:`_DELTA`), and it has no statistics."""
    sink = io.BytesIO()
    names = table.schema.names
    sorting = None
    if set(ORDER) <= set(names):
        sorting = [pq.SortingColumn(table.schema.get_field_index(c)) for c in ORDER]
    delta = {c: "DELTA_BINARY_PACKED" for c in _DELTA if c in names and table.schema.field(c).type in _DELTA[c]}
    # no min/max statistics in a timeline: every reader takes whole buckets, and they were a fifth of the write
    pq.write_table(table, sink, compression="zstd", compression_level=1, sorting_columns=sorting,
                   dictionary_pagesize_limit=_DICTIONARY_PAGE_BYTES, write_statistics=sorting is None,
                   use_dictionary=[c for c in names if c not in delta], column_encoding=delta or None)  # fmt: skip
    return sink.getvalue()


def in_tasks(spark: SparkSession, items: Sequence[int], fn: Callable[[int], Iterator[pa.RecordBatch]],
             schema: T.StructType) -> DataFrame:  # fmt: skip
    """``fn`` on every item (a bucket), consecutive items grouped into two tasks per core.

    A Spark task costs about 0.1 s of its own, and far more on a loaded machine: one task per bucket
    (64) made an ingestion run's timeline build cost more than the rest of the run.
    """
    return _spread(spark, list(items), lambda part: (batch for i in part for batch in fn(i)), schema)


def _spread(spark: SparkSession, items: list[int], fn: Callable[[list[int]], Iterator[pa.RecordBatch]],
            schema: T.StructType) -> DataFrame:  # fmt: skip
    """``fn`` on consecutive runs of ``items``, two tasks per core (:func:`in_tasks`)."""
    tasks = min(len(items), TASKS_PER_CORE * spark.sparkContext.defaultParallelism)
    return one_task_each(spark, tasks, lambda t: fn(items[t * len(items) // tasks:(t + 1) * len(items) // tasks]),
                         schema)  # fmt: skip


def _bucket_key(prefix: str, bucket: int) -> str:
    return f"{prefix}/bucket={bucket:04d}/part-00000.parquet"


def _written_key(out: str, bucket: int) -> str:
    """The file a :func:`run_on_buckets` task writes under ``out`` for the group starting at ``bucket``."""
    return f"{out}/part-{bucket:04d}.parquet"


def timeline_groups(spark: SparkSession, events: int) -> int:
    """Bucket groups of a build of ``events`` events: two per core (a task each), so the sort stage fills
    the cores, and more where that would give a sort task over :data:`EVENTS_PER_GROUP` events, so its
    memory does not grow with the run (up to one group per bucket)."""
    cores = TASKS_PER_CORE * spark.sparkContext.defaultParallelism
    return min(BUCKETS, max(cores, math.ceil(events / EVENTS_PER_GROUP)))


def build_timelines(spark: SparkSession, store: Any, event_keys: Sequence[str], out: str, scratch: str,
                    events: int) -> dict[int, int]:  # fmt: skip
    """The timeline of some committed event files (a run ingested before timelines existed).

    Two stages of tasks through the store, no Spark shuffle: file tasks cut a few event files each by
    bucket group (:func:`etl.timeline.by_group`) into ``<scratch>/group=G/part-T.arrow``, then
    :func:`sort_groups`. (Ingestion skips the first stage: its chunk tasks stage their events by group.)
    ``events``: about how many the files hold (it sets the groups). Returns bucket -> events; ``scratch``
    is deleted.
    """
    keys = list(event_keys)
    if not keys:
        return {}
    tasks = min(len(keys), max(2 * spark.sparkContext.defaultParallelism, math.ceil(len(keys) / _FILES_PER_TASK)))
    groups, columns = timeline_groups(spark, events), list(TIMELINE_SCHEMA.names)

    def cut(task: int) -> Iterator[pa.RecordBatch]:
        files = [pq.read_table(io.BytesIO(store.read_bytes(keys[i])), columns=columns)
                 for i in range(task * len(keys) // tasks, (task + 1) * len(keys) // tasks)]  # fmt: skip
        for g, part in by_group(pa.concat_tables(files, promote_options="permissive"), groups):
            store.write_bytes(f"{scratch}/{group_part(g, task)}", ipc_bytes(part))
            yield _written(g, part.num_rows)

    expected = sum(r["rows"] for r in one_task_each(spark, tasks, cut, _WRITTEN).collect())
    return sort_groups(spark, store, scratch, out, expected)


def sort_groups(spark: SparkSession, store: Any, scratch: str, out: str, expected: int) -> dict[int, int]:
    """Timelines from staged group pieces: ``<scratch>/group=G/*.arrow`` -> ``<out>/bucket=B/part-00000.parquet``.

    One task per group sorts its pieces once and cuts them into its buckets' timelines
    (:func:`etl.timeline.timelines_by_bucket`; groups, not buckets, in the staged files: a file per
    (task, bucket) was 64 small durable writes per task).
    Deterministic names, so a retried task overwrites. Raises unless the timelines hold ``expected``
    events. Returns bucket -> events; ``scratch`` is deleted.
    """
    pieces: dict[str, list[str]] = {}
    for key in store.list(scratch):
        pieces.setdefault(key[len(scratch):].lstrip("/").split("/", 1)[0], []).append(key)
    groups = sorted(pieces)

    def sort(i: int) -> Iterator[pa.RecordBatch]:
        parts = [read_ipc(store.read_bytes(k)) for k in pieces[groups[i]]]
        # not unified here: the sort combines each column once, and Arrow unifies its dictionaries then
        rows = pa.concat_tables(parts, promote_options="permissive")
        for b, timeline in timelines_by_bucket(rows):  # staged by by_group: the keys are not hashed again
            store.write_bytes(_bucket_key(out, b), write_parquet(timeline))
            yield _written(b, timeline.num_rows)

    written = {r["bucket"]: r["rows"] for r in one_task_each(spark, len(groups), sort, _WRITTEN).collect()} if groups else {}
    store.delete_prefix(scratch)
    if sum(written.values()) != expected:
        raise RuntimeError(f"timelines hold {sum(written.values())} events where the files hold {expected}")
    return written


def _written(bucket: int, rows: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([bucket], pa.int32()), pa.array([rows], pa.int64())],
                                      schema=_WRITTEN_ARROW)  # fmt: skip


# ------------------------------------------------------------------------------------- reading
def _bucket_number(key: str) -> int:
    return int(key.split("bucket=", 1)[1][:4])


def bucket_sources(lake: Lake) -> dict[int, list[str]]:
    """Bucket -> the store keys whose merge is its timeline: the compacted file, then the committed
    runs not folded into it (runs of no committed summary never count)."""
    ptr = lake.pointer(TIMELINES)
    sources: dict[int, list[str]] = {}
    folded: set[str] = set()
    if ptr is not None:
        folded = set(ptr.get("folded_run_ids", []))
        for key in lake.store.list(f"{TIMELINES}/{ptr['version']}"):
            if key.endswith(".parquet"):
                sources.setdefault(_bucket_number(key), []).append(key)
    for key in lake.committed_files(TIMELINE_RUNS):
        if _run_of(key) not in folded:
            sources.setdefault(_bucket_number(key), []).append(key)
    return dict(sorted(sources.items()))


def read_bucket(store: Any, keys: Sequence[str], columns: Sequence[str] | None = None,
                dictionary: Sequence[str] = ()) -> pa.Table:  # fmt: skip
    """One bucket's timeline from its sources (:func:`bucket_sources`), sorted; with ``columns``, only
    those (from several sources the sort columns are read too, to merge; one source is sorted already,
    and its line numbers and file names were a third of a retention task's read); the text columns of
    ``dictionary`` as dictionaries."""
    wanted = None if columns is None else list(dict.fromkeys([*ORDER, *columns]) if len(keys) > 1 else columns)
    read = list(dictionary) or None
    parts = [pq.read_table(io.BytesIO(store.read_bytes(k)), columns=wanted, read_dictionary=read) for k in keys]
    if wanted is None:
        return merge_timelines(parts)
    if len(parts) == 1:
        return parts[0].select(list(columns))
    full = [p.select(wanted) for p in parts]
    merged = pa.concat_tables(full, promote_options="permissive").unify_dictionaries()
    return merged.take(sort_indices(merged)).select(list(columns))


# ----------------------------------------------------------------------------------- the runner
def run_on_buckets(
    spark: SparkSession,
    lake: Lake,
    fn: Callable[[Sequence[int], pa.Table], pa.Table],
    schema: pa.Schema,
    *,
    columns: Sequence[str] | None = None,
    dictionary: Sequence[str] = (),
    batch_rows: int = 0,
    out: str | None = None,
) -> pa.Table:
    """``fn`` on every bucket's timeline in Spark tasks: the tasks read the buckets from the store.

    ``fn`` is Spark-free: bucket numbers and their timeline (``columns`` only, if given) in, a table
    of ``schema`` out (the numbers, so a function with per-bucket inputs need not hash a key to find
    them). A call gets one bucket, or with ``batch_rows`` a task's consecutive buckets concatenated
    until they hold that many events (whole users, each in time order, but not sorted across buckets:
    for a function whose result adds up over users, so that a small lake costs a few calls, not 64,
    and memory stays bounded). The columns of ``dictionary`` come as Arrow dictionaries: a function
    that only compares user keys reads their indices, not 64-character strings.

    Without ``out`` the tables come back to the driver, concatenated (for small results: a bucket's
    sums). With ``out`` (a prefix in the lake's store) each task writes each call's table to
    ``<out>/part-BBBB.parquet`` (B: the call's first bucket) itself, and the returned table has
    ``bucket, rows`` per file written.
    """
    sources = bucket_sources(lake)
    store, cols, as_dictionary = lake.store, None if columns is None else list(columns), list(dictionary)
    result_schema = _WRITTEN_ARROW if out is not None else schema

    def calls(buckets: Sequence[int]) -> Iterator[tuple[list[int], pa.Table]]:
        group: list[int] = []
        parts: list[pa.Table] = []
        for b in buckets:
            group.append(b)
            parts.append(read_bucket(store, sources[b], cols, as_dictionary))
            if sum(p.num_rows for p in parts) >= batch_rows or b == buckets[-1]:
                yield group, parts[0] if len(parts) == 1 else pa.concat_tables(parts)
                group, parts = [], []

    def task(buckets: Sequence[int]) -> Iterator[pa.RecordBatch]:
        for group, timeline in calls(buckets):
            table = fn(group, timeline).cast(schema)
            if out is None:
                yield from table.to_batches()
                continue
            store.write_bytes(_written_key(out, group[0]), write_parquet(table))
            yield _written(group[0], table.num_rows)

    if not sources:
        return result_schema.empty_table()
    df = _spread(spark, list(sources), task, from_arrow_schema(result_schema))
    return df.toArrow().cast(result_schema)


def read_written(store: Any, out: str, written: pa.Table, schema: pa.Schema) -> pa.Table:
    """The tables a :func:`run_on_buckets` pass with ``out`` wrote (``written``: its ``bucket, rows``
    per file), as one table of ``schema`` in bucket order; a file that does not hold the rows its task
    reported is an error."""
    tables = []
    for bucket, rows in sorted(zip(written["bucket"].to_pylist(), written["rows"].to_pylist(), strict=True)):
        key = _written_key(out, bucket)
        table = pq.read_table(io.BytesIO(store.read_bytes(key)), schema=schema)
        if table.num_rows != rows:
            raise RuntimeError(f"{key}: {table.num_rows} rows where its task wrote {rows}")
        tables.append(table)
    return pa.concat_tables(tables) if tables else schema.empty_table()


# ----------------------------------------------------------------------------- compaction, status
def compact_timelines(spark: SparkSession, lake: Lake) -> dict[str, Any]:
    """Fold every committed run's timelines into one file per bucket; return what was folded.

    The new version is written whole under ``timelines/compacted/<version>/`` before its pointer
    moves; only then are the folded runs' files and the previous version deleted (a crash in between
    leaves files a later compaction removes, never a bucket without its events).
    """
    previous = lake.pointer(TIMELINES)
    sources = bucket_sources(lake)
    runs = {_run_of(k) for keys in sources.values() for k in keys if k.startswith(f"{TIMELINE_RUNS}/")}
    folded = sorted({*(previous or {}).get("folded_run_ids", []), *runs})
    version = new_run_id()
    store, buckets = lake.store, list(sources)

    def task(b: int) -> Iterator[pa.RecordBatch]:
        timeline = read_bucket(store, sources[b])
        store.write_bytes(f"{TIMELINES}/{version}/bucket={b:04d}.parquet", write_parquet(timeline))
        yield _written(b, timeline.num_rows)

    rows = in_tasks(spark, buckets, task, _WRITTEN).collect() if buckets else []
    events = sum(r["rows"] for r in rows)
    lake.write_json(f"{TIMELINES}/_current.json", {
        "version": version, "published_at": utc_now_iso(), "folded_run_ids": folded, "buckets": BUCKETS,
        "n_events": events,
    })  # fmt: skip
    removed = 0
    for run in folded:
        for key in {k.rsplit("/", 1)[0] for k in store.list(TIMELINE_RUNS) if f"/run_id={run}/" in k}:
            removed += store.delete_prefix(key)
    if previous is not None:
        removed += store.delete_prefix(f"{TIMELINES}/{previous['version']}")
    return {"version": version, "folded_run_ids": folded, "n_events": events, "files_removed": removed}


def _run_of(key: str) -> str:
    return key.split("/run_id=", 1)[1].split("/", 1)[0]


def _runs_with_timelines(lake: Lake) -> set[str]:
    return {_run_of(k) for k in lake.committed_files(TIMELINE_RUNS)}


def timelines_status(lake: Lake) -> dict[str, Any]:
    """What the timelines hold: compacted version, runs not yet compacted, committed runs whose events
    have no timeline (ingested before timelines existed: ``shoplens timelines --backfill``)."""
    ptr = lake.pointer(TIMELINES)
    folded = set((ptr or {}).get("folded_run_ids", []))
    runs = _runs_with_timelines(lake)
    with_events = {_run_of(k) for k in lake.committed_files(EVENTS)}
    return {
        "compacted_version": None if ptr is None else ptr["version"],
        "uncompacted_runs": sorted(runs - folded),
        "missing_runs": sorted(with_events - runs - folded),
    }


def require_timelines(lake: Lake) -> None:
    """Raise a one-line ValueError naming ``shoplens timelines --backfill`` when a committed run has no
    timelines (ingested before timelines existed): the per-user jobs read only the timelines.

    Why not backfill on the spot: it writes a timeline for every such run (a whole ingestion's sort),
    which a report job should not start unannounced; the command is run once, and ingestion keeps the
    timelines current afterwards.
    """
    missing = timelines_status(lake)["missing_runs"]
    if missing:
        raise ValueError(f"{len(missing)} committed ingestion run(s) have no user timelines (ingested before "
                         "timelines existed): run `shoplens timelines --backfill` once")  # fmt: skip


def compact_if_due(spark: SparkSession, lake: Lake, after_runs: int = COMPACT_AFTER_RUNS) -> dict[str, Any] | None:
    """:func:`compact_timelines` once ``after_runs`` committed runs are not compacted; else None."""
    if len(timelines_status(lake)["uncompacted_runs"]) < after_runs:
        return None
    return compact_timelines(spark, lake)


def backfill_timelines(spark: SparkSession, lake: Lake) -> dict[str, int]:
    """Build the timelines of committed runs ingested before timelines existed, from their event files.

    Each run's timelines are staged under ``_staging/timelines-<run>/`` and moved under
    ``timelines/runs``; returns run -> events. (A crash while moving leaves a run partly covered:
    ``shoplens timelines`` reports counts per run against the events' to spot it.)
    """
    built: dict[str, int] = {}
    events = lake.committed_files(EVENTS)
    accepted = {r.get("run_id"): int(r.get("rows_accepted") or 0) for r in lake.runs()}
    for run in timelines_status(lake)["missing_runs"]:
        prefix = f"{STAGING}/timelines-{run}"
        keys = [k for k in events if _run_of(k) == run]
        built[run] = sum(build_timelines(spark, lake.store, keys, f"{prefix}/out", f"{prefix}/parts",
                                         accepted.get(run, 0)).values())  # fmt: skip
        lake.publish_run_dataset(f"{prefix}/out", TIMELINE_RUNS, run)
        lake.store.delete_prefix(prefix)
    return built
