"""``shoplens predict``: segment the users of a raw REES46 event history without Spark.

The path is: read the file and validate every line with the contract's rules (:mod:`etl.lines`) ->
the scoring use case (:func:`model.scoring.score_history`: features once, segment, confidence, trust,
lifecycle stage, propensity) with the current models (:func:`services.core.readers.load_model`,
:func:`services.core.readers.load_propensity`) -> the published lifetime values, by pseudonym.

Raw user ids are only echoed back to the caller, who already holds them; nothing is written to the
lake, the logs or metrics. No module on this path imports pyspark (tests/services/jobs/test_predict.py
checks it in a fresh interpreter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etl.lines import History, read_history
from etl.pseudonymize import pseudonymize
from model.propensity import LoadedPropensity
from model.scoring import Scorers, score_history
from model.segmentation.history import LoadedModel
from services.core.catalog import CLV
from services.core.lake import Lake
from services.core.readers import customer_value_fields, load_model, load_propensity, read_customer_values


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
    users = [u.to_dict() for u in score_history(history.table, Scorers(model, propensity), as_of=as_of)]
    return PredictResult(users=users, history=history, model_version=model.scorer.model_version)


def predict_file(events_file: str | Path, lake: Lake, as_of: datetime | str | None = None,
                 key: bytes | None = None) -> PredictResult:  # fmt: skip
    """``shoplens predict``: load the current models from ``lake``; segment (and propensity) per user.

    With the lake's pseudonym ``key``, each user the lake knows as a customer also gets the published
    ``p_alive``, ``clv``, ``clv_horizon_months`` and ``clv_version`` (null for the others), looked up
    by pseudonym; the raw ids stay in this process.
    """
    result = predict(events_file, load_model(lake), as_of=as_of, propensity=load_propensity(lake))
    if key is not None:
        result.users = with_customer_values(result.users, lake, key)
    return result


def with_customer_values(users: list[dict], lake: Lake, key: bytes) -> list[dict]:
    """``users`` (each with its raw ``user_id``) with their published lifetime values (null where none)."""
    pseudonyms = {str(u["user_id"]): pseudonymize(str(u["user_id"]), key) for u in users}
    version = lake.current_version(CLV)  # read once: the values and their label are of the same version
    values = read_customer_values(lake, ["user_key", "p_alive", "clv", "horizon_months"], list(pseudonyms.values()),
                                  version)  # fmt: skip
    found = {} if values is None else values.set_index("user_key").to_dict("index")
    return [{**u, **customer_value_fields(found.get(pseudonyms[str(u["user_id"])]), version)} for u in users]


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


__all__ = ["PredictResult", "history_report", "predict", "predict_file", "with_customer_values"]
