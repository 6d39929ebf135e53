"""Funnels: which units (users, sessions, user-product pairs) go from step to step, when, and who drops.

Definitions (the report and the README quote them)
--------------------------------------------------
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
Matching events are reduced to one row per unit: its distinct event times ("groups"), sorted, each
holding the counts of its events per *mask* (the set of steps an event matches, as bits) and its
*covers*: for each entry step a, how many steps a, a+1, ... the group's distinct events can fill
(bit arithmetic when every event matches one step, a small matching otherwise; computed once per
group). Spark higher-order functions then walk that array (no Python UDF):

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
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from etl.contract import EVENT_TYPES
from etl.describe import NO_BRAND, NO_CATEGORY

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

    def matches(self) -> Column:
        """A null value matches ``!=`` (an unbranded event is "not brand x") and nothing else."""
        c, v = F.col(self.column), F.lit(self.value)
        if self.op == "=":
            return c == v
        if self.op == "!=":
            return ~c.eqNullSafe(v)
        return c >= v if self.op == ">=" else c < v


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

    def matches(self) -> Column:
        conditions = [F.col("event_type") == self.event_type, *(c.matches() for c in self.conditions)]
        return F.coalesce(functools.reduce(operator.and_, conditions), F.lit(False))


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


def _check_columns(df: DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")


def _check_step(spec: FunnelSpec, step: int, last: int, what: str) -> None:
    if not 1 <= step <= last:
        raise ValueError(
            f"{what} must be a step from 1 to {last} of this {spec.n_steps}-step funnel, got {step}"
        )


# -- the matching core: Spark higher-order functions over one unit's time groups


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """Evaluate ``value`` once and use it in ``body`` (lambda bodies have no common-subexpression reuse)."""
    return F.get(F.transform(F.array(value), body), 0)


def _within(elapsed_us: Column, window_us: int | None) -> Column:
    return F.lit(True) if window_us is None else elapsed_us <= F.lit(window_us)


def _cover(cells: Column, entry: Column, n_steps: int) -> Column:
    """How many consecutive steps from ``entry`` (0-based) distinct events of ``cells`` can fill.

    ``cells`` is an array of (mask, n): n events matching the steps whose bits are set in mask. Each
    step takes the available event matching the fewest later steps (exact under the spec's rule).
    """

    def fill(acc: Column, step: Column) -> Column:
        candidates = F.filter(
            F.transform(
                cells,
                lambda c, i: F.struct(
                    F.bit_count(c["mask"].bitwiseAND(step["later"])).alias("later"),
                    i.alias("i"),
                    c["mask"].alias("mask"),
                ),
            ),
            lambda x: (x["mask"].bitwiseAND(step["bit"]) != 0) & (F.get(acc["left"], x["i"]) > 0),
        )

        def take(best: Column) -> Column:
            found = best.isNotNull()
            left = F.transform(acc["left"], lambda n, j: F.when(found & (j == best), n - 1).otherwise(n))
            return F.struct(
                left.alias("left"), (acc["cover"] + found.cast("int")).alias("cover"), found.alias("open")
            )

        return F.when(acc["open"] & (step["s"] >= entry), _let(F.array_min(candidates)["i"], take)).otherwise(
            acc
        )

    all_bits = (1 << n_steps) - 1
    steps = F.array(
        *[
            F.struct(
                F.lit(s).alias("s"),
                F.lit(1 << s).alias("bit"),
                F.lit(all_bits ^ ((2 << s) - 1)).alias("later"),
            )
            for s in range(n_steps)
        ]
    )
    start = F.struct(
        F.transform(cells, lambda c: c["n"]).alias("left"), F.lit(0).alias("cover"), F.lit(True).alias("open")
    )
    return F.aggregate(steps, start, fill, lambda acc: acc["cover"])


def _distinct_cover(union: Column, entry: int, n_steps: int) -> Column:
    """:func:`_cover` when every event matches one step: the run of set bits of ``union`` from ``entry``."""
    runs = [((1 << (j + 1)) - 1) ^ ((1 << entry) - 1) for j in range(entry, n_steps)]
    return functools.reduce(operator.add, [(union.bitwiseAND(r) == r).cast("int") for r in runs])


def _nulls(n: int) -> Column:
    return F.array_repeat(F.lit(None).cast("long"), n)


def _ordered_state(groups: Column, n_steps: int, window_us: int | None) -> Column:
    """struct(best, first): per step the latest start of a chain reaching it, and that start when first reached."""

    def merge(acc: Column, g: Column) -> Column:
        t = g["t"]
        entries = []
        for a in range(n_steps):
            if a == 0:
                entry = t
            else:
                before = F.get(acc["best"], a - 1)
                entry = F.when(before.isNotNull() & _within(t - before, window_us), before)
            cover = F.when(entry.isNotNull(), F.get(g["covers"], a)).otherwise(0)
            entries.append(F.struct(entry.alias("start"), cover.alias("cover")))

        def update(e: Column) -> Column:
            best = F.array(
                *[
                    F.greatest(
                        F.get(acc["best"], s),
                        *[F.when(F.get(e, a)["cover"] > s - a, F.get(e, a)["start"]) for a in range(s + 1)],
                    )
                    for s in range(n_steps)
                ]
            )
            return _let(
                best,
                lambda b: F.struct(
                    b.alias("best"),
                    F.transform(acc["first"], lambda f, i: F.coalesce(f, F.get(b, i))).alias("first"),
                ),
            )

        return _let(F.array(*entries), update)

    start = F.struct(_nulls(n_steps).alias("best"), _nulls(n_steps).alias("first"))
    return F.aggregate(groups, start, merge)


def _ordered_times(
    groups: Column, start: Column, level: Column, n_steps: int, window_us: int | None
) -> Column:
    """Step times (micros) of the greedy earliest chain that starts at ``start`` and reaches ``level``."""

    def merge(acc: Column, g: Column) -> Column:
        t, nxt = g["t"], acc["next"]
        starts_here = (nxt == 0) & (t == start)
        goes_on = (nxt > 0) & (nxt < level) & (t > start) & _within(t - start, window_us)

        def advance(cover: Column) -> Column:
            times = F.transform(
                acc["times"], lambda x, i: F.when((i >= nxt) & (i < nxt + cover), t).otherwise(x)
            )
            return F.struct((nxt + cover).alias("next"), times.alias("times"))

        return F.when(starts_here | goes_on, _let(F.get(g["covers"], nxt), advance)).otherwise(acc)

    init = F.struct(F.lit(0).alias("next"), _nulls(n_steps).alias("times"))
    return F.aggregate(groups, init, merge, lambda acc: acc["times"])


def _in_window(groups: Column, t0: Column, window_us: int | None) -> Column:
    return F.filter(groups, lambda g: (g["t"] >= t0) & _within(g["t"] - t0, window_us))


def _window_cells(groups: Column) -> Column:
    return F.flatten(F.transform(groups, lambda g: g["cells"]))


def _any_anchor(groups: Column, n_steps: int, window_us: int | None) -> Column:
    """struct(cover, t): the largest cover of a window [t, t + window] over group times, earliest t first."""
    covers = F.transform(
        groups,
        lambda g0: F.struct(
            (-_cover(_window_cells(_in_window(groups, g0["t"], window_us)), F.lit(0), n_steps)).alias(
                "neg_cover"
            ),
            g0["t"].alias("t"),
        ),
    )
    return _let(F.array_min(covers), lambda m: F.struct((-m["neg_cover"]).alias("cover"), m["t"].alias("t")))


def _first_time_covering(prefix_covers: Column, step: int) -> Column:
    return F.array_min(F.transform(F.filter(prefix_covers, lambda x: x["cover"] > step), lambda x: x["t"]))


def _any_times(groups: Column, anchor: Column, n_steps: int, window_us: int | None) -> Column:
    """Per step k, the earliest group time by which [anchor, that time] holds a chain for k steps."""

    def body(window: Column) -> Column:
        prefix = F.transform(
            window,
            lambda g, i: F.struct(
                _cover(_window_cells(F.slice(window, 1, i + 1)), F.lit(0), n_steps).alias("cover"),
                g["t"].alias("t"),
            ),
        )
        return _let(prefix, lambda p: F.array(*[_first_time_covering(p, s) for s in range(n_steps)]))

    return _let(_in_window(groups, anchor, window_us), body)


def _unit_key(unit: Unit) -> Column:
    if unit == "user":
        return F.col("user_key")
    if unit == "session":
        return F.col("session_key")
    return F.concat_ws(":", F.col("user_key"), F.col("product_id").cast("string"))


def unit_groups(events: DataFrame, spec: FunnelSpec) -> DataFrame:
    """One row per unit with a step-1 event: ``unit_key, user_key, groups`` (time-sorted).

    ``groups`` is array<struct(t: micros, covers: per entry step a, how many steps from a the group's
    events fill, cells: array<struct(mask, n)>, first: the smallest (product_id, category_l1, brand,
    price) among its step-1 events)>.
    """
    mask = functools.reduce(
        operator.add,
        [F.when(step.matches(), F.lit(1 << i)).otherwise(F.lit(0)) for i, step in enumerate(spec.steps)],
    )
    is_first_step = F.col("mask").bitwiseAND(F.lit(1)) != 0
    first_attributes = F.struct("product_id", "category_l1", "brand", "price")
    matched = (
        events.select(
            _unit_key(spec.unit).alias("unit_key"),
            F.col("user_key"),
            F.unix_micros("event_time").alias("t"),
            mask.alias("mask"),
            first_attributes.alias("attributes"),
        )
        .where(F.col("mask") != 0)
        .repartition("unit_key")  # both aggregations below then share this one shuffle
    )
    masks = F.col("masks")
    groups = matched.groupBy("unit_key", "user_key", "t").agg(
        F.collect_list("mask").alias("masks"),
        F.bit_or("mask").alias("union"),
        (F.max(F.bit_count("mask")) > 1).alias("shared"),
        F.min(F.when(is_first_step, F.col("attributes"))).alias("first"),
    )
    cells = F.transform(
        F.array_distinct(masks),
        lambda m: F.struct(m.alias("mask"), F.size(F.filter(masks, lambda x: x == m)).alias("n")),
    )
    groups = groups.select("unit_key", "user_key", "t", cells.alias("cells"), "union", "shared", "first")
    # A group's covers do not depend on the chain entering it, so they are computed once per group.
    covers = F.array(
        *[
            F.when(F.col("shared"), _cover(F.col("cells"), F.lit(a), spec.n_steps)).otherwise(
                _distinct_cover(F.col("union"), a, spec.n_steps)
            )
            for a in range(spec.n_steps)
        ]
    )
    groups = groups.select("unit_key", "user_key", "t", "cells", covers.alias("covers"), "first")
    has_first_step = F.max(F.col("first").isNotNull())
    return (
        groups.groupBy("unit_key", "user_key")
        .agg(
            F.sort_array(F.collect_list(F.struct("t", "covers", "cells", "first"))).alias("groups"),
            has_first_step.alias("entered"),
        )
        .where(F.col("entered"))  # level 0 (no step-1 event): not in the funnel, and cheaper to drop here
        .select("unit_key", "user_key", "groups")
    )


def funnel_units(events: DataFrame, spec: FunnelSpec) -> DataFrame:
    """Per unit that entered the funnel: its level, step times and first-step attributes.

    ``events`` has the lake's event columns. Output: ``unit_key, user_key, level, step_1_time ..
    step_<n>_time`` (null past the level), ``first_week`` (Monday of step 1's week), ``first_category_l1,
    first_brand, first_product_id, first_price``. Every breakdown, time to convert, audience and driver
    derives from this frame: cache it when several are needed (a filter on ``level`` straight on the
    uncached frame makes Spark evaluate the matching twice).
    """
    _check_columns(
        events, ["event_time", "event_type", "user_key", "session_key", "product_id", "price"], "events"
    )
    k, window_us = spec.n_steps, spec.window_us
    groups, level = F.col("groups"), F.col("level")
    keys = ("unit_key", "user_key", "groups")
    # Each stage is its own select so that an expensive column is computed once and then only read.
    if spec.order == "ordered":
        state = unit_groups(events, spec).select(*keys, _ordered_state(groups, k, window_us).alias("state"))
        reached = state.select(
            *keys,
            F.size(F.filter(F.col("state")["best"], lambda x: x.isNotNull())).alias("level"),
            F.col("state")["first"].alias("first"),
        )
        start = F.get(F.col("first"), level - 1)
        times = reached.select(
            *keys, "level", _ordered_times(groups, start, level, k, window_us).alias("times")
        )
    else:
        anchored = unit_groups(events, spec).select(*keys, _any_anchor(groups, k, window_us).alias("anchor"))
        times = anchored.select(
            *keys,
            F.col("anchor")["cover"].alias("level"),
            _any_times(groups, F.col("anchor")["t"], k, window_us).alias("times"),
        )
    step_1_us = F.get(F.col("times"), 0)
    with_first = times.select(
        "unit_key",
        "user_key",
        "level",
        "times",
        F.get(F.filter(groups, lambda g: g["t"] == step_1_us), 0)["first"].alias("first"),
    )
    first = F.col("first")
    step_times = [
        F.when(level > i, F.timestamp_micros(F.get(F.col("times"), i))).alias(step_time_column(i + 1))
        for i in range(k)
    ]
    return with_first.select(
        "unit_key",
        "user_key",
        level.cast("int").alias("level"),
        *step_times,
        F.to_date(F.date_trunc("week", F.timestamp_micros(step_1_us))).alias("first_week"),
        first["category_l1"].alias("first_category_l1"),
        first["brand"].alias("first_brand"),
        first["product_id"].alias("first_product_id"),
        first["price"].alias("first_price"),
    )


# -- what the report shows, all from the per-unit frame


def funnel_steps(units: DataFrame, spec: FunnelSpec, by: Sequence[str] = ()) -> DataFrame:
    """Per step (and per breakdown value of ``by``): counts, conversions and drop-off.

    Output: ``*by, step, label, count, conversion_from_previous, conversion_from_first, dropoff,
    dropoff_rate``; ``dropoff`` is the units lost since the previous step (0 at step 1), rates are
    null when their denominator is 0.
    """
    _check_columns(units, ["level", *by], "the per-unit frame")
    level = F.col("level")
    reached = [
        F.coalesce(F.sum(F.when(level >= k, 1).otherwise(0)), F.lit(0)).cast("long").alias(f"n{k}")
        for k in range(1, spec.n_steps + 1)
    ]
    rows = F.array(
        *[
            F.struct(
                F.lit(k).alias("step"),
                F.lit(label).alias("label"),
                F.col(f"n{k}").alias("count"),
                F.col(f"n{max(k - 1, 1)}").alias("previous"),
            )
            for k, label in enumerate(spec.labels, start=1)
        ]
    )
    per_step = units.groupBy(*by).agg(*reached).select(*by, F.col("n1"), F.inline(rows))

    def rate(numerator: Column, denominator: Column) -> Column:
        return F.when(denominator > 0, numerator / denominator)

    count, previous = F.col("count"), F.col("previous")
    return per_step.select(
        *by,
        "step",
        "label",
        "count",
        rate(count, previous).alias("conversion_from_previous"),
        rate(count, F.col("n1")).alias("conversion_from_first"),
        (previous - count).alias("dropoff"),
        rate(previous - count, previous).alias("dropoff_rate"),
    )


def first_seen(events: DataFrame) -> DataFrame:
    """``user_key, first_seen``: each user's first event time (pass the whole lake for true cohorts)."""
    return events.groupBy("user_key").agg(F.min("event_time").alias("first_seen"))


def with_breakdowns(
    units: DataFrame,
    top_brands: int = 10,
    segments: DataFrame | None = None,
    first_seen_times: DataFrame | None = None,
) -> DataFrame:
    """Add the breakdown columns ``week, category_l1, brand`` and, when given, ``segment, cohort``.

    ``brand`` keeps the ``top_brands`` brands with the most units ("other" for the rest,
    ``(no brand)`` for none); ``segments`` has ``user_key, segment``; ``first_seen_times`` has
    ``user_key, first_seen`` (see :func:`first_seen`) and ``cohort`` is its month, ``yyyy-MM``.
    """
    brand = F.col("first_brand")
    ranked = (
        units.where(brand.isNotNull())
        .groupBy(brand.alias("top_brand"))
        .agg(F.count(F.lit(1)).alias("units"))
        .withColumn("rank", F.row_number().over(Window.orderBy(F.desc("units"), F.asc("top_brand"))))
        .where(F.col("rank") <= top_brands)
        .select("top_brand")
    )
    out = units.join(F.broadcast(ranked), on=brand == F.col("top_brand"), how="left").select(
        *units.columns,
        F.col("first_week").alias("week"),
        F.coalesce(F.col("first_category_l1"), F.lit(NO_CATEGORY)).alias("category_l1"),
        F.when(brand.isNull(), F.lit(NO_BRAND))
        .when(F.col("top_brand").isNotNull(), brand)
        .otherwise(F.lit(OTHER_BRANDS))
        .alias("brand"),
    )
    if segments is not None:
        _check_columns(segments, ["user_key", "segment"], "the segments frame")
        seg = segments.select("user_key", F.col("segment").cast("string").alias("segment"))
        out = out.join(seg, on="user_key", how="left").select(
            *out.columns, F.coalesce(F.col("segment"), F.lit(NO_SEGMENT)).alias("segment")
        )
    if first_seen_times is not None:
        _check_columns(first_seen_times, ["user_key", "first_seen"], "the first-seen frame")
        cohorts = first_seen_times.select("user_key", F.date_format("first_seen", "yyyy-MM").alias("cohort"))
        out = out.join(cohorts, on="user_key", how="left")
    return out


def _seconds_between(units: DataFrame, spec: FunnelSpec, from_step: int, to_step: int) -> DataFrame:
    _check_step(spec, from_step, spec.n_steps - 1, "from_step")
    _check_step(spec, to_step, spec.n_steps, "to_step")
    if to_step <= from_step:
        raise ValueError(f"to_step ({to_step}) must come after from_step ({from_step})")
    elapsed_us = F.unix_micros(F.col(step_time_column(to_step))) - F.unix_micros(
        F.col(step_time_column(from_step))
    )
    return units.where(F.col("level") >= to_step).withColumn("seconds", elapsed_us / 1e6)


def time_to_convert(
    units: DataFrame, spec: FunnelSpec, from_step: int = 1, to_step: int | None = None, by: Sequence[str] = ()
) -> DataFrame:
    """Exact quartiles of the time from ``from_step`` to ``to_step`` (default: the last) over units that got there.

    Spark's ``percentile`` is exact (linear interpolation, numpy's default); it counts distinct values,
    and durations in whole seconds within a window have at most window-in-seconds of them.
    Output: ``*by, units, p25_seconds, median_seconds, p75_seconds, mean_seconds``.
    """
    seconds = _seconds_between(units, spec, from_step, to_step or spec.n_steps)
    q = F.percentile(F.col("seconds"), [0.25, 0.5, 0.75])
    return (
        seconds.groupBy(*by)
        .agg(F.count(F.lit(1)).alias("units"), q.alias("q"), F.avg("seconds").alias("mean"))
        .select(
            *by,
            "units",
            F.get(F.col("q"), 0).alias("p25_seconds"),
            F.get(F.col("q"), 1).alias("median_seconds"),
            F.get(F.col("q"), 2).alias("p75_seconds"),
            F.col("mean").alias("mean_seconds"),
        )
    )


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def time_to_convert_histogram(
    units: DataFrame,
    spec: FunnelSpec,
    from_step: int = 1,
    to_step: int | None = None,
    edges: Sequence[int] = TTC_BIN_EDGES,
    by: Sequence[str] = (),
) -> DataFrame:
    """Units per time-to-convert bin, empty bins included: ``*by, bin, label, lower_seconds, upper_seconds, units``.

    Bin i holds ``edges[i] <= seconds < edges[i+1]``; the last is open (``upper_seconds`` null).
    """
    if list(edges) != sorted(set(edges)) or edges[0] != 0:
        raise ValueError(f"edges must increase from 0, got {list(edges)}")
    seconds = _seconds_between(units, spec, from_step, to_step or spec.n_steps)
    bin_index = functools.reduce(operator.add, [(F.col("seconds") >= e).cast("int") for e in edges]) - 1
    counts = seconds.groupBy(*by).agg(
        *[F.sum((bin_index == i).cast("long")).alias(f"b{i}") for i in range(len(edges))]
    )
    bins = F.array(
        *[
            F.struct(
                F.lit(i).alias("bin"),
                F.lit(
                    f"{_duration_text(lo)}+" if hi is None else f"{_duration_text(lo)}-{_duration_text(hi)}"
                ).alias("label"),
                F.lit(lo).alias("lower_seconds"),
                F.lit(hi).cast("int").alias("upper_seconds"),
                F.col(f"b{i}").alias("units"),
            )
            for i, (lo, hi) in enumerate(zip(edges, [*edges[1:], None], strict=True))
        ]
    )
    return counts.select(*by, F.inline(bins))


def dropoff_audience(units: DataFrame, spec: FunnelSpec, step: int) -> DataFrame:
    """Units that reached ``step`` but not the next: ``unit_key, user_key, reached_at``.

    For user-product units a user appears once per product they stalled on.
    """
    _check_step(spec, step, spec.n_steps - 1, "the drop-off step")
    return units.where(F.col("level") == step).select(
        "unit_key", "user_key", F.col(step_time_column(step)).alias("reached_at")
    )


def _price_band(price: Column, bands: Sequence[float]) -> Column:
    labels = [
        f"{_number_text(lo)}+" if hi is None else f"{_number_text(lo)}-{_number_text(hi)}"
        for lo, hi in zip(bands, [*bands[1:], None], strict=True)
    ]
    band = F.when(price.isNull(), F.lit(NO_VALUE))
    for lo, label in reversed(list(zip(bands, labels, strict=True))):
        band = band.when(price >= lo, F.lit(label))
    return band.otherwise(F.lit(NO_VALUE))


def driver_counts(
    units: DataFrame,
    spec: FunnelSpec,
    traits: DataFrame | None = None,
    price_bands: Sequence[float] = PRICE_BANDS,
) -> DataFrame:
    """The 2x2 counts of :func:`model.funnel.conversion_drivers`: per step k < n and attribute value,
    the units at step k that went on to k+1 and those that dropped.

    Attributes: the first-step event's ``category_l1``, ``brand`` and ``price_band``, plus every column of
    ``traits`` (``user_key`` and one column per behaviour trait, e.g. a segment or a repeat-buyer flag).
    Output: ``step, attribute, value, went_on, dropped, step_went_on, step_dropped``.
    """
    trait_columns: list[str] = []
    if traits is not None:
        _check_columns(traits, ["user_key"], "the traits frame")
        trait_columns = [c for c in traits.columns if c != "user_key"]
        units = units.join(traits, on="user_key", how="left")
    attributes = F.array(
        F.struct(
            F.lit("category_l1").alias("attribute"),
            F.coalesce("first_category_l1", F.lit(NO_CATEGORY)).alias("value"),
        ),
        F.struct(
            F.lit("brand").alias("attribute"), F.coalesce("first_brand", F.lit(NO_BRAND)).alias("value")
        ),
        F.struct(
            F.lit("price_band").alias("attribute"),
            _price_band(F.col("first_price"), price_bands).alias("value"),
        ),
        *[
            F.struct(
                F.lit(c).alias("attribute"),
                F.coalesce(F.col(c).cast("string"), F.lit(NO_VALUE)).alias("value"),
            )
            for c in trait_columns
        ],
    )
    at_step = units.select(
        F.col("level"),
        attributes.alias("attributes"),
        F.explode(F.sequence(F.lit(1), F.least(F.col("level"), F.lit(spec.n_steps - 1)))).alias("step"),
    )
    went_on = F.col("level") > F.col("step")
    counted = (
        at_step.select("step", went_on.alias("went_on"), F.inline("attributes"))
        .groupBy("step", "attribute", "value")
        .agg(
            F.sum(F.col("went_on").cast("long")).alias("went_on"),
            F.sum((~F.col("went_on")).cast("long")).alias("dropped"),
        )
    )
    per_attribute = Window.partitionBy("step", "attribute").rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    return counted.select(
        "step",
        "attribute",
        "value",
        "went_on",
        "dropped",
        F.sum("went_on").over(per_attribute).alias("step_went_on"),
        F.sum("dropped").over(per_attribute).alias("step_dropped"),
    )
