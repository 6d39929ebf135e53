"""Page scaffolding shared by every page: where the lake is, what is published, and the messages shown
instead of a traceback when it is empty, not trained yet, or unreachable."""

# ruff: noqa: RUF001 - user-facing text uses typographic dashes and signs
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from dashboard import data
from dashboard.charts import fmt_time
from services.core.documents import OutdatedDocument


@dataclass(frozen=True)
class Context:
    uri: str
    ptr: data.Pointers


def outage(err: Exception, uri: str) -> None:
    st.warning(
        f"**The lake cannot be read right now.** Storage at `{uri}` did not answer ({err}). "
        "The page will work again as soon as the storage is back; reload in a moment.",
        icon=":material/warning:",
    )


def context() -> Context:
    """The lake and its pointers; stops the page with a clear message if it is empty or unreachable."""
    uri = data.lake_uri()
    try:
        ptr = data.pointers(uri)
    except (data.LakeUnavailable, OSError) as err:
        outage(err, uri)
        st.stop()
    if ptr.empty:
        st.info(
            f"**No data yet.** The lake at `{uri}` is empty. Ingest events and train a model:\n\n"
            "```\nshoplens ingest data/raw/*.csv.gz\nshoplens features\nshoplens train\n```",
            icon=":material/info:",
        )
        st.stop()
    return Context(uri, ptr)


def need_model(ctx: Context) -> None:
    if ctx.ptr.model is None:
        st.info(
            "**No segmentation model yet.** Events are in the lake but no model has been trained: "
            "run `shoplens train` (it also scores every user).", icon=":material/info:",
        )
        st.stop()


def need_views(ctx: Context, dataset: str) -> None:
    if ctx.ptr.version(dataset) is None:
        st.info("**No dashboard views yet.** They are built when users are scored: run `shoplens score`.", icon=":material/info:")
        st.stop()


@contextmanager
def guarded(ctx: Context) -> Iterator[None]:
    """Show a storage failure, or a result another release wrote, as a warning and stop the page."""
    try:
        yield
    except (data.LakeUnavailable, OSError) as err:
        outage(err, ctx.uri)
        st.stop()
    except OutdatedDocument as err:
        st.warning(f"{err}. Compute it again with this release: the command or pipeline stage that writes it.")
        st.stop()


def footer(ctx: Context) -> None:
    meta = ctx.ptr.segments_meta
    st.caption(
        f"Lake `{ctx.uri}` · model {ctx.ptr.model or '–'} · segments as of {fmt_time(meta.get('as_of'))}"
    )
