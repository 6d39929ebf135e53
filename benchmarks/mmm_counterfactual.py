"""Is the event path's reference ROI the ROI its data contains? Counterfactual runs of the generator.

``_truth/mmm.json`` of ``generate --marketing`` gives each channel's contribution as the expected revenue
of the simulation with the channel's spend minus without it, given the users
(:class:`etl.media_plan.SessionResponse`, built by ``etl.generate.marketing_response``). Until this
change it was the realized revenue split by *expected session shares*, an attribution about 6% high
(kept in the stored rows as ``share_roi``). This study checks the doc against a measurement with the
generator's own simulation code (``etl.generate``'s users, sessions, events and prices; the files are
not written, the simulation is unchanged):

- **Monte Carlo** (the measurement): a full 2^6 factorial over the six channels (each on, or dark
  for the whole window), one simulation per cell with its own session and event random streams and
  the seed's users (the users do not depend on the plan). Total revenue over the complete weeks is
  regressed on the dark indicators: each coefficient is that channel's counterfactual contribution,
  with its standard error from the residuals (the runs are independent; a shared-randomness pairing is
  not possible because the Poisson session draws consume the stream differently once the plan changes).
  Cell "all on" with draw 0 is the generator's own run: its revenue must equal the one in the doc.
- **doc** (cheap, every seed): the doc's ROI over the complete weeks, as the generator writes it.

    flock /work/bench.lock nice -n 10 python benchmarks/mmm_counterfactual.py --seeds 1100 --users 16000
    python benchmarks/mmm_counterfactual.py --seeds 1100-1119 --expected-only   # seconds per seed
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
START, MONTHS = date(2022, 1, 3), 24
RESULT = HERE / "results" / "mmm_counterfactual.json"


class World:
    """One seed's calendar, plan, catalogue and users: everything that does not depend on the plan."""

    def __init__(self, seed: int, users: int) -> None:
        from etl import generate as g
        from etl import media_plan as mp

        self.seed, self.users = seed, users
        self.cal = g._calendar(START, MONTHS)
        self.plan = mp.event_plan(self.cal.days, seed)
        self.weeks, self.spend, _beta, self.week_of_day, self.effect = self.plan
        self.cat = g.build_catalogue(np.random.default_rng([seed, 0]))
        self.rng_after_users = np.random.default_rng([seed, 1])
        self.people = g._draw_users(self.rng_after_users, users, self.cal, self.cat)
        days_in_week = np.bincount(self.week_of_day, minlength=len(self.weeks))
        self.whole_day = days_in_week[self.week_of_day] == 7  # days of complete weeks
        self.spend_whole = self.spend[days_in_week == 7].sum(axis=0)

    def media(self, dark: tuple[int, ...]) -> np.ndarray:
        """Daily media intensity with the ``dark`` channels off for the whole window."""
        on = np.ones(self.effect.shape)
        on[:, list(dark)] = 0.0
        return (self.effect * on).sum(axis=1)

    def simulate(self, dark: tuple[int, ...], draw: int) -> dict:
        """Day revenue and per-persona revenue and sessions of one run; ``draw`` 0 with nothing dark
        is the generator's own run (same random streams as ``generate(..., seed, marketing=True)``)."""
        from etl import generate as g
        from etl.personas import PERSONAS

        cal = replace(self.cal, media=self.media(dark))
        if draw == 0:  # the generator's stream continues after the users
            rng = np.random.default_rng([self.seed, 1])
            g._draw_users(rng, self.users, self.cal, self.cat)
            day_seed = self.seed
        else:
            rng = np.random.default_rng([self.seed, 1, draw])
            day_seed = self.seed * 100_000 + draw
        sessions = g._draw_sessions(rng, self.people, cal)
        fmt = g._Formatter(cal, self.cat, self.people, sessions, rng)
        revenue = np.zeros(len(cal.days))
        by_persona = np.zeros(len(PERSONAS))
        for d, ev in g._day_batches(self.people, sessions, cal, self.cat, day_seed):
            bought = ev.etype == 3
            price = fmt.price_cents[2 * fmt.month_of_day[d] + fmt.bf_of_day[d]][ev.product[bought]] / 100.0
            revenue[d] = price.sum()
            who = self.people.persona[sessions.user[ev.session[bought]]]
            by_persona += np.bincount(who, weights=price, minlength=len(PERSONAS))
        n_sess = np.bincount(self.people.persona[sessions.user], minlength=len(PERSONAS))
        return {"revenue": revenue, "by_persona": by_persona, "sessions": n_sess}

    def response(self, own: dict):  # -> etl.media_plan.SessionResponse
        """The generator's expected response to the plan, with revenue per session from its own run ``own``."""
        from etl import generate as g

        per_session = own["by_persona"] / np.maximum(own["sessions"], 1)
        return g.marketing_response(self.cal, self.people, self.plan, per_session)


def truth_roi(world: World, own: dict) -> tuple[np.ndarray, dict]:
    """The doc's ROI over the complete weeks (its weekly contributions over the plan's spend there),
    written by the generator's own ``_write_marketing`` from the generator's own run (``own``)."""
    import tempfile

    import pandas as pd

    from etl import generate as g

    cal = replace(world.cal, media=world.effect.sum(axis=1))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "_truth").mkdir()
        g._write_marketing(Path(tmp), cal, world.plan, own["revenue"], world.response(own))
        doc = json.loads((Path(tmp) / "_truth" / "mmm.json").read_text())
    contrib = pd.DataFrame(doc["weekly_contributions"]).set_index("week")
    contrib = contrib.loc[doc["complete_weeks"], [c["channel"] for c in doc["channels"]]]
    return contrib.sum().to_numpy() / world.spend_whole, doc


def expected_lift(world: World, response, channel: int, first: int, weeks: int) -> tuple[float, float]:
    """(spend change, expected revenue change) of a hold-out: ``channel`` dark in plan weeks
    ``first:first+weeks``, the revenue change over the whole window (carry-over included), by the
    generator's ``response`` (:meth:`etl.media_plan.SessionResponse.hold_out`)."""
    days = np.bincount(world.week_of_day, minlength=len(world.weeks))[first:first + weeks] / 7.0
    held = (world.week_of_day >= first) & (world.week_of_day < first + weeks)
    return -float((world.spend[first:first + weeks, channel] * days).sum()), response.hold_out(channel, held)


def monte_carlo(world: World, log: list) -> dict:
    """The 2^6 factorial; returns per-channel contribution (complete weeks) and its standard error."""
    n_c = world.spend.shape[1]
    cells = list(itertools.product((0, 1), repeat=n_c))
    totals, whole_totals = [], []
    own = None
    for i, z in enumerate(cells):
        dark = tuple(c for c in range(n_c) if z[c])
        t0 = time.perf_counter()
        run = world.simulate(dark, draw=i)  # cell 0 (all on) is draw 0: the generator's own run
        if i == 0:
            own = run
        totals.append(run["revenue"].sum())
        whole_totals.append(run["revenue"][world.whole_day].sum())
        log.append({"seed": world.seed, "users": world.users, "cell": i, "dark": dark, "total": totals[-1], "whole": whole_totals[-1],
                    "s": time.perf_counter() - t0, "load": os.getloadavg()[0]})
        print(f"seed {world.seed} cell {i:2d} dark {dark}: {whole_totals[-1]:,.0f} ({log[-1]['s']:.1f}s)", flush=True)
    x = np.column_stack([np.ones(len(cells)), -np.array(cells, dtype=float)])
    y = np.array(whole_totals)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    sigma = float(np.sqrt(resid @ resid / (len(y) - x.shape[1])))
    cov = sigma**2 * np.linalg.inv(x.T @ x)
    return {"contribution": coef[1:], "se": np.sqrt(np.diag(cov))[1:], "sigma_total": sigma, "own": own}


def oracle_by_size(seed: int, users: int) -> dict:
    """The peer told the true shapes (``mmm_recovery.ols_told_shapes``, additive and with the level) on
    the generator's own weekly revenue at ``users`` users, scored against the expected counterfactual:
    how the best possible estimate's error shrinks as the shop (and so the signal against purchase
    noise) grows. No files: the revenue of the generator's run is taken from the simulation directly."""
    import pandas as pd
    from mmm_recovery import ols_told_shapes

    from etl import media_plan as mp

    world = World(seed, users)
    own = world.simulate((), draw=0)
    whole = np.bincount(world.week_of_day, minlength=len(world.weeks)) == 7
    weekly = np.zeros(len(world.weeks))
    np.add.at(weekly, world.week_of_day, own["revenue"])
    roi, _doc = truth_roi(world, own)
    spend = world.spend[whole]
    truth = [{"channel": c, "spend_share": float(spend[:, j].sum() / spend.sum()), "roi": float(roi[j])}
             for j, c in enumerate(mp.CHANNELS)]
    dates = pd.DatetimeIndex(world.weeks[whole])
    out = {"seed": seed, "users": users, "weekly_revenue_mean": float(weekly[whole].mean())}
    for form in ("additive", "level"):
        peer = ols_told_shapes(weekly[whole], dates, spend, mp.shapes(world.spend)[whole], truth,
                               level=form == "level")
        out[form] = {"resid_share": peer["resid_share"],
                     "channels": [{k: c[k] for k in ("channel", "spend_share", "true_roi", "roi", "roi_low",
                                                     "roi_high", "error", "inside")} for c in peer["channels"]]}
    return out


def write(stored: dict) -> None:
    """``mmm_counterfactual.md`` from the stored rows (channels with >= 10% of spend flagged ``*``)."""
    rows = sorted((r for r in stored["rows"] if "doc_roi" in r), key=lambda r: (r["users"], r["seed"]))
    lines = ["# Marketing mix: the event path's reference ROI against the counterfactual", "",
             "`benchmarks/mmm_counterfactual.py` (see its docstring). ROI over the complete weeks of the window. "
             "`doc`: `_truth/mmm.json` as `generate --marketing` writes it now, the expected counterfactual given "
             "the users (`etl.media_plan.SessionResponse`); `share`: the session-share attribution the doc held "
             "before (stored from the earlier runs); `MC`: the 2^6 factorial of generator runs (revenue with the "
             "channel on minus dark, +- one standard error). `*`: >= 10% of spend.", ""]
    mc = [r for r in rows if "mc_roi" in r]
    if mc:
        lines += ["## Measured: the factorial of generator runs", "",
                  "| seed | users | channel | doc | MC (+- se) | share | doc / MC | share / MC |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in mc:
            for j, ch in enumerate(r["channels"]):
                star = "*" if r["spend_share"][j] >= 0.10 else ""
                lines.append(f"| {r['seed']} | {r['users']:,} | {ch}{star} | {r['doc_roi'][j]:.3f} | "
                             f"{r['mc_roi'][j]:.3f} +- {r['mc_se'][j]:.3f} | {r['share_roi'][j]:.3f} | "
                             f"{r['doc_roi'][j] / r['mc_roi'][j]:.2f} | {r['share_roi'][j] / r['mc_roi'][j]:.2f} |")
        for r in mc:
            z = {k: ((np.array(r[k]) - np.array(r["mc_roi"])) / np.array(r["mc_se"])) ** 2
                 for k in ("doc_roi", "share_roi")}
            lines += ["", f"Seed {r['seed']}: chi-square of the six channels against the Monte Carlo (6 degrees of "
                      "freedom): " + ", ".join(f"{k.removesuffix('_roi')} {v.sum():.1f} (p {stats.chi2.sf(v.sum(), 6):.3f})"
                                               for k, v in z.items()) + "."]
        cells = [c for c in stored["cells"] if c["seed"] in {r["seed"] for r in mc}]
        lines += ["", f"{len(cells)} generator runs, {np.median([c['s'] for c in cells]):.1f} s each (median), "
                  f"load average {min(c['load'] for c in cells):.1f}-{max(c['load'] for c in cells):.1f}; "
                  "residual sd of a run's total revenue: "
                  + ", ".join(f"{r['sigma_total']:,.0f} (seed {r['seed']})" for r in mc) + ".", ""]
    lines += ["## The doc against the session-share attribution it replaced, every seed", "",
              "| seed | users | " + " | ".join(f"{c} doc/share" for c in rows[0]["channels"]) + " |",
              "|---|---|" + "---|" * len(rows[0]["channels"])]
    for r in rows:
        ratio = np.array(r["doc_roi"]) / np.array(r["share_roi"])
        lines.append(f"| {r['seed']} | {r['users']:,} | " + " | ".join(f"{x:.2f}" for x in ratio) + " |")
    allr = np.concatenate([np.array(r["doc_roi"]) / np.array(r["share_roi"]) for r in rows])
    lines += ["", f"Over {len(rows)} seeds x 6 channels: doc / share median {np.median(allr):.3f}, "
              f"range {allr.min():.3f}-{allr.max():.3f}.", ""]
    sizes = stored.get("sizes", [])
    if sizes:
        lines += ["## The peer told the true shapes, by shop size", "",
                  "Least squares told each channel's true adstock and saturation (`ols_told_shapes`) on the "
                  "generator's weekly revenue, scored against the counterfactual (the runs before this change: "
                  "its estimate then, within 1% of the doc); channels with >= 10% "
                  "of spend. `level`: the model's form (everything times exp(k1 t + k2 t^2)).", "",
                  "| users | seeds | form | residual sd / mean revenue | within 20% | 90% coverage | median abs error |",
                  "|---|---|---|---|---|---|---|"]
        for users in sorted({r["users"] for r in sizes}):
            rs = [r for r in sizes if r["users"] == users]
            for form in ("additive", "level"):
                big = [c for r in rs for c in r[form]["channels"] if c["spend_share"] >= 0.10]
                err = np.abs([c["error"] for c in big])
                lines.append(f"| {users:,} | {len(rs)} | {form} | "
                             f"{np.median([r[form]['resid_share'] for r in rs]):.1%} | {np.mean(err <= 0.2):.0%} | "
                             f"{np.mean([c['inside'] for c in big]):.0%} | {np.median(err):.0%} |")
        lines.append("")
    (RESULT.with_suffix(".md")).write_text("\n".join(lines) + "\n")


def main() -> None:
    from mmm_recovery import seeds_arg

    from etl.media_plan import CHANNELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=seeds_arg, default=seeds_arg("1100"))
    ap.add_argument("--users", type=int, default=16_000)
    ap.add_argument("--expected-only", action="store_true", help="skip the Monte Carlo factorial")
    ap.add_argument("--sizes", type=int, nargs="*", default=[], metavar="USERS",
                    help="instead: the peer told the true shapes at these shop sizes (see oracle_by_size)")
    args = ap.parse_args()
    if args.sizes:
        for users in args.sizes:
            for seed in args.seeds:
                stored = json.loads(RESULT.read_text()) if RESULT.is_file() else {"rows": [], "cells": []}
                row = oracle_by_size(seed, users)
                stored["sizes"] = [r for r in stored.get("sizes", []) if (r["seed"], r["users"]) != (seed, users)]
                stored["sizes"].append(row)
                RESULT.write_text(json.dumps(stored, indent=1) + "\n")
                write(stored)
                print(seed, users, {f: [round(c["error"], 2) for c in row[f]["channels"]] for f in ("additive", "level")},
                      flush=True)
        return
    stored = json.loads(RESULT.read_text()) if RESULT.is_file() else {"rows": [], "cells": []}
    stored["cells"] = [c for c in stored["cells"] if (c["seed"], c.get("users")) not in
                       {(s, args.users) for s in args.seeds} or args.expected_only]
    for seed in args.seeds:
        world = World(seed, args.users)
        before = [r for r in stored["rows"] if (r["seed"], r["users"]) == (seed, args.users)]
        row = {**(before[0] if before and args.expected_only else {}), "seed": seed, "users": args.users,
               "when": datetime.now(UTC).isoformat(timespec="seconds"), "load_before": os.getloadavg()[0],
               "channels": list(CHANNELS)}
        if before and "share_roi" in before[0]:
            row["share_roi"] = before[0]["share_roi"]
        if args.expected_only:
            own = world.simulate((), draw=0)
        else:
            mc = monte_carlo(world, stored["cells"])
            own = mc["own"]
            row.update(mc_roi=(mc["contribution"] / world.spend_whole).tolist(),
                       mc_se=(mc["se"] / world.spend_whole).tolist(), sigma_total=mc["sigma_total"])
        doc_roi, doc = truth_roi(world, own)
        row.update(doc_revenue=doc["revenue"], spend_share=[c["spend_share"] for c in doc["channels"]],
                   doc_roi=doc_roi.tolist(), load_after=os.getloadavg()[0])
        stored["rows"] = [r for r in stored["rows"] if (r["seed"], r["users"]) != (seed, args.users)] + [row]
        RESULT.write_text(json.dumps(stored, indent=1) + "\n")
        write(stored)
        print(json.dumps({k: v for k, v in row.items() if k != "channels"}), flush=True)


if __name__ == "__main__":
    main()
