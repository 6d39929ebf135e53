"""Lifetime value benchmark: ``model.clv`` fit (BG/NBD + Gamma-Gamma by MAP) and scoring at scale, against
a hand-written scipy maximum-likelihood BG/NBD fit of the same data in the same run.

The customers are simulated from BG/NBD and Gamma-Gamma with known parameters (time in days; birth
days spread over 180 days), so the run also reports how well the fit recovers them. Timed: the fit of
both models and the scoring of every customer (p_alive, expected purchases at 30/90/365 days, expected
value, discounted CLV over 12 months), in this process after one small warm-up fit (PyTensor compiles
each model once per machine and caches it). The Spark part that builds the RFM summary from the lake
(one group-by over the purchases) is not timed here.

Goal (issue 32): fit and score 3 million customers in at most 60 s on 2 cores.

    nice -n 10 python benchmarks/clv_bench.py --customers 100000 300000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRUE = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5, "p": 6.0, "q": 4.0, "v": 15.0}
GOAL_CUSTOMERS, GOAL_SECONDS = 3_000_000, 60.0


def simulate(n: int, seed: int = 11) -> pd.DataFrame:
    """``n`` customers' frequency, recency, T (days) and mean repeat value, drawn from the models."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    drop = rng.beta(TRUE["a"], TRUE["b"], n)
    T = rng.integers(1, 181, n).astype(float)
    t, x, tx = np.zeros(n), np.zeros(n, int), np.zeros(n)
    active = np.ones(n, bool)
    while active.any():
        i = np.flatnonzero(active)
        t[i] += rng.exponential(1 / lam[i])
        inside = t[i] <= T[i]
        j = i[inside]
        x[j] += 1
        tx[j] = t[j]
        active[i[~inside]] = False
        active[j[rng.random(len(j)) < drop[j]]] = False
    nu = rng.gamma(TRUE["q"], 1 / TRUE["v"], n)
    total = rng.gamma(TRUE["p"] * np.maximum(x, 1), 1 / nu)  # sum of x Gamma(p, nu) transaction values
    mean = np.where(x > 0, total / np.maximum(x, 1), 0.0)
    return pd.DataFrame({"user_key": np.arange(n).astype(str), "frequency": x, "recency": np.floor(tx), "T": T,
                         "monetary_value": mean})  # fmt: skip


def scipy_bgnbd(rfm: pd.DataFrame) -> dict[str, float]:
    """The peer: BG/NBD maximum likelihood (Fader, Hardie and Lee 2005, eq. 6) with scipy's L-BFGS-B."""
    x, tx, T = (rfm[c].to_numpy(float) for c in ("frequency", "recency", "T"))

    def nll(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
        a3 = -(r + x) * np.log(alpha + T)
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + tx), -np.inf)
        return -float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))

    res = optimize.minimize(nll, np.log([1.0, 10.0, 1.0, 1.0]), method="L-BFGS-B")
    return dict(zip(("r", "alpha", "a", "b"), np.exp(res.x).tolist(), strict=True))


def run(n: int) -> dict[str, object]:
    from model.clv import fit_clv, score_customers

    rfm = simulate(n)
    t0 = time.perf_counter()
    fitted = fit_clv(rfm)
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = score_customers(fitted, rfm, 12, 0.01)
    t_score = time.perf_counter() - t1
    t2 = time.perf_counter()
    peer = scipy_bgnbd(rfm)
    t_peer = time.perf_counter() - t2
    assert scores["p_alive"].between(0, 1).all()
    return {"customers": n, "repeat_customers": int((rfm["frequency"] > 0).sum()), "fit_seconds": round(t_fit, 2),
            "score_seconds": round(t_score, 2), "fit_and_score_seconds": round(t_fit + t_score, 2),
            "scipy_bgnbd_seconds": round(t_peer, 2), "parameters": fitted.parameters, "scipy_bgnbd": peer}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, nargs="+", default=[100_000, 300_000])
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    run(5_000)  # warm-up: PyTensor compiles (and caches) both models once
    load_before = os.getloadavg()
    rows = []
    for n in args.customers:
        print(f"{n:,} customers ...", flush=True)
        rows.append(run(n))
        print(json.dumps(rows[-1]), flush=True)
    n = np.array([r["customers"] for r in rows], float)
    secs = np.array([r["fit_and_score_seconds"] for r in rows])
    # a fixed cost (model building, compiling) plus a cost per customer, through the measured sizes
    slope, intercept = np.polyfit(n, secs, 1) if len(rows) > 1 else (secs[0] / n[0], 0.0)
    linear_3m = intercept + slope * GOAL_CUSTOMERS
    per_million = max(secs / n * 1e6)
    doc = {"run_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "true_parameters": TRUE, "rows": rows,
           "load_before": [round(x, 1) for x in load_before], "load_after": [round(x, 1) for x in os.getloadavg()],
           "goal": {"customers": GOAL_CUSTOMERS, "seconds": GOAL_SECONDS},
           "extrapolated_3m_seconds": round(float(linear_3m), 1),
           "proportional_3m_seconds": round(float(per_million * GOAL_CUSTOMERS / 1e6), 1)}  # fmt: skip
    out = HERE / "results"
    (out / "clv.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    lines = ["# Lifetime value: fit and score", "", f"Run {doc['run_at']} on {doc['machine']} ({doc['cpus']} CPUs), "
             "`nice -n 10`, on a shared machine. Customers simulated from BG/NBD and Gamma-Gamma with "
             f"{TRUE} (days).", "",
             "| customers | repeat | fit s | score s | fit+score s | scipy BG/NBD MLE s | r | alpha | a | b | p | q | v |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        p = r["parameters"]
        lines.append(f"| {r['customers']:,} | {r['repeat_customers']:,} | {r['fit_seconds']} | {r['score_seconds']} | "
                     f"{r['fit_and_score_seconds']} | {r['scipy_bgnbd_seconds']} | "
                     + " | ".join(f"{p[k]:.3g}" for k in ("r", "alpha", "a", "b", "p", "q", "v")) + " |")  # fmt: skip
    measured = next((r for r in rows if r["customers"] >= GOAL_CUSTOMERS), None)
    verdict = (f"measured at {measured['customers']:,}: {measured['fit_and_score_seconds']} s" if measured else
               f"not run at 3M; extrapolated {doc['extrapolated_3m_seconds']} s by a line through the measured sizes "
               f"(fixed cost + cost per customer), {doc['proportional_3m_seconds']} s at the slowest rate measured")  # fmt: skip
    lines += ["", f"Goal: {GOAL_CUSTOMERS:,} customers in {GOAL_SECONDS:.0f} s; {verdict}. Load averages (1, 5, 15 min) "
              f"before the timed runs {doc['load_before']}, after {doc['load_after']}: above 2 the machine was shared "
              "(the run itself keeps about one core busy).", "",
              "The purchase model is fitted on the distinct (frequency, recency, T) triples weighted by their counts "
              "(the same likelihood; `model.clv.fit`), and scored once per triple; the Gamma-Gamma fit and the "
              "expected value per purchase use every repeat customer."]  # fmt: skip
    (out / "clv.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print((out / "clv.md").read_text())


if __name__ == "__main__":
    main()
