"""Headline KPIs from the daily KPI view: the last ``days`` days against the ``days`` before.

Pure: ``kpi_daily`` in, numbers out (the Overview page formats them; tests recompute them).
Conversion over a window is purchasing sessions / sessions, i.e. the session-weighted mean of the
daily rates, not the mean of the rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Window:
    start: pd.Timestamp
    end: pd.Timestamp
    active_users: float  # mean daily active users
    sessions: float
    conversion_rate: float | None
    revenue: float
    purchases: float


@dataclass(frozen=True)
class Headline:
    current: Window
    previous: Window | None  # None when the data does not cover two full windows


def _window(df: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> Window:
    part = df[(df["event_date"] >= start) & (df["event_date"] <= end)]
    sessions = float(part["sessions"].sum())
    buying = float((part["conversion_rate"].fillna(0) * part["sessions"]).sum())
    return Window(
        start=start, end=end, active_users=float(part["active_users"].mean()) if len(part) else 0.0,
        sessions=sessions, conversion_rate=buying / sessions if sessions else None,
        revenue=float(part["revenue"].sum()), purchases=float(part["purchases"].sum()),
    )


def headline(kpi_daily: pd.DataFrame, days: int = 7) -> Headline | None:
    """The current and previous windows of ``days`` days ending on the last day with data."""
    if kpi_daily is None or kpi_daily.empty:
        return None
    df = kpi_daily.assign(event_date=pd.to_datetime(kpi_daily["event_date"]))
    end = df["event_date"].max()
    start = end - pd.Timedelta(days=days - 1)
    prev_end, prev_start = start - pd.Timedelta(days=1), start - pd.Timedelta(days=days)
    previous = _window(df, prev_start, prev_end) if df["event_date"].min() <= prev_start else None
    return Headline(_window(df, start, end), previous)


def delta(cur: float | None, prev: float | None) -> float | None:
    """Relative change, None when undefined."""
    if cur is None or prev is None or prev == 0:
        return None
    return cur / prev - 1.0
