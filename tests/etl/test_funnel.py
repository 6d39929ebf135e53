"""etl.funnel against a brute-force pandas/Python reference on generated events, plus hand-worked cases.

The reference enumerates every chain of distinct events (ordered) or solves the step-to-event matching
by augmenting paths (any order): a different method from the greedy compiled walk it checks.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from etl.describe import NO_BRAND, NO_CATEGORY
from etl.funnel import (
    OTHER_BRANDS,
    PRICE_BANDS,
    TTC_BIN_EDGES,
    FunnelSpec,
    dictionary_columns,
    driver_counts,
    dropoff_audience,
    funnel_steps,
    step_time_column,
    time_to_convert,
    time_to_convert_histogram,
    timeline_units,
    units_schema,
    with_breakdowns,
)
from etl.lines import EVENT_FILE_SCHEMA
from etl.timeline import bucket_of, to_timeline

START = dt.datetime(2019, 10, 1)
US = 1_000_000
DAY_US = 86_400 * US
PRODUCTS = {  # product_id -> (category_l1, brand, price)
    p: (cat, brand, price)
    for p, (cat, brand, price) in enumerate(
        itertools.product(["electronics", "apparel", None], ["b1", "b2", None], [9.5, 60.0]), start=100
    )
}
Predicate = Callable[[pd.Series], bool]


# -- parsing: no Spark needed


def test_default_spec_is_view_cart_purchase_per_user_ordered_within_7_days() -> None:
    spec = FunnelSpec.parse()
    assert spec.labels == ("view", "cart", "purchase")
    assert (spec.unit, spec.order, spec.window_days) == ("user", "ordered", 7.0)
    assert spec.to_dict() == {
        "steps": ["view", "cart", "purchase"],
        "unit": "user",
        "order": "ordered",
        "window_days": 7.0,
    }


def test_steps_can_be_narrowed_by_several_conditions() -> None:
    spec = FunnelSpec.parse("view[category_l1=electronics,brand!=acme],cart,purchase[price>=100,price<500]")
    assert spec.labels == (
        "view[category_l1=electronics,brand!=acme]",
        "cart",
        "purchase[price>=100,price<500]",
    )
    assert spec.steps[2].conditions[0].value == 100.0


def test_session_units_have_no_window() -> None:
    spec = FunnelSpec.parse(unit="session")
    assert spec.window_us is None
    assert spec.to_dict()["window_days"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": "view,checkout"}, "unknown event type 'checkout'"),
        ({"steps": "view"}, "2 to 10 steps, got 1"),
        ({"steps": ",".join(["view"] * 11)}, "2 to 10 steps, got 11"),
        ({"window_days": 0}, "positive number of days"),
        ({"window_days": -1.5}, "positive number of days"),
        ({"steps": "view,cart[colour=red]"}, "step 2 ('cart[colour=red]'): unknown column 'colour'"),
        ({"steps": "view,cart[price=5]"}, "price takes >= or <"),
        ({"steps": "view,cart[price>=cheap]"}, "price needs a number"),
        ({"steps": "view,cart[brand]"}, "bad condition 'brand'"),
        ({"steps": "view,cart[brand=]"}, "empty value"),
        ({"unit": "visitor"}, "unknown unit 'visitor'"),
        ({"order": "reverse"}, "unknown order 'reverse'"),
        ({"steps": "view,view[brand=a],view[brand=b]"}, "steps 2 (view[brand=a]) and 3 (view[brand=b])"),
        ({"steps": "view,view[price<10],view[price>=10]"}, "would compete for events of step 1"),
    ],
)
def test_bad_specs_raise_one_line_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        FunnelSpec.parse(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "steps",
    [
        "view,view[brand=x],purchase",  # nested: every brand-x view is also a view
        "view[brand=x],view[category_l1=y]",  # overlapping, but no earlier step for them to compete over
        "view,view[brand=x],view[brand=x,category_l1=y]",  # a chain of narrowings
        "view,cart,view,purchase",
    ],
)
def test_countable_repeated_steps_are_accepted(steps: str) -> None:
    assert ",".join(FunnelSpec.parse(steps).labels) == steps


# -- generated events and the brute-force reference


def _generate(n_users: int = 300, seed: int = 11) -> list[dict]:
    """A few events per user over 10 days on a coarse time grid: many exact ties, many outside a window."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        products = rng.choice(list(PRODUCTS), size=rng.integers(1, 4), replace=False)
        n_sessions = int(rng.integers(1, 4))
        previous: dt.datetime | None = None
        for _ in range(int(rng.integers(1, 13))):
            if previous is not None and rng.random() < 0.25:
                when = previous  # an exact tie with the previous event
            else:
                when = START + dt.timedelta(
                    days=int(rng.integers(0, 10)), minutes=30 * int(rng.integers(0, 48))
                )
            previous = when
            product = int(rng.choice(products))
            category, brand, price = PRODUCTS[product]
            rows.append(
                {
                    "event_time": when,
                    "event_hour": when.hour,
                    "event_type": str(
                        rng.choice(["view", "cart", "remove_from_cart", "purchase"], p=[0.5, 0.25, 0.05, 0.2])
                    ),
                    "product_id": product,
                    "category_id": 1,
                    "category_code": None if category is None else f"{category}.thing",
                    "category_l1": category,
                    "category_l2": None if category is None else "thing",
                    "category_l3": None,
                    "brand": brand,
                    "price": price,
                    "user_key": f"u{u:04d}",
                    "session_key": f"u{u:04d}-s{int(rng.integers(0, n_sessions))}",
                    "source_file": "test.csv",
                    "event_date": when.date(),
                }
            )
    return rows


@dataclass(frozen=True)
class Expected:
    level: int
    times: tuple[int, ...]  # micros, one per reached step


def _is(event_type: str, **equal: object) -> Predicate:
    return lambda r: r["event_type"] == event_type and all(r[c] == v for c, v in equal.items())


REFERENCE_STEPS: dict[str, list[Predicate]] = {
    "view,cart,purchase": [_is("view"), _is("cart"), _is("purchase")],
    "view,view[brand=b1],cart,purchase": [_is("view"), _is("view", brand="b1"), _is("cart"), _is("purchase")],
    "view[category_l1=electronics],cart,purchase[price>=50]": [
        _is("view", category_l1="electronics"),
        _is("cart"),
        lambda r: r["event_type"] == "purchase" and r["price"] >= 50,
    ],
    "view,cart,view,purchase": [_is("view"), _is("cart"), _is("view"), _is("purchase")],
}


def _ordered_reference(events: list[tuple[int, int, list[bool]]], k: int, window: int | None) -> Expected:
    """Enumerate every chain of distinct events with non-decreasing times, then apply the definitions."""
    chains: dict[int, list[tuple[int, ...]]] = {}

    def extend(chain: tuple[int, ...], used: frozenset[int]) -> None:
        depth = len(chain)
        if depth:
            chains.setdefault(depth, []).append(chain)
        if depth == k:
            return
        for i, t, matches in events:
            if i in used or not matches[depth]:
                continue
            if depth and (t < chain[-1] or (window is not None and t - chain[0] > window)):
                continue
            extend((*chain, t), used | {i})

    extend((), frozenset())
    level = max(chains)
    done_at = min(c[-1] for c in chains[level])
    start = max(c[0] for c in chains[level] if c[-1] == done_at)
    from_start = [c for c in chains[level] if c[0] == start]
    return Expected(level, tuple(min(c[i] for c in from_start) for i in range(level)))


def _matchable(events: list[tuple[int, int, list[bool]]], k: int) -> bool:
    """Can steps 0..k-1 each take a distinct event? (Kuhn's augmenting paths.)"""
    owner: dict[int, int] = {}

    def assign(step: int, seen: set[int]) -> bool:
        for i, _, matches in events:
            if matches[step] and i not in seen:
                seen.add(i)
                if i not in owner or assign(owner[i], seen):
                    owner[i] = step
                    return True
        return False

    return all(assign(step, set()) for step in range(k))


def _any_reference(events: list[tuple[int, int, list[bool]]], k: int, window: int | None) -> Expected:
    def inside(lo: int, hi: int | None) -> list[tuple[int, int, list[bool]]]:
        return [e for e in events if e[1] >= lo and (hi is None or e[1] <= hi)]

    def best(lo: int) -> int:
        hi = None if window is None else lo + window
        return max((j for j in range(k + 1) if _matchable(inside(lo, hi), j)), default=0)

    anchors = sorted({t for _, t, _ in events})
    level = max(best(a) for a in anchors)
    anchor = min(a for a in anchors if best(a) == level)
    ends = sorted({t for _, t, _ in inside(anchor, None if window is None else anchor + window)})
    times = tuple(min(e for e in ends if _matchable(inside(anchor, e), j)) for j in range(1, level + 1))
    return Expected(level, times)


def _unit_keys(events: pd.DataFrame, unit: str) -> pd.Series:
    if unit == "user":
        return events["user_key"]
    if unit == "session":
        return events["session_key"]
    return events["user_key"] + ":" + events["product_id"].astype(str)


def reference_units(
    events: pd.DataFrame, steps: str, unit: str, order: str, window_days: float
) -> pd.DataFrame:
    """The per-unit frame, recomputed by brute force (level, step times, first-step attributes)."""
    predicates = REFERENCE_STEPS[steps]
    k = len(predicates)
    window = None if unit == "session" else round(window_days * DAY_US)
    ev = events.assign(
        unit_key=_unit_keys(events, unit),
        t=events["event_time"].astype("datetime64[us]").astype("int64"),
        matches=[[p(r) for p in predicates] for _, r in events.iterrows()],
    )
    rows = []
    for key, unit_events in ev.groupby("unit_key"):
        listed = [(i, int(r.t), list(r.matches)) for i, r in unit_events.iterrows() if any(r.matches)]
        if not any(m[0] for _, _, m in listed):
            continue
        expected = (_ordered_reference if order == "ordered" else _any_reference)(listed, k, window)
        first_events = unit_events[(unit_events["t"] == expected.times[0]) & unit_events["matches"].str[0]]
        first = first_events.sort_values("product_id").iloc[0]
        first_time = pd.Timestamp(expected.times[0], unit="us")
        row = {
            "unit_key": key,
            "user_key": unit_events["user_key"].iloc[0],
            "level": expected.level,
            "first_week": (first_time - pd.Timedelta(days=first_time.weekday())).normalize().date(),
            "first_category_l1": first["category_l1"],
            "first_brand": first["brand"],
            "first_product_id": first["product_id"],
            "first_price": first["price"],
        }
        for i in range(k):
            row[step_time_column(i + 1)] = (
                pd.Timestamp(expected.times[i], unit="us") if i < expected.level else pd.NaT
            )
        rows.append(row)
    return pd.DataFrame(rows).sort_values("unit_key").reset_index(drop=True)


# -- the comparison


@pytest.fixture(scope="module")
def events_rows() -> list[dict]:
    return _generate()


@pytest.fixture(scope="module")
def events_pd(events_rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(events_rows)


def _timelines(records: list[dict], buckets: int = 4) -> list[pa.Table]:
    """``records`` as the user timelines of ``buckets`` buckets (:mod:`etl.timeline`), what the job's
    tasks walk (a user's events in one bucket, sorted by user and time)."""
    events = pa.Table.from_pylist([{**r, "line_number": i} for i, r in enumerate(records)], EVENT_FILE_SCHEMA)
    bucket = bucket_of(events["user_key"], buckets)
    return [to_timeline(events.filter(pa.array(bucket == b))) for b in range(buckets)]


@pytest.fixture(scope="module")
def timelines(events_rows: list[dict]) -> list[pa.Table]:
    return _timelines(events_rows)


def _pandas(df: pl.DataFrame) -> pd.DataFrame:
    """``df`` as pandas with the reference's types: dates as dates, times as naive UTC nanoseconds."""
    times = pl.col(pl.Datetime).dt.replace_time_zone(None).dt.cast_time_unit("ns")
    return df.with_columns(times).to_pandas(date_as_object=True)


def _collected_units(timelines: list[pa.Table], spec: FunnelSpec) -> tuple[pl.DataFrame, pd.DataFrame]:
    """The per-unit frame of every bucket collected into polars, as the job does, and as pandas sorted by unit."""
    units = pl.from_arrow(pa.concat_tables([timeline_units(t, spec) for t in timelines]))
    return units, _pandas(units).sort_values("unit_key").reset_index(drop=True)


CASES = [
    *[
        ("view,cart,purchase", unit, order, window)
        for unit in ("user", "user_product")
        for order in ("ordered", "any")
        for window in (1.0, 3.0)
    ],
    ("view,cart,purchase", "session", "ordered", 7.0),
    ("view,cart,purchase", "session", "any", 7.0),
    ("view,view[brand=b1],cart,purchase", "user", "ordered", 1.0),
    ("view,view[brand=b1],cart,purchase", "user", "any", 1.0),
    ("view,view[brand=b1],cart,purchase", "session", "ordered", 7.0),
    ("view[category_l1=electronics],cart,purchase[price>=50]", "user", "ordered", 3.0),
    ("view,cart,view,purchase", "user", "ordered", 2.0),
    ("view,cart,view,purchase", "user_product", "any", 2.0),
]


@pytest.mark.parametrize(("steps", "unit", "order", "window"), CASES)
def test_units_match_the_brute_force_reference(timelines, events_pd, steps, unit, order, window) -> None:
    spec = FunnelSpec.parse(steps, unit=unit, order=order, window_days=window)
    units, got = _collected_units(timelines, spec)
    expected = reference_units(events_pd, steps, unit, order, window)
    seen = events_pd.groupby("user_key")["event_time"].min()  # over all events, matched or not
    assert (got["first_seen"] == got["user_key"].map(seen)).all()
    got = got.drop(columns="first_seen")
    pd.testing.assert_frame_equal(got, expected[got.columns], check_dtype=False)
    # The funnel itself: counts, conversions and drop-off from the reference levels.
    steps_got = funnel_steps(units, spec).to_pandas().sort_values("step")
    counts = [int((expected["level"] >= k).sum()) for k in range(1, spec.n_steps + 1)]
    assert steps_got["count"].tolist() == counts
    previous = [counts[0], *counts[:-1]]
    np.testing.assert_allclose(steps_got["conversion_from_previous"], np.divide(counts, previous))
    np.testing.assert_allclose(steps_got["conversion_from_first"], np.divide(counts, counts[0]))
    assert steps_got["dropoff"].tolist() == [p - c for p, c in zip(previous, counts, strict=True)]
    np.testing.assert_allclose(steps_got["dropoff_rate"], 1 - np.divide(counts, previous))
    # Drop-off audience: reached the second-to-last step, not the last.
    k = spec.n_steps - 1
    audience = _pandas(dropoff_audience(units, spec, k))
    assert sorted(audience["unit_key"]) == sorted(expected.loc[expected["level"] == k, "unit_key"])
    reached = expected.set_index("unit_key").loc[audience["unit_key"], step_time_column(k)]
    assert audience["reached_at"].tolist() == reached.tolist()


@pytest.mark.parametrize(("steps", "unit", "order", "window"), CASES)
def test_timeline_buckets_give_the_units_of_the_reference(timelines, events_pd, steps, unit, order, window) -> None:
    """The Spark-free walk over user timelines (sorted by user and time, a bucket at a time) gives every
    unit the reference gives, with the same level, step times, first-step attributes and first_seen."""
    spec = FunnelSpec.parse(steps, unit=unit, order=order, window_days=window)
    parts = [timeline_units(t, spec) for t in timelines]
    assert all(p.schema == units_schema(spec) for p in parts)
    got = _pandas(pl.from_arrow(pa.concat_tables(parts))).sort_values("unit_key").reset_index(drop=True)
    expected = reference_units(events_pd, steps, unit, order, window)
    seen = events_pd.groupby("user_key")["event_time"].min()
    assert (got["first_seen"] == got["user_key"].map(seen)).all()
    got = got.drop(columns="first_seen")
    pd.testing.assert_frame_equal(got, expected[got.columns], check_dtype=False)
    # the job reads the keys it does not hash as dictionaries: the same rows, in the same order
    coded = [timeline_units(_as_dictionaries(t, dictionary_columns(spec)), spec) for t in timelines]
    assert pa.concat_tables(coded).cast(units_schema(spec)).equals(pa.concat_tables(parts))


def _as_dictionaries(timeline: pa.Table, columns: list[str]) -> pa.Table:
    """``timeline`` with ``columns`` as Arrow dictionaries, as a Parquet reader's ``read_dictionary`` gives them."""
    for name in columns:
        encoded = pc.dictionary_encode(timeline[name]).cast(pa.dictionary(pa.int32(), pa.string()))
        timeline = timeline.set_column(timeline.schema.get_field_index(name), name, encoded)
    return timeline


def _exact_quartiles(seconds: pd.Series) -> list[float]:
    return [float(np.percentile(seconds, q, method="linear")) for q in (25, 50, 75)]


@pytest.mark.parametrize(("unit", "order"), [("user", "ordered"), ("user_product", "any")])
def test_time_to_convert_breakdowns_and_drivers_match_pandas(timelines, events_pd, unit, order) -> None:
    steps = "view,cart,purchase"
    spec = FunnelSpec.parse(steps, unit=unit, order=order, window_days=3)
    units, _ = _collected_units(timelines, spec)
    expected = reference_units(events_pd, steps, unit, order, 3)
    for a, b in [(1, 2), (2, 3), (1, 3)]:
        reached = expected[expected["level"] >= b]
        seconds = (reached[step_time_column(b)] - reached[step_time_column(a)]).dt.total_seconds()
        ttc = time_to_convert(units, spec, a, b).to_pandas().iloc[0]
        assert ttc["units"] == len(seconds)
        np.testing.assert_allclose(
            [ttc["p25_seconds"], ttc["median_seconds"], ttc["p75_seconds"]], _exact_quartiles(seconds)
        )
        np.testing.assert_allclose(ttc["mean_seconds"], seconds.mean())
        hist = time_to_convert_histogram(units, spec, a, b).to_pandas().sort_values("bin")
        bins = pd.cut(seconds, [*TTC_BIN_EDGES, np.inf], right=False, labels=False)
        assert hist["units"].tolist() == np.bincount(bins, minlength=len(TTC_BIN_EDGES)).tolist()

    # Breakdowns, several at once: brand (top 1 + other), week, segment and cohort.
    segments = events_pd[["user_key"]].drop_duplicates().assign(segment=lambda d: "s" + d["user_key"].str[-1])
    seen = events_pd.groupby("user_key", as_index=False)["event_time"].min()
    enriched = with_breakdowns(
        units,
        top_brands=1,
        segments=pl.from_pandas(segments.iloc[::2]),  # half the users have no segment
        cohort=True,
    )
    by = ["brand", "week", "segment", "cohort"]
    got = _pandas(funnel_steps(enriched, spec, by=by))
    ref = expected.merge(segments.iloc[::2], on="user_key", how="left").merge(seen, on="user_key", how="left")
    top = ref["first_brand"].value_counts().sort_index().sort_values(ascending=False, kind="stable").index[0]
    ref["brand"] = np.where(
        ref["first_brand"].isna(), NO_BRAND, np.where(ref["first_brand"] == top, top, OTHER_BRANDS)
    )
    ref["week"] = ref["first_week"]
    ref["segment"] = ref["segment"].fillna("(unsegmented)")
    ref["cohort"] = ref["event_time"].dt.strftime("%Y-%m")
    for k in (1, 2, 3):
        want = ref[ref["level"] >= k].groupby(by).size()
        have = got[(got["step"] == k) & (got["count"] > 0)].set_index(by)["count"]
        pd.testing.assert_series_equal(
            have.sort_index(), want.sort_index(), check_names=False, check_dtype=False
        )

    # The 2x2 counts behind the drivers, with a behaviour trait.
    traits = pl.from_pandas(
        segments.assign(heavy=segments["user_key"].str[-1].isin(["1", "2"]))[["user_key", "heavy"]]
    )
    drivers = driver_counts(units, spec, traits=traits).to_pandas()
    # the same traits as columns of the units frame (how the job passes its point-in-time traits): no join
    in_units = driver_counts(units.join(traits, on="user_key", how="left"), spec, trait_columns=["heavy"])
    pd.testing.assert_frame_equal(in_units.to_pandas(), drivers)
    ref["category_l1"] = ref["first_category_l1"].fillna(NO_CATEGORY)
    ref["brand"] = ref["first_brand"].fillna(NO_BRAND)
    ref["price_band"] = pd.cut(
        ref["first_price"],
        [*PRICE_BANDS, np.inf],
        right=False,
        labels=["0-10", "10-25", "25-50", "50-100", "100-250", "250-500", "500-1000", "1000+"],
    ).astype(str)
    ref["heavy"] = ref["user_key"].str[-1].isin(["1", "2"]).map({True: "true", False: "false"})
    for k in (1, 2):
        at = ref[ref["level"] >= k].copy()
        at["went_on"], at["dropped"] = at["level"] > k, at["level"] == k
        for attribute in ("category_l1", "brand", "price_band", "heavy"):
            want = at.groupby(attribute)[["went_on", "dropped"]].sum()
            have = drivers[(drivers["step"] == k) & (drivers["attribute"] == attribute)].set_index("value")
            assert have[["went_on", "dropped"]].sort_index().to_dict() == want.sort_index().to_dict()
            assert set(have["step_went_on"]) == {int((at["level"] > k).sum())}
            assert set(have["step_dropped"]) == {int((at["level"] == k).sum())}


# -- hand-worked cases


def _events(rows: list[tuple]) -> pa.Table:
    """rows: (user, minutes after START, event_type, session, product, brand)."""
    records = []
    for user, minutes, event_type, session, product, brand in rows:
        when = START + dt.timedelta(minutes=minutes)
        records.append(
            {
                "event_time": when,
                "event_hour": when.hour,
                "event_type": event_type,
                "product_id": product,
                "category_id": 1,
                "category_code": "electronics.phone",
                "category_l1": "electronics",
                "category_l2": "phone",
                "category_l3": None,
                "brand": brand,
                "price": 10.0,
                "user_key": user,
                "session_key": session,
                "source_file": "test.csv",
                "event_date": when.date(),
            }
        )
    (timeline,) = _timelines(records, buckets=1)
    return timeline


def _levels(rows: list[tuple], **spec: object) -> dict[str, int]:
    units = timeline_units(_events(rows), FunnelSpec.parse(**spec)).to_pandas()
    return dict(zip(units["unit_key"], units["level"], strict=True))


WEEK = 7 * 24 * 60


def test_hand_worked_funnels() -> None:
    rows = [
        # a: view and cart in the same second count as in order; purchase later
        ("a", 0, "view", "a1", 1, "x"),
        ("a", 0, "cart", "a1", 1, "x"),
        ("a", 5, "purchase", "a1", 1, "x"),
        # b: cart before view: ordered stops at view, any order completes view+cart
        ("b", 0, "cart", "b1", 1, "x"),
        ("b", 10, "view", "b1", 1, "x"),
        # c: cart exactly 7 days after the view counts; d: one minute more does not
        ("c", 0, "view", "c1", 1, "x"),
        ("c", WEEK, "cart", "c1", 1, "x"),
        ("d", 0, "view", "d1", 1, "x"),
        ("d", WEEK + 1, "cart", "d1", 1, "x"),
        # e: a newer view restarts the window: view d0, view d6, cart d8 converts from the second view
        ("e", 0, "view", "e1", 1, "x"),
        ("e", 6 * 1440, "view", "e1", 1, "x"),
        ("e", 8 * 1440, "cart", "e2", 1, "x"),
        # f: no step-1 event at all: not in the funnel
        ("f", 0, "cart", "f1", 1, "x"),
    ]
    assert _levels(rows) == {"a": 3, "b": 1, "c": 2, "d": 1, "e": 2}
    assert _levels(rows, order="any") == {"a": 3, "b": 2, "c": 2, "d": 1, "e": 2}
    # Sessions: e's cart is in another session; no window inside a session (c's week-long session counts).
    assert _levels(rows, unit="session") == {"a1": 3, "b1": 1, "c1": 2, "d1": 2, "e1": 1}


def test_second_step_time_comes_from_the_latest_start() -> None:
    rows = [
        ("e", 0, "view", "e1", 1, "x"),
        ("e", 6 * 1440, "view", "e1", 1, "x"),
        ("e", 8 * 1440, "cart", "e1", 1, "x"),
    ]
    units = _pandas(pl.from_arrow(timeline_units(_events(rows), FunnelSpec.parse())))
    assert units["step_1_time"].iloc[0] == pd.Timestamp(START + dt.timedelta(days=6))
    assert units["step_2_time"].iloc[0] == pd.Timestamp(START + dt.timedelta(days=8))


def test_one_event_fills_one_step() -> None:
    one_view = [("a", 0, "view", "s", 1, "x")]
    assert _levels(one_view, steps="view,view") == {"a": 1}
    assert _levels(one_view, steps="view,view[brand=x]") == {"a": 1}
    two_views = [("a", 0, "view", "s", 1, "x"), ("a", 0, "view", "s", 2, "y")]
    assert _levels(two_views, steps="view,view") == {"a": 2}
    # The y view must serve step 1 so that the x view can serve step 2, although both are at the same time.
    assert _levels([*two_views, ("a", 1, "cart", "s", 1, "x")], steps="view,view[brand=x],cart") == {
        "a": 3
    }
    assert _levels([*two_views, ("a", 0, "view", "s", 3, "x")], steps="view,view,view[brand=x]") == {
        "a": 3
    }


def test_user_product_units_need_the_same_product() -> None:
    rows = [("a", 0, "view", "s", 1, "x"), ("a", 1, "cart", "s", 2, "x"), ("a", 2, "cart", "s", 1, "x")]
    assert _levels(rows, unit="user_product") == {"a:1": 2}
    assert _levels(rows[:2], unit="user_product") == {"a:1": 1}


def test_step_arguments_are_checked() -> None:
    spec = FunnelSpec.parse()
    units = pl.from_arrow(timeline_units(_events([("a", 0, "view", "s", 1, "x")]), spec))
    with pytest.raises(ValueError, match="the drop-off step must be a step from 1 to 2"):
        dropoff_audience(units, spec, 3)
    with pytest.raises(ValueError, match="must come after"):
        time_to_convert(units, spec, 2, 2)
    with pytest.raises(ValueError, match="segments frame lacks column"):
        with_breakdowns(units, segments=units.select("user_key"))
