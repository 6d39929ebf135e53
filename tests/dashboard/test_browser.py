"""The real ``streamlit run`` server rendered in headless Chromium (Playwright): what a person sees.

Every page is opened, the test waits for its plotly charts, checks visible text and saves a
screenshot to docs/screenshots/. Skipped with a reason where Chromium or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dashboard.charts import fmt_int
from dashboard.serve import DASHBOARD_DIR, command, environment
from tests.conftest import TEST_KEY

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
PLOT = ".js-plotly-plot .main-svg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(lake: str, work: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``streamlit run`` on a free 127.0.0.1 port; returns (process, base URL) once /healthz answers."""
    port = _free_port()
    env = environment(lake, {**os.environ, "SHOPLENS_WORK_DIR": str(work), "SHOPLENS_PSEUDONYM_KEY": TEST_KEY})
    with log.open("wb") as out:
        proc = subprocess.Popen(command(port, "127.0.0.1"), cwd=DASHBOARD_DIR, env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"streamlit did not answer within 60 s: {log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, url: str, *, height: int = 1800):
    page = browser.new_page(viewport={"width": 1440, "height": height}, device_scale_factor=1)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("h1", timeout=60_000)
    return page


def settle(page, n_plots: int = 1) -> None:
    """Wait for ``n_plots`` rendered plotly charts and for the script to finish running."""
    page.wait_for_function(f"document.querySelectorAll('{PLOT}').length >= {n_plots}", timeout=60_000)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"] button')", timeout=60_000)
    page.wait_for_timeout(800)


def shot(page, shots: Path, name: str) -> None:
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


@dataclass(frozen=True)
class Expect:
    """What the pages must show for a lake (computed from the lake's own files, not by the dashboard)."""

    uri: str
    segment_names: list[str]
    customers: int
    largest_segment_users: int
    known_id: str
    low_id: str

    @classmethod
    def of(cls, uri: str, known_id: str, low_id: str) -> Expect:
        root = Path(uri)
        model = json.loads((root / "models" / "segmentation" / "_current.json").read_text())["version"]
        profiles = json.loads((root / "models" / "segmentation" / model / "profiles.json").read_text())
        views = json.loads((root / "views" / "segments" / "_current.json").read_text())["version"]
        summary = pd.read_parquet(root / "views" / "segments" / views / "segment_summary.parquet")
        return cls(uri, [p["name"] for p in profiles], int(summary["users"].sum()), int(summary["users"].max()),
                   known_id, low_id)  # fmt: skip


def visit_every_page(browser, url: str, exp: Expect, shots: Path) -> None:
    """Open each page like a person would, wait for its charts, check the text, take screenshots."""
    page = open_page(browser, url, height=1500)
    settle(page, 1)
    body = page.inner_text("body")
    assert "Active users / day" in body and "Last pipeline runs" in body and "Traceback" not in body
    assert fmt_int(exp.customers) in body
    shot(page, shots, "overview")
    page.close()

    page = open_page(browser, f"{url}/segments", height=2400)
    settle(page, 2)
    body = page.inner_text("body")
    assert all(name in body for name in exp.segment_names), (exp.segment_names, body[:2000])
    shot(page, shots, "segments")
    for tab, name, plots in (("Profiles", "segments-profiles", 2), ("Movement between models", "segments-flow", 1)):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(1500)
        assert page.locator(f"{PLOT}:visible").count() >= plots, tab
        shot(page, shots, name)
    page.close()

    page = open_page(browser, f"{url}/lookup", height=1900)
    box = page.get_by_label("User id", exact=True).and_(page.locator("input"))
    box.fill(exp.known_id)
    page.get_by_role("button", name="Look up").click()
    settle(page, 1)
    body = page.inner_text("body")
    assert "Confidence" in body and "Why " in body and any(n in body for n in exp.segment_names)
    assert box.input_value() == ""  # the raw id is not kept in the form
    assert exp.known_id not in body
    shot(page, shots, "lookup")
    box.fill(exp.low_id)
    page.get_by_role("button", name="Look up").click()
    page.get_by_text("Not enough activity yet").first.wait_for(timeout=30_000)
    page.close()

    page = open_page(browser, f"{url}/model", height=1300)
    settle(page, 1)
    body = page.inner_text("body")
    assert "Silhouette" in body and "Choosing k" in body
    shot(page, shots, "model")
    for tab, name in (("Activity threshold", "model-threshold"), ("Feature importance", "model-importance")):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(1500)
        assert page.locator(f"{PLOT}:visible").count() >= 1, tab
        shot(page, shots, name)
    page.close()

    page = open_page(browser, f"{url}/export", height=900)
    page.get_by_role("button", name="Download CSV").wait_for(timeout=60_000)
    with page.expect_download(timeout=60_000) as dl:
        page.get_by_role("button", name="Download CSV").click()
    lines = Path(dl.value.path()).read_text().splitlines()
    root = Path(exp.uri) / "segments"
    version = json.loads((root / "_current.json").read_text())["version"]
    published = pq.read_schema(next((root / version).glob("*.parquet"))).names
    optional = [c for c in ("trust", "lifecycle_stage") if c in published]  # in models since issue 16
    assert lines[0] == ",".join(["user_key", "segment_id", "segment_name", "confidence", "n_events", *optional])
    assert len(lines) - 1 == exp.largest_segment_users
    shot(page, shots, "export")
    page.close()


def test_every_page_on_the_fixture_lake(browser, fixture_lake, tmp_path):
    proc, url = start_server(fixture_lake.uri, tmp_path / "work", tmp_path / "streamlit.log")
    try:
        exp = Expect.of(fixture_lake.uri, fixture_lake.raw_ids["known"], fixture_lake.raw_ids["low"])
        visit_every_page(browser, url, exp, tmp_path / "shots")
    finally:
        stop_server(proc)


@pytest.mark.spark
def test_every_page_on_a_lake_built_by_the_pipeline(browser, pipeline_lake, tmp_path):
    """generate -> ingest -> features -> train/score (twice): the screenshots in README.md and docs/dashboard.md come from here."""
    built = pipeline_lake
    proc, url = start_server(built.uri, tmp_path / "server-work", tmp_path / "streamlit.log")
    try:
        visit_every_page(browser, url, Expect.of(built.uri, built.known_id, built.low_id), SHOTS)
    finally:
        stop_server(proc)


def test_empty_lake_in_a_browser(browser, tmp_path):
    proc, url = start_server(str(tmp_path / "empty"), tmp_path / "work", tmp_path / "log.txt")
    try:
        page = open_page(browser, f"{url}/segments", height=700)
        page.get_by_text("No data yet").wait_for(timeout=60_000)
        assert "Traceback" not in page.inner_text("body")
        page.close()
    finally:
        stop_server(proc)

