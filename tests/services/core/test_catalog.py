"""The catalog names every lake dataset once, and docs/outputs.md documents exactly those, with the
columns the code writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etl.kpis import KPI_COLUMNS
from services.core.catalog import CATALOG, LEDGERS, RUN_SCOPED, RUNS, VERSIONED
from services.core.lake import RUN_COLUMNS, Lake, runs_table
from services.core.metrics import STAGE_LABELS
from services.core.publish import new_version
from services.core.storage import LocalStore

DOC = Path(__file__).resolve().parents[3] / "docs" / "outputs.md"


def _sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## `([^`]+)`\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_dataset_has_one_section_and_every_section_a_dataset() -> None:
    assert set(_sections()) == {d.path for d in CATALOG} | {RUNS}
    assert len({d.path for d in CATALOG}) == len(CATALOG)
    assert set(RUN_SCOPED) | set(VERSIONED) | set(LEDGERS) == {d.path for d in CATALOG}


def test_documented_columns_are_the_written_ones() -> None:
    from etl.contract import EVENT_COLUMNS, QUARANTINE_COLUMNS
    from services.jobs.segmentation import SEGMENTS_SCHEMA

    sections = _sections()
    for column in (*EVENT_COLUMNS, "line_number", "run_id"):
        assert f"| {column} |" in sections["events"] or column in sections["events"], column
    for column in QUARANTINE_COLUMNS:
        assert f"`{column}`" in sections["quarantine"], column
    for column in SEGMENTS_SCHEMA.names:
        assert column in sections["segments"], column
    for column in (*KPI_COLUMNS, *RUN_COLUMNS):
        assert column in sections["views/overview"], column


def test_every_pipeline_stage_is_a_metrics_label_and_writes_what_the_catalog_says() -> None:
    from services.jobs.stages import STAGES

    names = {s.name for s in STAGES}
    assert names <= set(STAGE_LABELS)
    writers = {d.written_by for d in CATALOG}
    # abtest, mmm, compare_models, dossier: user-triggered (an MMM fit needs the marketing team's spend file)
    assert writers <= names | {"ingest", "describe", "segmentation", "abtest", "mmm", "compare_models", "dossier"}


def test_a_failed_publish_leaves_the_previous_version_current(tmp_path: Path) -> None:
    lake = Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")
    with new_version(lake, "views/overview", "v1", run_ids=["r1"]) as staged:
        staged.write_json("freshness.json", {"latest_event_time": None})
    with pytest.raises(RuntimeError), new_version(lake, "views/overview", "v2") as staged:
        staged.write_json("freshness.json", {"latest_event_time": "x"})
        raise RuntimeError("crash before the pointer")
    assert lake.pointer("views/overview")["version"] == "v1"
    assert lake.pointer("views/overview")["run_ids"] == ["r1"]
    assert not lake.store.exists("views/overview/v2/freshness.json")
    assert not any((tmp_path / "work" / "staging").iterdir())
    with pytest.raises(ValueError), new_version(lake, "views/overview", "v3") as staged:
        staged.write_json("bad.json", {"x": float("nan")})  # strict JSON: NaN is refused, not written
    assert lake.current_version("views/overview") == "v1"


def test_runs_table_is_newest_first_and_counts_files() -> None:
    runs = [
        {"run_id": f"2019100{i}T000000Z-00000{i}", "status": "committed", "started_at": f"2019-10-0{i}T00:00:00+00:00",
         "rows_read": 10 * i, "files": [{"name": "a.csv", "status": "ingested"}] * i}
        for i in range(1, 5)
    ]  # fmt: skip
    table = runs_table(runs, keep=3)
    assert list(table.columns) == list(RUN_COLUMNS)
    assert table["run_id"].tolist() == [r["run_id"] for r in runs[::-1][:3]]
    assert table["files"].tolist() == [4, 3, 2]
    assert table["file_names"].iloc[-1] == "a.csv (ingested), a.csv (ingested)"
    assert str(table["started_at"].dt.tz) == "UTC"
