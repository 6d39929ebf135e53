"""The synthetic feed: real REES46 format, determinism, truth files, persona behaviour, seasonality."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl.contract import EVENT_TYPES, HEADER_LINE, QUARANTINE_REASONS
from etl.generate import black_friday, generate, month_file_name, users_for_events

FIELD_PATTERNS = [
    r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC",
    "|".join(EVENT_TYPES),
    r"[1-9]\d{6,7}",
    r"20\d{17}",
    r"([a-z_]+(\.[a-z_]+){1,2})?",
    r"[a-z0-9 ]*",
    r"\d+\.\d{2}",
    r"5\d{8}",
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
]
LINE_RE = re.compile(",".join(f"(?:{p})" for p in FIELD_PATTERNS))
TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) UTC")


def expected_reason(line: str) -> str | None:
    """The ingest's validation rules as the brief states them (first that applies wins), re-implemented."""
    f = line.split(",")
    if not line or len(f) != 9:
        return "malformed_line"
    t, etype, product, category, _code, _brand, price, user, session = f
    m = TIME_RE.fullmatch(t)
    if not m or not 2000 <= int(m.group(1)) <= 2100:
        return "bad_event_time"
    try:
        pd.Timestamp(t[:19])
    except ValueError:
        return "bad_event_time"
    if etype not in EVENT_TYPES:
        return "unknown_event_type"
    if not re.fullmatch(r"\d{1,19}", product):
        return "bad_product_id"
    if category and not re.fullmatch(r"\d{1,19}", category):
        return "bad_category_id"
    if not user:
        return "missing_user_id"
    if not re.fullmatch(r"\d{1,19}", user):
        return "bad_user_id"
    if not session:
        return "missing_user_session"
    if not price:
        return "missing_price"
    try:
        value = float(price)
    except ValueError:
        return "bad_price"
    if not math.isfinite(value):
        return "bad_price"
    if value < 0:
        return "negative_price"
    if value > 100_000:
        return "absurd_price"
    return None


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", newline="") as fh:
        return fh.read().split("\n")[:-1]


@pytest.fixture(scope="module")
def feed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("feed")
    generate(out, users=3000, start=date(2019, 10, 1), months=3, seed=11, dirty_rate=0.02)
    return out


@pytest.fixture(scope="module")
def truth(feed: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(feed / "_truth" / "users.csv"), pd.read_csv(feed / "_truth" / "dirty.csv")


@pytest.fixture(scope="module")
def clean(feed: Path, truth) -> pd.DataFrame:
    """Every non-dirty row of every file, parsed, with the user's persona."""
    users, dirty = truth
    frames = []
    for path in sorted(feed.glob("*.csv.gz")):
        lines = read_lines(path)
        bad = set(dirty.loc[dirty.file == path.name, "line_number"])
        rows = [ln.split(",") for no, ln in enumerate(lines[1:], start=2) if no not in bad]
        df = pd.DataFrame(rows, columns=HEADER_LINE.split(","))
        df["file"] = path.name
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["t"] = pd.to_datetime(df.event_time.str[:19])
    df["price"] = df.price.astype(float)
    df["user_id"] = df.user_id.astype(np.int64)
    return df.merge(users[["user_id", "persona"]], on="user_id", how="left", validate="many_to_one")


def test_files_are_named_and_headed_like_the_real_feed(feed: Path) -> None:
    names = sorted(p.name for p in feed.glob("*.csv.gz"))
    assert names == sorted(["2019-Oct.csv.gz", "2019-Nov.csv.gz", "2019-Dec.csv.gz"])
    assert month_file_name(2020, 2) == "2020-Feb.csv.gz"
    for name in names:
        assert read_lines(feed / name)[0] == HEADER_LINE
        with open(feed / name, "rb") as fh:
            head = fh.read(10)
        assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\0\0\0\0"  # gzip with mtime 0


def test_every_clean_line_matches_the_rees46_format_and_is_sorted(feed: Path, truth) -> None:
    _, dirty = truth
    checked = 0
    for path in sorted(feed.glob("*.csv.gz")):
        lines = read_lines(path)
        bad = set(dirty.loc[dirty.file == path.name, "line_number"])
        month = path.name[5:8]
        previous = ""
        for no, line in enumerate(lines[1:], start=2):
            if no in bad:
                continue
            assert LINE_RE.fullmatch(line), f"{path.name}:{no}: {line}"
            assert expected_reason(line) is None, line
            stamp = line[:19]
            assert stamp >= previous, f"{path.name}:{no} out of order"
            assert pd.Timestamp(stamp).strftime("%b") == month
            previous = stamp
            checked += 1
    assert checked > 10_000


def test_catalogue_looks_like_the_real_one(clean: pd.DataFrame) -> None:
    no_code = (clean.category_code == "").mean()
    no_brand = (clean.brand == "").mean()
    assert 0.1 < no_code < 0.5  # real October: 31%
    assert 0.03 < no_brand < 0.3  # real October: 13%
    assert clean.category_code.str.split(".").str[0].replace("", np.nan).nunique() >= 10
    # One category id per category code, and log-normal-ish prices (right-skewed).
    coded = clean[clean.category_code != ""]
    assert (coded.groupby("category_code").category_id.nunique() == 1).all()
    phones = clean[clean.category_code == "electronics.smartphone"].price
    assert phones.mean() > phones.median()


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    def digests(out: Path) -> dict[str, str]:
        return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}

    args = {"users": 400, "start": date(2019, 11, 1), "months": 2, "dirty_rate": 0.05}
    generate(tmp_path / "a", seed=5, **args)
    generate(tmp_path / "b", seed=5, **args)
    generate(tmp_path / "c", seed=6, **args)
    a, b, c = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    assert a == b
    assert {"2019-Nov.csv.gz", "2019-Dec.csv.gz", "_truth/users.csv", "_truth/dirty.csv"} <= set(a)
    assert all(a[name] != c[name] for name in ("2019-Nov.csv.gz", "2019-Dec.csv.gz", "_truth/users.csv"))


def test_dirty_rows_are_where_the_truth_says_with_the_stated_fault(feed: Path, truth) -> None:
    _, dirty = truth
    assert set(dirty.expected) <= {*QUARANTINE_REASONS, "duplicate"}
    assert {"duplicate", "malformed_line", "bad_event_time", "unknown_event_type", "missing_user_id",
            "bad_user_id", "negative_price", "bad_price", "absurd_price"} <= set(dirty.expected)
    total_rows = 0
    for path in sorted(feed.glob("*.csv.gz")):
        lines = read_lines(path)
        total_rows += len(lines) - 1
        mine = dirty[dirty.file == path.name]
        dup_lines = set(mine.loc[mine.expected == "duplicate", "line_number"])
        seen: dict[str, int] = {}
        for no, line in enumerate(lines[1:], start=2):
            if line in seen:
                # Every repeated line is a recorded duplicate of an earlier, clean line.
                assert no in dup_lines, f"unrecorded duplicate at {path.name}:{no}"
                assert expected_reason(line) is None
            else:
                seen[line] = no
        for row in mine.itertuples():
            line = lines[row.line_number - 1]
            if row.expected == "duplicate":
                assert seen[line] < row.line_number
            else:
                assert expected_reason(line) == row.expected, (row, line)
                assert seen[line] == row.line_number  # unique: no accidental duplicate among dirty rows
    # About dirty_rate of all rows, and every other row is valid (checked line by line above).
    assert 0.015 < len(dirty) / total_rows < 0.025


def test_users_truth_matches_the_files(clean: pd.DataFrame, truth) -> None:
    users, _ = truth
    assert users.user_id.is_unique
    assert set(users.user_id) == set(clean.user_id)
    assert users.user_id.between(500_000_000, 599_999_999).all()
    counts = clean.groupby("user_id").size()
    assert (users.set_index("user_id").n_events == counts.reindex(users.user_id).to_numpy()).all()
    purchases = clean[clean.event_type == "purchase"].groupby("user_id").size()
    assert (users.set_index("user_id").n_purchases.to_numpy()
            == purchases.reindex(users.user_id, fill_value=0).to_numpy()).all()
    assert set(users.persona) == {"loyal_frequent", "big_ticket", "bargain_hunter", "window_shopper",
                                  "cart_abandoner", "one_time_buyer", "holiday_shopper"}
    assert users.persona.value_counts().idxmax() == "window_shopper"
    # A session belongs to exactly one user.
    assert (clean.groupby("user_session").user_id.nunique() == 1).all()


def test_event_type_mix_is_in_the_range_of_the_real_data(clean: pd.DataFrame) -> None:
    counts = clean.event_type.value_counts()
    views = counts["view"]
    assert 0.02 < counts["cart"] / views < 0.08
    assert 0.012 < counts["purchase"] / views < 0.035
    assert 0 < counts["remove_from_cart"] < counts["cart"]
    # Multi-item purchases exist: some sessions buy several products.
    per_session = clean[clean.event_type == "purchase"].groupby("user_session").size()
    assert (per_session > 1).any()


def test_personas_behave_differently(clean: pd.DataFrame) -> None:
    by = clean.groupby("persona")
    types = pd.crosstab(clean.persona, clean.event_type)
    buy_rate = types["purchase"] / types["view"]
    assert buy_rate["window_shopper"] < 0.1 * buy_rate["loyal_frequent"]
    remove_rate = types["remove_from_cart"] / types["cart"]
    complete_rate = types["purchase"] / types["cart"]
    assert remove_rate["cart_abandoner"] > 0.3 and complete_rate["cart_abandoner"] < 0.15
    assert complete_rate["loyal_frequent"] > 0.4
    # Price level relative to the category median.
    rel = np.log(clean.price / clean.groupby("category_id").price.transform("median"))
    rel_by = rel.groupby(clean.persona).mean()
    assert rel_by["bargain_hunter"] < -0.5 < 0.5 < rel_by["big_ticket"]
    purchases = clean[clean.event_type == "purchase"]
    assert purchases[purchases.persona == "big_ticket"].price.median() > 2 * purchases.price.median()
    # Sessions: big-ticket sessions are long; loyal buyers visit most often.
    events_per_session = by.size() / by.user_session.nunique()
    assert events_per_session.idxmax() == "big_ticket"
    sessions_per_user = by.user_session.nunique() / by.user_id.nunique()
    assert sessions_per_user.idxmax() == "loyal_frequent"
    # One-time buyers: one or two sessions, and at most one purchase each.
    one = clean[clean.persona == "one_time_buyer"]
    assert one.groupby("user_id").user_session.nunique().max() <= 2
    assert one[one.event_type == "purchase"].groupby("user_id").size().max() == 1
    # Holiday shoppers are active mainly from the Monday of Black Friday week to the end of December.
    season = clean.t >= pd.Timestamp(black_friday(2019)) - pd.Timedelta(days=4)
    season_share = season.groupby(clean.persona).mean()
    assert season_share["holiday_shopper"] > 0.8
    assert season_share.drop("holiday_shopper").max() < 0.7


def test_black_friday_is_busier_than_a_normal_november_day(clean: pd.DataFrame) -> None:
    daily = clean.groupby(clean.t.dt.date).size()
    assert black_friday(2019) == date(2019, 11, 29)
    normal = daily[[date(2019, 11, d) for d in range(4, 16)]].median()
    assert daily[date(2019, 11, 29)] > 2 * normal
    # Weekly rhythm: the daily volume is not flat.
    assert daily[[date(2019, 10, d) for d in range(1, 29)]].std() > 0


def test_users_arrive_and_churn_over_the_months(truth) -> None:
    users, _ = truth
    first = users.first_month.value_counts()
    last = users.last_month.value_counts()
    assert first.get("2019-12", 0) > 0 and last.get("2019-10", 0) > 0


def test_arguments_are_checked_and_sizing_helper_is_consistent(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, users=0)
    with pytest.raises(ValueError):
        generate(tmp_path, users=10, dirty_rate=0.7)
    assert users_for_events(10_000_000, months=1) == 500_000
    assert users_for_events(2_000_000, months=2) == users_for_events(1_000_000, months=1)


def test_cli_generate_writes_files_and_prints_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from services.cli import app

    result = CliRunner().invoke(app, ["generate", "--users", "300", "--start", "2019-10-01", "--months", "1",
                                      "--seed", "3", "--out", str(tmp_path), "--dirty-rate", "0.01", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["files"] == ["2019-Oct.csv.gz"]
    rows = len(read_lines(tmp_path / "2019-Oct.csv.gz")) - 1
    assert rows == summary["events"] + summary["dirty_rows"]
    dirty = pd.read_csv(tmp_path / "_truth" / "dirty.csv")
    assert len(dirty) == summary["dirty_rows"]
