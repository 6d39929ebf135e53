"""Who may use the dashboard, and how often a session may look up raw ids.

Sign-in: Streamlit's built-in OpenID Connect login (``st.login``), on when ``.streamlit/secrets.toml``
has an ``[auth]`` section (redirect_uri, cookie_secret and the provider's client_id, client_secret and
server_metadata_url; see docs/security.md). Without it the dashboard is open, as before: run it on a
trusted network or behind an authenticating proxy.

Lookups: a raw user id typed into the lookup page is hashed with the platform key, so the page is an
oracle for "is this id a customer, and which segment": :data:`LOOKUPS` bounds how fast one browser
session can ask it. A client that opens new sessions gets a new budget; a proxy's per-client rate
limit (docs/security.md) covers that.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from dataclasses import dataclass

import streamlit as st


def login_configured() -> bool:
    """Whether OIDC sign-in is configured (an ``[auth]`` section in Streamlit's secrets)."""
    return st.secrets.load_if_toml_exists() and "auth" in st.secrets


def require_login() -> None:
    """With sign-in configured: stop the page for a visitor who is not signed in, and offer sign-out."""
    if not login_configured():
        return
    if not st.user.is_logged_in:
        st.title("shoplens")
        st.write("Sign in to see the customer dashboard.")
        st.button("Sign in", type="primary", on_click=st.login, key="access_login")
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
        st.button("Sign out", on_click=st.logout, key="access_logout")


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` events per ``window_s`` seconds (a sliding window, kept in ``state``)."""

    limit: int
    window_s: float

    def allow(self, state: MutableMapping[str, list[float]], key: str, now: float | None = None) -> bool:
        """Record one event under ``key`` and say whether it is within the limit (refused ones count not)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in state.get(key, []) if now - t < self.window_s]
        allowed = len(recent) < self.limit
        state[key] = [*recent, now] if allowed else recent
        return allowed

    def wait_s(self, state: MutableMapping[str, list[float]], key: str, now: float | None = None) -> float:
        """Seconds until the next event under ``key`` is allowed."""
        now = time.monotonic() if now is None else now
        recent = sorted(t for t in state.get(key, []) if now - t < self.window_s)
        return 0.0 if len(recent) < self.limit else max(0.0, recent[0] + self.window_s - now)


#: Raw-id lookups per browser session: enough for a person, too slow to enumerate ids.
LOOKUPS = RateLimit(limit=10, window_s=60.0)

__all__ = ["LOOKUPS", "RateLimit", "login_configured", "require_login"]
