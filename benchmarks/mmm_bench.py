"""Marketing-mix fit time: 104 weeks x 6 channels, whole fit including compilation, vs peers.

Data: :func:`etl.media_plan.weekly_truth` (two years, six channels, known ROIs). Timed in one run:

- ``mmm``: :func:`model.mmm.fit` (PyMC-Marketing, numpyro NUTS, ``FitConfig``'s default chains, draws
  and tuning steps), in a fresh interpreter so JAX/pytensor compilation and imports are included (``imports``
  reported separately); the ROI error against the truth is recorded alongside;
- peers on the same features (geometric adstock with one fixed retention, trend, Fourier terms,
  holiday weeks): ``gbm`` = sklearn HistGradientBoostingRegressor and ``ridge`` = RidgeCV, each fit
  on the first 96 weeks and scored on the last 8 (they give no ROI intervals; they are the
  out-of-sample accuracy comparison). The MMM is scored on the same 8 weeks from a separate fit.
- optionally ``--samplers nutpie`` for the nutpie comparison.

The issue's floor: at most 3 minutes on 2 cores. Results: ``benchmarks/results/mmm.{json,md}``; the
load average is recorded, because the machine may be shared.

    python benchmarks/mmm_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLOOR_S = 180.0

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from etl.media_plan import weekly_truth
from model.mmm import FitConfig, channel_summary, clean_kpi, clean_spend, fit, prepare
from model.mmm.validation import mape, nrmse, posterior_forecast
import pymc_marketing.mmm.multidimensional  # noqa: F401  (imports timed apart)
imports = time.perf_counter() - t0
sampler, holdout = sys.argv[1], int(sys.argv[2])
w = weekly_truth(weeks=104, seed=0)
data = prepare(clean_spend(w.spend)[0], clean_kpi(w.revenue)[0])
train = data.head(len(data) - holdout) if holdout else data
t1 = time.perf_counter()
res = fit(train, FitConfig(sampler=sampler, seed=0))
seconds = time.perf_counter() - t1
out = {"sampler": sampler, "imports_s": imports, "fit_s": seconds, "diagnostics": res.diagnostics.to_dict()}
out["diagnostics"].pop("per_parameter")
if holdout:
    pred = posterior_forecast(res.posterior, data, len(data) - holdout)
    out.update(mape=mape(data.revenue[-holdout:], pred), nrmse=nrmse(data.revenue[-holdout:], pred))
else:
    s = channel_summary(res.posterior, data.spend).set_index("channel")
    truth = {c["channel"]: c["roi"] for c in w.truth["channels"]}
    out["roi_error"] = {c: float(s.loc[c, "roi"] / truth[c] - 1) for c in s.index}
print("RESULT " + json.dumps(out))
"""


def run_child(sampler: str, holdout: int) -> dict:
    """One fit in a fresh interpreter: wall time and the CPU seconds it used (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, sampler, str(holdout)], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[7:]), "wall_s": wall, "cpu_s": cpu}


def peers(holdout: int) -> dict:
    from etl.media_plan import weekly_truth
    from model.mmm import clean_kpi, clean_spend, prepare
    from model.mmm.validation import gbm_forecast, mape, nrmse, ridge_forecast

    w = weekly_truth(weeks=104, seed=0)
    data = prepare(clean_spend(w.spend)[0], clean_kpi(w.revenue)[0])
    origin = len(data) - holdout
    out = {}
    for name, fn in (("gbm", lambda: gbm_forecast(data, origin)), ("ridge", lambda: ridge_forecast(data, origin))):
        t0 = time.perf_counter()
        pred = fn()
        out[name] = {"fit_s": time.perf_counter() - t0, "mape": mape(data.revenue[origin:], pred),
                     "nrmse": nrmse(data.revenue[origin:], pred)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samplers", nargs="+", default=["numpyro"])
    ap.add_argument("--holdout", type=int, default=8)
    args = ap.parse_args()
    load_before = os.getloadavg()
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "load_avg_before": load_before},
               "when": datetime.now(UTC).isoformat(timespec="seconds"), "floor_s": FLOOR_S, "fits": {}}
    for sampler in args.samplers:
        results["fits"][sampler] = run_child(sampler, 0)
        print(f"{sampler}: whole fit {results['fits'][sampler]['wall_s']:.1f}s", flush=True)
    results["holdout"] = {"weeks": args.holdout, "mmm": run_child(args.samplers[0], args.holdout),
                          **peers(args.holdout)}
    results["machine"]["load_avg_after"] = os.getloadavg()
    shared = max(load_before[0], results["machine"]["load_avg_after"][0]) > (os.cpu_count() or 1)
    results["machine"]["contended"] = shared
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "mmm.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Marketing-mix fit: 104 weeks x 6 channels", "",
             f"{results['when']}, {results['machine']['cpus']} CPUs, load average "
             f"{load_before[0]:.1f} before / {results['machine']['load_avg_after'][0]:.1f} after"
             + (" - **the machine was shared during the run: figures are under contention**" if shared else ""),
             "", "| fit | whole fit incl. imports and compile, wall (s) | CPU used (s) | of which imports (s) | "
             "sampling+compile (s) | converged | max R-hat | divergences |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results["fits"].items():
        d = r["diagnostics"]
        lines.append(f"| PyMC-Marketing + {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['imports_s']:.1f} | "
                     f"{r['fit_s']:.1f} | "
                     f"{d['converged']} | {d['rhat_max']:.3f} | {d['divergences']} |")
    lines += ["", "On two idle cores the wall time lies between CPU used / 2 (the two chains run in parallel) and "
              "CPU used (imports and compilation are serial)."]
    lines += ["", f"Floor: {FLOOR_S:.0f} s. ROI error vs truth (first sampler): "
              + ", ".join(f"{c} {e:+.1%}" for c, e in results["fits"][args.samplers[0]]["roi_error"].items()), "",
              f"## Out of sample: last {args.holdout} weeks (trained on the rest)", "",
              "| model | fit (s) | MAPE | NRMSE |", "|---|---|---|---|"]
    h = results["holdout"]
    lines.append(f"| MMM (PyMC-Marketing) | {h['mmm']['fit_s']:.1f} | {h['mmm']['mape']:.2%} | {h['mmm']['nrmse']:.3f} |")
    for name in ("gbm", "ridge"):
        lines.append(f"| {name} on adstocked features | {h[name]['fit_s']:.2f} | {h[name]['mape']:.2%} | "
                     f"{h[name]['nrmse']:.3f} |")
    (out / "mmm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
