"""The contract's CSV dialect (etl/lines.py decides; see its docstring), pinned edge case by edge case.

Each case runs through both parsers (Arrow's CSV reader for unquoted batches, the per-line ``csv``
path for the rest) wherever the input allows both, and they must agree.
"""

from __future__ import annotations

import csv
import io

import pytest

from etl.contract import RAW_COLUMNS
from etl.lines import (
    classify_batch,
    count_lines,
    history_of,
    line_reasons,
    parse,
    parse_data,
    parse_fields,
    row_reasons,
)

GOOD = "2019-10-01 00:00:01 UTC,view,17200506,2053013559792632471,furniture.living_room.sofa,,543.10,519107250,s-1"
KEY = b"k" * 32


def _outcomes(data: bytes) -> dict[int, str]:
    """line number (from 1) -> "accepted", "duplicate" or the quarantine reason."""
    out = classify_batch(data, KEY, "f.csv", 1)
    got = {n: "accepted" for n in out.events["line_number"].to_pylist()}
    got.update({n: "duplicate" for n in out.duplicates["line_number"].to_pylist()})
    got.update(dict(zip(out.quarantine["line_number"].to_pylist(), out.quarantine["reason"].to_pylist(),
                        strict=True)))  # fmt: skip
    assert len(got) == out.n_lines == count_lines(data), "every line has exactly one outcome"
    return got


def test_quoted_field_with_a_comma_is_one_field():
    quoted = GOOD.replace("furniture.living_room.sofa", '"sofa, large"')
    out = classify_batch(f"{GOOD}\n{quoted}\n".encode(), KEY, "f.csv", 1)
    assert out.events["category_code"].to_pylist() == ["furniture.living_room.sofa", "sofa, large"]


def test_a_quoted_newline_ends_the_line_so_both_halves_are_malformed():
    broken = GOOD.replace("furniture.living_room.sofa", '"sofa\nlarge"')
    assert _outcomes(f"{GOOD}\n{broken}\n{GOOD.replace('view', 'cart')}\n".encode()) == {
        1: "accepted", 2: "malformed_line", 3: "malformed_line", 4: "accepted"}


def test_crlf_line_endings_are_the_same_lines():
    crlf = f"{GOOD}\r\n{GOOD.replace('view', 'cart')}\r\n".encode()
    lf = crlf.replace(b"\r\n", b"\n")
    a, b = classify_batch(crlf, KEY, "f", 1).events, classify_batch(lf, KEY, "f", 1).events
    assert a.equals(b) and a.num_rows == 2


def test_a_bare_carriage_return_inside_a_line_is_malformed():
    with_cr = GOOD.replace("sofa", "so\rfa")
    assert _outcomes(f"{GOOD}\n{with_cr}\n".encode()) == {1: "accepted", 2: "malformed_line"}


def test_missing_final_newline_keeps_the_last_line():
    assert _outcomes(f"{GOOD}\n{GOOD.replace('view', 'cart')}".encode()) == {1: "accepted", 2: "accepted"}


def test_byte_order_mark_belongs_to_the_header_not_the_data():
    # check_header strips it from line 1; on a data line it makes the event time unreadable
    assert _outcomes(f"\ufeff{GOOD}\n".encode()) == {1: "bad_event_time"}


def test_trailing_empty_field_makes_ten_fields():
    assert _outcomes(f"{GOOD},\n{GOOD}\n".encode()) == {1: "malformed_line", 2: "accepted"}


def test_bytes_that_are_not_utf8_quarantine_their_line_only():
    data = f"{GOOD}\n".encode() + GOOD.replace("sofa", "sof\x00").encode().replace(b"\x00", b"\xff") + b"\n"
    out = classify_batch(data, KEY, "f.csv", 1)
    assert out.events.num_rows == 1
    assert out.quarantine.to_pylist()[0]["reason"] == "malformed_line"
    assert "\ufffd" in out.quarantine.to_pylist()[0]["raw_line"]


def test_a_one_megabyte_line_is_one_line():
    huge = GOOD.replace("furniture.living_room.sofa", "x" * 1_000_000)
    assert _outcomes(f"{GOOD}\n{huge}\n{GOOD.replace('view', 'cart')}\n".encode()) == {
        1: "accepted", 2: "accepted", 3: "accepted"}


def test_empty_line_is_malformed_but_eight_commas_are_nine_empty_fields():
    assert _outcomes(f"{GOOD}\n\n,,,,,,,,\n   \n".encode()) == {
        1: "accepted", 2: "malformed_line", 3: "bad_event_time", 4: "malformed_line"}


@pytest.mark.parametrize("lines", [
    [GOOD, "", GOOD + ",x", GOOD.replace(",view,", ",click,"), GOOD, GOOD.replace("543.10", "-1")],
    [GOOD.replace("sofa", "so fa"), GOOD.replace("543.10", "NaN"), ",,,,,,,,", GOOD.replace("519107250", "")],
])
def test_both_parsers_agree(lines):
    """The same lines with and without a quote-bearing line (which sends the batch to the per-line path)."""
    quoted = GOOD.replace("furniture.living_room.sofa", '"a,b"')
    fast = parse("".join(f"{v}\n" for v in lines).encode())
    slow = parse("".join(f"{v}\n" for v in [*lines, quoted]).encode())
    assert fast.fields.equals(slow.fields.slice(0, fast.fields.num_rows))
    assert list(fast.line_index) == list(slow.line_index[: len(fast.line_index)])
    assert fast.malformed == slow.malformed
    assert line_reasons(lines) == line_reasons([*lines, quoted])[:-1]


def test_history_counts_reconcile():
    h = parse_data(f"{GOOD}\n{GOOD}\nbad\n{GOOD.replace('543.10', '-2')}\n".encode())
    assert (h.rows_read, len(h.rows), h.duplicates, h.invalid) == (
        4, 1, 1, {"malformed_line": 1, "negative_price": 1})


# -- rows given field by field (the scoring API) -----------------------------------------------------
FIELDS = next(csv.reader([GOOD]))


def _row(**changes) -> list:
    return [changes.get(c, v) for c, v in zip(RAW_COLUMNS, FIELDS, strict=True)]


def _columns(rows: list[list]) -> dict[str, tuple]:
    return dict(zip(RAW_COLUMNS, zip(*rows, strict=True), strict=True))


def _written(rows: list[list]) -> bytes:
    """The CSV text a writer makes of the rows (None = empty field), encoded as etl.lines encodes lines."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue().encode("utf-8", errors="replace")


@pytest.mark.parametrize("rows", [
    [FIELDS, _row(product_id=17200506, price=543.1, user_id=519107250), _row(brand=""), [None] * 9,
     _row(price="cheap"), FIELDS, _row(brand=" "), _row(event_type="hover"), _row(user_session=None)],
    [FIELDS, _row(category_code="sofa, large"), _row(brand='a "b"'), _row(event_time="\ufeff" + FIELDS[0]),
     FIELDS, _row(brand="s\ud800")],  # quoted fields (the per-line parser), a lone surrogate
])  # fmt: skip
def test_fields_are_validated_as_the_csv_lines_they_stand_for(rows):
    by_fields, by_lines = parse_fields(_columns(rows)), parse(_written(rows))
    assert by_fields.fields.equals(by_lines.fields)
    assert list(by_fields.line_index) == list(by_lines.line_index) and by_fields.n_lines == by_lines.n_lines
    assert row_reasons(by_fields) == row_reasons(by_lines)
    a, b = history_of(by_fields), history_of(by_lines)
    assert a.table.equals(b.table) and (a.invalid, a.duplicates, a.rows_read) == (b.invalid, b.duplicates, b.rows_read)


def test_a_field_with_a_line_break_makes_its_row_malformed():
    parsed = parse_fields(_columns([FIELDS, _row(brand="a\nb"), _row(brand="a\rb"), FIELDS]))
    assert row_reasons(parsed) == [None, "malformed_line", "malformed_line", None]
    history = history_of(parsed)
    assert (history.invalid, history.duplicates, history.table.num_rows) == ({"malformed_line": 2}, 1, 1)
