"""Synthetic REES46 event feed: monthly ``YYYY-Mon.csv.gz`` files plus the hidden truth.

The simulation runs in three vectorized stages so that no Python loop touches single events:

1. users: persona, arrival and churn day, activity level, favourite categories, 9-digit user id;
2. sessions: how many per user (Poisson over the user's active days, weighted by the shop's daily and
   weekly rhythm and the holiday peak), their start times and sizes, a UUID-4-looking session id;
3. events, one day at a time: the views of each session (focus category, price quantile, repeated
   views), add-to-cart after some views, removals and a checkout at the end of the session.

Days are processed in order and rows carried over midnight are merged into the next day, so every file
is sorted by time while memory stays bounded by one day of events. Each day has its own random stream
(seeded by ``(seed, day)``), so the output is byte-identical for the same arguments. ``dirty_rate``
adds faulty rows (each a corrupted copy of one valid row, with exactly one fault) and records them in
``_truth/dirty.csv`` with the quarantine reason the ingest must assign.
"""

from __future__ import annotations

import csv
import gzip
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl import media_plan
from etl.contract import EVENT_TYPES, HEADER_LINE
from etl.personas import PERSONA_NAMES, PERSONAS
from etl.taxonomy import Catalogue, build_catalogue

MONTH_ABBR: Final[tuple[str, ...]] = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)
#: Clean events per user and month at the default mix (measured: 20.8 for one month with 1M users, 20.1
#: per month over Oct-Dec; the real October has ~14). See ``users_for_events``.
EVENTS_PER_USER_MONTH: Final[float] = 20.0
#: Share of users already customers before the first day (the rest arrive uniformly over the window).
PREEXISTING_SHARE: Final[float] = 0.55
#: Gzip level: 1 is several times faster than the default and only ~15% larger.
GZIP_LEVEL: Final[int] = 1
#: Faults injected by ``dirty_rate``: (fault, quarantine reason or "duplicate", relative weight).
FAULTS: Final[tuple[tuple[str, str, float], ...]] = (
    ("duplicate_row", "duplicate", 0.30),
    ("missing_field", "malformed_line", 0.05),
    ("extra_field", "malformed_line", 0.05),
    ("iso_timestamp", "bad_event_time", 0.03),
    ("timestamp_without_utc", "bad_event_time", 0.02),
    ("year_out_of_range", "bad_event_time", 0.03),
    ("unknown_event_type", "unknown_event_type", 0.10),
    ("missing_user_id", "missing_user_id", 0.09),
    ("non_numeric_user_id", "bad_user_id", 0.09),
    ("negative_price", "negative_price", 0.07),
    ("nan_price", "bad_price", 0.04),
    ("non_numeric_price", "bad_price", 0.03),
    ("absurd_price", "absurd_price", 0.10),
)
_UNKNOWN_TYPES: Final[tuple[str, ...]] = ("click", "wishlist", "refund")
_MAX_ROWS_PER_WRITE: Final[int] = 2_000_000
_DAY: Final[int] = 86_400
#: Sessions per user are at most this many; a one-time buyer has a second session with this probability.
_MAX_SESSIONS: Final[int] = 400
_ONE_TIME_SECOND_SESSION: Final[float] = 0.35

ProgressFn = Callable[[int, int, int], None]


@dataclass(frozen=True)
class GenerateSummary:
    """What a generation wrote (counts are data rows; ``dirty_rows`` includes duplicates)."""

    out_dir: str
    files: list[str]
    users: int
    events: int
    dirty_rows: int
    events_per_file: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def month_file_name(year: int, month: int) -> str:
    """File name of a month like the real feed: ``2019-Oct.csv.gz``."""
    return f"{year}-{MONTH_ABBR[month - 1]}.csv.gz"


def users_for_events(events: int, months: int = 1) -> int:
    """Number of ``--users`` that yields about ``events`` clean events over ``months`` months."""
    return max(1, round(events / (EVENTS_PER_USER_MONTH * months)))


# ----------------------------------------------------------------------------------------- calendar


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return date(d.year + y, m + 1, 1) if d.day == 1 else date(d.year + y, m + 1, min(d.day, 28))


def black_friday(year: int) -> date:
    """The day after the fourth Thursday of November."""
    first = date(year, 11, 1)
    thursday = first + timedelta(days=(3 - first.weekday()) % 7)
    return thursday + timedelta(days=22)


@dataclass(frozen=True)
class _Calendar:
    days: list[date]
    epoch: np.ndarray  # int64 seconds at the start of each day, one extra at the end
    weight: np.ndarray  # shop-wide daily intensity (1.0 on an ordinary weekday)
    weekend: np.ndarray  # bool
    season: np.ndarray  # bool: from the Monday of Black Friday week to Dec 31
    black_friday_week: np.ndarray  # bool: Black Friday to Cyber Monday (discounted prices)
    month_index: np.ndarray  # int, 0-based month of the window per day
    media: np.ndarray | None = None  # ``--marketing``: extra relative intensity per day (etl.media_plan)


def _calendar(start: date, months: int) -> _Calendar:
    end = _add_months(start, months)
    days = [start + timedelta(days=i) for i in range((end - start).days)]
    epoch0 = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
    epoch = epoch0 + _DAY * np.arange(len(days) + 1, dtype=np.int64)
    weekday_factor = np.array([1.0, 0.98, 0.97, 0.99, 1.02, 1.08, 1.06])
    weight = np.array([weekday_factor[d.weekday()] for d in days])
    season = np.zeros(len(days), dtype=bool)
    bf_week = np.zeros(len(days), dtype=bool)
    for i, d in enumerate(days):
        bf = black_friday(d.year)
        offset = (d - bf).days
        if -7 <= offset < 0:
            weight[i] *= 1.2 + 0.05 * (offset + 7)
        elif offset == 0:
            weight[i] *= 3.2
        elif 1 <= offset <= 3:
            weight[i] *= (1.9, 1.6, 2.1)[offset - 1]
        elif d.month == 12 and d.day <= 23:
            weight[i] *= 1.3
        elif d.month == 12 and d.day <= 26:
            weight[i] *= 0.7
        season[i] = offset >= -4 and d.month in (11, 12)
        bf_week[i] = 0 <= offset <= 3
    month_index = np.array([(d.year - start.year) * 12 + d.month - start.month for d in days])
    return _Calendar(days, epoch, weight, np.array([d.weekday() >= 5 for d in days]), season, bf_week,
                     month_index)


def _hour_cdf() -> np.ndarray:
    """Per persona CDF of the session-start hour (UTC): the shop's daily rhythm mixed with a peak."""
    hours = np.arange(24)
    # Real REES46 traffic (UTC): quiet 20:00-03:00, rising through the morning, flat afternoon.
    base = np.array([1.5, 1.0, 1.2, 2.0, 3.5, 5.0, 6.0, 6.5, 6.5, 6.5, 6.5, 6.5,
                     6.5, 6.5, 6.5, 6.5, 6.5, 6.5, 6.0, 5.0, 4.0, 3.0, 2.5, 2.0])
    base = base / base.sum()
    rows = []
    for p in PERSONAS:
        dist = np.minimum(np.abs(hours - p.hour_peak), 24 - np.abs(hours - p.hour_peak))
        peak = np.exp(-0.5 * (dist / 2.0) ** 2)
        mix = 0.2 * base + 0.8 * peak / peak.sum()
        rows.append(np.cumsum(mix / mix.sum()))
    cdf = np.array(rows)
    cdf[:, -1] = 1.0
    return cdf


# ------------------------------------------------------------------------------------------ users


@dataclass
class _Users:
    persona: np.ndarray  # int8
    user_id: np.ndarray  # int64, 9 digits starting with 5
    first_day: np.ndarray  # int: arrival (0 for pre-existing customers)
    last_day: np.ndarray  # int: churn day (inclusive)
    activity: np.ndarray  # float: multiplier of the persona's session rate
    cart_mult: np.ndarray  # float: multiplier of the persona's cart rate
    favourites: np.ndarray  # (n, k_max) category indices
    n_favourites: np.ndarray  # int


def _draw_users(rng: np.random.Generator, n: int, cal: _Calendar, cat: Catalogue) -> _Users:
    n_days = len(cal.days)
    shares = np.array([p.share for p in PERSONAS])
    persona = rng.choice(len(PERSONAS), size=n, p=shares / shares.sum()).astype(np.int8)
    one_time = persona == PERSONA_NAMES.index("one_time_buyer")
    pre = (rng.random(n) < PREEXISTING_SHARE) & ~one_time
    first = np.where(pre, 0, rng.integers(0, n_days, size=n))
    lifetime = np.array([p.lifetime_days for p in PERSONAS])[persona]
    last = np.minimum(n_days - 1, first + rng.exponential(lifetime).astype(np.int64))
    activity = rng.gamma(4.0, 1 / 4.0, size=n)
    cart_mult = rng.lognormal(0.0, 0.35, size=n)

    k_max = max(p.favourites for p in PERSONAS)
    favourites = np.zeros((n, k_max), dtype=np.int32)
    for i, p in enumerate(PERSONAS):
        members = np.flatnonzero(persona == i)
        prob = cat.cat_popularity * (cat.categories_in(p.tops) if p.tops else 1.0)
        favourites[members] = rng.choice(len(prob), size=(len(members), k_max), p=prob / prob.sum())
    n_favourites = np.array([p.favourites for p in PERSONAS])[persona]

    # Ids grow with the registration time, like the real ones (older customers have lower ids).
    if n > 99_000_000:
        raise ValueError(f"--users must be at most 99,000,000 (got {n:,})")
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(first + rng.random(n), kind="stable")] = np.arange(n)
    stride = 99_000_000 // n
    user_id = 500_000_000 + rank * stride + rng.integers(0, stride, size=n)
    return _Users(persona, user_id, first, last, activity, cart_mult, favourites, n_favourites)


# --------------------------------------------------------------------------------------- sessions


@dataclass
class _Sessions:
    user: np.ndarray  # int32 user index, sessions sorted by start
    start: np.ndarray  # int64 epoch seconds
    n_views: np.ndarray  # int32
    forced_purchase: np.ndarray  # bool: the one-time buyer's buying session
    uuid: np.ndarray  # (n, 16) uint8


def _intensity(cal: _Calendar) -> np.ndarray:
    """Per persona and day relative session intensity: daily rhythm, weekend and holiday factors."""
    rows = []
    for p in PERSONAS:
        w = cal.weight * np.where(cal.weekend, p.weekend_factor, 1.0)
        rows.append(w * np.where(cal.season, p.holiday_factor, 1.0))
    if cal.media is not None:  # media-driven sessions add to the base (see etl.media_plan)
        return np.array([r + r.mean() * cal.media for r in rows])
    return np.array(rows)


def _draw_sessions(rng: np.random.Generator, users: _Users, cal: _Calendar) -> _Sessions:
    inten = _intensity(cal)
    cum = np.concatenate([np.zeros((len(PERSONAS), 1)), np.cumsum(inten, axis=1)], axis=1)
    p = users.persona
    rate = np.array([q.sessions_per_month for q in PERSONAS])[p] / 30.0
    span = cum[p, users.last_day + 1] - cum[p, users.first_day]
    n_sess = rng.poisson(rate * span * users.activity)
    one_time = p == PERSONA_NAMES.index("one_time_buyer")
    n_sess[one_time] = 1 + (rng.random(int(one_time.sum())) < _ONE_TIME_SECOND_SESSION)
    n_sess = np.clip(n_sess, 1, _MAX_SESSIONS)

    user = np.repeat(np.arange(len(p), dtype=np.int32), n_sess)
    sp = p[user]
    lo, hi = cum[sp, users.first_day[user]], cum[sp, users.last_day[user] + 1]
    target = lo + rng.random(len(user)) * (hi - lo)
    day = np.empty(len(user), dtype=np.int64)
    for i in range(len(PERSONAS)):
        m = sp == i
        day[m] = np.searchsorted(cum[i], target[m], side="right") - 1
    day = np.clip(day, users.first_day[user], users.last_day[user])
    hour_cdf = _hour_cdf()
    hour = np.empty(len(user), dtype=np.int64)
    u = rng.random(len(user))
    for i in range(len(PERSONAS)):
        m = sp == i
        hour[m] = np.searchsorted(hour_cdf[i], u[m], side="right")
    start = cal.epoch[day] + 3600 * np.minimum(hour, 23) + rng.integers(0, 3600, size=len(user))

    mean_views = np.array([q.views_per_session for q in PERSONAS])[sp]
    n_views = np.minimum(rng.geometric(1.0 / mean_views), 150).astype(np.int32)

    # The one-time buyer buys in the last of their sessions.
    order = np.lexsort((start, user))
    group_end = np.cumsum(n_sess) - 1
    forced = np.zeros(len(user), dtype=bool)
    forced[order[group_end]] = one_time[user[order[group_end]]]

    uuid = np.frombuffer(rng.bytes(16 * len(user)), dtype=np.uint8).reshape(-1, 16).copy()
    uuid[:, 6] = (uuid[:, 6] & 0x0F) | 0x40
    uuid[:, 8] = (uuid[:, 8] & 0x3F) | 0x80

    by_time = np.argsort(start, kind="stable")
    return _Sessions(user[by_time], start[by_time], n_views[by_time], forced[by_time], uuid[by_time])


# ----------------------------------------------------------------------------------------- events


@dataclass
class _Events:
    time: np.ndarray  # int64 epoch seconds
    etype: np.ndarray  # int8 index into EVENT_TYPES
    product: np.ndarray  # int32 product index
    session: np.ndarray  # int64 global session index
    seq: np.ndarray  # int32 position within the session

    def take(self, idx: np.ndarray | slice) -> _Events:
        return _Events(self.time[idx], self.etype[idx], self.product[idx], self.session[idx], self.seq[idx])

    @staticmethod
    def concat(parts: list[_Events]) -> _Events:
        return _Events(*(np.concatenate([getattr(e, f) for e in parts])
                         for f in ("time", "etype", "product", "session", "seq")))

    def __len__(self) -> int:
        return len(self.time)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within runs of equal values of a sorted array."""
    return np.arange(len(groups)) - np.searchsorted(groups, groups, side="left")


def _lognormal_gaps(rng: np.random.Generator, median: np.ndarray | float, n: int) -> np.ndarray:
    return np.minimum(1 + rng.lognormal(np.log(median), 0.8, size=n).astype(np.int64), 1800)


def _expand(rng: np.random.Generator, sess_idx: np.ndarray, sessions: _Sessions, users: _Users,
            cat: Catalogue, persona_params: dict[str, np.ndarray]) -> _Events:
    """Turn the sessions ``sess_idx`` into their events (views, carts, removals, purchases)."""
    s_user = sessions.user[sess_idx]
    s_persona = users.persona[s_user]
    v = sessions.n_views[sess_idx].astype(np.int64)
    forced = sessions.forced_purchase[sess_idx]
    n_s, n_v = len(sess_idx), int(v.sum())
    vs = np.repeat(np.arange(n_s), v)  # local session of each view
    first_view = np.cumsum(v) - v
    pos = np.arange(n_v) - first_view[vs]
    u, p = s_user[vs], s_persona[vs]
    pp = persona_params

    # Category: the session's focus, another favourite, or anywhere in the shop.
    k = users.n_favourites[s_user]
    focus = users.favourites[s_user, (rng.random(n_s) * k).astype(np.int64)]
    other = users.favourites[u, (rng.random(n_v) * k[vs]).astype(np.int64)]
    anywhere = np.searchsorted(np.cumsum(cat.cat_popularity), rng.random(n_v) * 0.999999)
    r = rng.random(n_v)
    category = np.where(r < pp["stay"][p], focus[vs], np.where(r > 1 - pp["explore"][p], anywhere, other))
    # Product: a price quantile inside the category (products are sorted by price).
    q = rng.beta(pp["price_a"][p], pp["price_b"][p])
    count = cat.cat_count[category]
    product = cat.cat_start[category] + np.minimum((q * count).astype(np.int64), count - 1)
    # A quarter of the views look again at the product viewed just before.
    new = (pos == 0) | (rng.random(n_v) >= 0.25)
    product = product[np.maximum.accumulate(np.where(new, np.arange(n_v), 0))].astype(np.int32)

    cart = rng.random(n_v) < pp["cart_rate"][p] * users.cart_mult[u]
    cart[first_view[forced] + (rng.random(int(forced.sum())) * v[forced]).astype(np.int64)] = True
    # Browse steps: each view, followed by its add-to-cart when carted.
    reps = 1 + cart.astype(np.int64)
    step_view = np.repeat(np.arange(n_v), reps)
    step_type = np.zeros(len(step_view), dtype=np.int8)
    step_type[(np.cumsum(reps) - 1)[cart]] = 1
    step_sess = vs[step_view]
    steps_per_sess = np.bincount(step_sess, minlength=n_s)
    step_seq = _rank_within(step_sess)

    # End of session: removals, then a checkout that buys every carted item still in the cart.
    cart_view = np.flatnonzero(cart)
    cs = vs[cart_view]
    cart_forced = forced[cs]
    removed = (rng.random(len(cart_view)) < pp["remove_rate"][s_persona[cs]]) & ~cart_forced
    checkout = (rng.random(n_s) < pp["checkout_rate"][s_persona]) | forced
    bought = ~removed & checkout[cs]
    if cart_forced.any():  # the one-time buyer buys exactly one item
        bought &= ~cart_forced | (np.concatenate([[True], cs[1:] != cs[:-1]]))
    rm_sess, buy_sess = cs[removed], cs[bought]
    n_removed = np.bincount(rm_sess, minlength=n_s)
    rm_seq = steps_per_sess[rm_sess] + _rank_within(rm_sess)
    buy_seq = steps_per_sess[buy_sess] + n_removed[buy_sess] + _rank_within(buy_sess)

    sess = np.concatenate([step_sess, rm_sess, buy_sess])
    seq = np.concatenate([step_seq, rm_seq, buy_seq]).astype(np.int32)
    etype = np.concatenate([step_type, np.full(len(rm_sess), 2, np.int8), np.full(len(buy_sess), 3, np.int8)])
    prod = np.concatenate([product[step_view], product[cart_view[removed]], product[cart_view[bought]]])
    order = np.lexsort((seq, sess))
    sess, seq, etype, prod = sess[order], seq[order], etype[order], prod[order]

    # Seconds since the previous event of the session: dwell between views, quick add-to-cart.
    median = np.select([etype == 0, etype == 1, etype == 2], [pp["dwell"][s_persona[sess]], 8.0, 20.0], 45.0)
    gap = _lognormal_gaps(rng, median, len(sess))
    gap[seq == 0] = 0
    elapsed = np.cumsum(gap)
    session_first = np.searchsorted(sess, np.arange(n_s))
    elapsed -= elapsed[session_first][sess]
    return _Events(sessions.start[sess_idx][sess] + elapsed, etype, prod,
                   sess_idx[sess].astype(np.int64), seq)


# ------------------------------------------------------------------------------------- formatting


def _fixed_width(items: np.ndarray, w: int) -> pa.Array:
    """n opaque w-byte items as an Arrow string array of n strings of width w (zero copy)."""
    n = len(items)
    data = np.ascontiguousarray(items)
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


class _Formatter:
    """Renders events as REES46 CSV lines with lookup tables instead of per-row string formatting."""

    def __init__(self, cal: _Calendar, cat: Catalogue, users: _Users, sessions: _Sessions,
                 rng: np.random.Generator) -> None:
        self.epoch0 = int(cal.epoch[0])
        days = [*cal.days, cal.days[-1] + timedelta(days=1)]
        self.day_text = np.frombuffer("".join(d.strftime("%Y-%m-%d ") for d in days).encode(),
                                      dtype=np.uint8).reshape(-1, 11)
        sod = np.arange(_DAY)
        self.tod_text = np.stack([sod // 36000, sod // 3600 % 10, np.full(_DAY, 10), sod % 3600 // 600,
                                  sod % 600 // 60, np.full(_DAY, 10), sod % 60 // 10, sod % 10],
                                 axis=1).astype(np.uint8) + 48  # 10 + 48 is ':'
        self.user_text = ((users.user_id[:, None] // 10 ** np.arange(8, -1, -1)) % 10 + 48).astype(np.uint8)
        self.sessions = sessions
        self.hex = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype=np.uint8).reshape(256, 2)
        self.types = pa.array(list(EVENT_TYPES))
        self.month_of_day = np.append(cal.month_index, cal.month_index[-1])
        self.bf_of_day = np.append(cal.black_friday_week, False)
        # Product part "product_id,category_id,category_code,brand,price" per (month, promo) variant:
        # prices drift a little each month and a third of the products are discounted on Black Friday.
        n_months = int(cal.month_index.max()) + 1
        pcat = cat.product_cat
        head = [f"{pid},{cid},{code},{brand}," for pid, cid, code, brand in
                zip(cat.product_id, cat.cat_id[pcat], cat.cat_code[pcat], cat.brand, strict=True)]
        promo = rng.random(cat.n_products) < 0.33
        discount = rng.uniform(0.75, 0.92, size=cat.n_products)
        variants = []
        self.price_cents: list[np.ndarray] = []  # per (month, promo) variant, for --marketing's truth
        for _m in range(n_months):
            drift = rng.normal(1.0, 0.03, size=cat.n_products)
            for bf in (False, True):
                factor = drift * np.where(promo & bf, discount, 1.0)
                cents = np.maximum(100, np.round(cat.price_cents * factor)).astype(np.int64)
                self.price_cents.append(cents)
                variants.extend(f"{h}{c // 100}.{c % 100:02d}" for h, c in zip(head, cents, strict=True))
        self.product_text = pa.array(variants)
        self.n_products = cat.n_products

    def lines(self, ev: _Events, day: int) -> pa.StringArray:
        """One string per event of ``day`` (all its times fall on that day), each ending with a newline."""
        n = len(ev)
        if n == 0:
            return pa.array([], type=pa.string())
        # Row lookups go through one-dimensional "void" views: a memcpy per row instead of per byte.
        stamps = np.empty((_DAY, 23), dtype=np.uint8)
        stamps[:, :11] = self.day_text[day]
        stamps[:, 11:19] = self.tod_text
        stamps[:, 19:] = np.frombuffer(b" UTC", dtype=np.uint8)
        t = _void(stamps)[(ev.time - self.epoch0) % _DAY]
        variant = 2 * self.month_of_day[day] + self.bf_of_day[day]
        prod_text = self.product_text.take(pa.array(variant * self.n_products + ev.product))
        user = _void(self.user_text)[self.sessions.user[ev.session]]
        lo, hi = int(ev.session.min()), int(ev.session.max()) + 1
        h = self.hex[self.sessions.uuid[lo:hi]].reshape(hi - lo, 32)
        s = np.empty((hi - lo, 37), dtype=np.uint8)
        s[:, 0:8], s[:, 9:13], s[:, 14:18], s[:, 19:23], s[:, 24:36] = (
            h[:, 0:8], h[:, 8:12], h[:, 12:16], h[:, 16:20], h[:, 20:32])
        s[:, [8, 13, 18, 23]] = ord("-")
        s[:, 36] = ord("\n")
        sess = _void(s)[ev.session - lo]
        return pc.binary_join_element_wise(
            _fixed_width(t, 23), self.types.take(pa.array(ev.etype)), prod_text, _fixed_width(user, 9),
            _fixed_width(sess, 37), ",",
        )


def _void(matrix: np.ndarray) -> np.ndarray:
    """View the rows of a (n, w) uint8 matrix as n opaque w-byte items."""
    return np.ascontiguousarray(matrix).view(f"V{matrix.shape[1]}").ravel()


def _text(lines: pa.StringArray) -> memoryview:
    """The concatenated bytes of a string array (its value buffer between the first and last offset)."""
    if not len(lines):
        return memoryview(b"")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=4 * lines.offset)
    return memoryview(lines.buffers()[2])[int(offsets[0]):int(offsets[-1])]


# ----------------------------------------------------------------------------------------- faults


def _corrupt(line: str, fault: str, rng: np.random.Generator) -> str:
    """One faulty copy of a valid line (with its newline); exactly one rule of the ingest fails."""
    f = line.rstrip("\n").split(",")
    if fault == "missing_field":
        del f[5]  # brand
    elif fault == "extra_field":
        f.append("promo")
    elif fault == "iso_timestamp":
        f[0] = f[0][:10] + "T" + f[0][11:19] + "Z"
    elif fault == "timestamp_without_utc":
        f[0] = f[0][:19]
    elif fault == "year_out_of_range":
        f[0] = str(int(f[0][:4]) - 100) + f[0][4:]
    elif fault == "unknown_event_type":
        f[1] = _UNKNOWN_TYPES[int(rng.integers(len(_UNKNOWN_TYPES)))]
    elif fault == "missing_user_id":
        f[7] = ""
    elif fault == "non_numeric_user_id":
        f[7] = "u" + f[7] if rng.random() < 0.5 else f[7][:4] + "x" + f[7][4:]
    elif fault == "negative_price":
        f[6] = "-" + f[6]
    elif fault == "nan_price":
        f[6] = "NaN"
    elif fault == "non_numeric_price":
        f[6] = "abc"
    elif fault == "absurd_price":
        f[6] = f"{100_000 + int(rng.integers(1, 9_900_000))}.{int(rng.integers(100)):02d}"
    elif fault != "duplicate_row":
        raise ValueError(f"unknown fault {fault}")
    return ",".join(f) + "\n"


def _inject(rng: np.random.Generator, lines: pa.StringArray, rate: float
            ) -> tuple[pa.StringArray, list[tuple[int, str, str]]]:
    """Insert faulty rows; returns the new lines and (0-based row, fault, expected) of each dirty row."""
    n = len(lines)
    k = int(rng.binomial(n, rate / (1 - rate))) if n and rate > 0 else 0
    k = min(k, n)
    if k == 0:
        return lines, []
    source = np.sort(rng.choice(n, size=k, replace=False))
    weights = np.array([w for _, _, w in FAULTS])
    kinds = rng.choice(len(FAULTS), size=k, p=weights / weights.sum())
    is_dup = np.array([FAULTS[i][0] == "duplicate_row" for i in kinds])
    # A duplicate lands 1-50 rows after its original; any other faulty row right after its source.
    after = np.where(is_dup, np.minimum(source + rng.integers(1, 51, size=k), n - 1), source)
    after = np.maximum(after, source)
    dirty = [_corrupt(lines[int(s)].as_py(), FAULTS[i][0], rng) for s, i in zip(source, kinds, strict=True)]
    key = np.concatenate([2 * np.arange(n), 2 * after + 1])
    order = np.argsort(key, kind="stable")
    merged = pa.concat_arrays([lines, pa.array(dirty, type=pa.string())]).take(pa.array(order))
    position = np.empty(n + k, dtype=np.int64)
    position[order] = np.arange(n + k)
    records = [(int(position[n + j]), FAULTS[i][0], FAULTS[i][1]) for j, i in enumerate(kinds)]
    return merged, records


# ----------------------------------------------------------------------------------------- writing


class _GzipWriter:
    """Compresses and writes in a background thread so that zlib overlaps the next day's simulation."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Path | None, bytes | memoryview | None]] = queue.Queue(maxsize=3)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        current: gzip.GzipFile | None = None
        raw = None
        try:
            while True:
                path, data = self._queue.get()
                if path is None:
                    break
                if data is None:  # open a new file
                    if current is not None:
                        current.close()
                        raw.close()
                    raw = open(path, "wb")  # noqa: SIM115 - closed when the next file opens or at the end
                    current = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL,
                                            mtime=0)
                else:
                    current.write(data)
        except BaseException as err:  # surfaced in close()
            self._error = err
        finally:
            if current is not None:
                current.close()
                raw.close()

    def open(self, path: Path) -> None:
        self._put(path, None)

    def write(self, data: bytes | memoryview) -> None:
        self._put(Path(), data)

    def _put(self, path: Path, data: bytes | memoryview | None) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put((path, data), timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._queue.put((None, None))
        self._thread.join()
        if self._error is not None:
            raise self._error


def _day_batches(users: _Users, sessions: _Sessions, cal: _Calendar, cat: Catalogue, seed: int
                 ) -> Iterator[tuple[int, _Events]]:
    """Yield (day, events of that day sorted by time); sessions running past midnight carry over."""
    pp = {
        "stay": np.array([p.stay for p in PERSONAS]),
        "explore": np.array([p.explore for p in PERSONAS]),
        "price_a": np.array([p.price_a for p in PERSONAS]),
        "price_b": np.array([p.price_b for p in PERSONAS]),
        "cart_rate": np.array([p.cart_rate for p in PERSONAS]),
        "remove_rate": np.array([p.remove_rate for p in PERSONAS]),
        "checkout_rate": np.array([p.checkout_rate for p in PERSONAS]),
        "dwell": np.array([p.dwell_seconds for p in PERSONAS], dtype=float),
    }
    bounds = np.searchsorted(sessions.start, cal.epoch)
    carry: _Events | None = None
    for d in range(len(cal.days)):
        rng = np.random.default_rng([seed, 2, d])
        ev = _expand(rng, np.arange(bounds[d], bounds[d + 1]), sessions, users, cat, pp)
        if carry is not None:
            ev = _Events.concat([carry, ev])
        ev = ev.take(np.lexsort((ev.seq, ev.session, ev.time)))
        cut = int(np.searchsorted(ev.time, cal.epoch[d + 1]))
        carry = ev.take(slice(cut, None))
        yield d, ev.take(slice(0, cut))
    # Events after the last day (sessions started late on the last evening) fall outside the window.


def generate(out_dir: str | Path, *, users: int, start: date = date(2019, 10, 1), months: int = 1,
             seed: int = 0, dirty_rate: float = 0.0, progress: ProgressFn | None = None,
             marketing: bool = False) -> GenerateSummary:
    """Write ``months`` monthly REES46 files for ``users`` users into ``out_dir`` plus ``_truth/``.

    ``progress(days_done, days_total, rows_written)`` is called after each simulated day.
    ``marketing``: also write ``spend.csv`` (a six-channel plan) and ``_truth/mmm.json``, and make
    sessions (hence purchases) respond to the plan (see :mod:`etl.media_plan`); off, the output is
    unchanged.
    """
    if users < 1 or months < 1:
        raise ValueError("--users and --months must be at least 1")
    if not 0.0 <= dirty_rate < 0.5:
        raise ValueError(f"--dirty-rate must be in [0, 0.5) (got {dirty_rate})")
    began = time.perf_counter()
    out = Path(out_dir)
    truth = out / "_truth"
    truth.mkdir(parents=True, exist_ok=True)
    cal = _calendar(start, months)
    plan = media_plan.event_plan(cal.days, seed) if marketing else None
    if plan is not None:
        cal = replace(cal, media=plan[4].sum(axis=1))
    cat = build_catalogue(np.random.default_rng([seed, 0]))
    rng = np.random.default_rng([seed, 1])
    people = _draw_users(rng, users, cal, cat)
    sessions = _draw_sessions(rng, people, cal)
    fmt = _Formatter(cal, cat, people, sessions, rng)

    n_events = np.zeros(users, dtype=np.int64)
    n_purchases = np.zeros(users, dtype=np.int64)
    day_revenue = np.zeros(len(cal.days))
    persona_revenue = np.zeros(len(PERSONAS))  # --marketing: revenue per session by persona, for the truth
    last_time = np.zeros(users, dtype=np.int64)
    files: list[str] = []
    per_file: dict[str, int] = {}
    dirty_records: list[tuple[str, int, str, str]] = []
    written_total = dirty_total = 0
    writer = _GzipWriter()
    line_no = 1
    try:
        for d, ev in _day_batches(people, sessions, cal, cat, seed):
            day = cal.days[d]
            name = month_file_name(day.year, day.month)
            if not files or files[-1] != name:
                files.append(name)
                per_file[name] = 0
                writer.open(out / name)
                writer.write((HEADER_LINE + "\n").encode())
                line_no = 1
            u = sessions.user[ev.session]
            n_events += np.bincount(u, minlength=users)
            n_purchases += np.bincount(u[ev.etype == 3], minlength=users)
            np.maximum.at(last_time, u, ev.time)
            if plan is not None:
                bought = ev.etype == 3
                variant = 2 * fmt.month_of_day[d] + fmt.bf_of_day[d]
                cents = fmt.price_cents[variant][ev.product[bought]]
                day_revenue[d] = cents.sum() / 100.0
                persona_revenue += np.bincount(people.persona[u[bought]], weights=cents / 100.0,
                                               minlength=len(PERSONAS))
            fault_rng = np.random.default_rng([seed, 3, d])
            for lo in range(0, len(ev), _MAX_ROWS_PER_WRITE):
                lines = fmt.lines(ev.take(slice(lo, lo + _MAX_ROWS_PER_WRITE)), d)
                lines, records = _inject(fault_rng, lines, dirty_rate)
                dirty_records.extend((name, line_no + 1 + row, fault, exp) for row, fault, exp in records)
                writer.write(_text(lines))
                line_no += len(lines)
                per_file[name] += len(lines)
                written_total += len(lines)
                dirty_total += len(records)
            if progress is not None:
                progress(d + 1, len(cal.days), written_total)
    finally:
        writer.close()

    _write_users(truth / "users.csv", people, sessions, n_events, n_purchases, last_time)
    if plan is not None:
        per_session = persona_revenue / np.maximum(np.bincount(people.persona[sessions.user],
                                                               minlength=len(PERSONAS)), 1)
        _write_marketing(out, cal, plan, day_revenue, marketing_response(cal, people, plan, per_session))
    with open(truth / "dirty.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["file", "line_number", "fault", "expected"])
        w.writerows(dirty_records)
    summary = GenerateSummary(
        out_dir=str(out), files=files, users=users, events=written_total - dirty_total,
        dirty_rows=dirty_total, events_per_file=per_file, seconds=round(time.perf_counter() - began, 2),
    )
    manifest = {"arguments": {"users": users, "start": start.isoformat(), "months": months, "seed": seed,
                              "dirty_rate": dirty_rate},
                **{k: v for k, v in summary.to_dict().items() if k not in ("seconds", "out_dir")}}
    (truth / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return summary


def marketing_response(cal: _Calendar, users: _Users, plan: tuple, per_session: np.ndarray) -> media_plan.SessionResponse:
    """The session draw's rules for ``users`` under ``plan`` (:class:`etl.media_plan.SessionResponse`),
    with ``per_session`` the revenue per session by persona of a run."""
    one_time = users.persona == PERSONA_NAMES.index("one_time_buyer")
    return media_plan.SessionResponse(
        base=_intensity(replace(cal, media=None)), effect=plan[4], persona=users.persona,
        first_day=users.first_day, last_day=users.last_day,
        rate=np.array([q.sessions_per_month for q in PERSONAS])[users.persona] / 30.0 * users.activity,
        fixed=np.where(one_time, 1.0 + _ONE_TIME_SECOND_SESSION, np.nan), per_session=per_session,
        max_sessions=_MAX_SESSIONS)


def _write_marketing(out: Path, cal: _Calendar, plan: tuple, day_revenue: np.ndarray,
                     response: media_plan.SessionResponse) -> None:
    """``spend.csv`` beside the event files and ``_truth/mmm.json`` (see etl.media_plan.event_truth)."""
    weeks, spend, beta, week_of_day, _effect = plan
    doc, daily = media_plan.event_truth(cal.days, weeks, spend, beta, week_of_day, day_revenue, response)
    daily.to_csv(out / "spend.csv", index=False)
    (out / "_truth" / "mmm.json").write_text(json.dumps(doc, indent=2) + "\n")


def _write_users(path: Path, users: _Users, sessions: _Sessions, n_events: np.ndarray,
                 n_purchases: np.ndarray, last_time: np.ndarray) -> None:
    """The hidden truth per user, sorted by user id (only users with at least one event)."""
    n = len(users.persona)
    first_time = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_time, sessions.user, sessions.start)
    n_sessions = np.bincount(sessions.user, minlength=n)
    keep = np.flatnonzero(n_events > 0)
    keep = keep[np.argsort(users.user_id[keep])]

    def stamp(t: np.ndarray) -> np.ndarray:
        return np.datetime_as_string(t.astype("datetime64[s]"), unit="s")

    names = np.array(PERSONA_NAMES, dtype=object)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["user_id", "persona", "first_event_time", "last_event_time", "first_month",
                    "last_month", "n_sessions", "n_events", "n_purchases"])
        first_s, last_s = stamp(first_time[keep]), stamp(last_time[keep])
        w.writerows(zip(users.user_id[keep], names[users.persona[keep]], first_s, last_s,
                        (s[:7] for s in first_s), (s[:7] for s in last_s), n_sessions[keep],
                        n_events[keep], n_purchases[keep], strict=True))
