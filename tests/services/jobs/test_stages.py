"""The declared pipeline: when each stage is due, in what order they run, and that the CLI and the
watcher read the same list. Pointers are written by hand, so no Spark is needed here (the watcher
tests run the whole list on a real lake)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.catalog import (
    CATALOG,
    FEATURES,
    OVERVIEW_VIEWS,
    RUNS,
    SEGMENTATION_MODEL,
    SEGMENTS,
)
from services.core.freshness import NAMES, input_versions
from services.core.lake import Lake
from services.core.storage import LocalStore
from services.jobs import stages
from services.jobs.stages import STAGES, PipelineConfig, pending, run_pipeline, stage_named


def _point(lake: Lake, dataset: str, version: str, **meta) -> None:
    lake.write_json(f"{dataset}/_current.json", {"version": version, **meta})


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(LocalStore(tmp_path / "lake"), tmp_path / "work")


def test_the_stages_and_their_order() -> None:
    assert [s.name for s in STAGES] == [
        "erasure", "features", "train", "score", "propensity_train", "propensity_score", "funnel", "clv", "retention",
        "overview", "publish", "retention_policy", "erasure_index"]
    assert [s.name for s in STAGES if not s.spark] == ["publish", "retention_policy", "erasure_index"]  # no SparkSession for the warehouse
    # what `shoplens erase` does not report as a rebuilt result: the erasure and its key index
    assert [s.name for s in STAGES if not s.rebuilds] == ["erasure", "erasure_index"]
    assert stage_named("score") is STAGES[3]
    with pytest.raises(ValueError, match="no stage named"):
        stage_named("nope")


def test_nothing_is_due_on_an_empty_lake(lake: Lake) -> None:
    assert pending(lake, PipelineConfig()) == [("train", "no model yet")]
    assert stage_named("score").due(lake, PipelineConfig()) == (False, "no model yet")


def test_a_new_run_makes_features_and_overview_due(lake: Lake) -> None:
    lake.write_run({"run_id": "r1", "status": "committed", "files": []})
    lake.write_run({"run_id": "r0", "status": "failed", "files": []})  # not committed: never counts
    due = dict(pending(lake, PipelineConfig()))
    assert due["features"] == "1 committed run(s) not folded"
    assert due["overview"] == "no overview views yet"
    _point(lake, FEATURES, "f1", category_prices_version="f1", folded_run_ids=["r1"])
    _point(lake, OVERVIEW_VIEWS, "o1", run_ids=["r1"])
    assert stages.features_due(lake, PipelineConfig()) == (False, "up to date")
    # features f1 is not in the SQL warehouse yet
    # the funnel, lifetime values and retention have not been built from r1 yet
    assert dict(pending(lake, PipelineConfig())).keys() == {"train", "propensity_train", "funnel", "clv", "retention",
                                                            "publish"}  # fmt: skip


def test_score_is_due_for_new_features_or_a_new_model(lake: Lake) -> None:
    _point(lake, FEATURES, "f1")
    _point(lake, SEGMENTATION_MODEL, "m1")
    assert stage_named("score").due(lake, PipelineConfig()) == (True, "no segments yet")
    _point(lake, SEGMENTS, "s1", model_version="m1", features_version="f1")
    assert stage_named("score").due(lake, PipelineConfig()) == (False, "up to date")
    _point(lake, FEATURES, "f2")
    assert stage_named("score").due(lake, PipelineConfig()) == (True, "new features")
    _point(lake, SEGMENTS, "s2", model_version="m1", features_version="f2")
    _point(lake, SEGMENTATION_MODEL, "m2")
    assert stage_named("score").due(lake, PipelineConfig()) == (True, "a new model")


def test_run_pipeline_asks_each_stage_just_before_it_runs(lake: Lake, monkeypatch) -> None:
    """An earlier stage changes what a later one sees: here 'features' makes 'score' due."""
    ran: list[str] = []

    def fake(name, due_after=None):
        def run(_spark, lk, _cfg):
            ran.append(name)
            if due_after:
                due_after(lk)
            return {"status": name}

        return run

    flags = {"score": False}
    fakes = (
        stages.Stage("features", lambda lk, c: (True, "x"), fake("features", lambda lk: flags.update(score=True))),
        stages.Stage("score", lambda lk, c: (flags["score"], "y"), fake("score")),
        stages.Stage("overview", lambda lk, c: (False, "z"), fake("overview")),
    )
    monkeypatch.setattr(stages, "STAGES", fakes)
    started = []
    out = run_pipeline(lambda: started.append(1) or "spark", lake, PipelineConfig())
    assert ran == ["features", "score"] and out["ran"] == ran
    assert out["why"] == {"features": "x", "score": "y"} and out["score"] == {"status": "score"}
    flags["score"] = False
    monkeypatch.setattr(stages, "STAGES", fakes[1:])
    started.clear()
    assert run_pipeline(lambda: started.append(1) or "spark", lake, PipelineConfig())["ran"] == []
    assert started == []  # nothing due: no Spark session is asked for


def test_publish_is_due_when_a_lake_version_is_not_in_the_warehouse_yet(lake: Lake, tmp_path: Path) -> None:
    db = tmp_path / "wh.db"
    cfg = PipelineConfig(warehouse_url=f"sqlite:///{db}")
    assert stages.stage_named("publish").due(lake, cfg) == (False, "nothing published in the lake yet")
    _point(lake, SEGMENTS, "s1", model_version="m1")
    assert stages.stage_named("publish").due(lake, cfg) == (True, "new lake versions for segments")
    assert not db.exists()  # asking is read-only


def test_every_stage_declares_catalog_datasets() -> None:
    known = {d.path for d in CATALOG} | {RUNS}
    for stage in STAGES:
        assert {r.dataset for r in stage.reads} | set(stage.writes) <= known, stage.name
    assert stage_named("funnel").reads == stage_named("clv").reads == stage_named("retention").reads
    with pytest.raises(ValueError, match="must declare reads and writes"):
        stages.Stage("nothing", None, lambda *_: {})


@pytest.mark.parametrize("name", ["score", "propensity_score", "funnel", "clv", "retention", "overview"])
def test_one_rule_from_the_versions_each_result_records(lake: Lake, name: str) -> None:
    """Due before the first output, not after an output recording today's inputs, and again when any
    input moves on (the reason names it); a required input missing means nothing to build from."""
    stage = stage_named(name)
    due = lambda: stage.due(lake, PipelineConfig())  # noqa: E731
    assert due()[0] is False  # no inputs yet
    lake.write_run({"run_id": "r1", "status": "committed", "files": []})
    for r in stage.reads:
        if r.dataset != RUNS:
            _point(lake, r.dataset, "v1")
    assert due() == (True, f"no {NAMES[stage.writes[0]][0]} yet")
    _point(lake, stage.writes[0], "o1", **input_versions(lake, stage.reads))
    assert due() == (False, "up to date")
    for r in stage.reads:
        if r.dataset == RUNS:
            lake.write_run({"run_id": "r2", "status": "committed", "files": []})
        else:
            _point(lake, r.dataset, "v2")
        assert due() == (True, NAMES[r.dataset][1])
        _point(lake, stage.writes[0], "o2", **input_versions(lake, stage.reads))
        assert due() == (False, "up to date")
