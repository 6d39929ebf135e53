"""Privacy: erasure requests by state, each with its deadline and how long it took, and the last
verification. No raw ids and no keys: a person appears only as the first characters of a digest."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui
from services.core.erasure_ledger import DEADLINE_DAYS
from services.core.settings import get_settings

st.title("Erasure requests")
uri = data.lake_uri()
try:
    requests = data.erasure_requests(uri)
except (data.LakeUnavailable, OSError) as err:
    ui.outage(err, uri)
    st.stop()

st.write(f"Every request to be forgotten (GDPR Art. 17), due within {DEADLINE_DAYS} days. `shoplens erase` "
         "records and carries them out; `shoplens erase --verify` re-scans every store.")  # fmt: skip
if requests.empty:
    st.info("No erasure requests yet.", icon=":material/info:")
    st.stop()

now = pd.Timestamp.now(tz="UTC")
pending = requests["state"] == "pending"
overdue = pending & (requests["deadline"] < now)
found = requests["found_at_verification"].map(len) > 0
c = st.columns(4)
c[0].metric("Completed", charts.fmt_int((~pending).sum()), border=True)
c[1].metric("Pending", charts.fmt_int(pending.sum()), border=True)
c[2].metric("Past their deadline", charts.fmt_int(overdue.sum()), border=True)
c[3].metric("Found again at verification", charts.fmt_int(found.sum()), border=True)
last = requests["verified_at"].max()
st.caption(f"Last verification: {'never' if pd.isna(last) else charts.fmt_time(last)}. "
           f"Pending requests are carried out once the oldest has waited "
           f"{get_settings().erasure_max_age_hours:g} h (or at once without --defer).")  # fmt: skip
if found.any():
    st.error("A verification found erased people again: run `shoplens erase --verify` for where.",
             icon=":material/error:")  # fmt: skip

table = requests.assign(found_at_verification=requests["found_at_verification"].map(", ".join))
st.dataframe(table.sort_values("requested_at", ascending=False), hide_index=True, width="stretch",
             column_config={"seconds_to_complete": st.column_config.NumberColumn("seconds to complete", format="%.0f"),
                            "person": st.column_config.TextColumn("person (digest)")})  # fmt: skip
