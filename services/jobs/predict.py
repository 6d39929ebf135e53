"""``shoplens predict``: segment the users of a raw REES46 event history without Spark.

The path is: read the file and validate every line with the contract's rules (:mod:`etl.lines`) ->
per-user features with the Spark-free twin of the batch features, using the lake-wide category price
reference stored with the model -> the light scorer of the current model
(:func:`services.core.readers.load_model`, :mod:`model.segmentation.history`).

Raw user ids are only echoed back to the caller, who already holds them; nothing is written to the
lake, the logs or metrics. No module on this path imports pyspark (tests/services/jobs/test_predict.py
checks it in a fresh interpreter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etl.lines import History, read_history
from model.propensity import LoadedPropensity, score_history
from model.segmentation.history import LoadedModel, score_rows
from services.core.lake import Lake
from services.core.readers import load_model, load_propensity


@dataclass
class PredictResult:
    users: list[dict]
    history: History
    model_version: str


def predict(
    events_file: str | Path, model: LoadedModel, as_of: datetime | str | None = None,
    propensity: LoadedPropensity | None = None,
) -> PredictResult:  # fmt: skip
    """Segment every user of a REES46 file with an already loaded model (see :func:`load_model`).

    With a ``propensity`` model (:func:`services.core.readers.load_propensity`) each user also gets
    ``propensity``, ``propensity_decile`` and ``propensity_model_version`` beside the segment.
    """
    history = read_history(events_file)
    users = score_rows(history.rows, model, as_of=as_of)
    if propensity is not None:
        scores = score_history(history.rows, propensity, as_of=as_of)
        users = [{**u, **scores.get(str(u["user_id"]), {})} for u in users]
    return PredictResult(users=users, history=history, model_version=model.scorer.model_version)


def predict_file(events_file: str | Path, lake: Lake, as_of: datetime | str | None = None) -> PredictResult:
    """``shoplens predict``: load the current models from ``lake``; segment (and propensity) per user."""
    return predict(events_file, load_model(lake), as_of=as_of, propensity=load_propensity(lake))


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


__all__ = ["PredictResult", "history_report", "predict", "predict_file"]
