"""Experiment tables: rejection reasons, pseudonymization, cell parsing, and the reduction vs pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from etl.experiments import (
    NO_SEGMENT,
    REJECT_REASONS,
    ExperimentSchemaError,
    accepted_rows,
    classify_experiment,
    looks_numeric,
    metric_columns,
    metric_kinds,
    parse_number,
    read_experiment,
    rejection_counts,
    sufficient_statistics,
)
from etl.pseudonymize import pseudonymize
from model.experiments import MeanStats, ProportionStats, analyze, metric_inputs_from_records

COLUMNS = ["line_number", "user_id", "variant", "purchased", "revenue", "assigned_at"]

#: One hand-built file: each bad row breaks exactly one rule (line numbers as the reader would add them).
ROWS = [
    (2, "u1", "control", "1", "10.5", "2024-03-01T10:00:00Z"),
    (3, "u2", "promo", "0", "0", "2024-03-01T11:00:00Z"),
    (4, "u3", "control", "true", "5.5", ""),
    (5, "u3", "promo", "false", "0", ""),  # u3 in two arms: both lines go
    (6, "u2", "promo", "1", "3", ""),  # repeat of u2 in the same arm: line 3 stays
    (7, "u4", " ", "1", "3", ""),
    (8, "u5", "promo", "abc", "3", ""),
    (9, "", "control", "1", "3", ""),
    (10, "u6", "control", "0", "", ""),
    (11, "u7", "promo", "1", "2", "not a time"),
    (12, "u8", "promo", "TRUE", "7.25", "2024-03-02 09:30:00"),
]
EXPECTED_REASONS = {
    4: "conflicting_variant",
    5: "conflicting_variant",
    6: "duplicate_user",
    7: "missing_variant",
    8: "unparseable_value",
    9: "missing_user_id",
    10: "unparseable_value",
    11: "unparseable_value",
}


def _rows() -> pl.DataFrame:
    return pl.DataFrame(ROWS, schema=COLUMNS, orient="row")


@pytest.fixture(scope="module")
def classified(key) -> pl.DataFrame:
    return classify_experiment(_rows(), ["purchased", "revenue"], key)


@pytest.fixture(scope="module")
def key() -> bytes:
    from tests.conftest import TEST_KEY

    return TEST_KEY.encode()


def test_every_bad_row_gets_its_reason_and_the_rest_are_accepted(classified):
    got = dict(classified.select("line_number", "reason").iter_rows())
    assert {line: reason for line, reason in got.items() if reason} == EXPECTED_REASONS
    assert sorted(line for line, reason in got.items() if reason is None) == [2, 3, 12]
    assert set(EXPECTED_REASONS.values()) == set(REJECT_REASONS)


def test_rejection_counts_count_rows_and_users_per_reason(classified):
    counts = {r: (rows, users) for r, rows, users in rejection_counts(classified).iter_rows()}
    assert counts == {
        "conflicting_variant": (2, 1),
        "duplicate_user": (1, 1),
        "missing_variant": (1, 1),
        "unparseable_value": (3, 3),
        "missing_user_id": (1, 0),
    }


def test_user_ids_are_pseudonymized_and_the_first_copy_of_a_repeat_is_kept(classified, key):
    accepted = {r["line_number"]: r for r in accepted_rows(classified).iter_rows(named=True)}
    assert accepted[3]["user_key"] == pseudonymize("u2", key)
    assert "user_id" not in classified.columns
    assert not any(v == "u2" for r in classified.iter_rows() for v in r)
    assert accepted[12]["purchased"] == 1.0 and accepted[12]["revenue"] == 7.25
    assert accepted[2]["assigned_at"] == pd.Timestamp("2024-03-01T10:00:00Z")
    assert accepted[12]["assigned_at"] == pd.Timestamp("2024-03-02T09:30:00Z")  # naive is UTC
    assert accepted[3]["segment"] == NO_SEGMENT


def test_without_a_key_users_are_known_by_their_first_line_and_no_raw_id_survives(key):
    got = classify_experiment(_rows(), ["purchased", "revenue"], None)
    assert got["reason"].to_list() == classify_experiment(_rows(), ["purchased", "revenue"], key)["reason"].to_list()
    raw = {r[1] for r in ROWS if r[1]}
    assert not any(v in raw for r in got.iter_rows() for v in r)
    keys = dict(got.select("line_number", "user_key").iter_rows())
    assert keys[6] == keys[3] == 3 and keys[4] == keys[5] == 4  # u2 and u3 by their first lines
    assert keys[9] is None  # a blank id stays missing


def test_rejection_counts_agree_with_a_pandas_count_of_the_same_reasons(key):
    from tests.services.jobs.abtest_data import experiment_frame, with_bad_rows

    frame, bad = with_bad_rows(experiment_frame(3_000, seed=5, variants=("control", "promo", "banner")))
    rows = pl.from_pandas(frame).with_row_index("line_number", offset=2)
    got = classify_experiment(rows, ["purchased", "revenue"], key)
    assert dict(rejection_counts(got).select("reason", "rows").iter_rows()) == bad
    assert got.height == len(frame) and accepted_rows(got).height == len(frame) - sum(bad.values())
    assert accepted_rows(got)["user_key"].n_unique() == accepted_rows(got).height  # one row per user


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pl.Series(["1", " 0 ", "TRUE", "false", "2.5", "1e3"]), [1.0, 0.0, 1.0, 0.0, 2.5, 1000.0]),
        (pl.Series(["", "abc", "inf", "NaN", None]), [None] * 5),
        (pl.Series([True, False]), [1.0, 0.0]),
        (pl.Series([1.5, float("inf"), None]), [1.5, None, None]),
    ],
)
def test_cells_parse_as_finite_numbers_or_true_false(values, expected):
    assert parse_number(values).to_list() == expected


def test_a_column_is_numeric_when_nearly_every_non_blank_value_parses():
    assert looks_numeric(pl.Series(["1", "", "0.5", "true"]))
    assert not looks_numeric(pl.Series(["1", "fr"]))
    assert not looks_numeric(pl.Series(["", ""]))


def test_a_csv_reads_as_text_with_line_numbers_and_ragged_rows_kept(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b'user_id,variant,revenue\nu1,control,"1,5"\nu2,promo\nu3,promo,2,extra\nu4,\xff,3\n')
    rows = read_experiment(path)
    assert rows["line_number"].to_list() == [2, 3, 4, 5]
    assert rows["revenue"].to_list() == ["1,5", None, "2", "3"]  # quoted comma kept; short row padded
    got = classify_experiment(rows, ["revenue"], None)
    assert got["reason"].to_list() == ["unparseable_value", "unparseable_value", None, None]
    assert got["variant"][3] == "\ufffd"  # bytes that are not UTF-8 are replaced, not fatal
    empty = tmp_path / "none.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_experiment(empty)


def test_conversion_kind_is_inferred_from_zero_one_or_boolean_values(classified):
    kinds = metric_kinds(accepted_rows(classified), ["purchased", "revenue"])
    assert kinds == {"purchased": "conversion", "revenue": "continuous"}


def test_missing_columns_raise_a_named_error_listing_both_sides(key):
    rows = pl.DataFrame({"line_number": [2], "user_id": ["u1"], "purchased": ["1"]})
    with pytest.raises(ExperimentSchemaError, match=r"missing columns \['variant'\].*'user_id'"):
        classify_experiment(rows, ["purchased"], key)


def test_default_metrics_are_the_columns_that_are_neither_reserved_nor_covariates():
    columns = [
        "user_id",
        "variant",
        "segment",
        "revenue",
        "pre_revenue",
        "purchased",
        "line_number",
        "pre_only",
    ]
    assert metric_columns(columns) == ["revenue", "purchased", "pre_only"]


@pytest.fixture(scope="module")
def experiment() -> pd.DataFrame:
    """A typed (Parquet-like) table of 3,000 users in three arms and three segments, with a covariate."""
    rng = np.random.default_rng(21)
    n = 3_000
    pre = rng.gamma(2.0, 20.0, n)
    return pd.DataFrame(
        {
            "line_number": np.arange(2, n + 2),
            "user_id": [f"user-{i}" for i in range(n)],
            "variant": rng.choice(["control", "promo", "banner"], n),
            "segment": rng.choice(["loyal", "new", "bargain"], n),
            "assigned_at": pd.Timestamp("2024-03-01")
            + pd.to_timedelta(rng.integers(0, 5 * 86_400, n), unit="s"),
            "purchased": rng.random(n) < 0.2,
            "revenue": np.round(0.5 * pre + rng.gamma(1.0, 15.0, n), 2),
            "pre_revenue": pre,
        }
    )


def _pandas_stats(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    work = df.assign(
        purchased=df.purchased.astype(float),
        revenue_sq=df.revenue**2,
        pre_sq=df.pre_revenue**2,
        xy=df.revenue * df.pre_revenue,
    )
    return work.groupby(keys).agg(
        n=("revenue", "size"),
        purchased=("purchased", "sum"),
        revenue=("revenue", "sum"),
        revenue_sq=("revenue_sq", "sum"),
        pre=("pre_revenue", "sum"),
        pre_sq=("pre_sq", "sum"),
        xy=("xy", "sum"),
        first_line=("line_number", "min"),
    )


@pytest.fixture(scope="module")
def accepted(key, experiment):
    return accepted_rows(classify_experiment(pl.from_pandas(experiment), ["purchased", "revenue"], key))


@pytest.mark.parametrize("by", [(), ("segment",)])
def test_sufficient_statistics_equal_a_pandas_groupby(accepted, experiment, by):
    keys = [*by, "variant"]
    got = sufficient_statistics(accepted, ["purchased", "revenue"], by)
    expected = _pandas_stats(experiment, keys)
    revenue = got[got.metric == "revenue"].set_index(keys).sort_index()
    purchased = got[got.metric == "purchased"].set_index(keys).sort_index()
    np.testing.assert_array_equal(revenue.n, expected.n)
    np.testing.assert_array_equal(revenue.first_line, expected.first_line)
    for column, want in [("sum", "revenue"), ("sum_squares", "revenue_sq"), ("pre_sum", "pre"), ("pre_sum_squares", "pre_sq"), ("sum_products", "xy")]:  # fmt: skip
        np.testing.assert_allclose(revenue[column], expected[want], rtol=1e-12)
    np.testing.assert_array_equal(purchased["sum"], expected.purchased)
    assert purchased.pre_sum.isna().all()  # no pre_purchased column, so no covariate


def test_daily_statistics_add_up_to_the_whole_experiment(accepted):
    daily = sufficient_statistics(accepted, ["revenue"], ("assigned_date",))
    whole = sufficient_statistics(accepted, ["revenue"]).set_index("variant")
    assert daily.assigned_date.nunique() == 5
    summed = daily.groupby("variant")[["n", "sum", "sum_squares", "sum_products"]].sum()
    np.testing.assert_allclose(
        summed.loc[whole.index].to_numpy(), whole[summed.columns].to_numpy(), rtol=1e-12
    )


def test_the_statistics_feed_analyze_with_the_same_result_as_pandas_statistics(accepted, experiment):
    rows = sufficient_statistics(accepted, ["purchased", "revenue"])
    purchased, revenue = metric_inputs_from_records(
        [{k: None if pd.isna(v) else v for k, v in r.items()} for r in rows.to_dict("records")],
        {"purchased": "conversion", "revenue": "continuous"},
    )
    assert list(purchased.variants) == list(dict.fromkeys(experiment.variant))  # file order: first is control
    expected = _pandas_stats(experiment, ["variant"])
    direct = {v: ProportionStats(int(s.n), int(s.purchased)) for v, s in expected.iterrows()}
    assert dict(purchased.variants) == direct
    got = revenue.variants["promo"].metric
    want = MeanStats(int(expected.n["promo"]), expected.revenue["promo"], expected.revenue_sq["promo"])
    assert got.n == want.n  # sums agree to rounding (the summation order is the engine's)
    assert (got.sum, got.sum_squares) == pytest.approx((want.sum, want.sum_squares), rel=1e-12)
    result = analyze([purchased, revenue])
    assert result.control == experiment.variant.iloc[0]
    assert all(
        c.variance_reduction > 0.2 for c in result.metrics[1].comparisons
    )  # revenue tracks pre_revenue
