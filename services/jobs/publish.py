"""``shoplens publish`` and the ``publish`` stage: the curated lake results as SQL tables for BI and CRM.

The warehouse (``SHOPLENS_WAREHOUSE_URL``: an embedded SQLite file by default, the stack's PostgreSQL,
or anything that speaks PostgreSQL's SQL such as Redshift) holds one table per entry of
:data:`TABLES`. Each mirrors the current version of one lake dataset; ``shoplens_publications``
records which version each table holds, so the stage is due exactly when a lake pointer has moved,
and publishing the same versions again changes nothing. A later capability (funnel steps, propensity
scores, experiment results, channel ROI) adds its table by adding one :class:`WarehouseTable` to
:data:`TABLES` (and its section to docs/outputs.md); nothing else changes.

How a publish is made atomic, bulk and safe: :mod:`services.core.warehouse`. No raw user id exists
in the lake, so none can reach the warehouse: users are their pseudonymized ``user_key``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from services.core.catalog import CLV, FEATURES, OVERVIEW_VIEWS, RETENTION, SEGMENTATION_MODEL, SEGMENTS
from services.core.lake import Lake
from services.core.readers import parquet_dataset
from services.core.warehouse import Col, Staged, Warehouse, WarehouseError, WarehouseTable, masked

log = logging.getLogger("shoplens.publish")


# ------------------------------------------------------------------------------------ readers
def parquet_dir(lake: Lake, dataset: str, version: str, columns: list[str] | None = None) -> pa.RecordBatchReader:
    """Every Parquet part of ``dataset/version`` as one stream of record batches (never all in memory)."""
    found = parquet_dataset(lake, f"{dataset}/{version}")
    if found is None:
        raise FileNotFoundError(f"{dataset}/{version} has no Parquet files")
    return found.scanner(columns=columns, batch_size=262_144).to_reader()


def parquet_file(lake: Lake, key: str) -> pa.RecordBatchReader:
    """One small Parquet file of the lake."""
    return pq.read_table(pa.BufferReader(lake.store.read_bytes(key))).to_reader()


SEGMENT_COLUMNS = ["user_key", "segment_id", "segment_name", "confidence", "model_version", "as_of",
                   "lifecycle_stage"]


def read_segments(lake: Lake, version: str) -> pa.RecordBatchReader:
    return parquet_dir(lake, SEGMENTS, version, SEGMENT_COLUMNS)


def read_features(lake: Lake, version: str) -> pa.RecordBatchReader:
    return parquet_dir(lake, FEATURES, version)


def read_kpi_daily(lake: Lake, version: str) -> pa.RecordBatchReader:
    return parquet_file(lake, f"{OVERVIEW_VIEWS}/{version}/kpi_daily.parquet")


CUSTOMER_VALUE_COLUMNS = ["user_key", "first_purchase", "frequency", "recency", "T", "monetary_value", "revenue",
                          "p_alive", "expected_purchases_30", "expected_purchases_90", "expected_purchases_365",
                          "expected_value", "clv", "horizon_months", "segment", "lifecycle_stage"]  # fmt: skip


def read_customer_value(lake: Lake, version: str) -> pa.RecordBatchReader:
    return parquet_dir(lake, CLV, f"{version}/customers", CUSTOMER_VALUE_COLUMNS)


def read_retention(lake: Lake, version: str) -> pa.RecordBatchReader:
    return parquet_file(lake, f"{RETENTION}/{version}/cohorts.parquet")


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, allow_nan=False, sort_keys=True)


def read_segment_profiles(lake: Lake, version: str) -> pa.RecordBatchReader:
    """One row per segment of the model's ``profiles.json``; nested parts as JSON text."""
    profiles = lake.read_json(f"{SEGMENTATION_MODEL}/{version}/profiles.json")
    rows = [{
        "segment_id": p["segment_id"], "segment_name": p["name"], "archetype": p.get("archetype"),
        "description": p.get("description"), "actions": "\n".join(p.get("actions") or []),
        "size": p.get("size"), "share_users": p.get("share_users"), "share_revenue": p.get("share_revenue"),
        "buyer_share": p.get("buyer_share"), "color": p.get("color"), "model_version": version,
        "top_categories": _json_text(p.get("top_categories")), "rfm": _json_text(p.get("rfm")),
        "medians": _json_text(p.get("medians")), "lifts": _json_text(p.get("lifts")),
    } for p in profiles]  # fmt: skip
    schema = pa.schema([
        ("segment_id", pa.int64()), ("segment_name", pa.string()), ("archetype", pa.string()),
        ("description", pa.string()), ("actions", pa.string()), ("size", pa.int64()),
        ("share_users", pa.float64()), ("share_revenue", pa.float64()), ("buyer_share", pa.float64()),
        ("color", pa.string()), ("model_version", pa.string()), ("top_categories", pa.string()),
        ("rfm", pa.string()), ("medians", pa.string()), ("lifts", pa.string()),
    ])  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema).to_reader()


# ------------------------------------------------------------------------------------ the tables
TEXT, BIGINT, DOUBLE = sa.Text(), sa.BigInteger(), sa.Double()
TIMESTAMP = sa.DateTime(timezone=True)

#: Every warehouse table, declared once (columns and meaning: docs/outputs.md, "Warehouse tables").
TABLES: tuple[WarehouseTable, ...] = (
    WarehouseTable(
        "segments", SEGMENTS, read_segments,
        (Col("user_key", TEXT, False, "pseudonymized user id (HMAC-SHA256)"),
         Col("segment_id", BIGINT, True, "null: fewer events than the model's trust threshold"),
         Col("segment_name", TEXT, False), Col("confidence", DOUBLE, True, "in [0, 1]"),
         Col("model_version", TEXT, False), Col("as_of", TIMESTAMP, False, "the features' reference time"),
         Col("lifecycle_stage", TEXT, False, "lifecycle stage key (model.segmentation.lifecycle)")),
        key=("user_key",), indexes=(("segment_id",),), summary="user key -> segment",
    ),
    WarehouseTable(
        "segment_profiles", SEGMENTATION_MODEL, read_segment_profiles,
        (Col("segment_id", BIGINT, False), Col("segment_name", TEXT, False), Col("archetype", TEXT),
         Col("description", TEXT), Col("actions", TEXT, True, "recommended actions, one per line"),
         Col("size", BIGINT), Col("share_users", DOUBLE), Col("share_revenue", DOUBLE), Col("buyer_share", DOUBLE),
         Col("color", TEXT), Col("model_version", TEXT, False), Col("top_categories", TEXT, True, "JSON"),
         Col("rfm", TEXT, True, "JSON"), Col("medians", TEXT, True, "JSON"), Col("lifts", TEXT, True, "JSON")),
        key=("segment_id",), summary="one row per segment of the current model",
    ),
    WarehouseTable(
        "features", FEATURES, read_features, None, key=("user_key",),
        summary="per-user features (docs/features.md), columns and types from the lake",
    ),
    WarehouseTable(
        "kpi_daily", OVERVIEW_VIEWS, read_kpi_daily,
        (Col("event_date", sa.Date(), False), Col("active_users", BIGINT), Col("sessions", BIGINT),
         Col("views", BIGINT), Col("carts", BIGINT), Col("purchases", BIGINT), Col("revenue", DOUBLE),
         Col("conversion_rate", DOUBLE, True, "sessions with a purchase / sessions")),
        key=("event_date",), summary="daily KPIs of the overview",
    ),
    WarehouseTable(
        "customer_value", CLV, read_customer_value,
        (Col("user_key", TEXT, False, "pseudonymized user id (HMAC-SHA256)"),
         Col("first_purchase", sa.Date(), False, "day of the first transaction (the customer's birth)"),
         Col("frequency", BIGINT, False, "repeat transactions (days with a purchase after the first)"),
         Col("recency", DOUBLE, False, "days from the first to the last transaction"),
         Col("T", DOUBLE, False, "days from the first transaction to the lake's last event day"),
         Col("monetary_value", DOUBLE, False, "mean value of the repeat transactions (0 without any)"),
         Col("revenue", DOUBLE, False, "value of every transaction so far"),
         Col("p_alive", DOUBLE, False, "probability the customer has not dropped out"),
         Col("expected_purchases_30", DOUBLE, False), Col("expected_purchases_90", DOUBLE, False),
         Col("expected_purchases_365", DOUBLE, False, "expected transactions in the next 365 days"),
         Col("expected_value", DOUBLE, False, "expected value of a future transaction (Gamma-Gamma)"),
         Col("clv", DOUBLE, False, "discounted lifetime value over horizon_months"),
         Col("horizon_months", BIGINT, False, "the CLV horizon (30-day months)"),
         Col("segment", TEXT, False), Col("lifecycle_stage", TEXT, False)),
        key=("user_key",), indexes=(("segment",),), summary="lifetime value per customer",
    ),
    WarehouseTable(
        "retention", RETENTION, read_retention,
        (Col("breakdown", TEXT, False, "overall, segment, category or acquisition-month"),
         Col("group", TEXT, False, "the breakdown's value (all for overall)"),
         Col("cohort", sa.Date(), False, "first day of the cohort's week (Monday) or month"),
         Col("size", BIGINT, False, "cohort members"), Col("period", BIGINT, False, "0, 1, ... since the start"),
         Col("users", BIGINT, False, "members returning (n-period: in the period; unbounded: in it or later)"),
         Col("rate", DOUBLE, False, "users / size"), Col("revenue", DOUBLE, False, "revenue in the period per member"),
         Col("complete", sa.Boolean(), False, "every member's period has ended by the last day of data")),
        key=("breakdown", "group", "cohort", "period"), summary="retention cohorts of the current view",
    ),
)  # fmt: skip


def table_named(name: str) -> WarehouseTable:
    for t in TABLES:
        if t.name == name:
            return t
    raise ValueError(f"no warehouse table {name!r}; tables: {', '.join(t.name for t in TABLES)}")


# ------------------------------------------------------------------------------------ publishing
def behind(lake: Lake, held: dict[str, str], tables: tuple[WarehouseTable, ...] = TABLES) -> list[tuple[WarehouseTable, str]]:
    """(table, lake version) for every table whose dataset is published at another version than held."""
    out = []
    for t in tables:
        version = lake.current_version(t.dataset)
        if version is not None and held.get(t.name) != version:
            out.append((t, version))
    return out


def publish_due(lake: Lake, url: str, tables: tuple[WarehouseTable, ...] = TABLES) -> tuple[bool, str]:
    """(due?, why). An unreachable warehouse counts as due, so the stage runs and fails loudly (and the
    watcher's back-off retries it) while the stages before it are not held up."""
    if all(lake.current_version(t.dataset) is None for t in tables):
        return False, "nothing published in the lake yet"
    wh = Warehouse(url)
    try:
        todo = behind(lake, wh.held(), tables)
    except WarehouseError as err:
        return True, f"warehouse unreachable ({err})"
    finally:
        wh.close()
    if not todo:
        return False, "up to date"
    return True, f"new lake versions for {', '.join(t.name for t, _ in todo)}"


def publish(lake: Lake, url: str, tables: tuple[WarehouseTable, ...] = TABLES) -> dict[str, Any]:
    """Publish every table whose lake version the warehouse does not hold yet; a summary dict.

    All tables of one publish are swapped in together, in one transaction. Raises
    :class:`WarehouseError` (one line, no password) when the database fails; the lake is only read.
    """
    t0 = time.monotonic()
    wh = Warehouse(url)
    staged: list[Staged] = []
    try:
        with wh.lock():
            held = wh.held()
            todo = behind(lake, held, tables)
            try:
                for table, version in todo:
                    staged.append(wh.load(table, version, table.reader(lake, version)))
                if staged:
                    wh.swap(staged)
            except BaseException:
                wh.drop_staging(staged)
                raise
    finally:
        wh.close()
    done = {s.spec.name: s for s in staged}
    rows = []
    for t in tables:
        if t.name in done:
            rows.append({"table": t.name, "status": "published", "version": done[t.name].version,
                         "rows": done[t.name].rows})  # fmt: skip
        elif t.name in held:
            rows.append({"table": t.name, "status": "unchanged", "version": held[t.name]})
        else:
            rows.append({"table": t.name, "status": "absent", "reason": f"{t.dataset} not published in the lake"})
    summary = {
        "status": "published" if staged else "up_to_date", "warehouse": masked(url), "tables": rows,
        "duration_seconds": round(time.monotonic() - t0, 3),
    }  # fmt: skip
    log.info("warehouse %s: %s", summary["warehouse"], summary["status"],
             extra={"stage": "publish", "tables_published": sorted(done), **summary})  # fmt: skip
    return summary


def publish_report(s: dict[str, Any]) -> str:
    lines = [f"warehouse {s['warehouse']}: {s['status'].replace('_', ' ')} ({s['duration_seconds']:.1f}s)"]
    for t in s["tables"]:
        if t["status"] == "published":
            lines.append(f"  {t['table']}: published {t['rows']:,} rows of {t['version']}")
        elif t["status"] == "unchanged":
            lines.append(f"  {t['table']}: unchanged ({t['version']})")
        else:
            lines.append(f"  {t['table']}: absent ({t['reason']})")
    return "\n".join(lines)


__all__ = [
    "CUSTOMER_VALUE_COLUMNS",
    "TABLES",
    "WarehouseError",
    "behind",
    "publish",
    "publish_due",
    "publish_report",
    "read_customer_value",
    "read_features",
    "read_kpi_daily",
    "read_retention",
    "read_segment_profiles",
    "read_segments",
    "table_named",
]
