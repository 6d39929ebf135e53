"""The pandas twin of the experiment rules gives what Spark gives: same reasons, keys and statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from etl.experiments import (
    accepted_rows,
    classify_experiment,
    metric_kinds,
    rejection_counts,
    sufficient_statistics,
)
from etl.local_experiments import (
    REJECT_REASONS,
    accepted_rows_local,
    classify_experiment_local,
    looks_numeric,
    metric_kinds_local,
    parse_number,
    rejection_counts_local,
    sufficient_statistics_local,
)
from tests.conftest import TEST_KEY
from tests.etl.test_experiments import EXPECTED_REASONS, ROWS, SCHEMA
from tests.services.jobs.abtest_data import experiment_frame, with_bad_rows

KEY = TEST_KEY.encode()
METRICS = ["purchased", "revenue"]


def test_the_twin_gives_every_hand_built_bad_row_its_reason():
    rows = pd.DataFrame(ROWS, columns=[c.split()[0] for c in SCHEMA.split(", ")])
    got = classify_experiment_local(rows, METRICS, KEY)
    reasons = dict(zip(got["line_number"], got["reason"], strict=True))
    assert {line: r for line, r in reasons.items() if r is not None} == EXPECTED_REASONS
    assert set(EXPECTED_REASONS.values()) == set(REJECT_REASONS)


def test_without_a_key_users_get_ordinals_and_no_raw_id_survives():
    rows = pd.DataFrame(ROWS, columns=[c.split()[0] for c in SCHEMA.split(", ")])
    got = classify_experiment_local(rows, METRICS, None)
    assert "user_id" not in got.columns
    raw = {r[1] for r in ROWS if r[1]}
    assert not got.astype(str).isin(raw).any().any()
    assert got["user_key"].dropna().str.fullmatch(r"#\d+").all()
    assert got.loc[got["line_number"] == 9, "user_key"].isna().all()  # blank id stays missing


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series(["1", " 0 ", "TRUE", "false", "2.5", "1e3"]), [1.0, 0.0, 1.0, 0.0, 2.5, 1000.0]),
        (pd.Series(["", "abc", "inf", "NaN", None]), [np.nan] * 5),
        (pd.Series([True, False]), [1.0, 0.0]),
        (pd.Series([1.5, np.inf, np.nan]), [1.5, np.nan, np.nan]),
    ],
)
def test_cells_parse_as_numbers_like_spark_casts_them(values, expected):
    np.testing.assert_array_equal(parse_number(values).to_numpy(), np.asarray(expected))


def test_a_column_is_numeric_when_every_non_blank_value_parses():
    assert looks_numeric(pd.Series(["1", "", "0.5", "true"]))
    assert not looks_numeric(pd.Series(["1", "fr"]))
    assert not looks_numeric(pd.Series(["", ""]))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    clean = experiment_frame(4_000, seed=5, variants=("control", "promo", "banner"))
    rows, _bad = with_bad_rows(clean)
    return rows.assign(line_number=np.arange(2, len(rows) + 2))


@pytest.fixture(scope="module")
def both(spark, frame):
    spark_classified = classify_experiment(spark.createDataFrame(frame), METRICS, KEY).cache()
    return spark_classified, classify_experiment_local(frame, METRICS, KEY)


@pytest.mark.spark
def test_the_twin_and_spark_classify_every_row_the_same_way(both):
    spark_rows = both[0].toPandas().sort_values("line_number", ignore_index=True)
    local = both[1].sort_values("line_number", ignore_index=True)
    pd.testing.assert_series_equal(spark_rows["reason"], local["reason"], check_dtype=False)
    pd.testing.assert_series_equal(spark_rows["user_key"], local["user_key"], check_dtype=False)
    np.testing.assert_array_equal(spark_rows["revenue"].to_numpy(float), local["revenue"].to_numpy(float))
    got = rejection_counts(both[0]).toPandas().sort_values("reason", ignore_index=True)
    want = rejection_counts_local(both[1]).sort_values("reason", ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


@pytest.mark.spark
@pytest.mark.parametrize("by", [(), ("segment",), ("segment", "assigned_date")])
def test_the_twin_reduces_to_the_same_sufficient_statistics_as_spark(both, by):
    keys = [*by, "variant", "metric"]
    got = sufficient_statistics(accepted_rows(both[0]), METRICS, by).toPandas()
    want = sufficient_statistics_local(accepted_rows_local(both[1]), METRICS, by)
    got, want = (f.assign(**({"assigned_date": f["assigned_date"].astype(str)} if "assigned_date" in by else {}))
                 .sort_values(keys, ignore_index=True) for f in (got, want))  # fmt: skip
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got[keys], want[keys], check_dtype=False)
    for column in ("n", "first_line"):
        np.testing.assert_array_equal(got[column].to_numpy(float), want[column].to_numpy(float))
    for column in ("sum", "sum_squares", "pre_sum", "pre_sum_squares", "sum_products"):
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float), rtol=1e-12)
    kinds = metric_kinds(accepted_rows(both[0]), METRICS).toPandas()
    pd.testing.assert_frame_equal(kinds, metric_kinds_local(accepted_rows_local(both[1]), METRICS))
