"""What the dashboard reads, and nothing else: thin, cached access to the lake's published outputs.

Layout: /work/briefs/outputs-contract.md. Pages only read the small pre-aggregated ``views/`` tables,
the model documents and, for a lookup or an export, a *filtered* read of ``segments/`` (pyarrow
pushes the ``user_key`` / ``segment_id`` predicate down; the full table is never loaded by a page).

Caching: every cached function takes the lake URI and the *version* it reads as arguments, so a new
model version, scoring or view build (a new ``_current.json``) is a new cache key and refreshes the
page. The pointers themselves are re-read every ``POINTER_TTL`` seconds. Widget values are passed in
as arguments; nothing here reads Streamlit state. No Spark anywhere in ``dashboard/``.

Failures the pages must show as a message, not a traceback, are raised as :class:`LakeUnavailable`
(storage down, unreadable file) or reported as missing pieces in :class:`Pointers`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import streamlit as st

from services.lake import FEATURES, MODELS, RUNS, SEGMENTS, VIEWS, Lake
from services.runtime import open_lake
from services.settings import get_settings

MODEL_DATASET = f"{MODELS}/segmentation"
NOT_ENOUGH_NAME = "Not enough activity yet"
POINTER_TTL = 15  # seconds a page may show an older version after a new one is published
DATA_TTL = 3600  # versioned data never changes; the ttl only bounds memory held by old versions
VIEW_TABLES = ("kpi_daily", "segment_summary", "pca_sample", "segment_flow", "runs")

P = ParamSpec("P")
R = TypeVar("R")


class LakeUnavailable(RuntimeError):
    """The lake could not be read (storage outage, permissions, a corrupt file)."""


def _guard(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn any storage failure into :class:`LakeUnavailable` (pages show it as a warning)."""

    @wraps(fn)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (LakeUnavailable, FileNotFoundError, KeyError, LookupError):
            raise
        except Exception as err:  # storage SDKs raise many types; the page needs one
            raise LakeUnavailable(f"{type(err).__name__}: {err}") from err

    return inner


# ------------------------------------------------------------------------------------ the lake
def lake_uri() -> str:
    """The lake the dashboard shows: ``SHOPLENS_LAKE`` (``shoplens dashboard --lake`` sets it)."""
    return get_settings().lake


@st.cache_resource(show_spinner=False)
def _lake(uri: str) -> Lake:
    return open_lake(get_settings(), uri)


@dataclass(frozen=True)
class Pointers:
    """The current version of every dataset the dashboard reads (None = not published yet)."""

    model: str | None
    segments: str | None
    views: str | None
    features: str | None
    segments_meta: dict[str, Any]
    runs: int

    @property
    def empty(self) -> bool:
        return self.model is None and self.views is None and self.segments is None and self.runs == 0


@st.cache_data(ttl=POINTER_TTL, show_spinner=False)
@_guard
def pointers(uri: str) -> Pointers:
    """The ``_current.json`` pointers (cheap: four small reads), re-read every ``POINTER_TTL`` s."""
    lake = _lake(uri)

    def doc(dataset: str) -> dict[str, Any] | None:
        key = f"{dataset}/_current.json"
        return lake.read_json(key) if lake.store.exists(key) else None

    seg = doc(SEGMENTS) or {}
    model, views, feats = doc(MODEL_DATASET), doc(VIEWS), doc(FEATURES)
    runs = sum(1 for k in lake.store.list(RUNS) if k.endswith(".json"))
    return Pointers(
        model=model and model["version"],
        segments=seg.get("version"),
        views=views and views["version"],
        features=feats and feats["version"],
        segments_meta=seg,
        runs=runs,
    )


def _read_parquet_bytes(lake: Lake, key: str) -> pd.DataFrame:
    return pq.read_table(pa.BufferReader(lake.store.read_bytes(key))).to_pandas()


# ------------------------------------------------------------------------------------ views
@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def view(uri: str, version: str, name: str) -> pd.DataFrame:
    """One small table of ``views/<version>/`` (empty frame if the pipeline did not write it)."""
    lake = _lake(uri)
    key = f"{VIEWS}/{version}/{name}.parquet"
    if not lake.store.exists(key):
        return pd.DataFrame()
    return _read_parquet_bytes(lake, key)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def freshness(uri: str, version: str) -> dict[str, Any]:
    lake = _lake(uri)
    key = f"{VIEWS}/{version}/freshness.json"
    return lake.read_json(key) if lake.store.exists(key) else {}


@st.cache_data(ttl=POINTER_TTL, show_spinner=False)
@_guard
def runs_from_summaries(uri: str, n_runs: int, limit: int = 50) -> pd.DataFrame:
    """The last ``limit`` run summaries straight from ``runs/*.json`` (used before views exist)."""
    lake = _lake(uri)
    keys = sorted(k for k in lake.store.list(RUNS) if k.endswith(".json"))[-limit:]
    cols = ["run_id", "status", "started_at", "duration_seconds", "rows_read", "rows_accepted",
            "rows_quarantined", "duplicates_removed", "files"]  # fmt: skip
    rows = []
    for k in reversed(keys):
        r = lake.read_json(k)
        row = {c: r.get(c) for c in cols}
        row["files"] = len(r.get("files") or [])
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------------ model
@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def model_docs(uri: str, version: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(model.json, profiles.json) of a model version."""
    lake = _lake(uri)
    base = f"{MODEL_DATASET}/{version}"
    return lake.read_json(f"{base}/model.json"), lake.read_json(f"{base}/profiles.json")


@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def artifact(uri: str, version: str) -> dict[str, Any]:
    """The light scorer artifact (held once per process; it can carry a large price reference)."""
    return _lake(uri).read_json(f"{MODEL_DATASET}/{version}/artifact.json")


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def model_history(uri: str, current_version: str) -> pd.DataFrame:
    """One row per model version (newest first); keyed on the current version so a retrain refreshes."""
    lake = _lake(uri)
    rows = []
    for key in lake.store.list(MODEL_DATASET):
        if not key.endswith("/model.json"):
            continue
        m = lake.read_json(key)
        metrics, data = m.get("metrics") or {}, m.get("data") or {}
        rows.append({
            "version": m.get("version"), "trained_at": m.get("trained_at"), "k": m.get("k"),
            "silhouette": metrics.get("silhouette"), "davies_bouldin": metrics.get("davies_bouldin"),
            "stability_ari": metrics.get("stability_ari"),
            "min_events": (m.get("threshold") or {}).get("chosen_min_events"),
            "users_trained": data.get("users_trained"), "users_total": data.get("users_total"),
            "data_from": data.get("event_date_min"), "data_to": data.get("event_date_max"),
            "ari_vs_truth": m.get("ari_vs_truth"), "current": m.get("version") == current_version,
        })  # fmt: skip
    df = pd.DataFrame(rows)
    return df.sort_values("version", ascending=False, ignore_index=True) if len(df) else df


# ------------------------------------------------------------------------------------ rows
def _local_dir(lake: Lake, prefix: str) -> Path | None:
    """A local directory with the dataset's Parquet files (the lake itself, or a one-time S3 mirror)."""
    path = lake.spark_path(prefix)
    return Path(path) if path else None


def _dataset(lake: Lake, prefix: str) -> ds.Dataset | None:
    path = _local_dir(lake, prefix)
    if path is None:
        return None
    files = sorted(str(p) for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
    return ds.dataset(files, format="parquet") if files else None


@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def _segments_dataset(uri: str, version: str) -> ds.Dataset | None:
    return _dataset(_lake(uri), f"{SEGMENTS}/{version}")


@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def _features_dataset(uri: str, version: str) -> ds.Dataset | None:
    return _dataset(_lake(uri), f"{FEATURES}/{version}")


def _one_row(dataset: ds.Dataset | None, user_key: str, columns: list[str] | None = None) -> dict[str, Any] | None:
    """The row of ``user_key``: scan only the key column, row group by row group, then read one group.

    A filter on the whole dataset would decode every column of every row group (2-3 s on 3 million
    users); the key column alone is ~0.1 s per million rows. Row groups whose min/max statistics
    exclude the key are skipped, so a table sorted by user_key costs one row group.
    """
    if dataset is None:
        return None
    for path in dataset.files:
        pf = pq.ParquetFile(path)
        col = pf.schema_arrow.get_field_index("user_key")
        for rg in range(pf.num_row_groups):
            stats = pf.metadata.row_group(rg).column(col).statistics
            if stats is not None and stats.has_min_max and not (str(stats.min) <= user_key <= str(stats.max)):
                continue
            keys = pf.read_row_group(rg, columns=["user_key"]).column(0)
            i = pc.index(keys, user_key).as_py()
            if i >= 0:
                names = [c for c in pf.schema_arrow.names if c != "user_key" and (columns is None or c in columns)]
                row = pf.read_row_group(rg, columns=names).slice(i, 1).to_pylist()[0]
                return {"user_key": user_key, **row}
    return None


@st.cache_data(ttl=DATA_TTL, show_spinner=False, max_entries=1000)
@_guard
def lookup(
    uri: str, segments_version: str, features_version: str | None, user_key: str,
    feature_columns: tuple[str, ...] | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """The user's segments row and features row (``{"segment": {...}, "features": {...}|None}``).

    ``feature_columns`` limits the features read to those the page shows (the model's features).
    """
    seg = _one_row(_segments_dataset(uri, segments_version), user_key)
    if seg is None:
        return None
    cols = None if feature_columns is None else [*feature_columns, "n_events"]
    feats = _one_row(_features_dataset(uri, features_version), user_key, cols) if features_version else None
    return {"segment": seg, "features": feats}


@_guard
def segment_members_csv(uri: str, segments_version: str, segment_id: int | None) -> bytes:
    """CSV of one segment's members (pseudonymized keys only), built when the user clicks download.

    ``segment_id`` None exports the users with not enough activity yet.
    """
    dataset = _segments_dataset(uri, segments_version)
    if dataset is None:
        return b"user_key,segment_id,segment_name,confidence,n_events\n"
    flt = ds.field("segment_id").is_null() if segment_id is None else ds.field("segment_id") == segment_id
    cols = ["user_key", "segment_id", "segment_name", "confidence", "n_events"]
    table = dataset.to_table(columns=cols, filter=flt)
    buf = io.BytesIO((",".join(cols) + "\n").encode())
    buf.seek(0, io.SEEK_END)
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


# ------------------------------------------------------------------------------------ helpers
def segment_colors(summary: pd.DataFrame, profiles: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Segment name -> hex colour, from the published colours (profiles win over the summary)."""
    colors: dict[str, str] = {}
    if len(summary) and "color" in summary:
        colors.update({str(n): str(c) for n, c in zip(summary["segment_name"], summary["color"], strict=True)
                       if isinstance(c, str)})  # fmt: skip
    for p in profiles or []:
        if p.get("color"):
            colors[p["name"]] = p["color"]
    return colors


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str, indent=2)


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs newest first with typed columns (``files`` as a count, ``started_at`` as UTC time)."""
    if runs is None or runs.empty:
        return pd.DataFrame(columns=["run_id", "status", "started_at", "duration_seconds", "files"])
    df = runs.copy()
    if "files" in df and df["files"].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
        df["files"] = df["files"].map(lambda v: len(v) if hasattr(v, "__len__") else v)
    if "started_at" in df:
        df["started_at"] = pd.to_datetime(df["started_at"], utc=True, errors="coerce")
    return df.sort_values("started_at" if "started_at" in df else "run_id", ascending=False, ignore_index=True)


# ------------------------------------------------------------------------------------ upload
MAX_UPLOAD_BYTES = 20_000_000
MAX_UPLOAD_USERS = 20


@dataclass
class UploadResult:
    """Scored users of an uploaded history: ``users`` = [{"segment": row, "features": row}]."""

    users: list[dict[str, Any]]
    error: str | None = None
    summary: dict[str, Any] | None = None


@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def _loaded_model(uri: str, version: str) -> Any:
    from services.predict import load_model

    return load_model(_lake(uri), version)


def predict_upload(uri: str, model_version: str, payload: bytes) -> UploadResult:
    """Score an uploaded REES46 history with the current model, the way ``shoplens predict`` does.

    Lines are validated with the ingest's rules (services.predict); user ids are replaced by
    ordinals before features are computed, so no raw id leaves this function.
    """
    try:
        from model.local_features import compute_features_local, raw_to_events
        from model.scorer import NOT_ENOUGH_ACTIVITY
        from services.predict import parse_lines
    except ImportError as err:  # the predict path ships with `shoplens predict`
        return UploadResult([], f"Scoring an uploaded history is not available in this installation ({err}).")
    import gzip

    from etl.contract import ContractError, check_header

    if len(payload) > MAX_UPLOAD_BYTES:
        return UploadResult([], f"The file is too large for the dashboard ({len(payload):,} bytes; at most "
                                f"{MAX_UPLOAD_BYTES:,}). Use `shoplens predict <file>` for big files.")  # fmt: skip
    if payload[:2] == b"\x1f\x8b":
        payload = gzip.decompress(payload)
    try:
        lines = payload.decode("utf-8").splitlines()
        if not lines:
            return UploadResult([], "The file is empty.")
        check_header(lines[0], "upload")
    except (UnicodeDecodeError, ContractError) as err:
        return UploadResult([], f"This is not a REES46 event file: {err}")
    history = parse_lines(lines[1:])
    if history.rows.empty:
        return UploadResult([], f"No valid event in the file ({history.rows_invalid:,} invalid lines).",
                            history.summary())  # fmt: skip
    model = _loaded_model(uri, model_version)
    rows = history.rows.assign(user_id=pd.factorize(history.rows["user_id"])[0].astype(str))  # drop raw ids
    events = raw_to_events(rows)
    feats = compute_features_local(events, category_reference=model.category_means)
    seg, conf = model.scorer.predict(feats)
    order = np.argsort(-feats["n_events"].to_numpy(dtype=float), kind="stable")[:MAX_UPLOAD_USERS]
    users = []
    for i in order:
        sid = int(seg[i])
        ok = sid != NOT_ENOUGH_ACTIVITY
        row = feats.iloc[i].drop(labels=["user_key"]).to_dict()
        users.append({
            "segment": {"segment_id": sid if ok else None, "segment_name": model.scorer.name_of(sid) if ok else None,
                        "confidence": float(conf[i]) if ok else None, "n_events": int(feats["n_events"].iat[i]),
                        "model_version": model.scorer.model_version},
            "features": row,
        })  # fmt: skip
    return UploadResult(users, None, {**history.summary(), "users": len(feats)})
