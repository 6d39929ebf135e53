"""The funnel's matching walk over one partition's units, compiled with numba.

Why compiled loops: the walk carries a state from one time group of a unit to the next, so it is
sequential within a unit, and units are short (a handful of groups) but very many. Spark's
higher-order functions interpreted that walk row by row at 15x DuckDB's time; numpy cannot express a
carried state without a Python loop per group position. numba compiles the plain loops once (cached
on disk) and they run inside each Spark task over the numpy views of the partition's Arrow columns.

Inputs describe one partition, sorted by unit then time:

* ``unit_start``: offsets of each unit's groups (``len = units + 1``); a *group* is one distinct
  event time of a unit.
* ``group_t``: the groups' times (micros); ``cell_start``: offsets of each group's cells; a *cell* is
  (``cell_mask``: the set of steps an event matches, as bits; ``cell_n``: how many of the group's
  events have that mask).

The semantics are those of :mod:`etl.funnel`'s docstring; :data:`NULL` marks a step not reached.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

#: "No time": a step not reached, a chain that does not exist.
NULL: Final[int] = int(np.iinfo(np.int64).min)
#: The window of session units (none): no elapsed time exceeds it.
NO_WINDOW: Final[int] = int(np.iinfo(np.int64).max)


@njit(cache=True, nogil=True)
def _popcount(x: int) -> int:
    n = 0
    while x:
        x &= x - 1
        n += 1
    return n


@njit(cache=True, nogil=True)
def _greedy_cover(masks: np.ndarray, left: np.ndarray, entry: int, n_steps: int) -> int:
    """How many consecutive steps from ``entry`` the events ``left`` (a count per mask) can fill.

    Each step takes an available event matching the fewest later steps (exact under
    :class:`etl.funnel.FunnelSpec`'s rule). ``left`` is consumed.
    """
    all_bits = (1 << n_steps) - 1
    cover = 0
    for s in range(entry, n_steps):
        later = all_bits ^ ((2 << s) - 1)
        best, best_later = -1, n_steps + 1
        for c in range(masks.shape[0]):
            if (masks[c] >> s) & 1 and left[c] > 0:
                n_later = _popcount(masks[c] & later)
                if n_later < best_later:
                    best, best_later = c, n_later
        if best < 0:
            break
        left[best] -= 1
        cover += 1
    return cover


@njit(cache=True, nogil=True)
def group_covers(cell_start: np.ndarray, cell_mask: np.ndarray, cell_n: np.ndarray, n_steps: int) -> np.ndarray:
    """``covers[g, a]``: how many steps from entry step ``a`` (0-based) group ``g``'s distinct events fill.

    A group's covers do not depend on the chain entering it, so they are computed once per group: the
    run of set bits of the masks' union when every event matches one step, the greedy matching otherwise.
    """
    n_groups = cell_start.shape[0] - 1
    out = np.zeros((n_groups, n_steps), np.int8)
    for g in range(n_groups):
        c0, c1 = cell_start[g], cell_start[g + 1]
        union, shared = 0, False
        for c in range(c0, c1):
            union |= cell_mask[c]
            shared = shared or _popcount(cell_mask[c]) > 1
        for a in range(n_steps):
            if shared:
                out[g, a] = _greedy_cover(cell_mask[c0:c1], cell_n[c0:c1].copy(), a, n_steps)
            else:
                cover = 0
                while a + cover < n_steps and (union >> (a + cover)) & 1:
                    cover += 1
                out[g, a] = cover
    return out


@njit(cache=True, nogil=True)
def ordered_walk(
    unit_start: np.ndarray, group_t: np.ndarray, covers: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(level, step times, step 1's group) per unit of an ordered funnel.

    First pass: for every step s, the latest first-step time of a chain reaching s that ended before
    the current group (the latest start dominates), and that value when s was first reached. A chain
    entering a group at step a goes on to a + covers[g, a] - 1. Second pass: the greedy earliest chain
    from S, the latest start among the chains that first complete the unit's level.
    """
    n_units, n_steps = unit_start.shape[0] - 1, covers.shape[1]
    level = np.zeros(n_units, np.int8)
    times = np.full((n_units, n_steps), NULL, np.int64)
    start_group = np.full(n_units, -1, np.int64)
    best = np.empty(n_steps, np.int64)
    first = np.empty(n_steps, np.int64)
    entry = np.empty(n_steps, np.int64)
    for u in range(n_units):
        g0, g1 = unit_start[u], unit_start[u + 1]
        best[:] = NULL
        first[:] = NULL
        for g in range(g0, g1):
            t = group_t[g]
            entry[0] = t
            for a in range(1, n_steps):
                b = best[a - 1]
                entry[a] = b if b != NULL and t - b <= window else NULL
            for s in range(n_steps):
                m = best[s]
                for a in range(s + 1):
                    if entry[a] != NULL and covers[g, a] > s - a and entry[a] > m:
                        m = entry[a]
                best[s] = m
                if first[s] == NULL:
                    first[s] = m
        n_reached = 0
        while n_reached < n_steps and best[n_reached] != NULL:
            n_reached += 1
        level[u] = n_reached
        if n_reached == 0:
            continue
        start = first[n_reached - 1]
        nxt = 0
        for g in range(g0, g1):
            t = group_t[g]
            if (nxt == 0 and t == start) or (0 < nxt < n_reached and t > start and t - start <= window):
                if nxt == 0:
                    start_group[u] = g
                cover = covers[g, nxt]
                for i in range(nxt, min(nxt + cover, n_steps)):
                    times[u, i] = t
                nxt += cover
    return level, times, start_group


@njit(cache=True, nogil=True)
def any_walk(
    unit_start: np.ndarray,
    group_t: np.ndarray,
    cell_start: np.ndarray,
    cell_code: np.ndarray,
    cell_n: np.ndarray,
    masks: np.ndarray,
    n_steps: int,
    window: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(level, step times, step 1's group) per unit of an any-order funnel.

    ``cell_code`` indexes ``masks`` (the partition's distinct masks). The anchor is the earliest group
    time t0 whose window [t0, t0 + window] holds the largest cover (a sliding window of mask counts);
    step k's time is the earliest group time by which [t0, that time] holds a chain for k steps.
    """
    n_units = unit_start.shape[0] - 1
    level = np.zeros(n_units, np.int8)
    times = np.full((n_units, n_steps), NULL, np.int64)
    start_group = np.full(n_units, -1, np.int64)
    counts = np.zeros(masks.shape[0], np.int64)
    for u in range(n_units):
        g0, g1 = unit_start[u], unit_start[u + 1]
        counts[:] = 0
        hi, best, anchor = g0, 0, -1
        for lo in range(g0, g1):
            while hi < g1 and group_t[hi] - group_t[lo] <= window:
                for c in range(cell_start[hi], cell_start[hi + 1]):
                    counts[cell_code[c]] += cell_n[c]
                hi += 1
            cover = _greedy_cover(masks, counts.copy(), 0, n_steps)
            if cover > best:
                best, anchor = cover, lo
            for c in range(cell_start[lo], cell_start[lo + 1]):
                counts[cell_code[c]] -= cell_n[c]
        level[u] = best
        if best == 0:
            continue
        counts[:] = 0
        nxt = 0
        for g in range(anchor, g1):
            if group_t[g] - group_t[anchor] > window or nxt >= best:
                break
            for c in range(cell_start[g], cell_start[g + 1]):
                counts[cell_code[c]] += cell_n[c]
            cover = _greedy_cover(masks, counts.copy(), 0, n_steps)
            if nxt == 0 < cover:
                start_group[u] = g
            while nxt < cover:
                times[u, nxt] = group_t[g]
                nxt += 1
    return level, times, start_group
