"""Hostile dashboard input: decompression bombs, truncated gzip, Parquet files too big to read, a raw-id
lookup flood, and the OIDC sign-in gate. Each gets a named reason; memory stays bounded (the test
process's RSS, where AppTest runs the pages, is sampled while the upload is handled)."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tomllib
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dashboard import experiments as ex
from dashboard import uploads
from dashboard.access import LOOKUPS, RateLimit
from dashboard.serve import DASHBOARD_DIR, command
from services.core.process_meter import metered
from tests.conftest import REES46_SAMPLE
from tests.dashboard.fixtures import APP
from tests.dashboard.test_pages import _user_history

MB = 2**20
REPO = Path(__file__).resolve().parents[2]


def gzip_bomb(expanded_mb: int) -> bytes:
    """A gzip of ``expanded_mb`` MB of zeros (about 1 KB per MB), made without holding the zeros."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MB)
    return b"".join([*(deflate.compress(block) for _ in range(expanded_mb)), deflate.flush()])




# ------------------------------------------------------------------------------------ gzip
def test_expanded_reads_every_member_like_gzip_and_names_each_refusal():
    text = REES46_SAMPLE.read_bytes()[:200_000]
    two_members = gzip.compress(text[:1000]) + gzip.compress(text[1000:])
    assert uploads.expanded(two_members) == gzip.decompress(two_members) == text
    assert uploads.expanded(text) is text  # not gzipped: as it is
    with pytest.raises(uploads.UploadRefused) as bomb:
        uploads.expanded(gzip_bomb(8), limit=4 * MB)
    assert bomb.value.reason == "decompression_bomb"
    with pytest.raises(uploads.UploadRefused) as cut:
        uploads.expanded(gzip.compress(text)[:5000])
    assert cut.value.reason == "corrupt_gzip" and "cut short" in str(cut.value)
    with pytest.raises(uploads.UploadRefused) as noise:
        uploads.expanded(b"\x1f\x8b" + bytes(range(256)) * 4)
    assert noise.value.reason == "corrupt_gzip"
    with pytest.raises(uploads.UploadRefused) as big:
        uploads.check_size(bytes(3 * MB), 2, "shoplens predict <file>")
    assert big.value.reason == "too_large" and "shoplens predict" in str(big.value)


BOMB_PEAK = """
import resource, sys
from dashboard import uploads
from tests.dashboard.test_hostile_uploads import gzip_bomb
bomb = gzip_bomb(1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    uploads.expanded(bomb)
except uploads.UploadRefused as err:
    print(err.reason, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_bomb_costs_about_the_limit_not_its_expanded_size():
    """In a fresh process (its peak RSS is a high-water mark): 1 GB of zeros stops at the 160 MB limit."""
    done = subprocess.run([sys.executable, "-c", BOMB_PEAK], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    reason, grown = done.stdout.split()
    assert reason == "decompression_bomb", done.stderr
    assert int(grown) < uploads.MAX_EXPANDED_BYTES * 1.15, f"peak grew by {int(grown) / MB:.0f} MB"


def test_a_decompression_bomb_upload_on_the_lookup_page_is_refused_in_bounded_memory(app):
    bomb = gzip_bomb(1024)  # 1 GB of zeros in about 1 MB
    assert len(bomb) < uploads.LOOKUP_MAX_MB * MB
    at = app("lookup")
    with metered(tree=False, interval=0.005) as rss:
        at.file_uploader(key="lookup_upload").set_value(("history.csv.gz", bomb, "application/gzip")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "decompression bomb" in at.warning[0].value
    # the bound: MAX_EXPANDED_BYTES of output at most, plus the page's own work
    assert rss.grown < uploads.MAX_EXPANDED_BYTES + 100 * MB, rss


def test_a_gzipped_history_upload_is_still_scored(app):
    _, plain = _user_history(5)
    at = app("lookup")
    at.file_uploader(key="lookup_upload").set_value(("history.csv.gz", gzip.compress(plain), "application/gzip")).run()
    gz = [m.value for m in at.metric]
    at.file_uploader(key="lookup_upload").set_value(("history.csv", plain, "text/csv")).run()
    assert not at.exception and gz and gz == [m.value for m in at.metric]


# ------------------------------------------------------------------------------------ parquet
def test_a_parquet_upload_over_the_row_limit_is_refused_from_its_footer(monkeypatch):
    n = ex.MAX_UPLOAD_ROWS + 1
    table = pa.table({"user_id": pa.array(range(n)), "variant": pa.array(["a", "b"] * (n // 2) + ["a"]),
                      "converted": pa.array([True] * n)})  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(table, buf)

    def must_not_read(*_args, **_kwargs):
        raise AssertionError("the full file was read before its row count was checked")

    monkeypatch.setattr(ex, "read_experiment", must_not_read)
    result = ex.analyze_upload(buf.getvalue(), "big.parquet")
    assert result.doc is None and f"{n:,} rows" in result.error and "shoplens abtest analyze" in result.error


def test_a_gzipped_csv_bomb_on_the_experiments_page_is_refused():
    result = ex.analyze_upload(gzip_bomb(400), "exp.csv")
    assert result.doc is None and "decompression bomb" in result.error


# ------------------------------------------------------------------------------------ limits
def test_streamlit_upload_limits_match_the_checks(app):
    config = tomllib.loads((DASHBOARD_DIR / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == uploads.LARGEST_UPLOAD_MB
    cmd = command()
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == str(uploads.LARGEST_UPLOAD_MB)
    assert app("lookup").file_uploader(key="lookup_upload").proto.max_upload_size_mb == uploads.LOOKUP_MAX_MB
    at = app("experiments")
    assert at.file_uploader(key="experiment_upload").proto.max_upload_size_mb == uploads.EXPERIMENT_MAX_MB


def test_rate_limit_is_a_sliding_window():
    limit, state = RateLimit(limit=3, window_s=10.0), {}
    assert [limit.allow(state, "k", now=t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert limit.wait_s(state, "k", now=3) == pytest.approx(7.0)
    assert limit.allow(state, "k", now=10.5) and not limit.allow(state, "k", now=10.6)


def test_raw_id_lookups_are_rate_limited_per_session(app, fixture_lake):
    at = app("lookup")
    raw = fixture_lake.raw_ids["known"]
    for _ in range(LOOKUPS.limit):
        at.text_input[0].input(raw)
        at.button[0].click().run()
        assert not at.warning and [m for m in at.metric if m.label == "Segment"]
    at.text_input[0].input(raw)
    at.button[0].click().run()
    assert "Too many lookups" in at.warning[0].value and not [m for m in at.metric if m.label == "Segment"]
    assert raw not in str([w.value for w in at.warning])


# ------------------------------------------------------------------------------------ sign-in
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "shoplens", "client_secret": "s",
        "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}  # fmt: skip


def test_with_oidc_configured_a_visitor_must_sign_in(use_lake, fixture_lake):
    from streamlit.testing.v1 import AppTest

    use_lake(fixture_lake.uri)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"] and not at.metric  # no page content
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "analyst@example.com"}
    at.run()
    assert not at.exception and at.metric  # the overview's KPIs
    assert any("analyst@example.com" in c.value for c in at.sidebar.caption)


def test_without_oidc_the_dashboard_is_open_as_before(app):
    at = app()
    assert at.metric and "Sign in" not in [b.label for b in at.button]
