"""Ingestion rules: every validation rule, dedupe, normalization, pseudonymization (etl.lines, the Arrow
code every Spark task runs), and the Spark side of a run (services.jobs.ingest_tasks, around the pure
etl.ingest) on real Spark."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from etl.contract import QUARANTINE_REASONS
from etl.ingest import suspicious_users
from etl.lines import classify_batch
from etl.pseudonymize import pseudonymize
from etl.timeline import BUCKETS, bucket_of
from services.core.storage import LocalStore
from services.jobs.ingest_tasks import (
    TIMELINE_PARTS,
    Chunk,
    find_copies,
    flag_suspicious,
    resolve_cross_chunk_duplicates,
    run_chunks,
)

GOOD = "2019-10-01 00:00:01 UTC,view,17200506,2053013559792632471,furniture.living_room.sofa,,543.10,519107250,566511c2-e2e3-422b-b695-cf8e6e792ca8"

#: One line per quarantine reason, each breaking exactly that rule.
BAD_LINES = {
    "malformed_line": "2019-10-01 00:00:01 UTC,view,17200506,2053013559792632471,,543.10,519107250",
    "bad_event_time": GOOD.replace("2019-10-01 00:00:01 UTC", "2019-13-45 25:00:00 UTC"),
    "unknown_event_type": GOOD.replace(",view,", ",click,"),
    "bad_product_id": GOOD.replace(",17200506,", ",17x00506,"),
    "bad_category_id": GOOD.replace(",2053013559792632471,", ",20530135597926324719999,"),
    "missing_user_id": GOOD.replace(",519107250,", ",,"),
    "bad_user_id": GOOD.replace(",519107250,", ",51910abc,"),
    "missing_user_session": GOOD.replace(",566511c2-e2e3-422b-b695-cf8e6e792ca8", ","),
    "missing_price": GOOD.replace(",543.10,", ",,"),
    "bad_price": GOOD.replace(",543.10,", ",NaN,"),
    "negative_price": GOOD.replace(",543.10,", ",-5.00,"),
    "absurd_price": GOOD.replace(",543.10,", ",9999999.00,"),
}


def _data(values: list[str]) -> bytes:
    return "".join(f"{v}\n" for v in values).encode()


def _classify(spark, values, key):
    """One row per line, by line number: outcome, reason, duplicate_of_line and the event columns."""
    del spark  # the rules run in each Spark task, but they are plain Arrow code
    out = classify_batch(_data(values), key, "f.csv", 2)
    frames = [
        out.events.to_pandas().assign(outcome="accepted"),
        out.quarantine.to_pandas().assign(outcome="quarantined"),
        out.duplicates.to_pandas().assign(outcome="duplicate"),
    ]
    rows = pd.concat([f for f in frames if len(f)], ignore_index=True).sort_values("line_number")
    if "event_time" in rows:  # as Spark returns it: naive, in the session's time zone (UTC)
        rows["event_time"] = rows["event_time"].dt.tz_localize(None)
    rows = rows.astype(object).where(rows.notna(), None)
    return [SimpleNamespace(**{k: (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v)
                               for k, v in r.items()}) for r in rows.to_dict("records")]


def test_every_reason_has_a_line_that_triggers_exactly_it(spark, key):
    assert set(BAD_LINES) == set(QUARANTINE_REASONS)
    rows = _classify(spark, [GOOD, *BAD_LINES.values()], key)
    assert rows[0].outcome == "accepted"
    got = {r.line_number: r.reason for r in rows[1:]}
    expected = {i + 3: reason for i, reason in enumerate(BAD_LINES)}
    assert got == expected
    assert all(r.outcome == "quarantined" for r in rows[1:])


def test_blank_line_and_extra_fields_are_malformed(spark, key):
    rows = _classify(spark, ["", GOOD + ",extra"], key)
    assert [r.reason for r in rows] == ["malformed_line", "malformed_line"]


def test_zero_price_and_missing_brand_and_category_code_are_accepted(spark, key):
    line = "2019-10-01 00:00:01 UTC,purchase,1,2053013559792632471,,,0.00,519107250,s1"
    (row,) = _classify(spark, [line], key)
    assert row.outcome == "accepted"
    assert row.brand is None and row.category_code is None and row.category_l1 is None
    assert row.price == 0.0


def test_accepted_event_is_normalized_and_pseudonymized(spark, key):
    line = "2019-11-29 23:59:59 UTC,cart,5,123,Electronics.Smartphone,Apple,1.50,541312140,abc-session"
    (row,) = _classify(spark, [line], key)
    assert row.event_time.isoformat() == "2019-11-29T23:59:59"
    assert str(row.event_date) == "2019-11-29" and row.event_hour == 23
    assert (row.category_code, row.category_l1, row.category_l2, row.category_l3) == (
        "electronics.smartphone",
        "electronics",
        "smartphone",
        None,
    )
    assert row.brand == "apple"
    assert row.user_key == pseudonymize("541312140", key)
    assert row.session_key == pseudonymize("abc-session", key)
    assert row.category_id == 123 and row.product_id == 5


def test_19_digit_category_id_is_exact(spark, key):
    (row,) = _classify(spark, [GOOD.replace("2053013559792632471", "9223372036854775807")], key)
    assert row.category_id == 9223372036854775807


def test_later_copies_of_a_valid_line_are_duplicates_of_the_first(spark, key):
    other = GOOD.replace("view", "cart")
    rows = _classify(spark, [GOOD, other, GOOD, GOOD], key)
    assert [r.outcome for r in rows] == ["accepted", "accepted", "duplicate", "duplicate"]
    assert [r.duplicate_of_line for r in rows[2:]] == [2, 2]


def test_repeated_bad_lines_are_all_quarantined(spark, key):
    bad = BAD_LINES["negative_price"]
    rows = _classify(spark, [bad, bad], key)
    assert [r.outcome for r in rows] == ["quarantined", "quarantined"]


@pytest.mark.spark
def test_duplicates_span_files_in_one_batch(spark, key, tmp_path):
    """Copies in other chunks and files are found by the Spark shuffle of the row hashes; the first
    copy (smallest file name, then line) stays, and the chunk holding a later one is patched."""
    store = LocalStore(tmp_path)
    other = GOOD.replace("view", "cart")
    store.write_bytes("c/b", _data([other, GOOD, GOOD]))
    store.write_bytes("c/a", _data([GOOD]))
    chunks = [Chunk("c/b", "b.csv", 2, 0), Chunk("c/a", "a.csv", 10, 1)]
    counts = run_chunks(spark, store, "out", chunks, key, buckets=3, timeline_groups=2)
    assert counts == {(0, "accepted", None): 2, (0, "duplicate", None): 1, (1, "accepted", None): 1,
                      (1, "duplicate", None): 0, (0, "erased_user", None): 0, (1, "erased_user", None): 0}  # fmt: skip
    copies = find_copies(spark, store, "out", buckets=3)
    assert sorted(c[2:] for c in copies) == [(0, 3), (1, 10)]
    assert resolve_cross_chunk_duplicates(store, "out", chunks, copies) == {0: 1}
    events = pd.concat(pd.read_parquet(tmp_path / k) for k in store.list("out/events"))
    assert sorted(zip(events.source_file, events.line_number, strict=True)) == [("a.csv", 10), ("b.csv", 2)]
    # the events staged for the run's timelines, by bucket group, lose the same copy
    staged = {k: pa.ipc.open_file(str(tmp_path / k)).read_all() for k in store.list(f"out/{TIMELINE_PARTS}")}
    rows = pa.concat_tables(staged.values())
    assert sorted(zip(rows["source_file"].to_pylist(), rows["line_number"].to_pylist(), strict=True)) == [
        ("a.csv", 10), ("b.csv", 2)]  # fmt: skip
    for k, table in staged.items():
        assert {f"group={g:04d}" for g in bucket_of(table["user_key"]) * 2 // BUCKETS} == {k.split("/")[2]}
    dups = pd.read_parquet(tmp_path / "out/duplicates/part-00000.parquet")
    assert list(zip(dups.line_number, dups.duplicate_of_line, strict=True)) == [(3, 10), (4, 10)]


def test_quarantined_lines_carry_no_raw_ids(spark, key):
    rows = [SimpleNamespace(**r) for r in
            classify_batch(_data(list(BAD_LINES.values())), key, "f.csv", 2).quarantine.to_pylist()]
    assert len(rows) == len(BAD_LINES)
    for r in rows:
        assert "519107250" not in r.raw_line
        assert "566511c2-e2e3-422b-b695-cf8e6e792ca8" not in r.raw_line
    parsed = next(r for r in rows if r.reason == "negative_price")
    assert pseudonymize("519107250", key) in parsed.raw_line


def test_bot_like_users_are_flagged_not_dropped():
    per_day = pl.DataFrame({
        "user_key": ["bot"] * 3 + ["human", "bot"],
        "event_date": [date(2019, 10, 1)] * 3 + [date(2019, 10, 1), date(2019, 10, 2)],
        "events": [2, 3, 1, 2, 4],  # one user-day in parts (one per chunk) is summed
    })  # fmt: skip
    flagged = suspicious_users(per_day, max_events_per_day=3).to_pylist()
    assert flagged == [{"user_key": "bot", "max_events_per_day": 6, "days_over_limit": 2,
                        "first_day_over_limit": date(2019, 10, 1), "reason": "more than 3 events in a day"}]  # fmt: skip


@pytest.mark.spark
def test_the_bot_flag_counts_a_users_day_across_chunks(spark, key, tmp_path):
    """Each chunk task writes its user-day counts bucketed by user; the bucket tasks sum them."""
    store = LocalStore(tmp_path)
    busy = [GOOD.replace("2019-10-01 00:00:01", f"2019-10-01 00:00:{s:02d}") for s in range(6)]
    store.write_bytes("c/a", _data(busy[:3]))
    store.write_bytes("c/b", _data([*busy[3:], GOOD.replace("519107250", "519107251")]))
    chunks = [Chunk("c/a", "a.csv", 2, 0), Chunk("c/b", "a.csv", 5, 1)]
    run_chunks(spark, store, "out", chunks, key, buckets=3)
    flags = flag_suspicious(spark, store, "out", buckets=3, max_events_per_day=5).to_pylist()
    assert [(f["user_key"], f["max_events_per_day"], f["days_over_limit"]) for f in flags] == [
        (pseudonymize("519107250", key), 6, 1)]


def test_no_etl_function_takes_a_store_or_a_lake():
    """etl is tables in, tables out (the import contracts check its imports; a store handed in as an
    argument needs no import, so this checks the parameters): storage is services' business."""
    import ast
    from pathlib import Path

    import etl

    taking = [f"{path.name}:{node.name}({arg.arg})"
              for path in sorted(Path(etl.__file__).parent.glob("*.py"))
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
              for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
              if arg.arg in {"store", "lake"}]  # fmt: skip
    assert taking == []


def test_the_rules_run_on_tables_alone(key):
    """Without Spark or a store: two chunks' bytes in, their cuts and the cross-chunk copies out, against
    pandas on the same lines (first copy = smallest file, then line)."""
    from etl.ingest import classify_chunk, copies_in_bucket, drop_lines, later_copies, repointed_duplicates

    later = GOOD.replace("00:00:01", "00:00:02").replace("2019-10-01", "2019-10-02")
    a = classify_chunk(_data([GOOD, later, GOOD]), key, "b.csv", 2, 0)  # line 4 copies line 2 inside the chunk
    b = classify_chunk(_data([later, BAD_LINES["bad_price"], GOOD]), key, "a.csv", 7, 1)
    assert [tuple(t.num_rows for _, t in c.events_by_day()) for c in (a, b)] == [(1, 1), (1, 1)]
    assert a.counts().to_pylist()[:2] == [{"chunk": 0, "outcome": "accepted", "reason": None, "n": 2},
                                          {"chunk": 0, "outcome": "duplicate", "reason": None, "n": 1}]  # fmt: skip
    per_bucket = {}
    for c in (a, b):
        for bucket, table in c.hash_buckets(3):
            per_bucket.setdefault(bucket, []).append((c.index, table))
    copies = [tuple(r.values()) for parts in per_bucket.values() for r in copies_in_bucket(parts).to_pylist()]
    moved = later_copies(copies, {0: "b.csv", 1: "a.csv"})
    lines = pd.DataFrame({"file": ["b.csv", "b.csv", "a.csv", "a.csv"], "line": [2, 3, 7, 9], "chunk": [0, 0, 1, 1],
                          "text": [GOOD, later, later, GOOD]}).sort_values(["file", "line"])  # fmt: skip
    first = lines.groupby("text").line.transform("first")
    expect = {}
    for r, f in zip(lines.itertuples(), first, strict=True):
        if r.line != f:
            expect.setdefault(r.chunk, {})[r.line] = f
    assert moved == expect == {0: {2: 9, 3: 7}}
    assert drop_lines(a.out.events, moved[0]).num_rows == 0
    dups = repointed_duplicates(a.out.duplicates, "b.csv", moved[0]).to_pylist()
    assert [(d["line_number"], d["duplicate_of_line"]) for d in dups] == [(2, 9), (3, 7), (4, 9)]
    days = pd.concat(t.to_pandas() for c in (a, b) for _, t in c.user_day_buckets(3))
    assert days.groupby("event_date").events.sum().tolist() == [2, 2]
