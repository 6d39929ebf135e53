"""One comparison table: a row per model family, the winner by a stated rule, and why in one sentence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Table:
    """The answer to one question. ``rows`` are JSON-ready dicts with ``family`` and ``shipped`` keys.

    When a challenger wins, ``gain`` (what it does better, said of it) and ``cost`` (what switching would
    take) are kept apart, so a summary can quote the gain alone; ``why`` is then their sentence.
    """

    question: str
    rows: list[dict[str, Any]]
    metrics: list[str]
    winner: str
    shipped: str
    rule: str
    why: str = ""
    gain: str | None = None
    cost: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.gain is not None:
            self.why = f"{self.winner} {self.gain}; switching would cost {self.cost}."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rank(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Rank 1 = best; missing values rank last."""
    v = np.where(np.isfinite(values), values, -np.inf if higher_is_better else np.inf)
    order = np.argsort(-v if higher_is_better else v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    return ranks


def pick_winner(rows: Sequence[Mapping[str, Any]], criteria: Mapping[str, bool]) -> tuple[str, np.ndarray]:
    """(family with the best mean rank over ``criteria`` {metric: higher_is_better}, the mean ranks).

    Ties go to the earlier row (the shipped model comes first), so a challenger must be strictly better.
    """
    ranks = np.mean(
        [_rank(np.array([np.nan if r.get(m) is None else float(r[m]) for r in rows]), hi) for m, hi in criteria.items()],
        axis=0,
    )
    return str(rows[int(np.argmin(ranks))]["family"]), ranks


def finite(x: float) -> float | None:
    """A float for JSON (None for NaN or infinity)."""
    return float(x) if x is not None and np.isfinite(x) else None


__all__ = ["Table", "finite", "pick_winner"]
