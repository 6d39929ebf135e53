"""The funnel drivers' user attributes are taken as of each unit's first step, never after it.

A hand-built bucket where today's attribute (the segment and lifecycle stage computed from the whole
history) is made of the outcome: half of the users, at random, cart after their view, and carting makes
a user "carted, never bought". As of the view, a user's stage is what their earlier events say (known
here by construction), and the odds ratios of going on from view to cart no longer single it out.
No Spark: the bucket function the Spark tasks run (:func:`services.jobs.funnel.units_with_traits`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from etl.funnel import FunnelSpec, dictionary_columns, driver_counts, step_time_column
from model.funnel import conversion_drivers
from model.scoring import NEW, traits_as_of
from model.segmentation.history import model_from_artifact
from model.segmentation.presentation import NOT_ENOUGH_NAME
from model.segmentation.scorer import ARTIFACT_KIND
from services.jobs.funnel import AT_START, _traits, units_with_traits

T0 = pd.Timestamp("2019-11-01", tz="UTC")
PRIORS = ("none", "cart", "purchase", "view")  # what a user did 20 days before the funnel's view


def _model():
    """A two-segment light model on (n_events, n_carts) with min_events 2, written by hand."""
    return model_from_artifact({
        "artifact": ARTIFACT_KIND, "schema_version": 2, "model_version": "m-test", "min_events": 2,
        "input_features": ["n_events", "n_carts"], "imputation_values": {"n_events": 0.0, "n_carts": 0.0},
        "recency": None, "features": ["n_events", "n_carts"], "log_features": [],
        "scaler": {"center": [0.0, 0.0], "scale": [1.0, 1.0], "clip": None},
        "pca": {"mean": [0.0, 0.0], "components": [[1.0, 0.0], [0.0, 1.0]]},
        "centroids": [[1.0, 0.0], [10.0, 10.0]], "segment_ids": [1, 2], "segment_names": ["Few events", "Many"],
    })  # fmt: skip


def _as_timeline(table: pa.Table, keys: tuple[str, ...] = ()) -> pa.Table:
    """Low-cardinality text as the timelines store it: dictionaries (etl.timeline.DICTIONARY_COLUMNS);
    ``keys`` too, as the job reads them (:func:`etl.funnel.dictionary_columns`)."""
    for name in ("event_type", "category_l1", "brand", *keys):
        encoded = pc.dictionary_encode(table[name].combine_chunks()).cast(pa.dictionary(pa.int32(), pa.string()))
        table = table.set_column(table.schema.get_field_index(name), name, encoded)
    return table


@pytest.fixture(scope="module")
def bucket() -> tuple[pa.Table, pd.DataFrame]:
    """(timeline, per-user truth): a prior (none / a cart / a cart and a purchase 20 days earlier), then a
    view at ``t_view`` and, for a random half, a cart an hour later."""
    rng = np.random.default_rng(5)
    rows, truth = [], []
    for i in range(900):
        user, t_view = f"u{i:04d}", T0 + pd.Timedelta(hours=int(rng.integers(0, 240)))
        prior, converts = PRIORS[i % len(PRIORS)], bool(rng.random() < 0.5)
        before = t_view - pd.Timedelta(days=20)
        if prior == "view":  # the unit's entry: a chain from it is out of the 7-day window of a later cart
            rows.append((user, f"{user}-s0", before, "view", 10))
        elif prior != "none":
            rows.append((user, f"{user}-s0", before, "cart", 10))
        if prior == "purchase":
            rows.append((user, f"{user}-s0", before + pd.Timedelta(minutes=5), "purchase", 10))
        rows.append((user, f"{user}-s1", t_view, "view", 11))
        if converts:
            rows.append((user, f"{user}-s1", t_view + pd.Timedelta(hours=1), "cart", 11))
        truth.append((user, prior, converts, t_view))
    df = pd.DataFrame(rows, columns=["user_key", "session_key", "event_time", "event_type", "product_id"])
    df = df.sort_values(["user_key", "event_time"], kind="stable", ignore_index=True)
    timeline = _as_timeline(pa.table({
        "user_key": df["user_key"], "session_key": df["session_key"],
        "event_time": pa.array(df["event_time"], pa.timestamp("us", tz="UTC")),
        "event_type": df["event_type"], "product_id": pa.array(df["product_id"], pa.int64()),
        "category_id": pa.array([7] * len(df), pa.int64()), "category_l1": ["electronics"] * len(df),
        "brand": ["acme"] * len(df), "price": [12.5] * len(df),
    }))  # fmt: skip
    return timeline, pd.DataFrame(truth, columns=["user_key", "prior", "converts", "t_view"]).set_index("user_key")


def _view_to_cart(units: pl.DataFrame, spec: FunnelSpec, traits: pl.DataFrame) -> pd.DataFrame:
    per_unit = units.select("unit_key", "user_key", "level", "first_category_l1", "first_brand", "first_price")
    drivers = conversion_drivers(driver_counts(per_unit, spec, traits).to_pandas(), min_units=30)
    return drivers[(drivers["step"] == 1) & drivers["attribute"].isin(list(AT_START))]


def test_drivers_take_the_users_attributes_as_of_the_first_step_not_from_the_outcome(bucket):
    timeline, truth = bucket
    spec, model = FunnelSpec.parse("view,cart", "user", "ordered", 7.0), _model()
    units = pl.from_arrow(units_with_traits(timeline, spec, model))
    coded = units_with_traits(_as_timeline(timeline, dictionary_columns(spec)), spec, model)
    assert pl.from_arrow(coded.cast(units.to_arrow().schema)).equals(units)  # the keys as the job reads them
    by_user = units.to_pandas().set_index("user_key")
    prior = truth["prior"].loc[by_user.index]
    went_on = truth["converts"].loc[by_user.index]
    assert (by_user["level"] == 1 + went_on).all()
    # the walk's first step: the view before the cart, or for a unit that dropped its earliest view
    entry_view = (prior == "view") & ~went_on
    want_step_1 = truth["t_view"].loc[by_user.index].where(~entry_view, truth["t_view"] - pd.Timedelta(days=20))
    assert (by_user[step_time_column(1)] == want_step_1).all()

    # as of the entry: the stage and segment of the earlier events (by construction), never of the cart after
    # it; a unit entering with the earlier view is "new" whether it went on or not (as of the view before the
    # cart, the ones that went on would be "browsing", the others "new": the outcome again)
    stage = {"none": NEW, "cart": "carted_not_bought", "purchase": "first_time_buyer", "view": NEW}
    segment = {"none": NEW, "cart": NOT_ENOUGH_NAME, "purchase": "Few events", "view": NEW}  # 1 event < min_events; (2, 1) near (1, 0)
    assert by_user[AT_START["lifecycle_stage"]].tolist() == prior.map(stage).tolist()
    assert by_user[AT_START["segment"]].tolist() == prior.map(segment).tolist()

    # today's attributes, from the whole history (the segments' as-of: the latest event), leak the cart
    latest = pa.scalar(timeline["event_time"].to_pandas().max() + pd.Timedelta(microseconds=1),
                       pa.timestamp("us", tz="UTC"))  # fmt: skip
    everything = pa.table({"unit_key": units["unit_key"].to_arrow(), "user_key": units["user_key"].to_arrow(),
                           "at": pa.array([latest.as_py()] * units.height, pa.timestamp("us", tz="UTC"))})  # fmt: skip
    now = pl.from_arrow(traits_as_of(timeline, everything, model))
    leaky = _view_to_cart(units, spec, now)
    current = now.to_pandas().set_index("unit_key")
    fresh = truth.index[truth["prior"] == "none"]  # no earlier event: "carted, never bought" only by the funnel's cart
    assert ((current.loc[fresh, "lifecycle_stage"] == "carted_not_bought") == truth.loc[fresh, "converts"]).all()
    stages = leaky[leaky["attribute"] == "lifecycle_stage"].set_index("value")
    assert stages.loc["carted_not_bought", "ci_low"] > 2  # the leak: carting "drives" carting
    no_cart = stages.loc[stages.index.isin(["new_visitor", "browsing"])]
    assert len(no_cart) and (no_cart["went_on"] == 0).all() and (no_cart["ci_high"] < 0.2).all()

    # as of the first step: no attribute value moves the odds of carting (the outcome was drawn at random)
    fair = _view_to_cart(units, spec, _traits(units, cohort=False))
    assert set(fair["value"]) >= {NEW, "carted_not_bought", "first_time_buyer", NOT_ENOUGH_NAME}
    assert fair["odds_ratio"].between(0.5, 2.0).all(), fair[["attribute", "value", "odds_ratio"]]
    assert (fair["ci_low"] < 1).all() and (fair["ci_high"] > 1).all()


def test_each_session_unit_is_taken_as_of_its_own_first_step(bucket):
    """Session units of one user get their own as-of times: a later session sees the earlier ones, the
    first sees nothing ("new"); a cart in the same session after the view is never seen."""
    timeline, truth = bucket
    extra = _as_timeline(pa.table({
        "user_key": ["zz"] * 3, "session_key": ["zz-a", "zz-a", "zz-b"],
        "event_time": pa.array([T0, T0 + pd.Timedelta(minutes=1), T0 + pd.Timedelta(days=10)],
                               pa.timestamp("us", tz="UTC")),
        "event_type": ["view", "cart", "view"], "product_id": pa.array([1, 1, 2], pa.int64()),
        "category_id": pa.array([7] * 3, pa.int64()), "category_l1": ["electronics"] * 3, "brand": ["acme"] * 3,
        "price": [12.5] * 3,
    }))  # fmt: skip
    spec = FunnelSpec.parse("view,cart", "session", "ordered", 7.0)
    both = pa.concat_tables([timeline, extra]).unify_dictionaries()
    plain = units_with_traits(both, spec, _model())
    coded = units_with_traits(_as_timeline(both, dictionary_columns(spec)), spec, _model())
    assert coded.cast(plain.schema).equals(plain)  # the user keys as dictionaries (the session keys are hashed)
    units = pl.from_arrow(plain).to_pandas()
    stage = units.set_index("unit_key")[AT_START["lifecycle_stage"]]
    assert stage["zz-a"] == NEW  # its view is the user's first event; its own cart comes after it
    assert stage["zz-b"] == "carted_not_bought"  # as of the second session: the first one's cart
    by_prior = units[units["user_key"] != "zz"].assign(prior=lambda d: d["user_key"].map(truth["prior"]))
    want = by_prior["prior"].map({"none": NEW, "cart": "carted_not_bought", "purchase": "first_time_buyer",
                                  "view": "browsing"})  # its own session 20 days before: known for 20 days
    sessions = by_prior[by_prior["unit_key"].str.endswith("-s1")]  # the prior views' sessions enter earlier
    assert (sessions[AT_START["lifecycle_stage"]] == want.loc[sessions.index]).all() and len(sessions) == len(truth)
