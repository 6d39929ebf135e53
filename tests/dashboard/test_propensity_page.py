"""AppTest of the Propensity page and the propensity on the lookup page, on the fixture lake + a real
(small) propensity model published with the job's own view builders."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from etl.labels import Cutoffs
from model.propensity import MODEL_FEATURES, compare_models
from services.core.catalog import PROPENSITY, PROPENSITY_MODEL
from services.core.lake import Lake
from services.core.publish import new_version
from services.core.storage import LocalStore
from services.jobs.propensity import SCORES_SCHEMA, PropensityConfig, _views, metrics_document
from tests.dashboard.fixtures import open_page
from tests.dashboard.test_pages import metric

CUTS = pd.to_datetime(["2019-11-02", "2019-11-09", "2019-11-16", "2019-11-23"], utc=True)


@pytest.fixture(scope="module")
def propensity_lake(fixture_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("plake") / "lake"
    shutil.copytree(fixture_lake.root, root)
    lake = Lake(LocalStore(root), root.parent / "work")
    rng = np.random.default_rng(0)
    n = 600
    parts = []
    for c in CUTS:
        df = pd.DataFrame({f: rng.gamma(2.0, 2.0, n) for f in MODEL_FEATURES})
        df["label"] = (rng.random(n) < 1 / (1 + np.exp(-(-3 + 0.4 * df["carts_7d"])))).astype(int)
        df["cutoff"] = c
        parts.append(df)
    ex = pd.concat(parts, ignore_index=True)
    train, val = ex[ex["cutoff"] < CUTS[-1]], ex[ex["cutoff"] == CUTS[-1]]
    with threadpool_limits(1):
        comp = compare_models(train, val, params={"boosted": {"max_iter": 30}})
    cuts = Cutoffs(tuple(c.to_pydatetime() for c in CUTS[:-1]), CUTS[-1].to_pydatetime(), 7)
    doc = metrics_document(comp, cuts, "20191201T000000Z-pppppp", ex, PropensityConfig(), None)
    with new_version(lake, PROPENSITY_MODEL, "20191201T000000Z-pppppp", trained_at=doc["trained_at"]) as staged:
        staged.write_json("metrics.json", doc)
        for name, df in _views(comp).items():
            staged.write_table(f"views/{name}", df)
    keys = fixture_lake.features["user_key"]
    p = rng.beta(1, 10, len(keys))
    scores = pd.DataFrame({"user_key": keys, "propensity": p, "decile": 1 + np.searchsorted(np.quantile(p, np.arange(1, 10) / 10), p),
                           "model_version": "20191201T000000Z-pppppp", "as_of": pd.Timestamp("2019-11-30T23:00", tz="UTC")})  # fmt: skip
    seg = fixture_lake.segments.merge(scores, on="user_key")
    by_seg = [{"segment_name": n, "mean_propensity": float(g["propensity"].mean()), "users": len(g)}
              for n, g in seg.groupby("segment_name")]  # fmt: skip
    with new_version(lake, PROPENSITY, model_version="20191201T000000Z-pppppp", n_users=len(scores),
                     as_of="2019-11-30T23:00:00+00:00", by_segment=by_seg) as staged:  # fmt: skip
        staged.write_table("part-00000", scores, SCORES_SCHEMA)
    return {"root": root, "doc": doc, "scores": scores, "comp": comp}


def test_propensity_page_shows_both_models_and_the_slider_moves_the_audience(use_lake, propensity_lake):
    use_lake(str(propensity_lake["root"]))
    at = open_page("propensity")
    doc = propensity_lake["doc"]
    assert metric(at, "logistic ROC AUC") == f"{doc['models']['logistic']['roc_auc']:.3f}"
    assert metric(at, "boosted ROC AUC") == f"{doc['models']['boosted']['roc_auc']:.3f}"
    grid = propensity_lake["comp"].reports[doc["shipped"]].grid
    want = grid.loc[np.isclose(grid["audience_share"], 0.10)].iloc[0]
    assert metric(at, "Audience") == f"{int(want['targeted']):,}"
    at.slider(key="propensity_share").set_value(30).run()
    want = grid.loc[np.isclose(grid["audience_share"], 0.30)].iloc[0]
    assert metric(at, "Audience") == f"{int(want['targeted']):,}"
    assert metric(at, "Precision") == f"{100 * want['precision']:.1f}%"
    assert len(at.get("plotly_chart")) >= 6
    assert not at.exception


def test_lookup_shows_propensity_and_decile(use_lake, propensity_lake, fixture_lake):
    use_lake(str(propensity_lake["root"]))
    at = open_page("lookup")
    at.text_input[0].input(fixture_lake.raw_ids["known"])
    at.button[0].click().run()
    scores = propensity_lake["scores"].set_index("user_key")
    from etl.pseudonymize import pseudonymize

    row = scores.loc[pseudonymize(fixture_lake.raw_ids["known"], fixture_lake.key)]
    assert metric(at, "Purchase propensity") == f"{100 * row['propensity']:.1f}%"
    assert metric(at, "Propensity decile") == f"{row['decile']} of 10"
