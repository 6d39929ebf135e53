"""``shoplens abtest``: analyze files end to end (bad rows, degenerate data, the published report),
metrics from a generated lake checked against pandas on the raw CSV, plan and simulate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest
from typer.testing import CliRunner

from etl.pseudonymize import pseudonymize
from services.cli import app
from services.core.catalog import EXPERIMENTS
from tests.conftest import TEST_KEY
from tests.services.jobs.abtest_data import experiment_file, experiment_frame, write_experiment

TIGHT = {"rel": 1e-9, "abs": 1e-12}
runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, ["abtest", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _published(settings, version: str) -> Path:
    return Path(settings.lake) / EXPERIMENTS / version


@pytest.mark.spark
def test_analyze_counts_bad_rows_per_reason_and_matches_scipy_on_the_clean_rows(spark, cli_env, settings, tmp_path):
    f = experiment_file(tmp_path / "promo.csv", 5_000, seed=3, conversion_lift=0.25)
    doc = invoke("analyze", str(f.path), "--out", str(tmp_path / "out"))
    assert doc["rejected"] == f.bad
    assert next(iter(doc)) == "srm"  # the verdict comes first
    clean = f.frame.iloc[: 5_000].drop(index=1)  # row 1's user also appears in another variant
    counts = clean["variant"].value_counts()
    assert doc["srm"]["observed"] == {"control": int(counts["control"]), "promo": int(counts["promo"])}
    assert doc["srm"]["p_value"] == pytest.approx(stats.chisquare(counts[["control", "promo"]]).pvalue, **TIGHT)
    assert doc["control"] == "control" and doc["users"] == len(clean)

    bought = {v: g["purchased"].astype(int) for v, g in clean.groupby("variant")}
    conv = next(m for m in doc["metrics"] if m["metric"] == "purchased")
    assert conv["kind"] == "conversion"
    c = conv["comparisons"][0]
    _, p = proportions_ztest([bought["promo"].sum(), bought["control"].sum()], [len(bought["promo"]), len(bought["control"])])
    assert c["p_value"] == pytest.approx(p, **TIGHT)
    assert c["lift_abs"] == pytest.approx(bought["promo"].mean() - bought["control"].mean(), **TIGHT)
    assert {v["variant"]: v["users"] for v in conv["variants"]} == {k: len(b) for k, b in bought.items()}
    revenue = next(m for m in doc["metrics"] if m["metric"] == "revenue")
    assert revenue["comparisons"][0]["variance_reduction"] is not None  # pre_revenue is a CUPED covariate
    assert {s["segment"] for s in conv["segments"]} == set(clean["segment"])
    assert 0 <= c["p_value_adjusted"] <= 1 and c["p_value_adjusted"] >= c["p_value"]

    folder = _published(settings, doc["version"])
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.md", "result.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.md", "result.json"]
    md = (folder / "report.md").read_text()
    assert md.splitlines()[2].startswith("**Sample ratio OK")
    html = (folder / "report.html").read_text()
    assert html.index("Sample ratio") < html.index("purchased (conversion)") and "plotly" in html
    assert json.loads((folder / "result.json").read_text())["rejected"] == f.bad
    pointer = json.loads((Path(settings.lake) / EXPERIMENTS / "_current.json").read_text())
    assert pointer["version"] == doc["version"] and pointer["name"] == "promo"
    raw_ids = set(f.frame["user_id"]) - {""}
    for path in [*folder.iterdir(), Path(settings.lake) / EXPERIMENTS / "_current.json"]:
        text = path.read_text()
        assert not any(u in text for u in list(raw_ids)[:2000]), path


@pytest.mark.spark
def test_parquet_input_flags_a_sample_ratio_mismatch_and_applies_the_chosen_tests(spark, cli_env, tmp_path):
    frame = experiment_frame(6_000, seed=4, variants=("control", "a", "b"), split=(0.4, 0.3, 0.3))
    path = write_experiment(tmp_path / "split.parquet", frame)
    doc = invoke("analyze", str(path), "--metric", "purchased", "--planned-split", "1/1/1",
                 "--correction", "bh", "--alternative", "greater", "--margin", "0.01")  # fmt: skip
    assert doc["srm"]["mismatch"] is True and doc["srm"]["p_value"] < 1e-3
    assert doc["settings"]["correction"] == "fdr_bh" and doc["settings"]["margin"] == 0.01
    comps = doc["metrics"][0]["comparisons"]
    assert [c["variant"] for c in comps] == ["a", "b"]
    assert all(c["ci_high"] is None and c["test"] == "wald_z" for c in comps)  # one-sided, non-inferiority
    planned = invoke("analyze", str(path), "--metric", "purchased", "--planned-split", "control=40,a=30,b=30")
    assert planned["srm"]["mismatch"] is False


@pytest.mark.spark
def test_degenerate_data_gives_named_warnings_not_a_traceback(spark, cli_env, tmp_path):
    zero = write_experiment(tmp_path / "zero.csv", experiment_frame(300, seed=5).assign(purchased="0", revenue="3.5"))
    doc = invoke("analyze", str(zero), "--metric", "purchased", "--metric", "revenue", "--no-cuped")
    warnings = {m["metric"]: m["comparisons"][0]["warnings"] for m in doc["metrics"]}
    assert "no_conversions" in warnings["purchased"] and warnings["revenue"] == ["zero_variance"]
    assert all(m["comparisons"][0]["p_value"] is None for m in doc["metrics"])
    empty_arm = invoke("analyze", str(zero), "--metric", "purchased", "--control", "nobody")
    assert empty_arm["metrics"][0]["comparisons"][0]["warnings"] == ["empty_arm"]
    allbad = write_experiment(tmp_path / "bad.csv", experiment_frame(20, seed=6).assign(variant=""))
    doc = invoke("analyze", str(allbad), "--metric", "purchased")
    assert doc["warnings"] == ["no_accepted_rows"] and doc["rejected"] == {"missing_variant": 20}
    human = runner.invoke(app, ["abtest", "analyze", str(allbad), "--metric", "purchased"])
    assert human.exit_code == 0 and "warning: no_accepted_rows" in human.stdout


@pytest.mark.spark
def test_sequential_analysis_reports_one_look_per_assignment_day(spark, cli_env, tmp_path):
    f = experiment_file(tmp_path / "seq.csv", 3_000, seed=7, bad_rows=False)
    doc = invoke("analyze", str(f.path), "--metric", "revenue", "--sequential")
    days = sorted({r["date"] for r in doc["sequential"]})
    assert days == sorted(set(f.frame["assigned_at"].str[:10]))
    last = next(r for r in doc["sequential"] if r["date"] == days[-1])
    final = doc["metrics"][0]["comparisons"][0]
    assert last["lift_abs"] == pytest.approx(final["lift_abs"], **TIGHT)
    assert last["sequential_ci_low"] < final["ci_low"] and final["ci_high"] < last["sequential_ci_high"]


def test_known_errors_are_one_line_messages(cli_env, tmp_path):
    env = {**os.environ, **cli_env}
    bad = tmp_path / "novariant.csv"
    pd.DataFrame({"user_id": ["1", "2"], "purchased": ["0", "1"]}).to_csv(bad, index=False)
    cli = [sys.executable, "-m", "services", "abtest"]
    for args, message in [
        (["analyze", str(tmp_path / "missing.csv")], "no such experiment file"),
        (["analyze", str(bad)], "missing columns ['variant']"),
        (["analyze", str(bad), "--alternative", "two-sided", "--margin", "0.1"], "non-inferiority margin"),
        (["plan", "--kind", "conversion"], "give --baseline"),
    ]:
        done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 1, (args, done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("shoplens: error:") and message in last, (args, last)


def test_plan_equals_statsmodels_and_prints_a_power_curve():
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    doc = invoke("plan", "--baseline", "0.04", "--mde", "0.15", "--daily-users", "3000")
    n = NormalIndPower().solve_power(proportion_effectsize(0.046, 0.04), alpha=0.05, power=0.8)
    assert doc["plan"]["users_per_arm"] == int(np.ceil(n))
    assert doc["plan"]["days"] == int(np.ceil(2 * np.ceil(n) / 3000))
    at_needed = next(r for r in doc["power_curve"] if r["users_per_arm"] == doc["plan"]["users_per_arm"])
    assert at_needed["power"] == pytest.approx(0.8, abs=1e-3)
    means = invoke("plan", "--kind", "mean", "--baseline", "20", "--sd", "40", "--mde", "1", "--mde-kind", "absolute")
    d = 1 / 40
    assert means["plan"]["users_per_arm"] == int(np.ceil(NormalIndPower().solve_power(d, alpha=0.05, power=0.8)))
    human = runner.invoke(app, ["abtest", "plan", "--baseline", "0.04", "--mde", "0.15"])
    assert "power curve:" in human.stdout and "users per arm" in human.stdout


# ------------------------------------------------------------------------------------ the lake
@pytest.fixture(scope="module")
def lake_env(spark, tmp_path_factory):
    """A generated month ingested into a tmp lake, features and segments published, plus assignments."""
    from etl.generate import generate
    from services.core.runtime import open_lake
    from services.core.settings import Settings
    from services.jobs.features import run_features
    from services.jobs.ingest import ingest_files
    from services.jobs.segmentation import train

    root = tmp_path_factory.mktemp("ablake")
    summary = generate(root / "raw", users=400, start=date(2019, 10, 1), months=1, seed=11)
    settings = Settings(lake=str(root / "lake"), work_dir=root / "work", pseudonym_key=TEST_KEY, spark_master="local[2]")
    lake = open_lake(settings)
    files = [root / "raw" / f for f in summary.files]
    assert ingest_files(spark, lake, files, TEST_KEY.encode())["status"] == "committed"
    run_features(spark, lake)
    train(spark, lake)
    raw = pd.concat([pd.read_csv(f, dtype={"user_id": str}) for f in files], ignore_index=True)
    raw["event_time"] = pd.to_datetime(raw["event_time"].str.replace(" UTC", ""), utc=True)
    users = raw["user_id"].drop_duplicates().sort_values().to_numpy()
    rng = np.random.default_rng(2)
    chosen = rng.choice(users, 300, replace=False)
    assigned = pd.Timestamp("2019-10-12", tz="UTC") + pd.to_timedelta(rng.integers(0, 3 * 86_400, len(chosen)), unit="s")
    assignments = pd.DataFrame({"user_id": [*chosen, "777000777"],  # the last user never came
                                "variant": [*rng.choice(["control", "promo"], len(chosen)), "promo"],
                                "assigned_at": [*assigned.strftime("%Y-%m-%dT%H:%M:%SZ"), "2019-10-12T00:00:00Z"]})  # fmt: skip
    assignments.loc[0, "variant"] = "control"
    path = root / "assignments.csv"
    assignments.to_csv(path, index=False)
    return {"settings": settings, "raw": raw, "assignments": assignments, "path": path, "lake": lake}


def _expected_metrics(raw: pd.DataFrame, assignments: pd.DataFrame, window: timedelta) -> pd.DataFrame:
    """Each assigned user's metrics computed from the raw CSV with pandas (independently of Spark)."""
    a = assignments.assign(assigned_at=pd.to_datetime(assignments["assigned_at"], utc=True))
    ev = raw.merge(a, on="user_id", how="inner")
    out = a.set_index("user_id")
    for prefix, lo, hi in (("", ev["assigned_at"], ev["assigned_at"] + window),
                           ("pre_", ev["assigned_at"] - timedelta(days=28), ev["assigned_at"])):  # fmt: skip
        inside = ev[(ev["event_time"] >= lo) & (ev["event_time"] < hi)]
        buys = inside[inside["event_type"] == "purchase"]
        out[f"{prefix}purchased"] = buys.groupby("user_id").size().reindex(out.index).gt(0).astype(float)
        out[f"{prefix}revenue"] = buys.groupby("user_id")["price"].sum().reindex(out.index).fillna(0.0)
        out[f"{prefix}sessions"] = inside.groupby("user_id")["user_session"].nunique().reindex(out.index).fillna(0.0)
    return out.reset_index()


@pytest.mark.spark
@pytest.mark.slow
def test_from_lake_metrics_equal_pandas_on_the_raw_events(lake_env, monkeypatch):
    env = lake_env
    for k, v in {"SHOPLENS_LAKE": env["settings"].lake, "SHOPLENS_WORK_DIR": str(env["settings"].work_dir),
                 "SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_SPARK_MASTER": "local[2]"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    from services.core.settings import get_settings

    get_settings.cache_clear()
    doc = invoke("analyze", str(env["path"]), "--from-lake", "--window", "14d")
    get_settings.cache_clear()
    expected = _expected_metrics(env["raw"], env["assignments"], timedelta(days=14))
    assert doc["source"]["kind"] == "lake" and doc["users"] == len(expected) and doc["rejected"] == {}
    by_variant = expected.groupby("variant")
    for metric in doc["metrics"]:
        name = metric["metric"]
        want = by_variant[name].agg(["size", "mean"])
        got = {v["variant"]: (v["users"], v["mean"]) for v in metric["variants"]}
        for variant, row in want.iterrows():
            assert got[variant][0] == row["size"]
            assert got[variant][1] == pytest.approx(row["mean"], rel=1e-9, abs=1e-12), (name, variant)
    # CUPED: the theta fitted from the pre-period equals the pooled regression slope from pandas
    sessions = next(m for m in doc["metrics"] if m["metric"] == "sessions")["comparisons"][0]
    cov = np.cov(expected["sessions"], expected["pre_sessions"], ddof=1)
    assert sessions["cuped_theta"] == pytest.approx(cov[0, 1] / cov[1, 1], rel=1e-9)
    # segments come from the published segments table
    segs = {s["segment"] for s in doc["metrics"][0]["segments"]}
    assert "(not in segments)" in segs and len(segs) >= 2
    keys = {pseudonymize(u, TEST_KEY.encode()) for u in env["assignments"]["user_id"]}
    stored = (Path(env["settings"].lake) / EXPERIMENTS / doc["version"] / "result.json").read_text()
    assert not any(u in stored for u in env["assignments"]["user_id"]) and not any(k in stored for k in keys)


@pytest.mark.spark
@pytest.mark.slow
def test_plan_from_the_lake_and_simulate_on_its_users(lake_env, monkeypatch):
    env = lake_env
    for k, v in {"SHOPLENS_LAKE": env["settings"].lake, "SHOPLENS_WORK_DIR": str(env["settings"].work_dir),
                 "SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_SPARK_MASTER": "local[2]"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    from services.core.readers import read_segments
    from services.core.settings import get_settings

    get_settings.cache_clear()
    segments = read_segments(env["lake"])
    name = segments["segment_name"].value_counts().index[0]
    doc = invoke("plan", "--segment", name, "--window", "7d", "--mde", "0.2")
    base = doc["lake_baseline"]
    raw = env["raw"].assign(user_key=env["raw"]["user_id"].map(lambda u: pseudonymize(u, TEST_KEY.encode())))
    end = raw["event_time"].max()
    recent = raw[(raw["event_time"] > end - timedelta(days=7)) & raw["user_key"].isin(
        segments.loc[segments["segment_name"] == name, "user_key"])]  # fmt: skip
    active = recent["user_key"].nunique()
    bought = recent[recent["event_type"] == "purchase"]["user_key"].nunique()
    assert base["users"] == active and base["daily_users"] == pytest.approx(active / 7)
    assert base["purchased"]["mean"] == pytest.approx(bought / active, **TIGHT)
    assert doc["plan"]["baseline"] == pytest.approx(bought / active, **TIGHT)

    aa = invoke("simulate", "--repetitions", "400", "--seed", "3")
    assert aa["aa_test"] is True
    assert all(r["verdict"] == "false positives" and r["power"] <= 0.12 for r in aa["overall"])
    promo = invoke("simulate", "--conversion-lift", "3.0", "--responding", name, "--repetitions", "200", "--seed", "4")
    rows = {(r["metric"], r["segment"]): r for r in promo["segments"]}
    responding = rows[("conversion", name)]
    assert responding["responds"] and responding["true_lift"] > 0.5 and responding["power"] > aa["overall"][0]["power"]
    assert all(not r["responds"] for (metric, seg), r in rows.items() if seg != name)
    get_settings.cache_clear()
