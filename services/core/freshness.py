"""When a result is due: one rule over the datasets a stage reads and the one it writes.

A pipeline stage declares what it reads (:class:`Read`) and the dataset it writes
(``services/jobs/stages.py``). A job records, in its output's ``_current.json``, the version of each
input it was built from, under the field :data:`RECORDED_AS` names (``run_ids`` for the committed runs,
``segments_version``, ``features_version``, ``model_version``). The output is then due when:

- a required input has nothing yet: no (the stage has nothing to build from);
- the output has no version yet: yes;
- an input's current version differs from the one recorded: yes (the first such input is the reason);
- otherwise: up to date.

The committed runs count as one input whose version is the sorted list of committed run ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.core.catalog import (
    CLV,
    FEATURES,
    FUNNEL,
    OVERVIEW_VIEWS,
    PROPENSITY,
    PROPENSITY_MODEL,
    RETENTION,
    RUNS,
    SEGMENTATION_MODEL,
    SEGMENTS,
)
from services.core.lake import Lake

#: The pointer field in which an output records the version it read of each input.
RECORDED_AS: dict[str, str] = {
    RUNS: "run_ids",
    FEATURES: "features_version",
    SEGMENTS: "segments_version",
    SEGMENTATION_MODEL: "model_version",
    PROPENSITY_MODEL: "model_version",
}

#: What the reasons call a dataset: (its name, the reason given when a new version of it arrived).
NAMES: dict[str, tuple[str, str]] = {
    RUNS: ("committed runs", "new committed runs"),
    FEATURES: ("features", "new features"),
    SEGMENTS: ("segments", "new segments"),
    SEGMENTATION_MODEL: ("model", "a new model"),
    PROPENSITY_MODEL: ("propensity model", "a new propensity model"),
    PROPENSITY: ("propensity scores", "new propensity scores"),
    OVERVIEW_VIEWS: ("overview views", "new overview views"),
    FUNNEL: ("funnel", "a new funnel"),
    CLV: ("lifetime values", "new lifetime values"),
    RETENTION: ("retention", "new retention"),
}


@dataclass(frozen=True)
class Read:
    """One input of a stage; ``optional``: the stage also builds without it (and records None)."""

    dataset: str
    optional: bool = False


def current(lake: Lake, dataset: str) -> Any:
    """The version of ``dataset`` a stage would read now (committed run ids, sorted, for the runs)."""
    if dataset == RUNS:
        return sorted(lake.committed_run_ids()) or None
    return lake.current_version(dataset)


def recorded(pointer: dict[str, Any], dataset: str) -> Any:
    """The version of ``dataset`` an output's pointer says it was built from."""
    value = pointer.get(RECORDED_AS[dataset])
    return sorted(value) if dataset == RUNS and value is not None else value


def recording(versions: Mapping[str, Any]) -> dict[str, Any]:
    """The pointer fields that record ``versions`` (dataset -> the version of it an output was built
    from), each under the field :data:`RECORDED_AS` names: what a job passes to its output's pointer."""
    return {RECORDED_AS[dataset]: version for dataset, version in versions.items()}


def input_versions(lake: Lake, reads: tuple[Read, ...]) -> dict[str, Any]:
    """The pointer fields recording the current version of each input (what a job built now records)."""
    return recording({r.dataset: current(lake, r.dataset) for r in reads})


def versions_due(lake: Lake, writes: str, reads: tuple[Read, ...]) -> tuple[bool, str]:
    """(due?, why) of ``writes``, built from ``reads`` (the rule in this module's docstring)."""
    now = {r.dataset: current(lake, r.dataset) for r in reads}
    for r in reads:
        if not r.optional and now[r.dataset] is None:
            return False, "no committed runs" if r.dataset == RUNS else f"no {NAMES[r.dataset][0]} yet"
    pointer = lake.pointer(writes)
    if pointer is None:
        return True, f"no {NAMES[writes][0]} yet"
    for r in reads:
        if recorded(pointer, r.dataset) != now[r.dataset]:
            return True, NAMES[r.dataset][1]
    return False, "up to date"


__all__ = ["NAMES", "RECORDED_AS", "Read", "current", "input_versions", "recorded", "recording", "versions_due"]
