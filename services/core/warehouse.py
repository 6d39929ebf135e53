"""The SQL warehouse's plumbing: an engine from a URL, tables declared once, bulk loads, atomic swaps.

A warehouse table mirrors one lake dataset's current version (:class:`WarehouseTable`: its name, the
dataset, a reader of that dataset's rows and its columns, key and indexes, declared once as data). A
publish loads every table whose lake version differs from the one the warehouse holds into a staging
table ``<name>__next`` (PostgreSQL: ``CREATE`` + ``COPY ... FREEZE`` in one transaction, then the
indexes and ``ANALYZE``; SQLite: batched ``INSERT``), and then swaps all of them in with **one**
transaction (drop the old table, rename the staging one, rename its indexes, record the versions in
``shoplens_publications``). PostgreSQL and SQLite both have transactional DDL, so a reader sees the
old tables or the new ones, never a half-loaded one and never a mix of two publishes.

Why COPY fed with CSV written by pyarrow: the rows never become Python objects; a record batch is
turned into CSV text in C++ and streamed to the server, which parses it on its side. ``FREEZE``
(allowed because the table was created in the same transaction) spares BI's first reads the hint-bit
writes. Index builds after the load are one sort each, instead of one B-tree insert per row.

Failures of the database (down, refused, bad credentials, a lock not granted in time) are raised as
:class:`WarehouseError` with a one-line reason and the URL without its password. The lake is only
ever read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("shoplens.warehouse")

PUBLICATIONS = "shoplens_publications"
STAGING_SUFFIX = "__next"
#: Rows per COPY chunk / INSERT batch: a few MB of CSV, few enough Python objects for SQLite.
BATCH_ROWS = 100_000
SQLITE_BATCH_ROWS = 20_000
CONNECT_TIMEOUT_SECONDS = 5
#: Sort memory of the index builds (the stack's warehouse container has 512 MB).
INDEX_MEMORY = "128MB"
#: Text keys sort bytewise on PostgreSQL: user keys are hex, and a C-collated B-tree builds ~2x faster.
KEY_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
#: How long the swap may wait for BI queries holding the old tables before the publish gives up.
LOCK_TIMEOUT = "30s"


class WarehouseError(RuntimeError):
    """The warehouse could not be reached or refused a publish (the lake is untouched)."""


@dataclass(frozen=True)
class Col:
    """One declared column: SQL type (SQLAlchemy), nullability and what it means (docs/outputs.md)."""

    name: str
    type: sa.types.TypeEngine
    nullable: bool = True
    doc: str = ""


#: ``reader(lake, version)`` -> the rows of that version of the dataset, as Arrow record batches.
Reader = Callable[[Any, str], pa.RecordBatchReader]


@dataclass(frozen=True)
class WarehouseTable:
    """A warehouse table and where its rows come from.

    ``columns`` None means every column the reader yields, with SQL types mapped from the Arrow ones
    (:func:`columns_from_arrow`): the per-user features follow docs/features.md without a second list.
    ``key`` is the primary key; ``indexes`` lists the extra indexes (one tuple of columns each).
    """

    name: str
    dataset: str
    reader: Reader
    columns: tuple[Col, ...] | None
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    summary: str = ""

    def sa_table(self, metadata: sa.MetaData, columns: Sequence[Col] | None = None, suffix: str = "",
                 with_indexes: bool = True) -> sa.Table:  # fmt: skip
        """The SQLAlchemy ``Table`` (named ``name + suffix``, constraint and index names likewise)."""
        cols = list(columns if columns is not None else self.columns or ())
        if not cols:
            raise ValueError(f"{self.name}: columns come from the data; pass them")
        name = f"{self.name}{suffix}"
        items: list[Any] = [
            sa.Column(c.name, KEY_TEXT if c.name in self.key and isinstance(c.type, sa.Text) else c.type,
                      nullable=c.nullable and c.name not in self.key, comment=c.doc or None)
            for c in cols
        ]  # fmt: skip
        items.append(sa.PrimaryKeyConstraint(*self.key, name=f"pk_{name}"))
        if with_indexes:
            items += [sa.Index(index_name(self.name, ix) + suffix, *ix) for ix in self.indexes]
        return sa.Table(name, metadata, *items)


def index_name(table: str, columns: Sequence[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


PUBLICATIONS_TABLE = sa.Table(
    PUBLICATIONS,
    sa.MetaData(),
    sa.Column("table_name", sa.Text, primary_key=True, comment="warehouse table"),
    sa.Column("dataset", sa.Text, nullable=False, comment="lake dataset it mirrors"),
    sa.Column("lake_version", sa.Text, nullable=False, comment="version of the dataset the table holds"),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
)


# ------------------------------------------------------------------------------------ types
def sql_type(t: pa.DataType) -> sa.types.TypeEngine:
    """The SQL type of an Arrow type (the types the lake writes)."""
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_integer(t):
        return sa.Integer() if t.bit_width <= 32 else sa.BigInteger()
    if pa.types.is_floating(t):
        return sa.Double()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return sa.Text()
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=True)
    if pa.types.is_date(t):
        return sa.Date()
    raise ValueError(f"no SQL type for Arrow type {t}")


def arrow_type(t: sa.types.TypeEngine) -> pa.DataType:
    """The Arrow type a declared column is loaded from."""
    for sa_cls, arrow in (
        (sa.Boolean, pa.bool_()), (sa.BigInteger, pa.int64()), (sa.Integer, pa.int32()),
        (sa.Double, pa.float64()), (sa.Float, pa.float64()), (sa.DateTime, pa.timestamp("us", tz="UTC")),
        (sa.Date, pa.date32()), (sa.Text, pa.string()), (sa.String, pa.string()),
    ):  # fmt: skip
        if isinstance(t, sa_cls):
            return arrow
    raise ValueError(f"no Arrow type for SQL type {t!r}")


def columns_from_arrow(schema: pa.Schema) -> tuple[Col, ...]:
    return tuple(Col(f.name, sql_type(f.type)) for f in schema)


def conform(batch: pa.RecordBatch, columns: Sequence[Col], table: str) -> pa.RecordBatch:
    """The declared columns of ``batch``, in order, cast to their types; NaN becomes NULL."""
    missing = [c.name for c in columns if c.name not in batch.schema.names]
    if missing:
        raise ValueError(f"{table}: the lake data has no column {', '.join(missing)}")
    arrays = []
    for c in columns:
        arr = batch.column(c.name)
        target = arrow_type(c.type)
        if pa.types.is_timestamp(target) and pa.types.is_timestamp(arr.type) and arr.type.tz is None:
            arr = pc.assume_timezone(arr, "UTC")
        arr = arr.cast(target)
        if pa.types.is_floating(target):
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, target), arr)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in columns])


# ------------------------------------------------------------------------------------ engine
def masked(url: str | sa.URL) -> str:
    """The URL as it may be logged: without its password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say so without echoing it
        return "<unparsable warehouse URL>"


def _reason(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    text = " ".join(str(orig).split())
    return f"{type(orig).__name__}: {text}"[:300]


def make_engine(url: str) -> Engine:
    """An engine for ``url``: short connect timeout, and transactional DDL on SQLite (WAL journal).

    pysqlite starts transactions only before DML by itself, so a DROP/RENAME would commit on its own;
    taking over BEGIN makes ``engine.begin()`` cover DDL too, which the atomic swap relies on.
    """
    try:
        parsed = sa.make_url(url)
    except Exception as err:
        raise WarehouseError(f"SHOPLENS_WAREHOUSE_URL is not a SQLAlchemy URL: {type(err).__name__}") from err
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):  # pragma: no cover - driver callback
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover - driver callback
            conn.exec_driver_sql("BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3: COPY from Python
        return sa.create_engine(
            parsed, pool_pre_ping=True,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "shoplens"},
        )  # fmt: skip
    return sa.create_engine(parsed)


@dataclass
class Staged:
    """A table loaded under its staging name, waiting for the swap."""

    spec: WarehouseTable
    version: str
    columns: tuple[Col, ...]
    rows: int


@dataclass
class Warehouse:
    """A warehouse at one URL (``dialect`` is ``postgresql`` or ``sqlite``; others load row by row)."""

    url: str
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def where(self) -> str:
        return masked(self.url)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def sqlite_file(self) -> Path | None:
        database = self.engine.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            return None
        return Path(database).expanduser()

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn database failures into a one-line :class:`WarehouseError`."""
        try:
            yield
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as err:  # COPY runs on the driver
            raise WarehouseError(f"warehouse {self.where}: {doing} failed: {_reason(err)}") from err

    # -- what the warehouse holds -------------------------------------------------------------------
    def held(self) -> dict[str, str]:
        """table name -> lake version the warehouse holds (empty before the first publish).

        Read-only: an SQLite file that does not exist yet is not created by asking.
        """
        if self.sqlite_file is not None and not self.sqlite_file.exists():
            return {}
        with self.errors("reading shoplens_publications"), self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(PUBLICATIONS):
                return {}
            rows = conn.execute(sa.select(PUBLICATIONS_TABLE.c.table_name, PUBLICATIONS_TABLE.c.lake_version))
            return {name: version for name, version in rows}

    def publications(self) -> list[dict[str, Any]]:
        with self.errors("reading shoplens_publications"), self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(PUBLICATIONS):
                return []
            return [dict(r._mapping) for r in conn.execute(sa.select(PUBLICATIONS_TABLE))]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One publisher at a time (PostgreSQL advisory lock; SQLite serializes writers itself)."""
        if self.dialect != "postgresql":
            if self.sqlite_file is not None:
                self.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            yield
            return
        lock_id = int.from_bytes(hashlib.sha256(b"shoplens-publish").digest()[:8], "big", signed=True)
        with self.errors("taking the publish lock"):
            conn = self.engine.connect()
        try:
            with self.errors("taking the publish lock"):
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_id}).scalar()
                conn.commit()
            if not got:
                raise WarehouseError(f"warehouse {self.where}: another publish is running; try again later")
            yield
        finally:
            with contextlib.suppress(SQLAlchemyError):
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
                conn.commit()
            conn.close()

    # -- loading ------------------------------------------------------------------------------------
    def load(self, spec: WarehouseTable, version: str, batches: pa.RecordBatchReader) -> Staged:
        """Load every row of ``batches`` into ``<name>__next`` (replacing a leftover), indexes included."""
        columns = spec.columns or columns_from_arrow(batches.schema)
        md = sa.MetaData()
        postgres = self.dialect == "postgresql"
        staging = spec.sa_table(md, columns, STAGING_SUFFIX, with_indexes=postgres)
        rows = 0
        with self.errors(f"loading {spec.name}"):
            with self.engine.begin() as conn:  # created and filled in one transaction (COPY FREEZE)
                staging.drop(conn, checkfirst=True)
                conn.execute(sa.schema.CreateTable(staging))  # its indexes are built after the load
                conformed = (conform(b, columns, spec.name) for b in batches if b.num_rows)
                rows = (self._copy if postgres else self._insert)(conn, staging, conformed)
            if postgres:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{INDEX_MEMORY}'")
                    for ix in staging.indexes:
                        ix.create(conn)
                    conn.exec_driver_sql(f'ANALYZE "{staging.name}"')
        log.info("loaded %s (%d rows) into %s", spec.name, rows, staging.name,
                 extra={"stage": "publish", "table": spec.name, "rows": rows, "lake_version": version})  # fmt: skip
        return Staged(spec, version, tuple(columns), rows)

    def _copy(self, conn: Connection, table: sa.Table, batches: Iterable[pa.RecordBatch]) -> int:
        """COPY FROM STDIN in CSV, each record batch written as CSV by pyarrow.

        Strings are always quoted (``""`` is an empty string, an unquoted empty field is NULL). A
        thread renders the next chunk while this one is sent: pyarrow and the socket both release
        the GIL, so the client's CSV and the server's parse overlap.
        """
        cols = ", ".join(f'"{c.name}"' for c in table.columns)
        sql = f'COPY "{table.name}" ({cols}) FROM STDIN WITH (FORMAT csv, FREEZE true)'
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")

        def render(part: pa.RecordBatch) -> tuple[memoryview, int]:
            buf = io.BytesIO()
            pacsv.write_csv(part, buf, options)
            return buf.getbuffer(), part.num_rows

        parts = (b.slice(i, BATCH_ROWS) for b in batches for i in range(0, b.num_rows, BATCH_ROWS))
        rows = 0
        cursor = conn.connection.dbapi_connection.cursor()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoplens-csv") as pool, cursor.copy(sql) as copy:
            pending = None
            for part in parts:
                nxt = pool.submit(render, part)
                if pending is not None:
                    data, n = pending.result()
                    copy.write(data)
                    rows += n
                pending = nxt
            if pending is not None:
                data, n = pending.result()
                copy.write(data)
                rows += n
        return rows

    def _insert(self, conn: Connection, table: sa.Table, batches: Iterable[pa.RecordBatch]) -> int:
        rows = 0
        insert = table.insert()
        for batch in batches:
            for start in range(0, batch.num_rows, SQLITE_BATCH_ROWS):
                part = batch.slice(start, SQLITE_BATCH_ROWS).to_pylist()
                conn.execute(insert, part)
                rows += len(part)
        return rows

    def drop_staging(self, staged: Iterable[Staged]) -> None:
        with contextlib.suppress(SQLAlchemyError), self.engine.begin() as conn:
            for s in staged:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{s.spec.name}{STAGING_SUFFIX}"')

    # -- the swap -----------------------------------------------------------------------------------
    def swap(self, staged: Sequence[Staged], now: datetime | None = None) -> None:
        """Replace every staged table's live one and record the versions, in one transaction."""
        now = now or datetime.now(UTC)
        postgres = self.dialect == "postgresql"
        with self.errors("swapping the new tables in"), self.engine.begin() as conn:
            if postgres:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            PUBLICATIONS_TABLE.create(conn, checkfirst=True)
            for s in staged:
                name, nxt = s.spec.name, f"{s.spec.name}{STAGING_SUFFIX}"
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
                conn.exec_driver_sql(f'ALTER TABLE "{nxt}" RENAME TO "{name}"')
                if postgres:  # the PK's index is renamed with its constraint
                    conn.exec_driver_sql(f'ALTER TABLE "{name}" RENAME CONSTRAINT "pk_{nxt}" TO "pk_{name}"')
                    for ix in s.spec.indexes:
                        live = index_name(name, ix)
                        conn.exec_driver_sql(f'ALTER INDEX "{live}{STAGING_SUFFIX}" RENAME TO "{live}"')
                else:  # SQLite cannot rename an index: build them here (WAL readers are not blocked)
                    final = s.spec.sa_table(sa.MetaData(), s.columns)
                    for index in final.indexes:
                        index.create(conn)
                conn.execute(PUBLICATIONS_TABLE.delete().where(PUBLICATIONS_TABLE.c.table_name == name))
                conn.execute(PUBLICATIONS_TABLE.insert().values(
                    table_name=name, dataset=s.spec.dataset, lake_version=s.version, rows=s.rows,
                    published_at=now))  # fmt: skip


__all__ = [
    "BATCH_ROWS",
    "PUBLICATIONS",
    "PUBLICATIONS_TABLE",
    "Col",
    "Reader",
    "Staged",
    "Warehouse",
    "WarehouseError",
    "WarehouseTable",
    "arrow_type",
    "columns_from_arrow",
    "conform",
    "index_name",
    "make_engine",
    "masked",
    "sql_type",
]
