"""The hidden behavioural personas the synthetic users are drawn from.

Each persona differs in several per-user features at once (visit frequency, session length, conversion,
removals, price level, category diversity, hour of day, weekend share, holiday share, lifetime), so a
segmentation of per-user features can recover them; per-user random multipliers add overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from etl.taxonomy import BIG_TICKET_TOPS, GIFT_TOPS


@dataclass(frozen=True)
class Persona:
    """Behaviour parameters of one persona (rates are per user and month unless said otherwise)."""

    name: str
    share: float  # fraction of users
    sessions_per_month: float  # mean session starts per active month (before seasonality)
    views_per_session: float  # mean number of product views per session
    lifetime_days: float  # mean days between arrival and churn
    cart_rate: float  # probability that a view is followed by add-to-cart
    remove_rate: float  # probability that a carted item is removed again
    checkout_rate: float  # probability that a session with carts ends in a purchase
    price_a: float  # Beta(a, b) of the price quantile within a category
    price_b: float
    favourites: int  # number of favourite categories (category diversity)
    stay: float  # probability that a view stays in the session's focus category
    explore: float  # probability that a view goes to a random category of the whole shop
    dwell_seconds: float  # median seconds between two views
    hour_peak: int  # UTC hour around which this persona's sessions start
    weekend_factor: float  # relative intensity on Saturday and Sunday
    holiday_factor: float  # relative intensity from the Monday of Black Friday week to Dec 31
    tops: tuple[str, ...] | None = None  # top-level groups of the favourites (None: any)


PERSONAS: Final[tuple[Persona, ...]] = (
    Persona("loyal_frequent", share=0.10, sessions_per_month=8.0, views_per_session=5.0,
            lifetime_days=400, cart_rate=0.08, remove_rate=0.08, checkout_rate=0.70,
            price_a=4.0, price_b=4.0, favourites=3, stay=0.85, explore=0.03, dwell_seconds=35,
            hour_peak=17, weekend_factor=0.9, holiday_factor=1.1,
            tops=("appliances", "apparel", "kids", "")),
    Persona("big_ticket", share=0.07, sessions_per_month=1.2, views_per_session=20.0,
            lifetime_days=200, cart_rate=0.06, remove_rate=0.12, checkout_rate=0.65,
            price_a=9.0, price_b=1.5, favourites=2, stay=0.92, explore=0.02, dwell_seconds=75,
            hour_peak=11, weekend_factor=2.0, holiday_factor=1.2, tops=BIG_TICKET_TOPS),
    Persona("bargain_hunter", share=0.14, sessions_per_month=4.0, views_per_session=12.0,
            lifetime_days=250, cart_rate=0.035, remove_rate=0.20, checkout_rate=0.45,
            price_a=1.0, price_b=8.0, favourites=7, stay=0.55, explore=0.2, dwell_seconds=20,
            hour_peak=7, weekend_factor=1.0, holiday_factor=1.3),
    Persona("window_shopper", share=0.32, sessions_per_month=3.5, views_per_session=5.0,
            lifetime_days=200, cart_rate=0.003, remove_rate=0.30, checkout_rate=0.10,
            price_a=2.0, price_b=2.0, favourites=5, stay=0.6, explore=0.2, dwell_seconds=25,
            hour_peak=20, weekend_factor=1.4, holiday_factor=1.0,
            tops=("electronics", "apparel", "furniture", "sport", "auto", "")),
    Persona("cart_abandoner", share=0.12, sessions_per_month=3.0, views_per_session=6.0,
            lifetime_days=150, cart_rate=0.15, remove_rate=0.55, checkout_rate=0.05,
            price_a=3.0, price_b=2.0, favourites=4, stay=0.75, explore=0.05, dwell_seconds=40,
            hour_peak=13, weekend_factor=0.8, holiday_factor=1.0,
            tops=("electronics", "computers", "apparel", "construction")),
    Persona("one_time_buyer", share=0.15, sessions_per_month=1.5, views_per_session=4.0,
            lifetime_days=10, cart_rate=0.0, remove_rate=0.0, checkout_rate=0.0,
            price_a=2.0, price_b=2.5, favourites=2, stay=0.85, explore=0.05, dwell_seconds=45,
            hour_peak=15, weekend_factor=1.0, holiday_factor=1.0),
    Persona("holiday_shopper", share=0.10, sessions_per_month=0.08, views_per_session=6.0,
            lifetime_days=600, cart_rate=0.08, remove_rate=0.10, checkout_rate=0.70,
            price_a=3.0, price_b=2.5, favourites=5, stay=0.7, explore=0.08, dwell_seconds=40,
            hour_peak=18, weekend_factor=1.3, holiday_factor=35.0, tops=GIFT_TOPS),
)
PERSONA_NAMES: Final[tuple[str, ...]] = tuple(p.name for p in PERSONAS)
