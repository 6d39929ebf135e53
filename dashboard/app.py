"""shoplens dashboard: ``shoplens dashboard`` (or ``streamlit run dashboard/app.py``) on port 8501.

The entry script only declares the navigation; each page is a script in ``app_pages/`` that reads
top to bottom (inputs, load, filter, chart). Loading lives in ``dashboard/data.py``, charts in
``dashboard/charts.py``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.access import require_login

HERE = Path(__file__).resolve().parent
PAGES = HERE / "app_pages"

st.set_page_config(page_title="shoplens", page_icon="🛍️", layout="wide", initial_sidebar_state="expanded")


def page(name: str, title: str, icon: str, default: bool = False) -> st.Page:
    return st.Page(PAGES / f"{name}.py", title=title, icon=icon, url_path=name, default=default)


SECTIONS: dict[str, list[st.Page]] = {
    "Customers": [
        page("overview", "Overview", ":material/monitoring:", default=True),
        page("segments", "Segments", ":material/groups:"),
        page("lookup", "Customer lookup", ":material/person_search:"),
        page("export", "Export", ":material/download:"),
    ],
    "Model": [
        page("model", "Segmentation model", ":material/model_training:"),
    ],
    "Growth": [
        page("funnel", "Funnel", ":material/filter_alt:"),
        page("experiments", "Experiments", ":material/science:"),
        page("marketing_mix", "Marketing mix", ":material/campaign:"),
        page("propensity", "Purchase propensity", ":material/shopping_cart_checkout:"),
        page("lifetime_value", "Lifetime value", ":material/savings:"),
        page("retention", "Retention", ":material/event_repeat:"),
    ],
    "Privacy": [
        page("privacy", "Erasure requests", ":material/shield_person:"),
    ],
    # Later issues add their pages here, one section each (a script in app_pages/ + one line):
    #   "Growth": [page("funnel", "Funnel", ":material/filter_alt:"),
    #              page("experiments", "Experiments", ":material/science:"),
    #              page("marketing_mix", "Marketing mix", ":material/campaign:")],
}

st.logo(str(HERE / "theme" / "logo.svg"), size="large")
require_login()  # with OIDC configured in the secrets' [auth]: nothing below for a visitor not signed in
st.navigation(SECTIONS, position="sidebar", expanded=True).run()
