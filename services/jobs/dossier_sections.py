"""The dossier's sections: one small function each, reading one published result of the lake.

A section function takes the lake and returns a :class:`services.reports.dossier.Section`, or None when
its result has not been published (the dossier then simply has no such section). It computes nothing
new: it reads the published documents and tables, picks the figures a reader needs, draws them and
says in a sentence or two what they mean (``insights``, generated from the numbers). Adding a section
is one more function here and one entry in :data:`SECTIONS`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pandas as pd

from model.segmentation.presentation import NOT_ENOUGH_NAME
from services.core.catalog import (
    CLV,
    EXPERIMENTS,
    FUNNEL,
    MMM_MODEL,
    MODEL_COMPARISON,
    PROPENSITY_MODEL,
    RETENTION,
    SEGMENT_VIEWS,
    SEGMENTATION_MODEL,
)
from services.core.documents.registry import read_document
from services.core.documents.segmentation import SegmentationModelDocument
from services.core.erasure_ledger import COMPLETED, PENDING, submissions
from services.core.lake import Lake
from services.reports.clv import GROUP_HEADER, HOLDOUT_HEADER, group_rows, holdout_rows
from services.reports.compare_models import TITLES, table_cells
from services.reports.dossier import (
    Card,
    Section,
    Table,
    bar_chart,
    heatmap_chart,
    histogram_chart,
    line_chart,
    radar_chart,
)
from services.reports.render import fmt_count, fmt_float, fmt_money, fmt_pct
from services.reports.retention import rate_rows, triangle

SectionBuilder = Callable[[Lake], Section | None]


# -- reading ------------------------------------------------------------------------------------------
def published(lake: Lake, dataset: str, name: str) -> tuple[str, Any] | None:
    """(version, JSON document ``name``) of the current version of ``dataset``; None before it exists."""
    version = lake.current_version(dataset)
    if version is None or not lake.store.exists(f"{dataset}/{version}/{name}"):
        return None
    return version, read_document(lake, dataset, version, name)


def _model_document(lake: Lake) -> tuple[str, SegmentationModelDocument] | None:
    """(version, model.json) of the current segmentation model; None before training."""
    version = lake.current_version(SEGMENTATION_MODEL)
    return None if version is None else (version, SegmentationModelDocument.read(lake, version))


def published_table(lake: Lake, dataset: str, version: str, name: str) -> pd.DataFrame | None:
    key = f"{dataset}/{version}/{name}.parquet"
    return pd.read_parquet(io.BytesIO(lake.store.read_bytes(key))) if lake.store.exists(key) else None


# -- sections -----------------------------------------------------------------------------------------
def data_section(lake: Lake) -> Section | None:
    """Sources, period, volumes, quality and quarantine reasons, from the ingestion runs' summaries."""
    runs = [r for r in lake.runs() if r.get("status") == "committed"]
    if not runs:
        return None
    read, accepted = sum(r["rows_read"] for r in runs), sum(r["rows_accepted"] for r in runs)
    quarantined, dupes = sum(r["rows_quarantined"] for r in runs), sum(r["duplicates_removed"] for r in runs)
    reasons: dict[str, int] = {}
    for r in runs:
        for reason, n in (r.get("quarantine_by_reason") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(n)
    first = min(r["event_date_min"] for r in runs if r.get("event_date_min"))
    last = max(r["event_date_max"] for r in runs if r.get("event_date_max"))
    files = [f for r in runs for f in r.get("files", [])]
    s = Section("data", "Data: sources, volumes and quality", f"runs/ ({len(runs)} committed runs)")
    s.figures = {"runs": len(runs), "rows_read": read, "rows_accepted": accepted, "rows_quarantined": quarantined,
                 "duplicates_removed": dupes, "period": [first, last], "quarantine_by_reason": reasons}  # fmt: skip
    s.parts = [
        f"{len(runs)} ingestion runs committed {len(files)} files of events from {first} to {last}. Every row was "
        "validated against the REES46 contract; rows failing it are kept in quarantine with their reason, exact "
        "duplicate lines are removed, and user and session ids are replaced by keyed HMAC pseudonyms before "
        "anything is written (raw ids never reach the lake, the reports or this document).",
        Table("Volumes", ["measure", "rows", "share of read"], [
            ["read", fmt_count(read), fmt_pct(1.0)], ["accepted", fmt_count(accepted), fmt_pct(accepted / read if read else None)],
            ["quarantined", fmt_count(quarantined), fmt_pct(quarantined / read if read else None, 2)],
            ["duplicates removed", fmt_count(dupes), fmt_pct(dupes / read if read else None, 2)]]),
        Table("Runs", ["run", "files", "rows read", "accepted", "quarantined", "period"],
              [[r["run_id"], len(r.get("files", [])), fmt_count(r["rows_read"]), fmt_count(r["rows_accepted"]),
                fmt_count(r["rows_quarantined"]), f"{r.get('event_date_min')} to {r.get('event_date_max')}"] for r in runs]),
    ]  # fmt: skip
    if reasons:
        ordered = sorted(reasons.items(), key=lambda kv: -kv[1])
        s.parts.append(Table("Quarantine reasons", ["reason", "rows"], [[k, fmt_count(v)] for k, v in ordered]))
    s.figures["erasure"] = erasure = erasure_counts(lake)
    s.parts += [
        "Pseudonymization and erasure: the pseudonymization key never enters the lake, so a pseudonym cannot be "
        "turned back into an id from the lake alone. A person who asks to be forgotten is recorded in the erasure "
        "ledger by a one-way digest of their pseudonym (never the id or the pseudonym itself); their rows are "
        "removed from every store, later ingestion drops them, and a scan verifies that none is left.",
        Table("Erasure requests", ["received", "completed", "pending", "verified", "rows removed"],
              [[fmt_count(erasure[k]) for k in ("received", "completed", "pending", "verified", "rows_removed")]]),
    ]  # fmt: skip
    s.cards = [Card("Events accepted", fmt_count(accepted),
                    f"{fmt_pct(accepted / read if read else None)} of {fmt_count(read)} rows read, {first} to {last}.")]  # fmt: skip
    s.insights = [f"{fmt_pct(accepted / read if read else None)} of the {fmt_count(read)} rows read passed the "
                  f"contract ({fmt_count(quarantined)} quarantined, {fmt_count(dupes)} duplicates removed)."]  # fmt: skip
    return s


def erasure_counts(lake: Lake) -> dict[str, int]:
    """Erasure requests received, completed, pending and verified, and the rows removed: counts only."""
    requests = [r for sub in submissions(lake) for r in sub.requests]
    return {"received": len(requests), "completed": sum(r.state == COMPLETED for r in requests),
            "pending": sum(r.state == PENDING for r in requests),
            "verified": sum(r.verified_at is not None for r in requests),
            "rows_removed": sum(int(v.get("rows_removed", 0)) for r in requests for v in r.stores.values())}  # fmt: skip


def features_section(lake: Lake) -> Section | None:
    """The per-user features the segments read, their weights and why some were dropped."""
    doc = _model_document(lake)
    if doc is None:
        return None
    version, m = doc
    weights = sorted(m.feature_weights, key=lambda w: -w.weight)
    s = Section("features", "Per-user features and why", m.key(version))
    s.figures = {"features": list(m.features), "dropped": [d.name for d in m.dropped_features]}
    s.parts = [
        "Each user is described by rates that converge after a few events (view-to-cart, cart-to-purchase, category "
        "and time-of-day shares, price level) rather than totals that only grow with time: a user's segment should "
        "describe how they shop, not how long we have watched them. Rates are shrunk towards the population rate in "
        "proportion to the evidence, and each feature is weighted by how noisy it is on a short history (its "
        "truncation noise), so the features a few events estimate poorly move a segment less.",
        Table("Model features", ["feature", "weight", "truncation noise"],
              [[w.feature, fmt_float(w.weight, 2), fmt_float(w.truncation_noise, 2)] for w in weights]),
    ]  # fmt: skip
    if m.dropped_features:
        s.parts.append(Table("Features left out", ["feature", "reason"], [[d.name, d.reason] for d in m.dropped_features]))
    if weights:
        s.parts.append(bar_chart("features-weights", "Weight of each feature in the segment distance",
                                 [w.feature for w in weights], [w.weight for w in weights], fmt="{:.2f}"))  # fmt: skip
    return s


def threshold_section(lake: Lake) -> Section | None:
    """How many events a segment needs: agreement of the first-n segment with the full-history one."""
    doc = _model_document(lake)
    if doc is None or not doc[1].threshold.curve:
        return None
    version, m = doc
    t, cov = m.threshold.model_dump(), m.coverage.model_dump()
    curve = t["curve"]
    s = Section("threshold", "Trust: how many events a segment needs", m.key(version))
    s.figures = {"chosen_min_events": t["chosen_min_events"], "target": t["target"], "curve": curve,
                 "share_segmented": cov.get("share_segmented")}  # fmt: skip
    chart = line_chart("threshold-agreement", "Agreement of the first-n segment with the full-history segment",
                       [p["n"] for p in curve], {"agreement": [p["agreement"] for p in curve],
                                                 "lower bound": [p["lower"] for p in curve]},
                       xlabel="events (n)", ylabel="agreement", hline=(t["target"], "target"))  # fmt: skip
    s.parts = [
        f"For users with a long history, the segment from their first n events is compared with the segment from all "
        f"of them. The threshold is the smallest n where the {fmt_pct(t['confidence'] or 0, 0)} lower bound of that "
        f"{t['metric']} reaches {fmt_pct(t['target'], 0)}: {t['chosen_min_events']} events. Users with fewer are shown "
        "as 'not enough activity yet' rather than given a segment that would probably change.",
        Table("Threshold study", ["n", "agreement", "lower bound", "ARI", "users"],
              [[p["n"], fmt_pct(p["agreement"]), fmt_pct(p["lower"]), fmt_float(p["ari"], 3), fmt_count(p["users"])]
               for p in curve]),
        chart,
    ]  # fmt: skip
    s.cards = [Card("Events for a trusted segment", str(t["chosen_min_events"]),
                    f"{fmt_pct(cov.get('share_segmented'))} of users have that many and get a segment.", chart)]  # fmt: skip
    s.insights = [f"A segment is trusted from {t['chosen_min_events']} events on; today that covers "
                  f"{fmt_pct(cov.get('share_segmented'))} of users ({fmt_pct(cov.get('share_segmented_20_plus'))} of "
                  "those with 20 or more events)."]  # fmt: skip
    return s


RADAR_AXES = ("n_events", "frequency", "monetary", "view_to_cart_rate", "cart_to_purchase_rate", "price_level",
              "category_diversity", "recency_days")  # fmt: skip


def segments_section(lake: Lake) -> Section | None:
    """Segment profiles (names, descriptions, actions, sizes, revenue), radar charts and lifecycle stages."""
    doc = published(lake, SEGMENTATION_MODEL, "profiles.json")
    if doc is None:
        return None
    version, profiles = doc
    model = SegmentationModelDocument.read(lake, version)
    profiles = sorted(profiles, key=lambda p: -p["size"])
    s = Section("segments", "Segments and lifecycle stages", f"{SEGMENTATION_MODEL}/{version}/profiles.json")
    s.figures = {"k": model.k, "segments": {p["name"]: {"size": p["size"], "share_users": p["share_users"],
                                                           "share_revenue": p["share_revenue"]} for p in profiles}}  # fmt: skip
    axes = [a for a in RADAR_AXES if all(a in p.get("lifts", {}) for p in profiles)]
    radar = radar_chart("segments-radar", "Each segment against the average user (1 = average)",
                        [a.replace("_", " ") for a in axes],
                        {p["name"]: [min(float(p["lifts"][a] or 0), 3.0) for a in axes] for p in profiles},
                        {p["name"]: p["color"] for p in profiles})  # fmt: skip
    sizes = bar_chart("segments-size", "Users and revenue share per segment", [p["name"] for p in profiles],
                      [100 * p["share_revenue"] for p in profiles], xlabel="share of revenue (%)",
                      colors=[p["color"] for p in profiles], fmt="{:.1f}%")  # fmt: skip
    s.parts = [
        f"K-Means in the weighted feature space found {model.k} segments (k chosen by {model.k_rule}); each is "
        "named and described by rules on its profile, and comes with the actions a marketer would take.",
        Table("Segments", ["segment", "users", "share of users", "share of revenue", "buyers"],
              [[p["name"], fmt_count(p["size"]), fmt_pct(p["share_users"]), fmt_pct(p["share_revenue"]),
                fmt_pct(p.get("buyer_share"))] for p in profiles]),
        sizes, radar,
    ]  # fmt: skip
    for p in profiles:
        s.parts.append(f"{p['name']}: {p['description']} Actions: {' '.join(p.get('actions', []))}")
    if model.lifecycle_stages:
        s.parts.append(Table("Lifecycle stages", ["stage", "rule", "action"],
                             [[st.label, st.rule, st.action] for st in model.lifecycle_stages]))
    top = max(profiles, key=lambda p: p["share_revenue"])
    s.cards = [Card("Segments", str(model.k), f"{top['name']} bring {fmt_pct(top['share_revenue'])} of revenue "
                    f"with {fmt_pct(top['share_users'])} of segmented users.", sizes)]  # fmt: skip
    s.insights = [f"{top['name']} are {fmt_pct(top['share_users'])} of segmented users but bring "
                  f"{fmt_pct(top['share_revenue'])} of their revenue."]  # fmt: skip
    views = published_table(lake, SEGMENT_VIEWS, lake.current_version(SEGMENT_VIEWS) or "", "segment_summary")
    if views is not None and views["segment_id"].isna().any():
        waiting = views.loc[views["segment_id"].isna()].iloc[0]
        s.parts.append(f"{fmt_count(waiting['users'])} users ({fmt_pct(waiting['share_users'])}) have not enough activity yet.")
    return s


def _verdict(title: str, t: dict[str, Any]) -> str:
    """One summary sentence per question: the shipped model stays, or which family beats it and by how much
    (the table's gain; the cost of switching is in the section)."""
    if t["winner"] == t["shipped"]:
        return f"{title}: {t['winner']} stays (it is the shipped one)."
    beats = f"{title}: {t['winner']} beats the shipped {t['shipped'].removesuffix(' (shipped)')}"
    return f"{beats}: it {t['gain']}." if t.get("gain") else f"{beats}."  # a comparison from before gains were kept


def comparison_section(lake: Lake) -> Section | None:
    """The model comparison: one table per question, the winner and why."""
    doc = published(lake, MODEL_COMPARISON, "comparison.json")
    if doc is None:
        return None
    version, c = doc
    s = Section("comparison", "Model comparison: why these models", f"{MODEL_COMPARISON}/{version}/comparison.json")
    s.figures = {name: {"winner": t["winner"], "shipped": t["shipped"], "rows": t["rows"]} for name, t in c["tables"].items()}
    s.parts = ["The shipped models were weighed against other families on this lake's own features and on the same "
               f"splits (seed {c['seed']}); `shoplens compare-models` reproduces every figure below."]  # fmt: skip
    for name, t in c["tables"].items():
        header, rows = table_cells(t)
        s.parts += [Table(TITLES.get(name, name), header, rows), f"Winner: {t['winner']}. {t['why']} Rule: {t['rule']}."]
        s.insights.append(_verdict(TITLES.get(name, name), t))
    if "assignment" in c["tables"]:
        t = c["tables"]["assignment"]
        ns = [m for m in t["metrics"] if m.startswith("agreement_n")]
        s.parts.append(line_chart("comparison-assignment", "Agreement with the full-history segment by events seen",
                                  [int(m.removeprefix("agreement_n")) for m in ns],
                                  {r["family"]: [r[m] if r[m] is not None else float("nan") for m in ns] for r in t["rows"]},
                                  xlabel="first n events", ylabel="agreement"))  # fmt: skip
    for name, why in c["skipped"].items():
        s.parts.append(f"{TITLES.get(name, name)}: not answered ({why}).")
    # the news first: a challenger beating a shipped model; else that the first question's model stays
    beats = [i for i in s.insights if "beats" in i]
    s.insights = beats or s.insights[:1]
    return s


def funnel_section(lake: Lake) -> Section | None:
    doc = published(lake, FUNNEL, "result.json")
    if doc is None:
        return None
    version, f = doc
    steps = f["steps"]
    s = Section("funnel", "Funnel: where customers drop out", f"{FUNNEL}/{version}/result.json")
    s.figures = {"steps": {st["step"]: st["count"] for st in steps}, "units": f["units"]}
    chart = bar_chart("funnel-steps", f"Units reaching each step ({f['unit']}, {f['order']}, {f['window_days']:g}-day window)",
                      [st["step"] for st in steps], [st["count"] for st in steps], horizontal=False)  # fmt: skip
    worst = max(steps[1:], key=lambda st: st["dropoff_rate"]) if len(steps) > 1 else steps[0]
    s.parts = [
        " ".join(f["semantics"][:2]),
        Table("Steps", ["step", "units", "from previous", "from first", "drop-off"],
              [[st["step"], fmt_count(st["count"]), fmt_pct(st["conversion_from_previous"]),
                fmt_pct(st["conversion_from_first"]), fmt_count(st["dropoff"])] for st in steps]),
        chart,
    ]  # fmt: skip
    drivers = f.get("top_drivers") or []
    if drivers:
        s.parts.append(Table("Strongest drivers", ["step", "attribute", "value", "units", "conversion", "without", "odds ratio"],
                             [[f"{d['label']} → {d['next_label']}", d["attribute"], d["value"], fmt_count(d["units"]),
                               fmt_pct(d["conversion"]), fmt_pct(d["conversion_without"]), fmt_float(d["odds_ratio"], 2)]
                              for d in drivers[:8]]))  # fmt: skip
    s.cards = [Card("Conversion, first to last step", fmt_pct(steps[-1]["conversion_from_first"]),
                    f"The largest loss is before '{worst['step']}': {fmt_pct(worst['dropoff_rate'])} drop out.", chart)]  # fmt: skip
    s.insights = [f"{fmt_pct(steps[-1]['conversion_from_first'])} of {f['unit']}s who {steps[0]['step']} reach "
                  f"{steps[-1]['step']}; the biggest drop is before {worst['step']} ({fmt_pct(worst['dropoff_rate'])})."]  # fmt: skip
    return s


def propensity_section(lake: Lake) -> Section | None:
    doc = published(lake, PROPENSITY_MODEL, "metrics.json")
    if doc is None:
        return None
    version, m = doc
    shipped = m["models"][m["shipped"]]
    s = Section("propensity", "Purchase propensity", f"{PROPENSITY_MODEL}/{version}/metrics.json")
    s.figures = {"shipped": m["shipped"], "validation_cutoff": m["validation_cutoff"],
                 "models": {k: {x: v[x] for x in ("roc_auc", "pr_auc", "ece", "top_decile_lift")} for k, v in m["models"].items()}}  # fmt: skip
    s.parts = [
        f"Label: {m['label']}. Population: {m['population']}. Both models are fitted on the training cutoffs "
        f"({', '.join(c[:10] for c in m['train_cutoffs'])}) and judged on the later validation cutoff "
        f"{m['validation_cutoff'][:10]}; {m['rule']}.",
        Table("Validation figures", ["model", "ROC AUC", "PR AUC", "log loss", "ECE", "top-decile lift", "base rate"],
              [[k + (" (shipped)" if k == m["shipped"] else ""), fmt_float(v["roc_auc"], 3), fmt_float(v["pr_auc"], 3),
                fmt_float(v["log_loss"], 3), fmt_float(v["ece"], 3), fmt_float(v["top_decile_lift"], 2),
                fmt_pct(v["base_rate"])] for k, v in m["models"].items()]),
    ]  # fmt: skip
    roc = published_table(lake, PROPENSITY_MODEL, version, "views/roc")
    chart = None
    if roc is not None:
        series = {k: g.sort_values("x") for k, g in roc.groupby("model")}
        fig_x = series[m["shipped"]]["x"].tolist()
        chart = line_chart("propensity-roc", "ROC curve on the validation cutoff (shipped model)", fig_x,
                           {m["shipped"]: series[m["shipped"]]["y"].tolist()}, xlabel="false positive rate",
                           ylabel="true positive rate", diagonal=True)  # fmt: skip
        s.parts.append(chart)
    s.cards = [Card("Propensity ROC AUC", fmt_float(shipped["roc_auc"], 3),
                    f"The top decile buys {fmt_float(shipped['top_decile_lift'], 1)}x as often as the average user.", chart)]  # fmt: skip
    s.insights = [f"The shipped {m['shipped']} propensity model ranks buyers with a ROC AUC of "
                  f"{fmt_float(shipped['roc_auc'], 3)}; its top decile buys {fmt_float(shipped['top_decile_lift'], 1)}x "
                  "as often as the average user."]  # fmt: skip
    return s


def experiments_section(lake: Lake) -> Section | None:
    doc = published(lake, EXPERIMENTS, "result.json")
    if doc is None:
        return None
    version, r = doc
    s = Section("experiments", f"Experiments: {r['experiment']}", f"{EXPERIMENTS}/{version}/result.json")
    rows = [[mt["metric"], c["variant"], fmt_float(c["lift_rel"], 4) if c.get("lift_rel") is not None else "-",
             f"[{fmt_float(c.get('rel_ci_low'), 4)}, {fmt_float(c.get('rel_ci_high'), 4)}]", fmt_float(c.get("p_value"), 4),
             fmt_pct(c.get("chance_to_beat_control"))] for mt in r["metrics"] for c in mt["comparisons"]]  # fmt: skip
    s.figures = {"users": r["users"], "srm_mismatch": r["srm"]["mismatch"], "comparisons": len(rows)}
    s.parts = [f"{fmt_count(r['users'])} users; sample-ratio check p = {fmt_float(r['srm']['p_value'], 4)} "
               f"({'MISMATCH: do not trust the lifts' if r['srm']['mismatch'] else 'no mismatch'}).",
               Table("Lifts against control", ["metric", "variant", "relative lift", "95% interval", "p", "chance to beat"], rows)]  # fmt: skip
    s.insights = [f"Experiment {r['experiment']}: {fmt_count(r['users'])} users, "
                  + ("a sample-ratio mismatch voids its lifts." if r["srm"]["mismatch"] else "allocation as planned.")]
    return s


def mmm_section(lake: Lake) -> Section | None:
    doc = published(lake, MMM_MODEL, "model.json")
    if doc is None:
        return None
    version, m = doc
    ch = published_table(lake, MMM_MODEL, version, "channels")
    if ch is None:
        return None
    ch = ch.sort_values("roi", ascending=False)
    s = Section("marketing_mix", "Marketing mix", f"{MMM_MODEL}/{version}/")
    s.figures = {"converged": m.get("converged"), "roi": dict(zip(ch["channel"], ch["roi"].astype(float), strict=True))}
    chart = bar_chart("mmm-roi", "Return on spend per channel (posterior median)", ch["channel"].tolist(),
                      ch["roi"].astype(float).tolist(), fmt="{:.2f}")  # fmt: skip
    s.parts = [("The sampler converged." if m.get("converged") else "The sampler did NOT converge: read the ROI as indicative."),
               Table("Channels", ["channel", "spend", "contribution", "ROI", "ROI 90% interval"],
                     [[c.channel, fmt_money(c.spend), fmt_money(c.contribution), fmt_float(c.roi, 2),
                       f"[{fmt_float(c.roi_low, 2)}, {fmt_float(c.roi_high, 2)}]"] for c in ch.itertuples()]), chart]  # fmt: skip
    best = ch.iloc[0]
    s.cards = [Card("Best channel ROI", fmt_float(float(best["roi"]), 2), f"{best['channel']} returns the most per unit spent.", chart)]
    s.insights = [f"{best['channel']} returns {fmt_float(float(best['roi']), 2)} per unit of spend, the best of "
                  f"{len(ch)} channels."]  # fmt: skip
    return s


def lifetime_value_section(lake: Lake) -> Section | None:
    """What customers are worth: the fitted models, the holdout check, the distribution and value per group."""
    doc = published(lake, CLV, "result.json")
    if doc is None:
        return None
    version, r = doc
    totals, h = r["totals"], r.get("holdout")
    s = Section("lifetime_value", "Lifetime value", f"{CLV}/{version}/result.json")
    s.figures = {"customers": r["customers"], "repeat_customers": r["repeat_customers"], "parameters": r["parameters"],
                 "totals": totals, "horizon_months": r["horizon_months"],
                 "holdout": {k: h[k] for k in ("from", "to", "actual_purchases", "predicted_purchases",
                                               "naive_purchases", "mae", "mae_naive", "correlation")} if h else None}  # fmt: skip
    s.parts = [
        f"{fmt_count(r['customers'])} customers bought by {r['observation_end']}, {fmt_count(r['repeat_customers'])} "
        f"of them more than once. Repeat purchases follow a {r['model']} model and spend per purchase a Gamma-Gamma "
        f"model, fitted by {r['method']} on every purchase day; a customer's lifetime value is their expected "
        f"purchases over the next {r['horizon_months']} months times their expected spend, discounted at "
        f"{r['monthly_discount']:g} a month. `shoplens clv fit` reproduces it (docs/lifetime-value.md).",
        Table("Fitted parameters (time in days)", list(r["parameters"]), [[f"{v:.4g}" for v in r["parameters"].values()]]),
        Table("Totals", ["customers", "repeat customers", f"CLV sum ({r['horizon_months']} months)", "CLV median",
                         "revenue so far", "median p(alive)"],
              [[fmt_count(r["customers"]), fmt_count(r["repeat_customers"]), fmt_money(totals["clv_sum"]),
                fmt_money(totals["clv_median"]), fmt_money(totals["revenue_sum"]), fmt_pct(totals["p_alive_median"])]]),
    ]  # fmt: skip
    if h:
        s.parts += [
            f"Holdout check: fitted on the days up to {h['calibration_end']}, judged on {h['from']} to {h['to']} "
            f"({h['days']} days, {fmt_count(h['customers'])} customers). Repeat purchases: actual "
            f"{fmt_count(h['actual_purchases'])}, predicted {fmt_money(h['predicted_purchases'])}, naive forecast "
            f"{fmt_money(h['naive_purchases'])}. Per-customer MAE {fmt_float(h['mae'])} against "
            f"{fmt_float(h['mae_naive'])} for the naive forecast; correlation {fmt_float(h['correlation'])}.",
            Table("Holdout by calibration repeat purchases", HOLDOUT_HEADER, holdout_rows(h)),
        ]  # fmt: skip
    dist = published_table(lake, CLV, version, "distribution")
    if dist is not None:
        s.parts.append(histogram_chart("clv-distribution", f"Customers by {r['horizon_months']}-month lifetime value "
                                       "(the last bar: above the 99th percentile)", dist["lower"].tolist(),
                                       [None if pd.isna(u) else float(u) for u in dist["upper"]],
                                       dist["customers"].tolist(), xlabel="lifetime value"))  # fmt: skip
    by_segment = [g for g in r["groups"] if g["breakdown"] == "segment"]
    chart = None
    if by_segment:
        chart = bar_chart("clv-by-segment", f"Sum of {r['horizon_months']}-month lifetime value per segment",
                          [str(g["value"]) for g in by_segment], [g["clv_sum"] for g in by_segment], fmt="{:,.0f}")  # fmt: skip
        s.parts += [Table("By segment", GROUP_HEADER, group_rows(r["groups"], "segment")), chart]
    if any(g["breakdown"] == "lifecycle_stage" for g in r["groups"]):
        s.parts.append(Table("By lifecycle stage", GROUP_HEADER, group_rows(r["groups"], "lifecycle_stage")))
    s.parts += [f"Warning: {w}" for w in r.get("warnings", [])]
    s.cards = [Card(f"Lifetime value, {r['horizon_months']} months", fmt_money(totals["clv_sum"]),
                    f"{fmt_count(r['customers'])} customers, median {fmt_money(totals['clv_median'])}; "
                    f"{fmt_pct(r['repeat_customers'] / r['customers'] if r['customers'] else None)} bought again.", chart)]  # fmt: skip
    segmented = [g for g in by_segment if g["value"] != NOT_ENOUGH_NAME]  # the insight names a segment
    if segmented and totals["clv_sum"]:
        top = max(segmented, key=lambda g: g["clv_sum"])
        s.insights.append(f"{top['value']} hold {fmt_pct(top['clv_sum'] / totals['clv_sum'])} of the expected "
                          f"{r['horizon_months']}-month customer value ({fmt_money(top['clv_sum'])} of "
                          f"{fmt_money(totals['clv_sum'])}).")  # fmt: skip
    if h:
        better = "beats" if h["mae"] < h["mae_naive"] else "does not beat"
        s.insights.append(f"On the holdout the value model predicted {fmt_money(h['predicted_purchases'])} repeat "
                          f"purchases against {fmt_count(h['actual_purchases'])} actual; it {better} the naive "
                          f"forecast (MAE {fmt_float(h['mae'])} vs {fmt_float(h['mae_naive'])}).")  # fmt: skip
    return s


def retention_section(lake: Lake) -> Section | None:
    """Who comes back: the cohort triangle as a heatmap and the retention curve of each cohort."""
    doc = published(lake, RETENTION, "result.json")
    if doc is None or not doc[1]["cohorts"]:
        return None
    version, r = doc
    cohorts = r["cohorts"]
    labels, periods, rates = triangle(cohorts)
    unit = r["period"]
    s = Section("retention", "Retention", f"{RETENTION}/{version}/result.json")
    s.figures = {"cohort": r["cohort"], "period": unit, "mode": r["mode"], "end": r["end"],
                 "cohorts": {c["cohort"]: {"size": c["size"], "rates": [p["rate"] for p in c["periods"]]} for c in cohorts}}  # fmt: skip
    started = "first purchase" if r["cohort_event"] == "purchase" else "first event"
    heat = heatmap_chart("retention-triangle", f"Share of each {r['cohort']}ly cohort active in each {unit} since its start",
                         labels, [str(n) for n in periods], rates, xlabel=f"{unit}s since start")  # fmt: skip
    curves = line_chart("retention-curves", f"Retention curve of each cohort ({unit}s since start)", periods,
                        {c["cohort"]: [p["rate"] for p in c["periods"]] for c in cohorts},
                        xlabel=f"{unit}s since start", ylabel="share of the cohort")  # fmt: skip
    header, rows = rate_rows(cohorts)
    s.parts = [
        f"Semantics: users in {r['cohort']}ly cohorts by their {started}; {r['periods']} {unit}s from each user's start; "
        f"{r['mode']}: a member counts in {unit} n when they have {'any event' if r['event'] == 'any' else 'a purchase'} "
        f"in it{'' if r['mode'] == 'n-period' else ' or later'}; whole UTC days, data to {r['end']} (docs/retention.md).",
        heat, curves, Table(f"Retention rate by {unit} since start", header, rows),
    ]  # fmt: skip
    ripe = [c for c in cohorts if any(p["period"] == 1 and p["complete"] for p in c["periods"])]
    if ripe:
        big = max(ripe, key=lambda c: c["size"])
        rate = next(p["rate"] for p in big["periods"] if p["period"] == 1)
        sentence = (f"{fmt_pct(rate)} of the {fmt_count(big['size'])} users of the {big['cohort']} cohort came back in "
                    f"their second {unit}.")  # fmt: skip
        s.cards = [Card(f"Back in the second {unit}", fmt_pct(rate), sentence, curves)]
        s.insights = [sentence]
    return s


#: The dossier's sections in reading order (the summary and the appendix are built around them).
SECTIONS: tuple[SectionBuilder, ...] = (
    data_section, features_section, threshold_section, segments_section, comparison_section, funnel_section,
    propensity_section, experiments_section, mmm_section, lifetime_value_section, retention_section,
)  # fmt: skip

__all__ = ["SECTIONS", "SectionBuilder", "erasure_counts", "published", "published_table"]
