"""Funnels: which units (users, sessions, user-product pairs) go from step to step, when, and who drops.

Definitions (the report and docs/funnels.md quote them)
-------------------------------------------------------
A funnel has 2 to 10 steps. Step i matches the events of its event type that satisfy all of its
conditions, e.g. ``cart[category_l1=electronics,price>=100]``. A *chain* for the first k steps is k
**distinct** events e1..ek of one unit with ei matching step i: one event fills at most one position, so
``view,view`` needs two views and a single view of brand x does not complete ``view,view[brand=x]``.

* ``ordered`` (default): t(e1) <= t(e2) <= ... <= t(ek) (equal times count as in order) and
  t(ek) - t(e1) <= window.
* ``any``: no order; max t(ei) - min t(ei) <= window, i.e. all k events lie in one window
  [t0, t0 + window].
* Units: ``user`` (all the user's events), ``session`` (the events of one session; no window: any
  span within the session counts), ``user_product`` (the events of one user on one product).

A unit *reaches* step k when a chain for the first k steps exists; its ``level`` is the largest such
k; the count of step k is the number of units with level >= k. Units whose level is 0 (no event of
step 1) are not part of the funnel and do not appear in any output.

Step times (for time to convert), taken from the chain that first completes the unit's level L:

* ordered: T = the earliest time at which some chain for L steps ends; S = the latest first-step time
  among those chains ending at T; step i's time is the earliest t(ei) among the L-chains starting at
  S (together they form one chain: the greedy earliest one from S).
* any: a = the earliest event time such that [a, a + window] holds a chain for L steps; step k's time
  is the earliest T such that [a, T] holds a chain for the first k steps (so it is non-decreasing:
  "when the first k steps were all done").

The first-step attributes (week, category, brand, product, price) are those of the unit's step-1
event at step 1's time; when several share that time, the one with the smallest product_id (then
category_l1, brand, price).

How it is computed, and why it is exact
---------------------------------------
A unit's matching events become its distinct event times ("groups"), sorted, each holding the counts
of its events per *mask* (the set of steps an event matches, as bits) and its *covers*: for each entry
step a, how many steps a, a+1, ... the group's distinct events can fill (bit arithmetic when every
event matches one step, a small matching otherwise; computed once per group). A compiled walk
(:mod:`etl.funnel_walk`) then goes over the groups of a user timeline bucket (:func:`timeline_units`;
``services.jobs.funnel`` runs it in Spark tasks, one bucket each, through
``services.core.timelines.run_on_buckets``):

* ordered: one pass over the groups keeps, for every step s, the latest first-step time of a chain
  reaching s that ended before the current group (the latest start dominates: every later event is
  later than such a chain's end); a chain entering a group at step a (from the state of step a-1, or
  starting there when a = 1) goes on to step a + cover(a) - 1. A second pass from S rebuilds the step
  times greedily. Cost: O(groups x steps^2) arithmetic per unit.
* any: for every group time t0 the events of [t0, t0 + window] are matched to steps 1, 2, ... Cost:
  O(groups^2) matchings per unit, so heavy units with long windows are the expensive case.

Filling steps from a set of events with equal time (or one window) is a matching problem. Greedily,
each step takes the available event that matches the fewest later steps; that is optimal (an
exchange argument) whenever two candidates' sets of later steps are nested. :class:`FunnelSpec`
guarantees it: for each step s and two later steps of the same event type, the conditions of s plus
each of theirs must include one another or contradict. ``view,view[brand=x],view[brand=y]`` is
refused (a view of x and one of y would compete for step 1), ``view,view[brand=x],purchase`` is fine.

What the report shows: polars on the collected units
----------------------------------------------------
Spark does the part that grows with the events: reading the lake's timelines and walking every unit
(:func:`timeline_units` in its tasks). Everything after it (:func:`funnel_steps` per breakdown, the trend,
:func:`time_to_convert` and its histogram, :func:`driver_counts`, the drop-off audiences) takes the
per-unit frame collected once into polars. It has one row per unit (1.74 million for a generated
43.8-million-event month, a few hundred MB), which fits in the driver's memory with room to spare,
and on Spark those tables were about twenty jobs over the cached frame whose scheduling, planning and
scans cost far more than the counting itself; polars does the same counts in a few seconds.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

import numpy as np
import polars as pl
import pyarrow as pa

from etl.contract import EVENT_TYPES
from etl.describe import NO_BRAND, NO_CATEGORY
from etl.funnel_walk import NO_WINDOW, NULL, any_walk, group_covers, ordered_walk
from etl.timeline import KEY_COLUMNS
from etl.user_runs import user_runs

Unit = Literal["user", "session", "user_product"]
Order = Literal["ordered", "any"]
Op = Literal["=", "!=", ">=", "<"]

DEFAULT_STEPS: Final[str] = "view,cart,purchase"
MIN_STEPS: Final[int] = 2
MAX_STEPS: Final[int] = 10
#: Columns a step may be narrowed by: text columns take ``=``/``!=``, ``price`` takes ``>=``/``<``.
TEXT_COLUMNS: Final[tuple[str, ...]] = ("brand", "category_code", "category_l1", "category_l2", "category_l3")
NUMBER_COLUMNS: Final[tuple[str, ...]] = ("price",)
_OPS: Final[dict[str, tuple[str, ...]]] = {
    **{c: ("=", "!=") for c in TEXT_COLUMNS},
    **{c: (">=", "<") for c in NUMBER_COLUMNS},
}
#: Lower bounds of the price bands of :func:`driver_counts` (the last band is open).
PRICE_BANDS: Final[tuple[float, ...]] = (0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
#: Lower bounds in seconds of the time-to-convert histogram bins (the last bin is open).
TTC_BIN_EDGES: Final[tuple[int, ...]] = (
    0,
    60,
    300,
    900,
    3600,
    6 * 3600,
    86400,
    2 * 86400,
    3 * 86400,
    7 * 86400,
)
OTHER_BRANDS: Final[str] = "other"
NO_SEGMENT: Final[str] = "(unsegmented)"
NO_VALUE: Final[str] = "(none)"
_US_PER_DAY: Final[int] = 86_400_000_000

_STEP_RE = re.compile(r"\s*([a-z_]+)\s*(?:\[([^\[\]]*)\])?\s*")
_CONDITION_RE = re.compile(r"\s*([a-z_0-9]+)\s*(!=|>=|<|=)\s*(.*?)\s*")


def _number_text(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Condition:
    """One narrowing of a step: ``column op value``."""

    column: str
    op: Op
    value: str | float

    def __post_init__(self) -> None:
        if self.column not in _OPS:
            raise ValueError(f"unknown column {self.column!r}; use one of {', '.join(_OPS)}")
        if self.op not in _OPS[self.column]:
            raise ValueError(f"{self.column} takes {' or '.join(_OPS[self.column])}, not {self.op}")
        if self.column in NUMBER_COLUMNS and not isinstance(self.value, float | int):
            raise ValueError(f"{self.column} needs a number, got {self.value!r}")
        if self.value == "":
            raise ValueError(f"empty value for {self.column}")

    @property
    def text(self) -> str:
        value = _number_text(self.value) if isinstance(self.value, float | int) else self.value
        return f"{self.column}{self.op}{value}"

    def matches(self) -> pl.Expr:
        """A null value matches ``!=`` (an unbranded event is "not brand x") and nothing else."""
        c, v = pl.col(self.column), pl.lit(self.value)
        if self.op == "=":
            return (c == v).fill_null(False)
        if self.op == "!=":
            return c.ne_missing(v)
        return (c >= v if self.op == ">=" else c < v).fill_null(False)


@dataclass(frozen=True)
class Step:
    """Events of one type, narrowed by all of ``conditions``."""

    event_type: str
    conditions: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.event_type!r}; use one of {', '.join(EVENT_TYPES)}")

    @property
    def label(self) -> str:
        if not self.conditions:
            return self.event_type
        return f"{self.event_type}[{','.join(c.text for c in self.conditions)}]"

    def matches(self) -> pl.Expr:
        conditions = [pl.col("event_type") == self.event_type, *(c.matches() for c in self.conditions)]
        return functools.reduce(operator.and_, conditions).fill_null(False)


def _contradictory(conditions: set[Condition]) -> bool:
    """True when no event can satisfy all ``conditions`` (judged from the conditions alone)."""
    for column in TEXT_COLUMNS:
        equal = {c.value for c in conditions if c.column == column and c.op == "="}
        unequal = {c.value for c in conditions if c.column == column and c.op == "!="}
        if len(equal) > 1 or equal & unequal:
            return True
    for column in NUMBER_COLUMNS:
        low = max(
            (float(c.value) for c in conditions if c.column == column and c.op == ">="), default=-math.inf
        )
        high = min(
            (float(c.value) for c in conditions if c.column == column and c.op == "<"), default=math.inf
        )
        if low >= high:
            return True
    return False


def _check_countable(steps: tuple[Step, ...]) -> None:
    """Refuse the specs whose greedy matching could be wrong (see the module docstring)."""
    for s, step in enumerate(steps):
        later = [m for m in range(s + 1, len(steps)) if steps[m].event_type == step.event_type]
        traces = {
            m: set(step.conditions) | set(steps[m].conditions)
            for m in later
            if not _contradictory(set(step.conditions) | set(steps[m].conditions))
        }
        for m1 in traces:
            for m2 in traces:
                if m1 < m2 and not (traces[m1] <= traces[m2] or traces[m2] <= traces[m1]):
                    raise ValueError(
                        f"steps {m1 + 1} ({steps[m1].label}) and {m2 + 1} ({steps[m2].label}) would compete for "
                        f"events of step {s + 1} ({step.label}) that only one of them takes; make the conditions "
                        "of one include the other's"
                    )


def _parse_condition(text: str) -> Condition:
    match = _CONDITION_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"bad condition {text.strip()!r}; write column=value, column!=value, price>=n or price<n"
        )
    column, op, raw = match.groups()
    value: str | float = raw
    if column in NUMBER_COLUMNS:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{column} needs a number, got {raw!r}") from None
    return Condition(column, op, value)  # type: ignore[arg-type]


def parse_step(text: str) -> Step:
    """``cart[category_l1=electronics,price>=100]`` -> :class:`Step`."""
    match = _STEP_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"bad step {text.strip()!r}; write event_type or event_type[column=value,...]")
    event_type, conditions = match.groups()
    parts = [] if conditions is None else conditions.split(",")
    return Step(event_type, tuple(_parse_condition(p) for p in parts))


@dataclass(frozen=True)
class FunnelSpec:
    """What to count: the steps, the counting unit, the order and the conversion window.

    Examples
    --------
    >>> FunnelSpec.parse("view,cart[category_l1=electronics],purchase", window_days=3).labels
    ('view', 'cart[category_l1=electronics]', 'purchase')
    """

    steps: tuple[Step, ...] = field(default_factory=lambda: tuple(Step(t) for t in DEFAULT_STEPS.split(",")))
    unit: Unit = "user"
    order: Order = "ordered"
    window_days: float = 7.0

    def __post_init__(self) -> None:
        if not MIN_STEPS <= len(self.steps) <= MAX_STEPS:
            raise ValueError(f"a funnel needs {MIN_STEPS} to {MAX_STEPS} steps, got {len(self.steps)}")
        if self.unit not in get_args(Unit):
            raise ValueError(f"unknown unit {self.unit!r}; use one of {', '.join(get_args(Unit))}")
        if self.order not in get_args(Order):
            raise ValueError(f"unknown order {self.order!r}; use one of {', '.join(get_args(Order))}")
        if not (
            isinstance(self.window_days, int | float)
            and math.isfinite(self.window_days)
            and self.window_days > 0
        ):
            raise ValueError(f"the window must be a positive number of days, got {self.window_days!r}")
        _check_countable(self.steps)

    @classmethod
    def parse(
        cls, steps: str = DEFAULT_STEPS, unit: str = "user", order: str = "ordered", window_days: float = 7.0
    ) -> FunnelSpec:
        """Build a spec from command-line text; every problem is a one-line ``ValueError``."""
        texts = re.split(r",(?![^\[]*\])", steps)  # commas outside brackets separate steps
        parsed = []
        for i, text in enumerate(texts, start=1):
            try:
                parsed.append(parse_step(text))
            except ValueError as exc:
                raise ValueError(f"step {i} ({text.strip()!r}): {exc}") from None
        return cls(tuple(parsed), unit, order, window_days)  # type: ignore[arg-type]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.steps)

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def window_us(self) -> int | None:
        """The window in microseconds; ``None`` for session units, which have none."""
        return None if self.unit == "session" else round(self.window_days * _US_PER_DAY)

    def to_dict(self) -> dict[str, object]:
        return {
            "steps": list(self.labels),
            "unit": self.unit,
            "order": self.order,
            "window_days": None if self.unit == "session" else self.window_days,
        }


def step_time_column(step: int) -> str:
    """Name of the per-unit column holding the time step ``step`` (1-based) was reached."""
    return f"step_{step}_time"


def _check_columns(df: pl.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")


def _check_step(spec: FunnelSpec, step: int, last: int, what: str) -> None:
    if not 1 <= step <= last:
        raise ValueError(
            f"{what} must be a step from 1 to {last} of this {spec.n_steps}-step funnel, got {step}"
        )


# -- the matching core: one timeline bucket at a time, the walk compiled (etl.funnel_walk)

#: The per-unit frame's columns besides the step times (see :func:`timeline_units`).
_UNIT_ARROW: Final[list[tuple[str, pa.DataType]]] = [
    ("unit_key", pa.string()), ("user_key", pa.string()), ("level", pa.int32()),
]  # fmt: skip
_FIRST_ARROW: Final[list[tuple[str, pa.DataType]]] = [
    ("first_week", pa.date32()), ("first_category_l1", pa.string()), ("first_brand", pa.string()),
    ("first_product_id", pa.int64()), ("first_price", pa.float64()),
    ("first_seen", pa.timestamp("us", tz="UTC")),
]  # fmt: skip


def _unit_columns(unit: Unit) -> list[str]:
    return {"user": ["user_key"], "session": ["session_key"], "user_product": ["user_key", "product_id"]}[unit]


def unit_key_expression(unit: Unit) -> pl.Expr:
    """A unit's key from an event's columns: the user or session key, or ``user_key:product_id``."""
    if unit == "user_product":
        return pl.concat_str(pl.col("user_key"), pl.col("product_id").cast(pl.String), separator=":")
    return pl.col(_unit_columns(unit)[0])


def units_schema(spec: FunnelSpec) -> pa.Schema:
    """The Arrow schema of :func:`timeline_units`' rows."""
    times = [(step_time_column(i + 1), pa.timestamp("us", tz="UTC")) for i in range(spec.n_steps)]
    return pa.schema([*_UNIT_ARROW, *times, *_FIRST_ARROW])


def dictionary_columns(spec: FunnelSpec) -> list[str]:
    """The timeline's key columns (:data:`etl.timeline.KEY_COLUMNS`) a walk of ``spec`` reads as
    dictionaries, which decode each 64-character key once per bucket instead of once per event: all
    but the ones a session or user-product walk hashes to order its units (a categorical hashes
    otherwise than its text, and the units would come in another order)."""
    hashed = set() if spec.unit == "user" else set(_unit_columns(spec.unit))
    return [c for c in KEY_COLUMNS if c not in hashed]


def event_columns(spec: FunnelSpec) -> list[str]:
    """The lake's event columns the funnel reads."""
    narrowed = {c.column for step in spec.steps for c in step.conditions}
    base = ["user_key", "event_time", "event_type", "product_id", "category_l1", "brand", "price"]
    if spec.unit == "session":
        base.append("session_key")
    return base + sorted(narrowed - set(base))


def _marked(events: pl.DataFrame, spec: FunnelSpec) -> pl.DataFrame:
    """Every event as ``user_key, session_key, t, mask`` and the first-step attributes, in its order."""
    mask = functools.reduce(
        operator.add,
        [pl.when(step.matches()).then(pl.lit(1 << i)).otherwise(pl.lit(0)) for i, step in enumerate(spec.steps)],
    ).cast(pl.Int32)
    return events.select(
        "user_key",
        (pl.col("session_key") if spec.unit == "session" else pl.lit(None, pl.String)).alias("session_key"),
        pl.col("event_time").dt.epoch("us").alias("t"),
        mask.alias("mask"),
        "product_id",
        "category_l1",
        "brand",
        pl.col("price").cast(pl.Float64),
    )


def timeline_units(timeline: pa.Table, spec: FunnelSpec) -> pa.Table:
    """The per-unit rows of one user timeline (:mod:`etl.timeline`): whole users sorted by user and
    time, so a user funnel needs no sort and each user's first event is its first row. Sorted by unit,
    time and then the first-step order of the module docstring, the matched events become time groups
    and each group's cells (a count per mask); :mod:`etl.funnel_walk` walks them. Text kept
    as dictionaries (polars categoricals: compared and sorted by value) is walked as integers, and
    decoded only in the per-unit rows."""
    return _timeline_walk(timeline, spec)[0]


def timeline_units_entered(timeline: pa.Table, spec: FunnelSpec) -> tuple[pa.Table, pa.Table]:
    """:func:`timeline_units` and each unit's entry into the funnel, ``unit_key, user_key, at`` in the
    units' order: the time of its earliest first-step event (where point-in-time attributes are taken;
    the walk's step 1 is later for a unit whose deepest chain started later). Taken from the walk's
    own marked events: the timeline is read once."""
    units, matched = _timeline_walk(timeline, spec)
    entries = (matched.filter((pl.col("mask") & 1) != 0)
               .group_by(unit_key_expression(spec.unit).alias("unit_key"))  # a key read as a dictionary: its codes
               .agg(pl.col("t").min().alias("at"))
               .with_columns(pl.col("unit_key").cast(pl.String)))  # fmt: skip
    starts = pl.from_arrow(units.select(["unit_key", "user_key"])).join(
        entries, on="unit_key", how="left", maintain_order="left")
    return units, starts.with_columns(pl.col("at").cast(pl.Datetime("us", "UTC"))).to_arrow()


def _timeline_walk(timeline: pa.Table, spec: FunnelSpec) -> tuple[pa.Table, pl.DataFrame]:
    """:func:`timeline_units` and the marked events that match a step, in timeline order."""
    events = pl.from_arrow(timeline.select(event_columns(spec)))
    _, new_user = user_runs(timeline["user_key"])
    marked = _marked(events, spec)
    seen = marked.select("user_key", first_seen="t")[np.flatnonzero(new_user)]
    matched = np.flatnonzero(marked["mask"].to_numpy() != 0)
    in_order = (np.arange(len(matched)), _starts_within(new_user, matched)) if spec.unit == "user" else None
    kept = marked[matched]
    return _units(kept, seen, spec, in_order), kept


def _units(df: pl.DataFrame, seen: pl.DataFrame, spec: FunnelSpec,
           in_order: tuple[np.ndarray, np.ndarray] | None = None) -> pa.Table:  # fmt: skip
    """The per-unit rows of the matched events ``df``, walked in unit order: ``in_order`` (the order
    and each unit's first row, :func:`_walk`) when ``df`` is already in it, else sorted into it."""
    if df.height == 0:
        return units_schema(spec).empty_table()
    return _walk(df, *(in_order or _unit_order(df, _unit_columns(spec.unit))), seen, spec)


def _starts_within(new_group: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For sorted ``rows`` (a subset of a table's rows) whose groups begin where ``new_group`` is
    true: which rows are the first kept row of their group."""
    group = np.cumsum(new_group)[rows]
    return np.r_[True, group[1:] != group[:-1]]


def _walk(df: pl.DataFrame, order: np.ndarray, unit_change: np.ndarray, seen: pl.DataFrame,
          spec: FunnelSpec) -> pa.Table:  # fmt: skip
    """The per-unit rows from the matched events ``df`` (mask > 0) in ``order`` (by unit, then time;
    ``unit_change`` marks each unit's first row in that order) and each user's ``first_seen``."""
    t = df["t"].to_numpy()[order]
    group_change = unit_change | np.r_[True, t[1:] != t[:-1]]
    heads = np.flatnonzero(group_change)  # each group's first row
    group_of_row = np.cumsum(group_change) - 1
    unit_start = np.r_[np.flatnonzero(unit_change[heads]), len(heads)]  # each unit's first group, and the end
    mask = df["mask"].to_numpy()[order]
    masks = np.flatnonzero(np.bincount(mask))  # the masks present (fewer than 2^10), no sort of the events
    code_of = np.zeros(int(masks[-1]) + 1, np.int64)
    code_of[masks] = np.arange(len(masks))
    mask_code = code_of[mask]  # a lookup, not a search per event
    # group_of_row never decreases: a stable sort of the cell keys only orders masks within a group
    keys = np.sort(group_of_row * len(masks) + mask_code, kind="stable")
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    cell_key, cell_n = keys[first], np.diff(np.r_[first, len(keys)])
    cell_group = cell_key // len(masks)  # every group has a cell: each group's first cell, and the end
    cell_start = np.r_[np.flatnonzero(np.r_[True, cell_group[1:] != cell_group[:-1]]), len(cell_group)]
    cell_code = cell_key % len(masks)
    window = NO_WINDOW if spec.window_us is None else spec.window_us
    if spec.order == "ordered":
        covers = group_covers(cell_start, masks[cell_code].astype(np.int64), cell_n, spec.n_steps)
        level, times, step_1_group = ordered_walk(unit_start, t[heads], covers, window)
    else:
        level, times, step_1_group = any_walk(
            unit_start, t[heads], cell_start, cell_code, cell_n, masks.astype(np.int64), spec.n_steps, window
        )
    entered = np.flatnonzero(level > 0)
    first_rows = order[_first_step_rows(df, order, mask, group_of_row)[step_1_group[entered]]]
    reached = times[entered]
    unit_key = unit_key_expression(spec.unit)
    step_1 = pl.Series(reached[:, 0]).cast(pl.Datetime("us", "UTC"))
    out = df[first_rows].select(
        unit_key.alias("unit_key"),
        pl.col("user_key"),
        pl.Series("level", level[entered].astype(np.int32)),
        *[
            pl.from_arrow(pa.array(reached[:, i], pa.int64(), mask=reached[:, i] == NULL))
            .cast(pl.Datetime("us", "UTC"))
            .alias(step_time_column(i + 1))
            for i in range(spec.n_steps)
        ],
        step_1.dt.truncate("1w").dt.date().alias("first_week"),
        pl.col("category_l1").alias("first_category_l1"),
        pl.col("brand").alias("first_brand"),
        pl.col("product_id").alias("first_product_id"),
        pl.col("price").alias("first_price"),
    )
    out = out.join(seen, on="user_key", how="left", maintain_order="left").with_columns(
        pl.col("first_seen").cast(pl.Datetime("us", "UTC"))
    )
    return out.to_arrow().cast(units_schema(spec))


_UNIT_SEED: Final[int] = 7


def _unit_order(df: pl.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The row order that sorts ``df`` by unit then time, and where each unit starts in that order.

    Sorting two integer columns (a 64-bit hash of the unit key, the time) is several times cheaper than
    sorting the 64-character keys. When two units share a hash (fewer distinct hashes than keys) the
    keys themselves are sorted instead, so a collision can never merge two units.
    """
    key = pl.struct(keys) if len(keys) > 1 else pl.col(keys[0])
    h = df.select(key.hash(seed=_UNIT_SEED)).to_series().to_numpy()
    t = df["t"].to_numpy()
    if len(np.unique(h)) == df.select(key.n_unique()).item():
        order = np.lexsort((t, h))
        h = h[order]
        return order, np.r_[True, h[1:] != h[:-1]]
    order = df.with_row_index("row").sort([*keys, "t"], maintain_order=True)["row"].to_numpy()
    changed = df[order].select(pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in keys]))
    return order, changed.to_series().fill_null(True).to_numpy()


def _first_step_rows(df: pl.DataFrame, order: np.ndarray, mask: np.ndarray, group_of_row: np.ndarray) -> np.ndarray:
    """Per group, the position (in ``order``) of its step-1 event with the smallest (product_id,
    category_l1, brand, price); -1 for a group without one. Only groups with several step-1 events need
    the comparison."""
    rows = np.full(int(group_of_row[-1]) + 1, -1, np.int64)
    step_1 = np.flatnonzero(mask & 1)
    groups = group_of_row[step_1]
    rows[groups[::-1]] = step_1[::-1]  # the first step-1 row of each group
    tied = np.bincount(groups, minlength=len(rows)) > 1
    if tied.any():
        candidates = step_1[tied[groups]]
        ranked = (
            df[order[candidates]]
            .with_columns(position=pl.Series(candidates), group=pl.Series(group_of_row[candidates]))
            .sort(["group", "product_id", "category_l1", "brand", "price"], nulls_last=False, maintain_order=True)
            .unique("group", keep="first", maintain_order=True)
        )
        rows[ranked["group"].to_numpy()] = ranked["position"].to_numpy()
    return rows


# -- what the report shows, all from the per-unit frame (collected: polars, see the module docstring)


def _aggregate(df: pl.DataFrame, by: Sequence[str], aggs: Sequence[pl.Expr]) -> pl.DataFrame:
    """``aggs`` per value of ``by``, sorted by it; without ``by``, one row (even for an empty frame)."""
    return df.group_by(by).agg(aggs).sort(by) if by else df.select(aggs)


def _long(
    wide: pl.DataFrame, by: Sequence[str], rows: Sequence[Sequence[pl.Expr]], order: str
) -> pl.DataFrame:
    """A row per row of ``wide`` and entry of ``rows`` (expressions over it), sorted by ``by``, ``order``."""
    return pl.concat([wide.select(*by, *row) for row in rows]).sort([*by, order], maintain_order=True)


def _rate(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    return pl.when(denominator > 0).then(numerator / denominator)


def funnel_steps(units: pl.DataFrame, spec: FunnelSpec, by: Sequence[str] = ()) -> pl.DataFrame:
    """Per step (and per breakdown value of ``by``): counts, conversions and drop-off.

    Output: ``*by, step, label, count, conversion_from_previous, conversion_from_first, dropoff,
    dropoff_rate``, sorted by ``by`` then step; ``dropoff`` is the units lost since the previous step
    (0 at step 1), rates are null when their denominator is 0.
    """
    _check_columns(units, ["level", *by], "the per-unit frame")
    reached = [(pl.col("level") >= k).sum().cast(pl.Int64).alias(f"n{k}") for k in range(1, spec.n_steps + 1)]
    rows = [
        [
            pl.lit(k, pl.Int32).alias("step"),
            pl.lit(label).alias("label"),
            pl.col(f"n{k}").alias("count"),
            pl.col(f"n{max(k - 1, 1)}").alias("previous"),
            pl.col("n1").alias("first"),
        ]
        for k, label in enumerate(spec.labels, start=1)
    ]
    count, previous = pl.col("count"), pl.col("previous")
    return _long(_aggregate(units, by, reached), by, rows, "step").select(
        *by,
        "step",
        "label",
        "count",
        _rate(count, previous).alias("conversion_from_previous"),
        _rate(count, pl.col("first")).alias("conversion_from_first"),
        (previous - count).alias("dropoff"),
        _rate(previous - count, previous).alias("dropoff_rate"),
    )


def with_breakdowns(
    units: pl.DataFrame,
    top_brands: int = 10,
    segments: pl.DataFrame | None = None,
    cohort: bool = False,
) -> pl.DataFrame:
    """Add the breakdown columns ``week, category_l1, brand`` and, when asked, ``segment, cohort``.

    ``brand`` keeps the ``top_brands`` brands with the most units (ties: alphabetical), "other" for
    the rest, ``(no brand)`` for none; ``segments`` has ``user_key, segment`` (units without one get
    "(unsegmented)"); ``cohort`` is the month of the user's ``first_seen``, ``yyyy-MM``.
    """
    brand = pl.col("first_brand")
    top = (
        units.filter(brand.is_not_null())
        .group_by("first_brand")
        .agg(pl.len().alias("units"))
        .sort(["units", "first_brand"], descending=[True, False])
        .head(top_brands)
        .get_column("first_brand")
    )
    out = units.with_columns(
        week=pl.col("first_week"),
        category_l1=pl.col("first_category_l1").fill_null(NO_CATEGORY),
        brand=pl.when(brand.is_null())
        .then(pl.lit(NO_BRAND))
        .when(brand.is_in(top.implode()))
        .then(brand)
        .otherwise(pl.lit(OTHER_BRANDS)),
    )
    if segments is not None:
        _check_columns(segments, ["user_key", "segment"], "the segments frame")
        seg = segments.select("user_key", pl.col("segment").cast(pl.String))
        out = out.join(seg, on="user_key", how="left", maintain_order="left").with_columns(
            pl.col("segment").fill_null(NO_SEGMENT)
        )
    if cohort:
        out = out.with_columns(cohort=pl.col("first_seen").dt.strftime("%Y-%m"))
    return out


def _seconds_between(units: pl.DataFrame, spec: FunnelSpec, from_step: int, to_step: int) -> pl.DataFrame:
    _check_step(spec, from_step, spec.n_steps - 1, "from_step")
    _check_step(spec, to_step, spec.n_steps, "to_step")
    if to_step <= from_step:
        raise ValueError(f"to_step ({to_step}) must come after from_step ({from_step})")
    elapsed = pl.col(step_time_column(to_step)) - pl.col(step_time_column(from_step))
    return units.filter(pl.col("level") >= to_step).with_columns(
        seconds=elapsed.dt.total_microseconds() / 1e6
    )


def time_to_convert(
    units: pl.DataFrame,
    spec: FunnelSpec,
    from_step: int = 1,
    to_step: int | None = None,
    by: Sequence[str] = (),
) -> pl.DataFrame:
    """Exact quartiles of the time from ``from_step`` to ``to_step`` (default: the last) over units that got there.

    Linear interpolation between the two nearest values (numpy's default). Output: ``*by, units,
    p25_seconds, median_seconds, p75_seconds, mean_seconds``; without ``by``, one row (``units`` 0
    and null times when no unit got there).
    """
    seconds = pl.col("seconds")
    quartiles = {"p25_seconds": 0.25, "median_seconds": 0.5, "p75_seconds": 0.75}
    return _aggregate(
        _seconds_between(units, spec, from_step, to_step or spec.n_steps),
        by,
        [
            pl.len().cast(pl.Int64).alias("units"),
            *[seconds.quantile(q, interpolation="linear").alias(name) for name, q in quartiles.items()],
            seconds.mean().alias("mean_seconds"),
        ],
    )


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def time_to_convert_histogram(
    units: pl.DataFrame,
    spec: FunnelSpec,
    from_step: int = 1,
    to_step: int | None = None,
    edges: Sequence[int] = TTC_BIN_EDGES,
    by: Sequence[str] = (),
) -> pl.DataFrame:
    """Units per time-to-convert bin, empty bins included: ``*by, bin, label, lower_seconds, upper_seconds, units``.

    Bin i holds ``edges[i] <= seconds < edges[i+1]``; the last is open (``upper_seconds`` null).
    """
    if list(edges) != sorted(set(edges)) or edges[0] != 0:
        raise ValueError(f"edges must increase from 0, got {list(edges)}")
    seconds = _seconds_between(units, spec, from_step, to_step or spec.n_steps)
    bin_index = functools.reduce(operator.add, [(pl.col("seconds") >= e).cast(pl.Int32) for e in edges]) - 1
    counts = _aggregate(
        seconds, by, [(bin_index == i).sum().cast(pl.Int64).alias(f"b{i}") for i in range(len(edges))]
    )
    bins = [
        [
            pl.lit(i, pl.Int32).alias("bin"),
            pl.lit(
                f"{_duration_text(lo)}+" if hi is None else f"{_duration_text(lo)}-{_duration_text(hi)}"
            ).alias("label"),
            pl.lit(lo, pl.Int32).alias("lower_seconds"),
            pl.lit(hi, pl.Int32).alias("upper_seconds"),
            pl.col(f"b{i}").alias("units"),
        ]
        for i, (lo, hi) in enumerate(zip(edges, [*edges[1:], None], strict=True))
    ]
    return _long(counts, by, bins, "bin")


def dropoff_audience(units: pl.DataFrame, spec: FunnelSpec, step: int, extra: Sequence[str] = ()) -> pl.DataFrame:
    """Units that reached ``step`` but not the next: ``unit_key, user_key, reached_at``, then the
    units' ``extra`` columns (taken along: no join back on the unit key).

    For user-product units a user appears once per product they stalled on.
    """
    _check_step(spec, step, spec.n_steps - 1, "the drop-off step")
    return units.filter(pl.col("level") == step).select(
        "unit_key", "user_key", pl.col(step_time_column(step)).alias("reached_at"), *extra
    )


def _price_band(price: pl.Expr, bands: Sequence[float]) -> pl.Expr:
    """The highest band whose lower bound ``price`` reaches; ``(none)`` for null or below the first."""
    labels = [
        f"{_number_text(lo)}+" if hi is None else f"{_number_text(lo)}-{_number_text(hi)}"
        for lo, hi in zip(bands, [*bands[1:], None], strict=True)
    ]
    highest_first = reversed(list(zip(bands, labels, strict=True)))
    return pl.coalesce(
        [*(pl.when(price >= lo).then(pl.lit(label)) for lo, label in highest_first), pl.lit(NO_VALUE)]
    )


def driver_counts(
    units: pl.DataFrame,
    spec: FunnelSpec,
    traits: pl.DataFrame | None = None,
    price_bands: Sequence[float] = PRICE_BANDS,
    trait_columns: Sequence[str] = (),
) -> pl.DataFrame:
    """The 2x2 counts of :func:`model.funnel.conversion_drivers`: per step k < n and attribute value,
    the units at step k that went on to k+1 and those that dropped.

    Attributes: the first-step event's ``category_l1``, ``brand`` and ``price_band``, plus every column of
    ``traits`` (``unit_key``, or ``user_key`` for traits of the user, and one column per behaviour trait,
    e.g. a segment or a repeat-buyer flag; as text, ``(none)`` when missing), and every column of
    ``units`` named in ``trait_columns`` (traits already in the units frame: no join). Output: ``step,
    attribute, value, went_on, dropped, step_went_on, step_dropped``, sorted by step, attribute and value.
    """
    _check_columns(units, list(trait_columns), "the units frame")
    trait_columns = list(trait_columns)
    if traits is not None:
        key = "unit_key" if "unit_key" in traits.columns else "user_key"
        _check_columns(traits, [key], "the traits frame")
        trait_columns += [c for c in traits.columns if c != key]
        units = units.join(traits, on=key, how="left")
    attributes = {
        "category_l1": pl.col("first_category_l1").fill_null(NO_CATEGORY),
        "brand": pl.col("first_brand").fill_null(NO_BRAND),
        "price_band": _price_band(pl.col("first_price"), price_bands),
        **{c: pl.col(c).cast(pl.String).fill_null(NO_VALUE) for c in trait_columns},
    }
    # units per (attribute value, level): a few hundred rows, from which every step's 2x2 counts follow
    per_level = pl.concat(
        [
            units.lazy()
            .group_by(value.alias("value"), "level")
            .agg(pl.len().cast(pl.Int64).alias("units"))
            .select(pl.lit(name).alias("attribute"), "value", "level", "units")
            for name, value in attributes.items()
        ]
    ).collect()
    level, step, n = pl.col("level"), pl.col("step"), pl.col("units")
    steps = pl.DataFrame({"step": range(1, spec.n_steps)}, schema={"step": pl.Int32})
    counted = (
        per_level.join(steps, how="cross")
        .filter(level >= step)
        .group_by("step", "attribute", "value")
        .agg(went_on=n.filter(level > step).sum(), dropped=n.filter(level == step).sum())
        .sort("step", "attribute", "value")
    )
    per_attribute = ["step", "attribute"]
    return counted.with_columns(
        step_went_on=pl.col("went_on").sum().over(per_attribute),
        step_dropped=pl.col("dropped").sum().over(per_attribute),
    )
