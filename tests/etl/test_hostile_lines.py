"""Hostile lines and headers: what a quarantine, a log or an error message may hold (issue 28).

Property tests (hypothesis, bounded by ``max_examples`` and a deadline) feed the line parser and the
header check arbitrary text; the rest pin the cases a pattern-based redaction used to miss.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from etl.contract import RAW_COLUMNS, ContractError, check_header
from etl.lines import classify_batch, count_lines, mask_ids
from etl.pseudonymize import pseudonymize

KEY = b"k" * 32
GOOD = "2019-10-01 00:00:01 UTC,view,17200506,2053013559792632471,furniture.living_room.sofa,,543.10,{u},{s}"
BOUNDED = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _header_error(line: str) -> str:
    with pytest.raises(ContractError) as err:
        check_header(line, "part-aa")
    return str(err.value)


def test_a_headerless_split_part_names_counts_and_columns_never_cells():
    first_row = GOOD.format(u="519107250", s="566511c2-e2e3-422b-b695-cf8e6e792ca8")
    message = _header_error(first_row)
    assert "519107250" not in message and "566511c2" not in message and "17200506" not in message
    assert "9 columns" in message and "9 unexpected columns" in message
    assert "missing event_time, event_type" in message and ",".join(RAW_COLUMNS) in message


def test_a_header_with_a_renamed_column_says_which_is_missing_and_how_many_are_unknown():
    message = _header_error(",".join(RAW_COLUMNS).replace("brand", "maker"))
    assert "missing brand" in message and "1 unexpected column" in message and "maker" not in message


_ID = st.text("0123456789abcdefXYZ", min_size=6, max_size=20)


@BOUNDED
@given(st.lists(_ID, min_size=1, max_size=12), st.sampled_from([",", ";", "\t"]))
def test_no_header_message_quotes_a_cell(cells, sep):
    line = sep.join(cells)
    if tuple(line.split(",")) == RAW_COLUMNS:
        return
    message = _header_error(line)
    assert not any(c in message for c in cells)


@pytest.mark.parametrize("line", [
    # ids a digit-run pattern missed: a float id, a short id, a session that is no dashed UUID
    "2019-10-01 00:00:01 UTC,view,17200506,,,541312140.0,s0001",  # seven fields
    GOOD.format(u="4321", s="sess-ab12") + ",extra",  # ten fields
    GOOD.format(u="541312140.0", s="0123abcd"),  # nine fields, bad user id: quarantined, not malformed
    "541312140.0;abcdefgh;4321",  # another separator
    "",
])
def test_a_quarantined_line_holds_no_raw_id(line):
    out = classify_batch(f"{line}\n".encode(), KEY, "f.csv", 2)
    assert out.quarantine.num_rows == 1
    kept = out.quarantine["raw_line"][0].as_py()
    for token in ("541312140", "4321", "s0001", "sess-ab12", "0123abcd", "abcdefgh"):
        assert token not in kept


def test_a_malformed_line_in_nine_fields_keeps_them_with_both_ids_keyed():
    line = GOOD.format(u="4321", s="sess\rion")  # a bare carriage return makes the line malformed
    assert mask_ids(line, KEY).split(",") == [
        *line.split(",")[:7], pseudonymize("4321", KEY), pseudonymize("sess\rion", KEY)]


def test_any_other_malformed_line_becomes_its_length_and_a_keyed_digest():
    line = "541312140.0,4321,abc"
    assert mask_ids(line, KEY) == f"<malformed line: 20 characters, digest {pseudonymize(line, KEY)[:16]}>"
    assert mask_ids(line, b"another key of thirty-two bytes!") != mask_ids(line, KEY)


#: Any text but a newline (which ends the line) or a comma (so the planted ids stay where they were put).
_FIELD = st.text(st.characters(codec="utf-8", exclude_characters="\n,"), max_size=12)


@BOUNDED
@given(st.lists(st.lists(_FIELD, min_size=1, max_size=11), max_size=8), _ID, _ID)
def test_every_line_has_one_outcome_and_no_id_survives(rows, user, session):
    """Arbitrary lines (quotes, carriage returns, any field count) with a known id pair planted in each:
    in the id positions when the line has nine fields (ids are known by position), else anywhere. A field
    that merely repeats an id's text elsewhere in a nine-field line is that field, not the id: excluded."""
    assume(not any(user in f or session in f for fields in rows for f in fields))
    lines = []
    for fields in rows:
        fields = list(fields)
        at = 7 if len(fields) == 7 else len(fields) // 2
        fields[at:at] = [user, session]
        lines.append(",".join(fields))
    data = "".join(f"{v}\n" for v in lines).encode()
    out = classify_batch(data, KEY, "f.csv", 1)
    numbers = [*out.events["line_number"].to_pylist(), *out.duplicates["line_number"].to_pylist(),
               *out.quarantine["line_number"].to_pylist()]
    assert sorted(numbers) == list(range(1, count_lines(data) + 1))
    for raw in out.quarantine["raw_line"].to_pylist():
        assert user not in raw and session not in raw
