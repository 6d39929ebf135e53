"""``shoplens predict``: segment the users of a raw REES46 event history without Spark.

The path is: read the file -> validate every line with the ingest's rules (etl.contract; invalid
lines are counted per quarantine reason and skipped, exact copies of a valid line are dropped as
duplicates) -> per-user features with the pandas twin (model.local_features) using the lake-wide
category price reference stored with the model -> :class:`model.scorer.LightScorer` of the current
model (``models/segmentation/_current.json`` -> ``<version>/artifact.json``).

Raw user ids are only echoed back to the caller, who already holds them; nothing is written to the
lake, the logs or metrics. No module on this path imports pyspark (tests/services/test_predict.py
checks it in a fresh interpreter).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from etl.contract import (
    EVENT_TYPES,
    MAX_ID_DIGITS,
    MAX_PRICE,
    MAX_YEAR,
    MIN_YEAR,
    RAW_COLUMNS,
    check_header,
)
from model.local_features import compute_features_local, raw_to_events, reference_means
from model.scorer import NOT_ENOUGH_ACTIVITY, LightScorer
from services.lake import MODELS, Lake

MODEL_DATASET = f"{MODELS}/segmentation"
ARTIFACT_FILE = "artifact.json"
REFERENCE_FILE = "category_reference.parquet"
REFERENCE_KEY = "category_price_reference"
STATUS_SCORED = "scored"
STATUS_NOT_ENOUGH = "not_enough_activity"

# The ingest's rules (etl/ingest.py builds the same ones for Spark from the same contract constants).
_ID = re.compile(rf"[0-9]{{1,{MAX_ID_DIGITS}}}")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) UTC")
_LONG_MAX = 2**63 - 1
_EVENT_TYPES = frozenset(EVENT_TYPES)
_N_FIELDS = len(RAW_COLUMNS)


# ------------------------------------------------------------------------------ validation
def _blank(v: str | None) -> bool:
    """Null, or only spaces (Spark's trim removes spaces only)."""
    return v is None or v.strip(" ") == ""


def _bad_id(v: str) -> bool:
    return _ID.fullmatch(v) is None or int(v) > _LONG_MAX


def _event_time(v: str | None) -> datetime | None:
    m = _TIME.fullmatch(v or "")
    if m is None:
        return None
    try:
        when = datetime(*(int(g) for g in m.groups()), tzinfo=UTC)
    except ValueError:  # 2019-02-30 and the like
        return None
    return when if MIN_YEAR <= when.year <= MAX_YEAR else None


def validate_line(line: str) -> tuple[str | None, tuple | None]:
    """(quarantine reason or None, typed row or None) of one data line, first failed rule wins.

    The rules and their order are etl.contract.QUARANTINE_REASONS as etl.ingest applies them. The
    typed row is (event_time, event_type, product_id, category_id, category_code, brand, price,
    user_id, user_session); empty fields are None, text is not yet normalized.
    """
    if _blank(line):
        return "malformed_line", None
    fields = next(csv.reader([line]))
    if len(fields) != _N_FIELDS:
        return "malformed_line", None
    f = [v if v != "" else None for v in fields]
    raw_time, etype, product, category, code, brand, price_s, user, session = f
    when = _event_time(raw_time)
    if when is None:
        return "bad_event_time", None
    if _blank(etype) or etype not in _EVENT_TYPES:
        return "unknown_event_type", None
    if product is None or _bad_id(product):
        return "bad_product_id", None
    if not _blank(category) and _bad_id(category):  # type: ignore[arg-type]
        return "bad_category_id", None
    if _blank(user):
        return "missing_user_id", None
    if _ID.fullmatch(user) is None:  # type: ignore[arg-type]
        return "bad_user_id", None
    if _blank(session):
        return "missing_user_session", None
    if _blank(price_s):
        return "missing_price", None
    if _NUMBER.fullmatch(price_s) is None:  # type: ignore[arg-type]
        return "bad_price", None
    price = float(price_s)  # type: ignore[arg-type]
    if price != price:
        return "bad_price", None
    if price < 0:
        return "negative_price", None
    if price > MAX_PRICE:
        return "absurd_price", None
    category_id = None if category is None or _blank(category) else int(category)
    return None, (when, etype, int(product), category_id, code, brand, price, user, session)


@dataclass
class History:
    """The valid rows of an event file plus what was left out and why."""

    rows: pd.DataFrame  # REES46 columns, typed (see validate_line), one row per accepted line
    rows_read: int = 0
    invalid: dict[str, int] = field(default_factory=dict)  # quarantine reason -> lines
    duplicates: int = 0

    @property
    def rows_invalid(self) -> int:
        return sum(self.invalid.values())

    def summary(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_accepted": len(self.rows),
            "rows_invalid": self.rows_invalid,
            "invalid_by_reason": dict(self.invalid),
            "duplicates_removed": self.duplicates,
        }


def parse_lines(lines: Iterable[str]) -> History:
    """Validate data lines (no header); invalid ones are counted, copies of a valid line dropped."""
    kept: list[tuple] = []
    seen: set[str] = set()
    invalid: Counter[str] = Counter()
    read = duplicates = 0
    for line in lines:
        read += 1
        line = line[:-1] if line.endswith("\r") else line
        reason, row = validate_line(line)
        if reason is not None:
            invalid[reason] += 1
        elif line in seen:
            duplicates += 1
        else:
            seen.add(line)
            kept.append(row)  # type: ignore[arg-type]
    rows = pd.DataFrame(kept, columns=list(RAW_COLUMNS))
    return History(rows=rows, rows_read=read, invalid=dict(invalid), duplicates=duplicates)


def read_history(path: str | Path) -> History:
    """Read a REES46 file (plain or gzip), check its header (ContractError if wrong), validate rows."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise ValueError(f"{path.name}: empty file (no header)")
    check_header(lines[0], path.name)
    return parse_lines(lines[1:])


# ------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class LoadedModel:
    """The current segmentation artifact, ready to score."""

    version: str
    scorer: LightScorer
    artifact: Mapping[str, Any]
    category_means: pd.Series | None  # mean ln(price) per category_id; None if price_level is unused

    @property
    def min_events(self) -> int:
        return self.scorer.min_events


def load_model(lake: Lake, version: str | None = None) -> LoadedModel:
    """The artifact of ``version`` (default: the one ``models/segmentation/_current.json`` names)."""
    version = version or lake.current_version(MODEL_DATASET)
    if version is None:
        raise FileNotFoundError(
            f"no published model: {MODEL_DATASET}/_current.json is missing (run `shoplens train` first)"
        )
    base = f"{MODEL_DATASET}/{version}"
    artifact = lake.read_json(f"{base}/{ARTIFACT_FILE}")
    return model_from_artifact(artifact, version, lambda: _reference_file(lake, base))


def _reference_file(lake: Lake, base: str) -> pd.DataFrame | None:
    key = f"{base}/{REFERENCE_FILE}"
    if not lake.store.exists(key):
        return None
    return pd.read_parquet(io.BytesIO(lake.store.read_bytes(key)))


def model_from_artifact(artifact: Mapping[str, Any], version: str | None = None, sibling=None) -> LoadedModel:
    """A :class:`LoadedModel` from an artifact dict; ``sibling()`` may supply the reference table."""
    scorer = LightScorer.from_dict(artifact)
    means = None
    if "price_level" in scorer.input_features:
        ref = artifact.get(REFERENCE_KEY)
        if ref is None and sibling is not None:
            ref = sibling()
        if ref is None:
            raise ValueError(
                f"model {version or scorer.model_version}: the artifact has no {REFERENCE_KEY} (nor a "
                f"{REFERENCE_FILE}); price_level of new users cannot be computed like the batch path"
            )
        means = reference_means(ref)
    return LoadedModel(
        version=str(version or scorer.model_version), scorer=scorer, artifact=artifact, category_means=means
    )


# ------------------------------------------------------------------------------ scoring
def not_enough_reason(n_events: int, min_events: int) -> str:
    return f"not enough activity yet ({n_events} of {min_events} events)"


def score_rows(rows: pd.DataFrame, model: LoadedModel, as_of: datetime | str | None = None) -> list[dict]:
    """One result per user of typed REES46 rows, in order of first appearance."""
    if rows.empty:
        return []
    events = raw_to_events(rows)
    features = compute_features_local(events, as_of=as_of, category_reference=model.category_means)
    scorer = model.scorer
    # the same matrix LightScorer.predict builds, without its per-column pandas conversions
    matrix = np.column_stack(
        [features[c].to_numpy(dtype=float, na_value=np.nan) for c in scorer.input_features]
    )
    n_events = features["n_events"].to_numpy(dtype=np.int64)
    seg, conf = scorer.predict_array(matrix, n_events.astype(float))
    names = dict(zip(scorer.segment_ids.tolist(), scorer.segment_names, strict=True))
    as_of_text = [t.isoformat() for t in features["as_of"]]
    by_user = {}
    for key, n, sid, c, when in zip(
        features["user_key"].tolist(), n_events.tolist(), seg.tolist(), conf.tolist(), as_of_text, strict=True
    ):
        scored = sid != NOT_ENOUGH_ACTIVITY
        by_user[key] = {
            "user_id": key,
            "segment_id": sid if scored else None,
            "segment_name": names.get(sid) if scored else None,
            "confidence": c if scored else None,
            "model_version": scorer.model_version,
            "n_events": n,
            "status": STATUS_SCORED if scored else STATUS_NOT_ENOUGH,
            "reason": None if scored else not_enough_reason(n, model.min_events),
            "as_of": when,
        }
    order = pd.unique(rows["user_id"].astype(str))
    return [by_user[u] for u in order]


@dataclass
class PredictResult:
    users: list[dict]
    history: History
    model_version: str


def predict(
    events_file: str | Path, model: LoadedModel, as_of: datetime | str | None = None
) -> PredictResult:
    """Segment every user of a REES46 file with an already loaded model (see :func:`load_model`)."""
    history = read_history(events_file)
    users = score_rows(history.rows, model, as_of=as_of)
    return PredictResult(users=users, history=history, model_version=model.scorer.model_version)


def predict_file(events_file: str | Path, lake: Lake, as_of: datetime | str | None = None) -> PredictResult:
    """``shoplens predict``: load the current model from ``lake`` and segment the file's users."""
    return predict(events_file, load_model(lake), as_of=as_of)


def history_report(history: History) -> str:
    """One line for stderr: what was read and what was left out (no ids)."""
    s = history.summary()
    line = f"read {s['rows_read']:,} rows: {s['rows_accepted']:,} used"
    if s["rows_invalid"]:
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(s["invalid_by_reason"].items()))
        line += f", {s['rows_invalid']:,} invalid ignored ({reasons})"
    if s["duplicates_removed"]:
        line += f", {s['duplicates_removed']:,} duplicates removed"
    return line
