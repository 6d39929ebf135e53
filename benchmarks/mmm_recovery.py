"""Marketing-mix recovery study: does the fitted ROI hold on generated truths the model was not tuned to?

For each seed, :func:`etl.media_plan.weekly_truth` (two years, six channels, the generator's spend
patterns unchanged) is fitted with :func:`model.mmm.fit` and every channel's ROI compared with the truth:

- **within 20%**: share of the channels with at least 10% of spend whose posterior median ROI lies within
  20% of the true ROI (goal >= 80%);
- **coverage**: share of those channels whose 90% interval holds the true ROI (goal 80-95%);
- **median absolute error** of the relative ROI error, and the fit time (wall, this shared machine);
- **identifiability**: :func:`model.mmm.identifiability.channel_trust` flags channels whose ROI the data
  cannot pin down; the table counts them apart ("not identifiable", no number) and also gives the
  figures over all channels so nothing is hidden.
- the peer, ``oracle_ols``: least squares told the true adstock and saturation shapes (:func:`oracle`),
  on the same seeds: how close the data let anyone get.

``--variant library`` fits PyMC-Marketing's default priors (HalfNormal on the raw coefficient) instead
of the ROI prior, for the comparison. ``--lift`` adds, per seed, a refit with one generated lift test
for each *weak* channel (90% interval wider than +-20% of its median, a truth-free choice): a hold-out,
the channel dark for 6 weeks from week 40 (or the first 6 weeks after it in which it spends every week), measured as the true lift (:func:`etl.media_plan.true_lift`)
plus Gaussian noise with a standard error of 20% of it.

Runs are appended to ``benchmarks/results/mmm_recovery_runs.jsonl`` (one line per seed and setting; a
rerun skips what is there) and summarized in ``benchmarks/results/mmm_recovery.{json,md}``.
The seeds 1000-1019 and 1100-1119 are never fitted by the tests (the suite's small study uses 900-902).

    nice -n 19 python benchmarks/mmm_recovery.py --seeds 1000-1019 --lift
    nice -n 19 python benchmarks/mmm_recovery.py --seeds 1100-1119 --events 16000   # the event path
    nice -n 19 python benchmarks/mmm_recovery.py --seeds 1100-1103 --events 16000 --lift   # + hold-outs
    nice -n 19 python benchmarks/mmm_recovery.py --seeds 1000-1002 --draws 1000 --tune 1000   # longer chains
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = RESULTS / "mmm_recovery_runs.jsonl"
BIG_SHARE = 0.10
WITHIN = 0.20
LIFT_WEEKS, LIFT_FIRST, LIFT_CHANGE, LIFT_SE = 6, 40, -1.0, 0.20


def seeds_arg(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def generated_lift_tests(truth: Any, data: Any, channels: list[str], seed: int) -> pd.DataFrame:
    """One lift test per channel in ``channels`` (see the module docstring), in the documented layout."""
    from etl.media_plan import CHANNELS, true_lift

    spend = truth.spend.pivot(index="date", columns="channel", values="spend")[list(CHANNELS)].to_numpy()
    rng = np.random.default_rng([seed, 73])
    return pd.DataFrame([
        lift_test_row(ch, spend[:, CHANNELS.index(ch)], data.dates, rng,
                      lambda first, weeks, ch=ch: true_lift(spend, ch, first, weeks, LIFT_CHANGE))
        for ch in channels
    ])  # fmt: skip


def lift_test_row(channel: str, col: np.ndarray, weeks: pd.DatetimeIndex, rng: np.random.Generator,
                  lift_of: Any) -> dict:
    """One hold-out of ``channel`` (spend ``col`` per week): the six weeks from week 40 on, or the next ones
    in which it spends (a test runs live); a channel that never spends six weeks running (campaigns of 3-5
    weeks) is held out for its longest run of spending weeks, the first from week 40 on. ``lift_of(first
    week, weeks)`` gives (spend change, true lift), and the measured lift is the true one plus noise of
    :data:`LIFT_SE` of it."""
    order = [*range(LIFT_FIRST, len(col) - 2 * LIFT_WEEKS), *range(LIFT_FIRST)]
    n_weeks, first = next((n, f) for n in range(LIFT_WEEKS, 0, -1) for f in order if (col[f:f + n] > 0).all())
    extra, lift = lift_of(first, n_weeks)
    se = LIFT_SE * abs(lift)
    return {"channel": channel, "start": str(weeks[first].date()),
            "end": str((weeks[first + n_weeks - 1] + pd.Timedelta(days=6)).date()),
            "spend_change": extra, "revenue_change": lift + rng.normal(0.0, se),
            "revenue_change_se": se, "true_lift": lift}  # fmt: skip


def evaluate(truth_doc: dict, data: Any, result: Any) -> list[dict]:
    from model.mmm import channel_summary
    from model.mmm.identifiability import channel_trust

    summary = channel_summary(result.posterior, data.spend).set_index("channel")
    trust = channel_trust(result.posterior, data.spend).set_index("channel")
    rows = []
    for c in truth_doc["channels"]:
        s, t = summary.loc[c["channel"]], trust.loc[c["channel"]]
        rows.append({"channel": c["channel"], "spend_share": c["spend_share"], "true_roi": c["roi"],
                     "roi": float(s["roi"]), "roi_low": float(s["roi_low"]), "roi_high": float(s["roi_high"]),
                     "error": float(s["roi"] / c["roi"] - 1),
                     "inside": bool(s["roi_low"] <= c["roi"] <= s["roi_high"]),
                     "identifiable": bool(t["identifiable"]), "reasons": t["reasons"],
                     "prior_overlap": float(t["prior_overlap"]), "max_spend_corr": float(t["max_spend_corr"]),
                     "spend_cv": float(t["spend_cv"]), "spend_drift": float(t["spend_drift"]),
                     "roi_rel_width": float(t["roi_rel_width"])})
    return rows


#: The peer's base terms are the model's (``holiday_features``): five holiday weeks since the level change.
ORACLE_TAG = "holidays5"


def model_tag(level_order: int) -> str:
    """Which model a run fitted: ``levelK+trend`` (customer-base level of order K times the base with its
    linear trend, and media), ``level0`` (additive), both with the five holiday weeks of ``holiday_features``.
    Earlier runs: ``level2`` (the level without the trend), none (``v1``: additive, two holiday weeks)."""
    return f"level{level_order}+trend" if level_order else "level0"


def run_seed(seed: int, variant: str, draws: int, tune: int, lift: bool, plain: dict | None = None,
             level_order: int = 2) -> list[dict]:
    """The plain fit of ``seed`` (unless ``plain``, a stored run of it, is given) and, with ``lift``, the
    refit with one lift test per weak channel of the plain fit."""
    from etl.media_plan import weekly_truth
    from model.mmm import FitConfig, clean_kpi, clean_spend, fit, prepare
    from model.mmm.data import clean_lift_tests

    truth = weekly_truth(weeks=104, seed=seed)
    data = prepare(clean_spend(truth.spend)[0], clean_kpi(truth.revenue)[0])
    config = FitConfig(seed=seed, draws=draws, tune=tune, level_order=level_order,
                       **({"roi_prior": None} if variant == "library" else {}))
    out = []
    base = {"seed": seed, "variant": variant, "draws": draws, "tune": tune, "path": "truth",
            "model": model_tag(level_order), "load_avg": os.getloadavg()[0]}
    if plain is None:
        t0 = time.perf_counter()
        result = fit(data, config)
        plain = {**base, "lift_tests": [], "fit_s": time.perf_counter() - t0,
                 "converged": result.diagnostics.converged, "rhat_max": result.diagnostics.rhat_max,
                 "divergences": result.diagnostics.divergences, "channels": evaluate(truth.truth, data, result)}
        out.append(plain)
    rows = plain["channels"]
    weak = [r["channel"] for r in rows if r["roi_rel_width"] > 2 * WITHIN]
    if lift and weak:
        tests = generated_lift_tests(truth, data, weak, seed)
        clean, issues = clean_lift_tests(tests.drop(columns="true_lift"), data)
        assert not issues, issues
        t0 = time.perf_counter()
        result = fit(data, config, lift_tests=clean)
        out.append({**base, "lift_tests": tests.to_dict(orient="records"), "fit_s": time.perf_counter() - t0,
                    "converged": result.diagnostics.converged, "rhat_max": result.diagnostics.rhat_max,
                    "divergences": result.diagnostics.divergences, "channels": evaluate(truth.truth, data, result)})
    return out


def event_series(seed: int, users: int) -> tuple[Any, dict, float]:
    """``generate --marketing`` (two years, ``users`` users), revenue summed per UTC day from the purchases
    in the files (pyarrow; what the lake's series equals, tests/services/jobs/test_mmm.py; ingest itself
    is skipped), made weekly by :func:`model.mmm.prepare` as the job does: (data, truth doc, seconds)."""
    import tempfile
    from datetime import date

    import pyarrow.compute as pc
    from pyarrow import csv

    from etl.generate import generate
    from model.mmm import clean_kpi, clean_spend, prepare

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(tmp, users=users, start=date(2022, 1, 3), months=24, seed=seed, marketing=True)
        daily: dict[str, float] = {}
        for f in sorted(Path(tmp).glob("*.csv.gz")):
            t = csv.read_csv(f, convert_options=csv.ConvertOptions(include_columns=["event_time", "event_type", "price"]))
            t = t.filter(pc.equal(t["event_type"], "purchase"))
            day = pc.utf8_slice_codeunits(pc.cast(t["event_time"], "string"), 0, 10)
            for row in t.append_column("day", day).group_by("day").aggregate([("price", "sum")]).to_pylist():
                daily[row["day"]] = daily.get(row["day"], 0.0) + row["price_sum"]
        kpi = pd.DataFrame({"date": list(daily), "revenue": list(daily.values())})
        spend = pd.read_csv(Path(tmp) / "spend.csv", dtype=str)
        truth_doc = json.loads((Path(tmp) / "_truth" / "mmm.json").read_text())
        generate_s = time.perf_counter() - t0
    return prepare(clean_spend(spend)[0], clean_kpi(kpi)[0]), truth_doc, generate_s


def run_events(seed: int, variant: str, draws: int, tune: int, users: int, level_order: int = 2) -> list[dict]:
    """The event path: ``generate --marketing`` (two years, ``users`` users), revenue summed per UTC day
    from the purchases in the files (pyarrow; what the lake's series equals,
    tests/services/jobs/test_mmm.py; ingest itself is skipped), made weekly by :func:`model.mmm.prepare`
    as the job does, fitted and compared with ``_truth/mmm.json`` (ROIs approximate by a few percent
    there). Also the peer told the true shapes (:func:`ols_told_shapes`) on the same weekly series."""
    from etl.media_plan import shapes, spend_plan
    from model.mmm import FitConfig, fit

    data, truth_doc, generate_s = event_series(seed, users)
    plan_weeks = pd.date_range(truth_doc["first_week"], periods=truth_doc["weeks"], freq="W-MON")
    inside = plan_weeks.isin(data.dates)
    plan_shapes = shapes(spend_plan(plan_weeks, seed))[inside]
    order = [c["channel"] for c in truth_doc["channels"]]
    wide = data.spend[:, [data.channels.index(c) for c in order]]
    config = FitConfig(seed=seed, draws=draws, tune=tune, level_order=level_order,
                       **({"roi_prior": None} if variant == "library" else {}))
    t0 = time.perf_counter()
    result = fit(data, config)
    base = {"seed": seed, "draws": draws, "tune": tune, "path": f"events_{users}_users", "lift_tests": [],
            "model": model_tag(level_order), "load_avg": os.getloadavg()[0],
            "generate_read_s": generate_s, "weekly_revenue_mean": float(np.mean(data.revenue)),
            "weekly_revenue_cv": float(np.std(data.revenue) / np.mean(data.revenue))}
    peer = ols_told_shapes(data.revenue, data.dates, wide, plan_shapes, truth_doc["channels"])
    return [{**base, "variant": variant, "fit_s": time.perf_counter() - t0, "converged": result.diagnostics.converged,
             "rhat_max": result.diagnostics.rhat_max, "divergences": result.diagnostics.divergences,
             "channels": evaluate(truth_doc, data, result)},
            {**base, "variant": "oracle_ols", "model": ORACLE_TAG, "draws": 0, "tune": 0, "fit_s": 0.0,
             "converged": True, **peer}]


def run_events_lift(seed: int, users: int, plain: dict, level_order: int = 2) -> dict:
    """The event path refitted with one hold-out per weak channel of its stored plain fit ``plain``: the
    channel dark for six weeks (from week 40, or the next weeks in which it spends), its true lift the
    expected counterfactual of the generator's simulation (``mmm_counterfactual.expected_lift``, by
    ``etl.media_plan.SessionResponse.hold_out``) plus
    Gaussian noise with a standard error of 20% of it, as on the truth level."""
    from mmm_counterfactual import World, expected_lift

    from etl.media_plan import CHANNELS
    from model.mmm import FitConfig, fit
    from model.mmm.data import clean_lift_tests

    data, truth_doc, _ = event_series(seed, users)
    world = World(seed, users)
    response = world.response(world.simulate((), draw=0))
    rng = np.random.default_rng([seed, 73])
    weak = [r["channel"] for r in plain["channels"] if r["roi_rel_width"] > 2 * WITHIN]
    tests = pd.DataFrame([
        lift_test_row(ch, world.spend[:, CHANNELS.index(ch)], world.weeks, rng,
                      lambda first, weeks, c=CHANNELS.index(ch): expected_lift(world, response, c, first, weeks))
        for ch in weak
    ])  # fmt: skip
    clean, issues = clean_lift_tests(tests.drop(columns="true_lift"), data)
    assert not issues, issues
    config = FitConfig(seed=seed, draws=plain["draws"], tune=plain["tune"], level_order=level_order)
    t0 = time.perf_counter()
    result = fit(data, config, lift_tests=clean)
    return {**{k: plain[k] for k in ("seed", "variant", "draws", "tune", "path", "model")},
            "load_avg": os.getloadavg()[0], "lift_tests": tests.to_dict("records"), "fit_s": time.perf_counter() - t0,
            "converged": result.diagnostics.converged, "rhat_max": result.diagnostics.rhat_max,
            "divergences": result.diagnostics.divergences, "channels": evaluate(truth_doc, data, result)}


def ols_told_shapes(y: np.ndarray, dates: pd.DatetimeIndex, spend: np.ndarray, shape: np.ndarray,
                    truth_channels: list[dict], level: bool = False) -> dict:
    """The peer: least squares that is *told* each channel's true adstock and saturation shape.

    Revenue regressed on the truth's saturated adstocked spend plus the model's base terms (intercept,
    holiday weeks, two yearly Fourier orders, and a linear trend); ROI = coefficient x sum(shape) / spend,
    with a Normal 90% interval from the standard error. What the data allow when nothing but the scale of
    each effect is unknown: an upper bound for any additive model with constant effects that must also
    learn the shapes. ``level``: the model's form instead, everything times ``exp(k1 tau + k2 tau^2)``
    (the customer-base level of ``model.mmm.fit.customer_base_level``, no separate trend), by nonlinear
    least squares with delta-method intervals. ``resid_share``: residual sd / mean weekly revenue.
    """
    from scipy import stats
    from scipy.optimize import least_squares

    from model.mmm.data import holiday_features

    n = len(y)
    doy = dates.dayofyear.to_numpy()
    tau = np.arange(n) / n
    base = [np.ones(n), *([] if level else [tau]), *holiday_features(dates).to_numpy().T]
    base += [f(2 * np.pi * m * doy / 365.25) for m in (1, 2) for f in (np.sin, np.cos)]
    x = np.column_stack([*base, shape])
    k, c_n = len(base), shape.shape[1]

    def mean(p: np.ndarray) -> np.ndarray:
        return (x @ p[: k + c_n]) * (np.exp(p[k + c_n] * tau + p[k + c_n + 1] * tau**2) if level else 1.0)

    def roi_of(p: np.ndarray) -> np.ndarray:
        lvl = np.exp(p[k + c_n] * tau + p[k + c_n + 1] * tau**2) if level else np.ones(n)
        return p[k : k + c_n] * (shape * lvl[:, None]).sum(axis=0) / spend.sum(axis=0)

    p0 = np.r_[np.linalg.lstsq(x, y, rcond=None)[0], np.zeros(2 if level else 0)]
    fitted = least_squares(lambda p: (mean(p) - y) / y.mean(), p0, method="lm") if level else None
    p = fitted.x if level else p0
    resid = y - mean(p)
    jac = fitted.jac * y.mean() if level else x
    cov = resid @ resid / (n - len(p)) * np.linalg.pinv(jac.T @ jac)
    roi = roi_of(p)
    step = 1e-6 * np.maximum(np.abs(p), 1e-3)
    grad = np.column_stack([(roi_of(p + np.eye(len(p))[i] * step[i]) - roi) / step[i] for i in range(len(p))])
    se = np.sqrt(np.einsum("ci,ij,cj->c", grad, cov, grad))
    z = stats.norm.ppf(0.95)
    rows = []
    for j, c in enumerate(truth_channels):
        rows.append({"channel": c["channel"], "spend_share": c["spend_share"], "true_roi": c["roi"],
                     "roi": float(roi[j]), "roi_low": float(roi[j] - z * se[j]), "roi_high": float(roi[j] + z * se[j]),
                     "error": float(roi[j] / c["roi"] - 1),
                     "inside": bool(abs(roi[j] - c["roi"]) <= z * se[j]), "identifiable": True})
    return {"channels": rows, "resid_share": float(resid.std() / y.mean())}


def oracle(seed: int) -> dict:
    """:func:`ols_told_shapes` on the truth-level series of ``seed``."""
    from etl.media_plan import CHANNELS, shapes, weekly_truth

    truth = weekly_truth(weeks=104, seed=seed)
    spend = truth.spend.pivot(index="date", columns="channel", values="spend")[list(CHANNELS)].to_numpy()
    dates = pd.DatetimeIndex(truth.revenue["date"])
    peer = ols_told_shapes(truth.revenue["revenue"].to_numpy(), dates, spend, shapes(spend), truth.truth["channels"])
    return {"seed": seed, "variant": "oracle_ols", "model": ORACLE_TAG, "draws": 0, "tune": 0, "path": "truth",
            "lift_tests": [],
            "fit_s": 0.0, "converged": True, **peer}


def read_runs() -> list[dict]:
    if not RUNS.is_file():
        return []
    return [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]


STUDY_CHAINS = (300, 400)  # draws/tune of the study's main runs; other lengths are reported apart


def key(run: dict) -> tuple:
    return (run["seed"], run["variant"], bool(run["lift_tests"]), run["path"], run["draws"], run["tune"],
            run.get("model", "v1"))


def group(run: dict) -> str:
    chains = (run["draws"], run["tune"])
    model = "/" + run.get("model", "v1")
    return (f"{run['path']}/{run['variant']}{model}" + ("/lift" if run["lift_tests"] else "")
            + ("" if chains in (STUDY_CHAINS, (0, 0)) else f"@{chains[0]}/{chains[1]}"))


def metrics(rows: list[dict]) -> dict[str, Any]:
    """The study's figures over channel rows (each: error, inside, identifiable)."""
    if not rows:
        return {"channels": 0}
    err = np.abs([r["error"] for r in rows])
    ident = [r for r in rows if r["identifiable"]]
    return {"channels": len(rows), "within_20": float(np.mean(err <= WITHIN)),
            "coverage_90": float(np.mean([r["inside"] for r in rows])),
            "median_abs_error": float(np.median(err)),
            "not_identifiable": len(rows) - len(ident),
            "identifiable_within_20": float(np.mean([abs(r["error"]) <= WITHIN for r in ident])) if ident else None,
            "identifiable_coverage_90": float(np.mean([r["inside"] for r in ident])) if ident else None}


@functools.cache
def fitted_spend(path: str, seed: int) -> np.ndarray:
    """The weekly spend a run fitted, ``(weeks, channels)`` in :data:`etl.media_plan.CHANNELS` order: the
    truth level's 104 weeks, or the event path's plan (from 2022-01-03) less its partial last week."""
    from etl.media_plan import CHANNELS, spend_plan, weekly_truth

    if path == "truth":
        spend = weekly_truth(weeks=104, seed=seed).spend
        return spend.pivot(index="date", columns="channel", values="spend")[list(CHANNELS)].to_numpy()
    return spend_plan(pd.date_range("2022-01-03", periods=105, freq="W-MON"), seed)[:104]


def reflag(run: dict) -> dict:
    """The run with each channel's flag recomputed by the current rule (the figures are stored; the spend
    drift, added later, is recomputed from the seed's spend)."""
    from etl.media_plan import CHANNELS
    from model.mmm.identifiability import reasons_for, spend_drift

    drift = dict(zip(CHANNELS, spend_drift(fitted_spend(run["path"], run["seed"])), strict=True))

    def one(c: dict) -> dict:
        if "prior_overlap" not in c:
            return c
        c = {"spend_drift": float(drift[c["channel"]]), **c}
        reasons = reasons_for({"most_correlated": "another channel", **c})
        return {**c, "identifiable": not reasons, "reasons": "; ".join(reasons)}

    return {**run, "channels": [one(c) for c in run["channels"]]}


COUNTERFACTUAL = RESULTS / "mmm_counterfactual.json"


def rescored(runs: list[dict]) -> list[dict]:
    """The event-path runs scored against the counterfactual ROI over the complete weeks (the doc as
    ``generate --marketing`` writes it now, stored by ``mmm_counterfactual.py``) instead of the doc they
    were fitted with (runs before that change: the session-share attribution, whole window), as
    ``<path>.cf`` groups; seeds without a counterfactual row are left out."""
    if not COUNTERFACTUAL.is_file():
        return []
    cf = {(r["seed"], r["users"]): dict(zip(r["channels"], r["doc_roi"], strict=True))
          for r in json.loads(COUNTERFACTUAL.read_text())["rows"]}
    out = []
    for r in runs:
        users = int(r["path"].split("_")[1]) if r["path"].startswith("events_") else None
        truth = cf.get((r["seed"], users))
        if truth is None:
            continue
        out.append({**r, "path": r["path"] + ".cf", "channels": [
            {**c, "true_roi": truth[c["channel"]], "error": c["roi"] / truth[c["channel"]] - 1,
             "inside": bool(c["roi_low"] <= truth[c["channel"]] <= c["roi_high"])} for c in r["channels"]]})
    return out


def summarize(runs: list[dict]) -> dict[str, Any]:
    runs = [reflag(r) for r in runs]
    runs = runs + rescored(runs)
    seeds = sorted({r["seed"] for r in runs if r["variant"] == "roi_prior" and r["path"] == "truth" and not r["lift_tests"]})
    runs = runs + [oracle(seed) for seed in seeds]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(group(r), []).append(r)
    out: dict[str, Any] = {}
    for name, rs in sorted(groups.items()):
        big = [c for r in rs for c in r["channels"] if c["spend_share"] >= BIG_SHARE]
        per_channel = {}
        for ch in sorted({c["channel"] for c in big}):
            per_channel[ch] = metrics([c for c in big if c["channel"] == ch])
        out[name] = {"seeds": sorted(r["seed"] for r in rs), "draws": rs[0]["draws"], "tune": rs[0]["tune"],
                     "fit_s_median": float(np.median([r["fit_s"] for r in rs])),
                     "converged": sum(r["converged"] for r in rs), "big_channels": metrics(big),
                     "per_channel": per_channel}
    # the lift tests' effect on the channels they calibrated, paired with the same seed's plain fit
    plain = {key(r)[:2] + key(r)[3:]: r for r in runs if not r["lift_tests"]}
    pairs = []
    for r in runs:
        p = plain.get(key(r)[:2] + key(r)[3:])
        if not r["lift_tests"] or p is None:
            continue
        before = {c["channel"]: c for c in p["channels"]}
        for c in r["channels"]:
            if c["channel"] in {t["channel"] for t in r["lift_tests"]}:
                b = before[c["channel"]]
                pairs.append({"group": group(r), "seed": r["seed"], "variant": r["variant"], "channel": c["channel"],
                              "abs_error_before": abs(b["error"]), "abs_error_after": abs(c["error"]),
                              "rel_width_before": b["roi_rel_width"], "rel_width_after": c["roi_rel_width"],
                              "inside_before": b["inside"], "inside_after": c["inside"]})
    out["lift_effect"] = pairs
    return out


def fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v:.0%}" if pct else f"{v:.2f}"


def write(summary: dict[str, Any], runs: list[dict]) -> None:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    (RESULTS / "mmm_recovery.json").write_text(json.dumps({"when": when, "load_avg": os.getloadavg(),
                                                           "summary": summary}, indent=2) + "\n")
    lines = ["# Marketing-mix recovery study", "",
             f"{when}. `truth/...`: weekly series at the truth level (`weekly_truth`, 104 weeks, six channels, "
             "the generator's spend patterns unchanged); `events_N_users/...`: the event path (`generate "
             "--marketing`, two years, N users, revenue summed per UTC day from the purchases in the generated "
             "files and made weekly by `model.mmm.prepare`; ingest itself skipped; why it misses: "
             "`mmm_event_path.md`, `mmm_counterfactual.md`); `.cf`: the same event-path runs scored against the "
             "expected counterfactual ROI over the complete weeks, as `generate --marketing` writes it in "
             "`_truth/mmm.json` now (stored by `mmm_counterfactual.py`); without `.cf`: against the doc each run "
             "was fitted with (every run so far: the session-share attribution it held before, whole window); "
             "an event-path `/lift` run's hold-outs have that counterfactual as their true lift. `@D/T`: the same seeds refitted with D draws after T tuning steps. Model: `v1` "
             "the additive model with a linear trend and two holiday weeks (runs before the level); `level0` the same "
             "with five holiday weeks; `level2` the customer-base level x (base + media) with five holiday weeks "
             "and no trend (`model.mmm.fit.customer_base_level`); `level2+trend` the same with the linear trend "
             "in the base (the default); "
             "`holidays5`: the peer with the five holiday weeks. Fit times are wall seconds per seed, with the load "
             "average of each run (1 min) in `mmm_recovery_runs.jsonl`. Channels "
             "with >= 10% of spend. `oracle_ols` is the peer told the true adstock and saturation shapes. Machine shared by "
             f"other work (load average {os.getloadavg()[0]:.1f} at writing): fit times are under contention.", "",
             "| setting | seeds | draws/tune | converged | channels | within 20% | 90% coverage | median abs error "
             "| flagged not identifiable | within 20% (identifiable only) | coverage (identifiable only) | fit s (median) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in summary.items():
        if name == "lift_effect":
            continue
        m = g["big_channels"]
        lines.append(f"| {name} | {len(g['seeds'])} | {g['draws']}/{g['tune']} | {g['converged']} | {m['channels']} | "
                     f"{fmt(m['within_20'])} | {fmt(m['coverage_90'])} | {fmt(m['median_abs_error'])} | "
                     f"{m['not_identifiable']} | {fmt(m['identifiable_within_20'])} | "
                     f"{fmt(m['identifiable_coverage_90'])} | {g['fit_s_median']:.0f} |")
    lines += ["", "## Per channel", "", "| setting | channel | n | within 20% | 90% coverage | median abs error | "
              "flagged not identifiable |", "|---|---|---|---|---|---|---|"]
    for name, g in summary.items():
        if name == "lift_effect":
            continue
        for ch, m in g["per_channel"].items():
            lines.append(f"| {name} | {ch} | {m['channels']} | {fmt(m['within_20'])} | {fmt(m['coverage_90'])} | "
                         f"{fmt(m['median_abs_error'])} | {m['not_identifiable']} |")
    pairs = summary["lift_effect"]
    for name, p in pd.DataFrame(pairs).groupby("group") if pairs else []:
        lines += ["", f"## One lift test per weak channel: {name}", "",
                  f"{len(p)} calibrated channel fits over {p['seed'].nunique()} seeds (weak: 90% interval wider "
                  "than +-20% of the median).", "",
                  "| | before | after |", "|---|---|---|",
                  f"| median abs ROI error | {p['abs_error_before'].median():.0%} | {p['abs_error_after'].median():.0%} |",
                  f"| within 20% | {(p['abs_error_before'] <= WITHIN).mean():.0%} | "
                  f"{(p['abs_error_after'] <= WITHIN).mean():.0%} |",
                  f"| median 90% interval width / median | {p['rel_width_before'].median():.2f} | "
                  f"{p['rel_width_after'].median():.2f} |",
                  f"| truth inside the 90% interval | {p['inside_before'].mean():.0%} | {p['inside_after'].mean():.0%} |"]
    lines += ["", "Raw runs (every seed and channel): `benchmarks/results/mmm_recovery_runs.jsonl`."]
    (RESULTS / "mmm_recovery.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=seeds_arg, default=seeds_arg("1000-1019"))
    ap.add_argument("--variant", choices=("roi_prior", "library"), default="roi_prior")
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--tune", type=int, default=400)
    ap.add_argument("--lift", action="store_true", help="also refit with one lift test per weak channel")
    ap.add_argument("--events", type=int, default=0, metavar="USERS",
                    help="the event path instead: generate two years for USERS users per seed, then fit")
    ap.add_argument("--level-order", type=int, default=2,
                    help="powers of time in the customer-base level (0: the additive model)")
    ap.add_argument("--summarize", action="store_true", help="only rewrite the summary from the runs file")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if not args.summarize:
        stored = {key(r): r for r in read_runs()}
        for seed in args.seeds if args.events and args.lift else []:
            tag, path = model_tag(args.level_order), f"events_{args.events}_users"
            plain = stored.get((seed, args.variant, False, path, args.draws, args.tune, tag))
            if plain is None or (seed, args.variant, True, path, args.draws, args.tune, tag) in stored:
                continue
            run = run_events_lift(seed, args.events, plain, args.level_order)
            with RUNS.open("a") as fh:
                fh.write(json.dumps(run) + "\n")
            print(f"seed {seed} events +lift: {run['fit_s']:.0f}s " + " ".join(
                f"{c['channel']} {c['error']:+.0%}{'' if c['inside'] else '!'}" for c in run["channels"]), flush=True)
        for seed in args.seeds if args.events and not args.lift else []:
            tag = model_tag(args.level_order)
            if (seed, args.variant, False, f"events_{args.events}_users", args.draws, args.tune, tag) in stored:
                continue
            for run in run_events(seed, args.variant, args.draws, args.tune, args.events, args.level_order):
                if key(run) not in stored:
                    with RUNS.open("a") as fh:
                        fh.write(json.dumps(run) + "\n")
                print(f"seed {seed} events {run['variant']}: {run['fit_s']:.0f}s "
                      + " ".join(f"{c['channel']} {c['error']:+.0%}{'' if c['inside'] else '!'}"
                                 f"{'' if c['identifiable'] else '?'}" for c in run["channels"]), flush=True)
            write(summarize(read_runs()), read_runs())
        for seed in [] if args.events else args.seeds:
            tag = model_tag(args.level_order)
            plain = stored.get((seed, args.variant, False, "truth", args.draws, args.tune, tag))
            if plain is not None and (not args.lift or (seed, args.variant, True, "truth", args.draws, args.tune, tag)
                                      in stored):
                continue
            for run in run_seed(seed, args.variant, args.draws, args.tune, args.lift, plain, args.level_order):
                if key(run) not in stored:
                    with RUNS.open("a") as fh:
                        fh.write(json.dumps(run) + "\n")
                big = [c for c in run["channels"] if c["spend_share"] >= BIG_SHARE]
                print(f"seed {seed} {args.variant}{' +lift' if run['lift_tests'] else ''}: {run['fit_s']:.0f}s "
                      + " ".join(f"{c['channel']} {c['error']:+.0%}{'' if c['inside'] else '!'}"
                                 f"{'' if c['identifiable'] else '?'}" for c in big), flush=True)
            write(summarize(read_runs()), read_runs())
    write(summarize(read_runs()), read_runs())


if __name__ == "__main__":
    main()
