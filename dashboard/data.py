"""What the dashboard reads, and nothing else: thin, cached access to the lake's published outputs.

Layout: docs/outputs.md. Pages only read the small pre-aggregated ``views/`` tables,
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
from typing import Any, ParamSpec, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import streamlit as st

from dashboard import uploads
from etl.contract import ContractError, check_header
from etl.lines import parse_lines
from model.scoring import HistoryFeatures, Scorers, score_features
from services.core import erasure_ledger
from services.core.catalog import (
    CLV,
    EXPERIMENTS,
    FEATURES,
    FUNNEL,
    MMM_MODEL,
    OVERVIEW_VIEWS,
    PROPENSITY,
    PROPENSITY_MODEL,
    RETENTION,
    RUNS,
    SEGMENT_VIEWS,
    SEGMENTATION_MODEL,
    SEGMENTS,
)
from services.core.documents import OutdatedDocument
from services.core.documents.registry import read_document
from services.core.documents.segmentation import SegmentationModelDocument
from services.core.lake import Lake, runs_table
from services.core.readers import load_model, one_row, parquet_dataset
from services.core.runtime import open_lake
from services.core.settings import get_settings

POINTER_TTL = 15  # seconds a page may show an older version after a new one is published
DATA_TTL = 3600  # versioned data never changes; the ttl only bounds memory held by old versions

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
        except (LakeUnavailable, FileNotFoundError, KeyError, LookupError, OutdatedDocument):
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


#: The versioned datasets whose pointers a page may need.
POINTED = (SEGMENTATION_MODEL, SEGMENTS, FEATURES, OVERVIEW_VIEWS, SEGMENT_VIEWS, EXPERIMENTS, MMM_MODEL,
           PROPENSITY_MODEL, PROPENSITY, FUNNEL, CLV, RETENTION)


@dataclass(frozen=True)
class Pointers:
    """The ``_current.json`` document of every dataset the dashboard reads (missing = not published)."""

    docs: dict[str, dict[str, Any]]
    runs: int

    def version(self, dataset: str) -> str | None:
        doc = self.docs.get(dataset)
        return None if doc is None else doc["version"]

    @property
    def model(self) -> str | None:
        return self.version(SEGMENTATION_MODEL)

    @property
    def segments(self) -> str | None:
        return self.version(SEGMENTS)

    @property
    def features(self) -> str | None:
        return self.version(FEATURES)

    @property
    def segments_meta(self) -> dict[str, Any]:
        return self.docs.get(SEGMENTS, {})

    @property
    def empty(self) -> bool:
        return not self.docs and self.runs == 0


@st.cache_data(ttl=POINTER_TTL, show_spinner=False)
@_guard
def pointers(uri: str) -> Pointers:
    """The ``_current.json`` pointers (cheap: a few small reads), re-read every ``POINTER_TTL`` s."""
    lake = _lake(uri)
    docs = {d: doc for d in POINTED if (doc := lake.pointer(d)) is not None}
    runs = sum(1 for k in lake.store.list(RUNS) if k.endswith(".json"))
    if lake.prune_cache():  # the S3 mirror of replaced versions; their open datasets go with them
        for opened in (_segments_dataset, _features_dataset, _propensity_dataset, _funnel_dropoffs):
            opened.clear()
    return Pointers(docs=docs, runs=runs)


def _read_parquet_bytes(lake: Lake, key: str) -> pd.DataFrame:
    return pq.read_table(pa.BufferReader(lake.store.read_bytes(key))).to_pandas()


@st.cache_data(ttl=POINTER_TTL, show_spinner=False)
@_guard
def erasure_requests(uri: str) -> pd.DataFrame:
    """One row per erasure request of the ledger; the person appears only as a shortened digest."""
    rows = erasure_ledger.status_rows(_lake(uri))
    columns = ["request_id", "person", "source", "state", "requested_at", "deadline", "completed_at",
               "seconds_to_complete", "verified_at", "found_at_verification", "rows_removed"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=[*columns, "stores"])[columns]
    for c in ("requested_at", "deadline", "completed_at", "verified_at"):
        frame[c] = pd.to_datetime(frame[c], utc=True)
    return frame


# ------------------------------------------------------------------------------------ views
@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def view(uri: str, dataset: str, version: str | None, name: str) -> pd.DataFrame:
    """One small table ``<dataset>/<version>/<name>.parquet`` (empty frame if absent or unpublished)."""
    lake = _lake(uri)
    key = f"{dataset}/{version}/{name}.parquet"
    if version is None or not lake.store.exists(key):
        return pd.DataFrame()
    return _read_parquet_bytes(lake, key)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def document(uri: str, dataset: str, version: str | None, name: str) -> dict[str, Any]:
    """One small JSON document of a published version (empty if absent or unpublished), read through its
    type where it has one (services.core.documents)."""
    lake = _lake(uri)
    exists = version is not None and lake.store.exists(f"{dataset}/{version}/{name}")
    return read_document(lake, dataset, version, name) if exists else {}


@st.cache_data(ttl=POINTER_TTL, show_spinner=False)
@_guard
def published_versions(uri: str, dataset: str, marker: str, current: str | None) -> list[str]:
    """Every published version of ``dataset`` that holds the file ``marker``, newest first.

    Keyed on the ``current`` version so a new publication refreshes the list.
    """
    prefix = f"{dataset}/"
    keys = _lake(uri).store.list(dataset)
    found = {k[len(prefix):].split("/")[0] for k in keys if k.startswith(prefix) and k.endswith(f"/{marker}")}
    return sorted(found | ({current} if current else set()), reverse=True)


@st.cache_data(ttl=POINTER_TTL, show_spinner=False)
@_guard
def runs_from_summaries(uri: str, n_runs: int, limit: int = 50) -> pd.DataFrame:
    """The last ``limit`` runs straight from ``runs/*.json`` (before the overview views exist)."""
    return runs_table(_lake(uri).runs(), keep=limit)


# ------------------------------------------------------------------------------------ model
@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def model_docs(uri: str, version: str) -> tuple[SegmentationModelDocument, list[dict[str, Any]]]:
    """(model.json, profiles.json) of a model version."""
    lake = _lake(uri)
    return SegmentationModelDocument.read(lake, version), lake.read_json(f"{SEGMENTATION_MODEL}/{version}/profiles.json")


@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def artifact(uri: str, version: str) -> dict[str, Any]:
    """The light scorer artifact (held once per process; it can carry a large price reference)."""
    return _lake(uri).read_json(f"{SEGMENTATION_MODEL}/{version}/artifact.json")


#: The Versions tab's columns (an earlier release's model fills only ``version`` and ``current``).
HISTORY_COLUMNS = ["version", "trained_at", "k", "silhouette", "davies_bouldin", "stability_ari", "min_events",
                   "users_trained", "users_total", "data_from", "data_to", "ari_vs_truth", "current"]


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def model_history(uri: str, current_version: str) -> pd.DataFrame:
    """One row per model version (newest first); keyed on the current version so a retrain refreshes."""
    lake = _lake(uri)
    rows = []
    for key in lake.store.list(SEGMENTATION_MODEL):
        if not key.endswith(f"/{SegmentationModelDocument.FILE}"):
            continue
        try:
            m = SegmentationModelDocument.read_key(lake, key)
        except OutdatedDocument:  # an earlier release's model: listed by its version only
            version = key.removeprefix(f"{SEGMENTATION_MODEL}/").split("/", 1)[0]
            rows.append({"version": version, "current": version == current_version})
            continue
        rows.append({
            "version": m.version, "trained_at": m.trained_at, "k": m.k, "silhouette": m.metrics.silhouette,
            "davies_bouldin": m.metrics.davies_bouldin, "stability_ari": m.metrics.stability_ari,
            "min_events": m.threshold.chosen_min_events, "users_trained": m.data.users_trained,
            "users_total": m.data.users_total, "data_from": m.data.event_date_min, "data_to": m.data.event_date_max,
            "ari_vs_truth": m.ari_vs_truth, "current": m.version == current_version,
        })  # fmt: skip
    df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return df.sort_values("version", ascending=False, ignore_index=True) if len(df) else df


# ------------------------------------------------------------------------------------ rows
@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def _segments_dataset(uri: str, version: str) -> ds.Dataset | None:
    return parquet_dataset(_lake(uri), f"{SEGMENTS}/{version}")


@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def _features_dataset(uri: str, version: str) -> ds.Dataset | None:
    return parquet_dataset(_lake(uri), f"{FEATURES}/{version}")


@st.cache_data(ttl=DATA_TTL, show_spinner=False, max_entries=1000)
@_guard
def lookup(
    uri: str, segments_version: str, features_version: str | None, user_key: str,
    feature_columns: tuple[str, ...] | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """The user's segments row and features row (``{"segment": {...}, "features": {...}|None}``).

    ``feature_columns`` limits the features read to those the page shows (the model's features).
    """
    seg = one_row(_segments_dataset(uri, segments_version), user_key)
    if seg is None:
        return None
    cols = None if feature_columns is None else [*feature_columns, "n_events"]
    feats = one_row(_features_dataset(uri, features_version), user_key, cols) if features_version else None
    return {"segment": seg, "features": feats}


@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def _propensity_dataset(uri: str, version: str) -> ds.Dataset | None:
    return parquet_dataset(_lake(uri), f"{PROPENSITY}/{version}")


@st.cache_data(ttl=DATA_TTL, show_spinner=False, max_entries=1000)
@_guard
def lookup_propensity(uri: str, propensity_version: str | None, user_key: str) -> dict[str, Any] | None:
    """The user's propensity row (propensity, decile, model_version, as_of), or None."""
    if propensity_version is None:
        return None
    return one_row(_propensity_dataset(uri, propensity_version), user_key)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
@_guard
def lifecycle_counts(uri: str, segments_version: str) -> pd.DataFrame:
    """Users per (lifecycle_stage, segment_name) of a segments version (empty if it has no stages)."""
    dataset = _segments_dataset(uri, segments_version)
    if dataset is None or "lifecycle_stage" not in dataset.schema.names:
        return pd.DataFrame({"lifecycle_stage": [], "segment_name": [], "users": []})
    table = dataset.to_table(columns=["lifecycle_stage", "segment_name"])
    counts = table.group_by(["lifecycle_stage", "segment_name"]).aggregate([("lifecycle_stage", "count")])
    return counts.to_pandas().rename(columns={"lifecycle_stage_count": "users"})


@_guard
def segment_members_csv(uri: str, segments_version: str, segment_id: int | None,
                        lifecycle_stage: str | None = None) -> bytes:  # fmt: skip
    """CSV of one segment's members (pseudonymized keys only), built when the user clicks download.

    ``segment_id`` None exports the users with not enough activity yet; a ``lifecycle_stage`` key
    exports that stage's users instead (every segment).
    """
    dataset = _segments_dataset(uri, segments_version)
    cols = ["user_key", "segment_id", "segment_name", "confidence", "n_events"]
    if dataset is None:
        return (",".join(cols) + "\n").encode()
    cols += [c for c in ("trust", "lifecycle_stage") if c in dataset.schema.names]
    if lifecycle_stage is not None:
        flt = ds.field("lifecycle_stage") == lifecycle_stage
    else:
        flt = ds.field("segment_id").is_null() if segment_id is None else ds.field("segment_id") == segment_id
    table = dataset.to_table(columns=cols, filter=flt)
    buf = io.BytesIO((",".join(cols) + "\n").encode())
    buf.seek(0, io.SEEK_END)
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


@st.cache_resource(ttl=DATA_TTL, show_spinner=False)
@_guard
def _funnel_dropoffs(uri: str, version: str) -> ds.Dataset | None:
    return parquet_dataset(_lake(uri), f"{FUNNEL}/{version}/dropoffs")


@_guard
def funnel_dropoffs_csv(uri: str, funnel_version: str, step: int) -> bytes:
    """CSV of one step's drop-off audience (user_key, segment, reached_at; pseudonymized keys), on click."""
    cols = ["user_key", "segment", "reached_at"]
    dataset = _funnel_dropoffs(uri, funnel_version)
    if dataset is None:
        return (",".join(cols) + "\n").encode()
    table = dataset.to_table(columns=cols, filter=ds.field("step") == step)
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(quoting_style="needed"))
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


# ------------------------------------------------------------------------------------ upload
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
    return load_model(_lake(uri), version)


def predict_upload(uri: str, model_version: str, payload: bytes) -> UploadResult:
    """Score an uploaded REES46 history with the current model, the way ``shoplens predict`` does.

    Lines are validated with the contract's rules (etl.lines); user ids are replaced by ordinals
    before features are computed, so no raw id leaves this function.
    """
    try:
        uploads.check_size(payload, uploads.LOOKUP_MAX_MB, "shoplens predict <file>")
        payload = uploads.expanded(payload)
    except uploads.UploadRefused as err:
        return UploadResult([], str(err))
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
    table = history.table
    ordinals = pd.factorize(table["user_id"].to_numpy(zero_copy_only=False))[0].astype(str)  # drop raw ids
    table = table.set_column(table.schema.get_field_index("user_id"), "user_id", pa.array(ordinals))
    feats = HistoryFeatures.of(table, reference=model.category_means)
    results = score_features(feats, Scorers(model))
    frame = feats.frame.set_index("user_key")
    results.sort(key=lambda r: -r.n_events)  # stable: ties stay in order of first appearance
    users = []
    for r in results[:MAX_UPLOAD_USERS]:
        users.append({
            "segment": {k: getattr(r, k) for k in ("segment_id", "segment_name", "confidence", "trust",
                                                   "lifecycle_stage", "n_events", "model_version")},
            "features": frame.loc[r.user_id].to_dict(),
        })  # fmt: skip
    return UploadResult(users, None, {**history.summary(), "users": len(results)})
