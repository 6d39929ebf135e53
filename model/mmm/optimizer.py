"""Budget optimizer: where the next budget should go, from published posterior draws (numpy + scipy).

Problem, for a horizon of N weeks and channels c with bounds ``[lo_c, hi_c]`` on their total spend:

    maximize   E[ sum over the N weeks and the l_max weeks after them of media revenue(x) ]
    subject to sum_{w,c} x_{w,c} = B,  lo_c <= sum_w x_{w,c} <= hi_c,  x >= 0

The expectation is the posterior mean over draws; the adstock of the spend already made (the last
``l_max`` weeks) carries into the horizon. ``pattern="flat"`` spreads each channel's total evenly over
the weeks (N variables per channel collapse to one); ``pattern="free"`` optimizes every week. With
``target_roi`` the objective is the same but the plan must also earn at least ``target_roi`` euros of
revenue per euro spent, and the budget becomes a ceiling: the answer is the largest plan that still
pays back at the target. Solved with SLSQP and the exact gradient
(:meth:`Posterior.media_gradient`); the solution is then projected onto the bounds so they hold
exactly. Revenues reported are incremental: what the plan's spend drives in the horizon and the
``l_max`` weeks after it, net of the carry-over the spend already made brings anyway (that carry-over
still shapes the optimum, since saturation acts on the sum). The gain over the current plan (last N
weeks' mix scaled to the same budget) is reported per draw, hence with an interval, together with the
share of posterior draws in which the plan beats the current one.

Channels in ``hold`` (those whose ROI the data cannot pin down, see
:mod:`model.mmm.identifiability`) stay within :data:`HOLD_BAND` of their current spend: the optimizer
would otherwise move budget on the strength of a prior, not of evidence. Bounds the user gives for such
a channel that exclude that band win (the plan's ``held`` lists the channels actually held).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from model.mmm.posterior import Posterior, quantiles

HOLD_BAND = 0.10  # a held channel's total stays within +-10% of its current spend



class InfeasibleBounds(ValueError):
    """The budget and the per-channel bounds cannot all hold; ``conflicts`` says which."""

    def __init__(self, conflicts: list[str]) -> None:
        super().__init__("bounds conflict: " + "; ".join(conflicts))
        self.conflicts = conflicts


@dataclass(frozen=True)
class Bound:
    """A channel's bound on its total spend over the horizon: absolute, or relative to the last N weeks."""

    value: float
    relative: bool = False

    @staticmethod
    def parse(text: str) -> Bound:
        """``"5000"`` (absolute) or ``"1.2x"`` / ``"120%"`` (relative to the last N weeks' spend)."""
        t = text.strip().lower()
        if t.endswith("x"):
            return Bound(float(t[:-1]), relative=True)
        if t.endswith("%"):
            return Bound(float(t[:-1]) / 100.0, relative=True)
        return Bound(float(t))

    def resolve(self, last: float) -> float:
        return self.value * last if self.relative else self.value


@dataclass
class Plan:
    channels: list[str]
    weekly: pd.DataFrame  # week x channel spend
    totals: dict[str, float]
    current: dict[str, float]
    expected_revenue: float
    current_revenue: float
    gain: float
    gain_low: float
    gain_high: float
    prob_better: float  # share of posterior draws in which the plan earns more than the current mix
    roi: float
    bounds: dict[str, tuple[float, float]]
    budget: float
    mode: str
    success: bool
    message: str
    per_channel: pd.DataFrame = field(default_factory=pd.DataFrame)
    held: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"budget": self.budget, "mode": self.mode, "weeks": len(self.weekly),
                "totals": self.totals, "current": self.current,
                "expected_revenue": self.expected_revenue, "current_revenue": self.current_revenue,
                "gain": self.gain, "gain_low": self.gain_low, "gain_high": self.gain_high,
                "prob_better": self.prob_better, "held": self.held, "roi": self.roi,
                "bounds": {c: list(b) for c, b in self.bounds.items()}, "success": self.success,
                "message": self.message, "channels": self.per_channel.to_dict(orient="records"),
                "weekly": [{"week": int(i), **{c: float(v) for c, v in row.items()}}
                           for i, row in self.weekly.iterrows()]}


def resolve_bounds(channels: list[str], last: np.ndarray, budget: float,
                   lower: dict[str, Bound] | None = None, upper: dict[str, Bound] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Absolute (lo, hi) per channel; raises :class:`InfeasibleBounds` naming every conflict."""
    lower, upper = lower or {}, upper or {}
    unknown = sorted((set(lower) | set(upper)) - set(channels))
    if unknown:
        raise ValueError(f"unknown channel(s) in bounds: {', '.join(unknown)}; the model has {', '.join(channels)}")
    lo = np.array([lower[c].resolve(last[i]) if c in lower else 0.0 for i, c in enumerate(channels)])
    hi = np.array([upper[c].resolve(last[i]) if c in upper else np.inf for i, c in enumerate(channels)])
    conflicts = []
    if budget <= 0:
        conflicts.append(f"budget {budget:,.2f} must be positive")
    for i, c in enumerate(channels):
        if lo[i] < 0:
            conflicts.append(f"{c}: minimum {lo[i]:,.2f} is negative")
        if lo[i] > hi[i]:
            conflicts.append(f"{c}: minimum {lo[i]:,.2f} > maximum {hi[i]:,.2f}")
    if lo.sum() > budget + 1e-9:
        conflicts.append(f"sum of minimums {lo.sum():,.2f} > budget {budget:,.2f}")
    if hi.sum() < budget - 1e-9:
        conflicts.append(f"sum of maximums {hi.sum():,.2f} < budget {budget:,.2f}")
    if conflicts:
        raise InfeasibleBounds(conflicts)
    return lo, np.minimum(hi, budget)


def project(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float | None) -> np.ndarray:
    """Closest-in-spirit point with ``lo <= x <= hi`` exactly and (if given) ``sum(x) == total``."""
    x = np.clip(x, lo, hi)
    if total is None:
        return x
    for _ in range(50):
        gap = total - x.sum()
        if abs(gap) <= 1e-9 * max(1.0, total):
            break
        room = (hi - x) if gap > 0 else (x - lo)
        free = room > 0
        if not free.any():
            break
        share = room * free / room[free].sum()
        x = np.clip(x + gap * share, lo, hi)
    return x


def optimize(post: Posterior, budget: float, weeks: int, history: np.ndarray, *,
             lower: dict[str, Bound] | None = None, upper: dict[str, Bound] | None = None,
             pattern: str = "flat", target_roi: float | None = None, draws: int = 200,
             seed: int = 0, hold: list[str] | None = None) -> Plan:
    """Allocate ``budget`` over ``weeks`` weeks (see the module docstring). ``history``: spend (T, C)."""
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    if pattern not in ("flat", "free"):
        raise ValueError("pattern must be flat or free")
    channels = post.channels
    c_n = len(channels)
    history = np.asarray(history, dtype=float)
    last = history[-weeks:].sum(axis=0) * (weeks / min(weeks, len(history)))
    lo, hi = resolve_bounds(channels, last, budget, lower, upper)  # the user's own bounds first
    held = []
    if hold:  # near the current mix scaled to the budget, inside the user's own bounds
        scaled = last * budget / last.sum() if last.sum() > 0 else np.full(c_n, budget / c_n)
        lower, upper = dict(lower or {}), dict(upper or {})
        for i, c in enumerate(channels):
            if c not in hold:
                continue
            floor = max(lower[c].resolve(last[i]) if c in lower else 0.0, (1 - HOLD_BAND) * scaled[i])
            ceiling = min(upper[c].resolve(last[i]) if c in upper else np.inf, (1 + HOLD_BAND) * scaled[i])
            if floor <= ceiling:  # else the user's bounds exclude the band: theirs win, the channel is not held
                lower[c], upper[c] = Bound(floor), Bound(ceiling)
                held.append(c)
        try:
            lo, hi = resolve_bounds(channels, last, budget, lower, upper)
        except InfeasibleBounds as err:
            raise InfeasibleBounds([*err.conflicts, f"with {', '.join(held)} held within {HOLD_BAND:.0%} of "
                                    "current spend (ROI not identifiable)"]) from None
    carry = history[-post.adstock.l_max:]
    at = post.next_week  # plans meet the customer base's last fitted level
    tail = post.adstock.l_max
    sub = post.subset(draws, seed)
    idle = np.zeros((weeks + tail, c_n))
    # revenue the spend already made still drives in the horizon: not the plan's doing
    carry_sub = float(sub.media(idle, carry, start=at).sum(axis=(1, 2)).mean())

    def expand(v: np.ndarray) -> np.ndarray:
        return np.repeat((v / weeks)[None, :], weeks, axis=0) if pattern == "flat" else v.reshape(weeks, c_n)

    def value_grad(v: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = sub.media_gradient(expand(v), carry, tail, start=at)
        g = grad.mean(axis=0)
        g = g.mean(axis=0) if pattern == "flat" else g.reshape(-1)  # d/d(total_c) = mean over weeks
        return float(total.mean()), g

    current_totals = last * budget / last.sum() if last.sum() > 0 else np.full(c_n, budget / c_n)
    current_totals = project(current_totals, lo, hi, budget)
    x0 = current_totals if pattern == "flat" else np.repeat((current_totals / weeks)[None, :], weeks, 0).reshape(-1)
    # SLSQP works on u = x / budget (order 1) and a revenue objective scaled to order 1 at the start;
    # on raw currency units its optimality test passes at once and it would not move.
    f_scale = max(abs(value_grad(x0)[0] - carry_sub), 1.0)
    agg = np.eye(c_n) if pattern == "flat" else np.tile(np.eye(c_n), weeks)  # channel totals of the variables
    lo_u, hi_u = lo / budget, hi / budget
    cons = [{"type": "ineq", "fun": lambda u: agg @ u - lo_u, "jac": lambda u: agg},
            {"type": "ineq", "fun": lambda u: hi_u - agg @ u, "jac": lambda u: -agg}]
    if target_roi is None:
        cons.append({"type": "eq", "fun": lambda u: u.sum() - 1.0, "jac": lambda u: np.ones_like(u)})
    else:
        cons.append({"type": "ineq", "fun": lambda u: 1.0 - u.sum(), "jac": lambda u: -np.ones_like(u)})
        cons.append({"type": "ineq",
                     "fun": lambda u: (value_grad(u * budget)[0] - carry_sub - target_roi * budget * u.sum()) / f_scale,
                     "jac": lambda u: (value_grad(u * budget)[1] - target_roi) * budget / f_scale})

    def objective(u: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = value_grad(u * budget)
        return -f / f_scale, -g * budget / f_scale

    res = minimize(objective, x0 / budget, jac=True, method="SLSQP", bounds=[(0.0, None)] * len(x0),
                   constraints=cons, options={"maxiter": 500, "ftol": 1e-12})
    res.x = res.x * budget
    totals_raw = agg @ np.maximum(res.x, 0.0)
    total_budget = budget if target_roi is None else min(budget, float(totals_raw.sum()))
    if target_roi is not None:
        lo_sum = lo.sum()
        total_budget = max(total_budget, lo_sum)
    totals = project(totals_raw, lo, hi, total_budget)
    if pattern == "flat":
        weekly = expand(totals)
    else:
        w = np.maximum(res.x.reshape(weeks, c_n), 0.0)
        col = w.sum(axis=0)
        weekly = np.where(col > 0, w / np.where(col > 0, col, 1.0), 1.0 / weeks) * totals

    full = post.subset(max(draws, post.n_draws), seed)
    carry_pc = full.media(idle, carry, start=at).sum(axis=1)  # (D, C)
    opt_rev = full.media(np.vstack([weekly, np.zeros((tail, c_n))]), carry, start=at).sum(axis=(1, 2)) - carry_pc.sum(axis=1)
    cur_weekly = expand(current_totals) if pattern == "flat" else np.repeat(
        (current_totals / weeks)[None, :], weeks, axis=0)
    cur_rev = full.media(np.vstack([cur_weekly, np.zeros((tail, c_n))]), carry, start=at).sum(axis=(1, 2)) \
        - carry_pc.sum(axis=1)
    gain = opt_rev - cur_rev
    g_lo, g_mid, g_hi = quantiles(gain)
    per_channel_opt = full.media(np.vstack([weekly, np.zeros((tail, c_n))]), carry, start=at).sum(axis=1) - carry_pc
    pc = pd.DataFrame({"channel": channels, "current": current_totals, "recommended": totals,
                       "change": totals - current_totals, "min": lo, "max": hi,
                       "expected_revenue": per_channel_opt.mean(axis=0)})
    spent = float(totals.sum())
    return Plan(channels, pd.DataFrame(weekly, columns=channels), dict(zip(channels, totals.tolist(), strict=True)),
                dict(zip(channels, current_totals.tolist(), strict=True)), float(opt_rev.mean()),
                float(cur_rev.mean()), float(g_mid), float(g_lo), float(g_hi), float(np.mean(gain > 0)),
                float(opt_rev.mean() / spent) if spent else float("nan"),
                {c: (float(lo[i]), float(hi[i])) for i, c in enumerate(channels)}, budget,
                "target_roi" if target_roi is not None else "max_revenue", bool(res.success), str(res.message), pc,
                held)


__all__ = ["HOLD_BAND", "Bound", "InfeasibleBounds", "Plan", "optimize", "project", "resolve_bounds"]
