"""How a segment is shown wherever it appears (model report, dashboard, views): its colour, the name
of the users below the trust threshold, and the profile features drawn on radar charts.

One definition here, so the report and the dashboard cannot drift apart.
"""

from __future__ import annotations

#: Stable colour per segment id (id modulo the palette).
PALETTE: tuple[str, ...] = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D",
    "#FF9DA6", "#BAB0AC", "#2F4B7C", "#A05195",
)  # fmt: skip
#: Segment name of users with fewer events than the model's trust threshold.
NOT_ENOUGH_NAME = "Not enough activity yet"
NOT_ENOUGH_COLOR = "#C8C8C8"
#: Profile lifts drawn on radar charts: how people browse and buy (those present in a profile are used).
RADAR_FEATURES: tuple[str, ...] = (
    "n_sessions", "events_per_session", "frequency", "monetary", "view_to_cart_rate",
    "cart_abandonment_rate", "category_diversity", "brand_concentration", "holiday_share", "tenure_days",
)  # fmt: skip


def segment_color(segment_id: int | None) -> str:
    """The hex colour of a segment (grey for "not enough activity")."""
    if segment_id is None or segment_id < 0:
        return NOT_ENOUGH_COLOR
    return PALETTE[int(segment_id) % len(PALETTE)]


__all__ = ["NOT_ENOUGH_COLOR", "NOT_ENOUGH_NAME", "PALETTE", "RADAR_FEATURES", "segment_color"]
