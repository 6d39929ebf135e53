"""Why the event path misses: its weekly revenue against the series it is expected to be, per seed.

``generate --marketing`` turns the plan's contributions into extra session intensity per active user
(:mod:`etl.media_plan`, :func:`etl.generate._intensity`). This study rebuilds, from the generator's own
users and calendar, the *expected* weekly revenue (expected sessions per persona and day times the
persona's realized revenue per session) and each channel's expected contribution, and compares:

- realized / expected: the week-to-week noise of summing purchases (the truth-level series has 2.5%);
- the expected-value ROI against ``_truth/mmm.json`` (is the truth the benchmark compares with right?);
- the media effect per euro over time: expected contribution / the truth-level contribution of the same
  spend (1.0 everywhere would mean the event path carries the truth level's constant effects);
- the peer told the true shapes (``mmm_recovery.ols_told_shapes``) on the expected series (no noise)
  and on the realized one: if it misses on the expected series, noise is not the cause.

One-time buyers have 1-2 sessions whatever the intensity (media only moves them in time), so they get
no media sessions here; everything else mirrors ``etl.generate._write_marketing``.

    nice -n 19 python benchmarks/mmm_event_path.py --seeds 1100-1102 --users 16000 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
START, MONTHS = date(2022, 1, 3), 24


def expected_series(folder: Path, seed: int, users: int) -> dict:
    """Expected and realized weekly revenue of one generated folder (complete weeks only)."""
    from etl import generate as g
    from etl import media_plan as mp
    from etl.personas import PERSONA_NAMES, PERSONAS

    cal = g._calendar(START, MONTHS)
    weeks, spend, beta, week_of_day, effect = mp.event_plan(cal.days, seed)
    cat = g.build_catalogue(np.random.default_rng([seed, 0]))
    people = g._draw_users(np.random.default_rng([seed, 1]), users, replace(cal, media=effect.sum(axis=1)), cat)
    base = g._intensity(cal)
    active = np.zeros((len(PERSONAS), len(cal.days) + 1))
    rate = np.array([q.sessions_per_month for q in PERSONAS])[people.persona] / 30.0 * people.activity
    np.add.at(active, (people.persona, people.first_day), rate)
    np.add.at(active, (people.persona, people.last_day + 1), -rate)
    active = np.cumsum(active, axis=1)[:, :-1]
    media = (active * base.mean(axis=1, keepdims=True))[:, :, None] * effect[None, :, :]
    media[PERSONA_NAMES.index("one_time_buyer")] = 0.0

    ev = pd.concat(pd.read_csv(f, usecols=["event_time", "event_type", "price", "user_id", "user_session"])
                   for f in sorted(folder.glob("*.csv.gz")))
    persona = pd.read_csv(folder / "_truth" / "users.csv", usecols=["user_id", "persona"]).set_index("user_id")
    ev["persona"] = ev["user_id"].map(persona["persona"])
    buy = ev[ev["event_type"] == "purchase"]
    per_session = (buy.groupby("persona")["price"].sum() / ev.groupby("persona")["user_session"].nunique())
    rps = per_session.reindex(PERSONA_NAMES).fillna(0.0).to_numpy()
    daily = buy.groupby(buy["event_time"].str[:10])["price"].sum()
    realized = daily.reindex([d.isoformat() for d in cal.days], fill_value=0.0).to_numpy()

    n = len(weeks)
    eb, em, y = np.zeros(n), np.zeros((n, spend.shape[1])), np.zeros(n)
    np.add.at(eb, week_of_day, (rps[:, None] * active * base).sum(axis=0))
    np.add.at(em, week_of_day, (rps[:, None, None] * media).sum(axis=0))
    np.add.at(y, week_of_day, realized)
    whole = np.bincount(week_of_day, minlength=n) == 7
    doc = json.loads((folder / "_truth" / "mmm.json").read_text())
    return {"weeks": weeks[whole], "spend": spend[whole], "expected_base": eb[whole], "expected_media": em[whole],
            "realized": y[whole], "truth_level": (mp.shapes(spend) * beta)[whole], "doc": doc,
            "plan_shapes": mp.shapes(spend)[whole]}


def study(seed: int, users: int, keep: Path | None) -> dict:
    from mmm_recovery import ols_told_shapes

    from etl.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        folder = (keep / f"{users}_{seed}") if keep else Path(tmp)
        if not (folder / "_truth" / "mmm.json").is_file():
            generate(folder, users=users, start=START, months=MONTHS, seed=seed, marketing=True)
        s = expected_series(folder, seed, users)
    expected = s["expected_base"] + s["expected_media"].sum(axis=1)
    channels = s["doc"]["channels"]
    doc_contrib = pd.DataFrame(s["doc"]["weekly_contributions"]).set_index("week")
    doc_contrib = doc_contrib.loc[[str(w.date()) for w in s["weeks"]]]
    per_euro = s["expected_media"].sum(axis=1) / s["truth_level"].sum(axis=1)
    quarters = pd.Series(per_euro / per_euro.mean()).groupby(np.arange(len(per_euro)) // 13).mean()
    # the truth the peer is scored against: the expected-value ROI over the same complete weeks
    truth = [{**c, "roi": float(s["expected_media"][:, j].sum() / s["spend"][:, j].sum())} for j, c in enumerate(channels)]
    peers = {f"{name}, {form}": ols_told_shapes(y, s["weeks"], s["spend"], s["plan_shapes"], truth, level=form == "level")
             for name, y in (("expected", expected), ("realized", s["realized"])) for form in ("additive", "level")}
    return {
        "seed": seed, "users": users, "weeks": len(s["weeks"]),
        "mean_weekly_revenue": float(s["realized"].mean()),
        "noise_sd": float(np.std(s["realized"] / expected - 1)),
        "realized_over_expected": float(s["realized"].sum() / expected.sum()),
        "media_share": float(s["expected_media"].sum() / expected.sum()),
        "media_per_euro_by_quarter": [round(float(q), 3) for q in quarters],
        "roi": [{"channel": c["channel"], "spend_share": c["spend_share"],
                 "expected_value": float(s["expected_media"][:, j].sum() / s["spend"][:, j].sum()),
                 "truth_doc": float(doc_contrib[c["channel"]].sum() / s["spend"][:, j].sum())}
                for j, c in enumerate(channels)],
        "peer": {k: {"resid_share": v["resid_share"], "errors": {c["channel"]: c["error"] for c in v["channels"]},
                     "inside": {c["channel"]: c["inside"] for c in v["channels"]}}
                 for k, v in peers.items()},
    }


def write(rows: list[dict], out: Path) -> None:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    lines = ["# Marketing mix: the event path against its expected series", "",
             f"{when}, load average {os.getloadavg()[0]:.1f} (machine shared). `benchmarks/mmm_event_path.py`: "
             "expected weekly revenue rebuilt from the generator's users and calendar; complete weeks only.", "",
             "| seed | users | mean weekly revenue | noise sd (realized/expected - 1) | media share | "
             "media effect per euro by quarter (mean 1) | expected-value ROI / truth-doc ROI (range) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = [c["expected_value"] / c["truth_doc"] for c in r["roi"]]
        lines.append(f"| {r['seed']} | {r['users']:,} | {r['mean_weekly_revenue']:,.0f} | {r['noise_sd']:.1%} | "
                     f"{r['media_share']:.0%} | {' '.join(f'{q:.2f}' for q in r['media_per_euro_by_quarter'])} | "
                     f"{min(ratio):.2f}-{max(ratio):.2f} |")
    lines += ["", "Peer told the true adstock and saturation shapes, ROI error against the expected-value ROI "
              "(`!`: outside its 90% interval), channels >= 10% of spend. `additive`: constant effects plus a linear "
              "trend (the recovery study's `oracle_ols`); `level`: everything times a customer-base level "
              "exp(k1 t + k2 t^2), the model's form since `model.mmm.fit.customer_base_level`. Base terms: the "
              "model's five holiday weeks and two Fourier orders.", "",
              "| seed | users | series, form | residual sd / mean | " + " | ".join(
                  c["channel"] for c in rows[0]["roi"] if c["spend_share"] >= 0.10) + " |",
              "|---|---|---|---|" + "---|" * sum(c["spend_share"] >= 0.10 for c in rows[0]["roi"])]
    for r in rows:
        big = [c["channel"] for c in r["roi"] if c["spend_share"] >= 0.10]
        for name, p in r["peer"].items():
            lines.append(f"| {r['seed']} | {r['users']:,} | {name} | {p['resid_share']:.1%} | "
                         + " | ".join(f"{p['errors'][c]:+.0%}{'' if p['inside'][c] else '!'}" for c in big) + " |")
    out.write_text("\n".join(lines) + "\n")
    (out.with_suffix(".json")).write_text(json.dumps({"when": when, "rows": rows}, indent=2) + "\n")


def main() -> None:
    from mmm_recovery import seeds_arg

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=seeds_arg, default=seeds_arg("1100-1102"))
    ap.add_argument("--users", type=int, nargs="+", default=[16_000])
    ap.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the generated folders here")
    args = ap.parse_args()
    rows = [study(seed, users, args.keep) for users in args.users for seed in args.seeds]
    write(rows, HERE / "results" / "mmm_event_path.md")


if __name__ == "__main__":
    main()
