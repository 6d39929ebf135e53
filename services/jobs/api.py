"""``shoplens api``: the scoring API for CRMs and web shops (FastAPI, served by uvicorn).

- ``POST /v1/score``: one user's recent events (the nine REES46 fields each) -> segment, confidence,
  trust, lifecycle stage, model version (and propensity, lifetime value when published). The events'
  fields are validated by the contract's rules as the REES46 CSV lines they stand for would be
  (:func:`etl.lines.parse_fields`), then scored by the one scoring use case
  (:func:`model.scoring.score_history`) ``shoplens predict`` and the dashboard upload call, so they
  give the same answer.
- ``POST /v1/customers/lookup`` (``{"user_id": ...}``): the published segment of a raw user id, hashed
  here with the platform key; the lookup reads one row group of the current ``segments`` version
  (:func:`services.core.readers.one_row`, shared with the dashboard). ``GET /v1/customers/{user_id}``
  answers the same, but puts the raw id into the URL, which proxies and load balancers log: for
  trusted networks only.
- ``/healthz``, ``/metrics`` (Prometheus: requests and latency by route template and status),
  ``/docs`` (OpenAPI).

``shoplens api --workers N`` (``SHOPLENS_API_WORKERS``) serves with N uvicorn processes; each holds its
own model and refresh thread, and /metrics sums all of them (prometheus_client's multiprocess mode).
Per request the work is CPU only (validation, features, scorer on numpy), so the handler and the auth
check run on the event loop, without a thread hand-off.

Auth: ``Authorization: Bearer <SHOPLENS_API_KEY>`` on the ``/v1`` routes (also in demo mode: no key, no
API). Before FastAPI reads or decodes anything, starlette's body limit refuses a body over
``SHOPLENS_API_MAX_BODY_BYTES`` (413, while it streams) and :class:`Guard` checks the token and bounds
what the JSON may decode into; the route dependency documents the scheme in OpenAPI and checks the
same token. Every string field has a length bound, and a 422 never
echoes the input (pydantic's default puts it in the answer). The model and the segments version are re-read
from their lake pointers every ``check_seconds`` by a background thread, so a newly published
model is used without a restart (a failed check keeps the previous one and says so in the log).

Privacy: raw user ids are never logged. uvicorn's access log (which prints the request path) is
off; this module logs one line per request with the route *template* (``/v1/customers/{user_id}``),
method, status and duration, and labels metrics the same way. The handlers are thin over plain
functions (:func:`score_events`, :func:`lookup_customer`) that tests call directly.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.routing import BaseRoute, Match
from typing_extensions import TypedDict

from etl.contract import ID_PATTERN, RAW_COLUMNS
from etl.lines import Parsed, history_of, parse_fields, row_reasons
from etl.pseudonymize import pseudonymize
from model.propensity import LoadedPropensity
from model.scoring import Scorers, score_history
from model.segmentation.history import LoadedModel
from services.core.catalog import CLV, PROPENSITY, PROPENSITY_MODEL, SEGMENTATION_MODEL, SEGMENTS
from services.core.lake import Lake
from services.core.logs import configure_logging
from services.core.readers import customer_value_fields, load_model, load_propensity, one_row, parquet_dataset
from services.core.runtime import open_lake
from services.core.settings import ConfigError, Settings, get_settings

log = logging.getLogger("shoplens.api")
access = logging.getLogger("shoplens.api.access")

MAX_EVENTS = 10_000
#: Length bounds of the string fields: a REES46 value is far shorter (category codes ~40 characters).
SHORT_TEXT, LONG_TEXT = 64, 512
CHECK_SECONDS = 5.0
API_VERSION = "1"

# ------------------------------------------------------------------------------------ metrics
#: The API's own registry: it serves /metrics itself, and exports only its families.
REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
REQUESTS = Counter(
    "shoplens_api_requests_total", "Scoring API requests, by route template, method and status",
    ["route", "method", "status"], registry=REGISTRY,
)  # fmt: skip
LATENCY = Histogram(
    "shoplens_api_request_duration_seconds", "Scoring API request latency (server side), by route template",
    ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
UNMATCHED = "unmatched"  # any path no route matches: one label value, not the path
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set: several workers, whose samples /metrics sums


class Observe:
    """ASGI middleware: one access line and one metrics sample per request, by route template."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            code = str(status[0])
            REQUESTS.labels(route, method, code).inc()
            LATENCY.labels(route, method, code).observe(elapsed)
            access.info("%s %s %s %.1fms", method, route, code, elapsed * 1e3,
                        extra={"route": route, "method": method, "status": status[0],
                               "duration_ms": round(elapsed * 1e3, 2)})  # fmt: skip


# ------------------------------------------------------------------------------------ bodies
# A TypedDict, not a model: pydantic validates it into a plain dict, cheaper than a model instance per
# event (200 per request), with the same rules and schema (its docstring is the OpenAPI description).
class Event(TypedDict, total=False):
    """One REES46 event; the fields mean what the CSV columns mean (empty, null or absent = missing)."""

    __pydantic_config__ = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "event_time": "2019-10-01 00:00:00 UTC", "event_type": "view", "product_id": 44600062,
        "category_id": 2103807459595387724, "category_code": None, "brand": "shiseido", "price": 35.79,
        "user_id": 541312140, "user_session": "72d76fde-8bb3-4e00-8c23-a032dfed738c"}})  # fmt: skip

    event_time: Annotated[str | None, Field(max_length=SHORT_TEXT, description="YYYY-MM-DD HH:MM:SS UTC")]
    event_type: Annotated[str | None, Field(max_length=SHORT_TEXT, description="view, cart, remove_from_cart or purchase")]
    product_id: int | Annotated[str, Field(max_length=SHORT_TEXT)] | None
    category_id: int | Annotated[str, Field(max_length=SHORT_TEXT)] | None
    category_code: Annotated[str | None, Field(max_length=LONG_TEXT)]
    brand: Annotated[str | None, Field(max_length=LONG_TEXT)]
    price: float | Annotated[str, Field(max_length=SHORT_TEXT)] | None
    user_id: int | Annotated[str, Field(max_length=SHORT_TEXT)] | None
    user_session: Annotated[str | None, Field(max_length=SHORT_TEXT)]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(..., min_length=1, max_length=MAX_EVENTS, description="one user's events")
    as_of: str | None = Field(None, max_length=SHORT_TEXT, description=(
        "Reference time of recency/tenure (ISO; naive = UTC) or 'last_event'; default: the latest event"))  # fmt: skip


class CustomerLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(..., pattern=f"^{ID_PATTERN}$", description="raw user id (hashed on the server, never logged)")


class CustomerValue(BaseModel):
    """A known customer's published lifetime value (all null before a lifetime value fit, for an unknown
    user, or for a user without a purchase)."""

    p_alive: float | None = Field(None, description=(
        "probability the customer is still a customer (absent before a lifetime value fit, or without a purchase)"))
    clv: float | None = Field(None, description="discounted lifetime value over clv_horizon_months")
    clv_horizon_months: int | None = None
    clv_version: str | None = None


class CustomerResponse(CustomerValue):
    segment_id: int | None
    segment_name: str | None
    confidence: float | None
    n_events: int | None
    model_version: str | None
    as_of: str | None
    segments_version: str


class ScoreResponse(CustomerValue):
    """One user's segment from their events; with the lifetime value of that user as last published,
    when the user is a known customer (looked up by the pseudonym of the events' user_id)."""

    segment_id: int | None = Field(description="null: fewer events than the model's trust threshold")
    segment_name: str | None
    confidence: float | None = Field(description="1 - d1/d2 of the two nearest centroids, in [0, 1]")
    trust: float | None = Field(None, description=(
        "estimated chance that the segment is the one the full history would give (null without a segment, "
        "or for a model without a trust fit)"))
    lifecycle_stage: str = Field(description=(
        "where the customer stands: lapsed, repeat_buyer, first_time_buyer, at_risk, carted_not_bought, "
        "new_visitor or browsing (docs/segments.md)"))
    lifecycle_label: str = Field(description="the stage's readable name")
    lifecycle_action: str = Field(description="the stage's recommended action")
    model_version: str
    n_events: int = Field(description="events used (valid, duplicates removed)")
    status: str = Field(description="scored or not_enough_activity")
    reason: str | None = None
    as_of: str
    propensity: float | None = Field(None, description=(
        "chance of a purchase within the propensity model's horizon (absent before a propensity model exists)"))
    propensity_decile: int | None = Field(None, description="decile of the propensity among the latest batch scores")
    propensity_model_version: str | None = None


class ErasureBody(BaseModel):
    """People to erase: raw user ids (keyed on the server at once, never stored) and/or user keys."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]] = Field([], max_length=MAX_EVENTS)
    keys: list[Annotated[str, Field(pattern="^[0-9a-f]{64}$")]] = Field([], max_length=MAX_EVENTS)


class ErasureAccepted(BaseModel):
    submission_id: str
    request_ids: list[str]
    deadline: str = Field(description="requested + 30 days (GDPR Art. 12(3))")


class Health(BaseModel):
    status: str
    model_version: str | None
    segments_version: str | None


class RowProblem(BaseModel):
    row: int = Field(description="0-based index in `events`")
    reason: str


class InvalidEvents(ValueError):
    """The request's events break the data contract; ``rows`` says which and why."""

    def __init__(self, message: str, rows: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.rows = rows


class NotReady(RuntimeError):
    """Nothing published yet to answer with (no model, no segments)."""


# ------------------------------------------------------------------------------------ state
@dataclass
class Published:
    """What the API answers from: the current models and segments (swapped whole, never mutated)."""

    model: LoadedModel | None = None
    segments_version: str | None = None
    segments: ds.Dataset | None = None
    propensity: LoadedPropensity | None = None
    propensity_versions: tuple[str | None, str | None] = (None, None)  # (model, scores): the deciles' source
    clv_version: str | None = None
    clv: ds.Dataset | None = None  # the current lifetime values (customers sorted by user_key)


class ApiState:
    """The lake, the key, and the published model/segments, re-read every ``check_seconds``."""

    def __init__(self, lake: Lake, key: bytes, check_seconds: float = CHECK_SECONDS) -> None:
        self.lake, self.key, self.check_seconds = lake, key, check_seconds
        self.current = Published()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Follow the lake pointers; True if the model or the segments changed."""
        with self._lock:
            cur = self.current
            model_version = self.lake.current_version(SEGMENTATION_MODEL)
            seg_version = self.lake.current_version(SEGMENTS)
            model = cur.model
            if model_version is not None and (model is None or model.version != model_version):
                model = load_model(self.lake, model_version)
                log.info("model %s loaded", model_version, extra={"model_version": model_version})
            segments = cur.segments
            if seg_version != cur.segments_version:
                segments = parquet_dataset(self.lake, f"{SEGMENTS}/{seg_version}") if seg_version else None
                log.info("segments %s opened", seg_version, extra={"segments_version": seg_version})
            propensity, prop_versions = cur.propensity, (
                self.lake.current_version(PROPENSITY_MODEL), self.lake.current_version(PROPENSITY))
            if prop_versions != cur.propensity_versions:
                propensity = load_propensity(self.lake)
                log.info("propensity model %s loaded", prop_versions[0], extra={"model_version": prop_versions[0]})
            clv_version = self.lake.current_version(CLV)
            clv = cur.clv if clv_version == cur.clv_version else (
                parquet_dataset(self.lake, f"{CLV}/{clv_version}/customers") if clv_version else None)  # fmt: skip
            changed = (model is not cur.model or seg_version != cur.segments_version
                       or prop_versions != cur.propensity_versions or clv_version != cur.clv_version)  # fmt: skip
            if changed:
                self.current = Published(model, seg_version, segments, propensity, prop_versions, clv_version, clv)
            if seg_version != cur.segments_version:  # requests in flight may still read the replaced one
                self.lake.prune_cache(keep=frozenset({cur.segments_version} - {None}))
            return changed

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            try:
                self.refresh()
            except Exception as err:  # storage outage, a half-written model: keep serving the last one
                log.warning("could not refresh the published model: %s: %s", type(err).__name__, err)

    def start(self) -> None:
        try:
            self.refresh()
        except Exception as err:
            log.warning("no published model loaded at start: %s: %s", type(err).__name__, err)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="shoplens-api-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def model(self) -> LoadedModel:
        model = self.current.model
        if model is None:
            raise NotReady("no published segmentation model yet (run `shoplens train`)")
        return model


# ------------------------------------------------------------------------------------ the work
def event_columns(events: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """The events' nine raw fields as columns (a missing field is None), for :func:`etl.lines.parse_fields`."""
    return {c: [e.get(c) for e in events] for c in RAW_COLUMNS}


def row_problems(parsed: Parsed) -> list[dict[str, Any]]:
    """Every row's contract violation (the first failed rule), by row."""
    return [{"row": i, "reason": r} for i, r in enumerate(row_reasons(parsed)) if r is not None]


def score_events(events: Sequence[Mapping[str, Any]], model: LoadedModel,
                 as_of: datetime | str | None = None, propensity: LoadedPropensity | None = None,
                 value_of: Callable[[str], dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Segment one user's events as ``shoplens predict`` would segment them in a file (and, with a
    ``propensity`` model, give their propensity as ``shoplens predict`` does). ``value_of`` gives the
    published lifetime value of the events' raw user id (:func:`customer_value`, under its pseudonym).

    Raises :class:`InvalidEvents` when a row breaks the contract (every bad row listed) or the rows
    belong to more than one user.
    """
    parsed = parse_fields(event_columns(events))
    history = history_of(parsed)
    if history.rows_invalid:
        raise InvalidEvents(f"{history.rows_invalid} of {parsed.n_lines} events break the data contract",
                            row_problems(parsed))  # fmt: skip
    rows = history.table
    users = rows["user_id"]
    if pc.count_distinct(users).as_py() > 1:
        ids = users.to_pylist()
        others = [
            {"row": i, "reason": "another user_id than row 0"} for i, u in enumerate(ids) if u != ids[0]
        ]
        raise InvalidEvents("the events of one user at a time: several user_id values", others)
    value = {} if value_of is None else value_of(str(users[0].as_py()))
    # the raw id is not needed to score
    rows = rows.set_column(rows.schema.get_field_index("user_id"), "user_id", pa.array(["u"] * rows.num_rows))
    (scored,) = score_history(rows, Scorers(model, propensity), as_of)
    result = scored.to_dict()
    del result["user_id"]
    return result | value


CUSTOMER_COLUMNS = ["segment_id", "segment_name", "confidence", "n_events", "model_version", "as_of"]


def lookup_customer(state: ApiState, user_id: str) -> dict[str, Any] | None:
    """The published segments row of a raw user id (hashed with the platform key), None if unknown."""
    current = state.current
    if current.segments_version is None:
        raise NotReady("no segments published yet (run `shoplens score`)")
    row = one_row(current.segments, pseudonymize(user_id, state.key), CUSTOMER_COLUMNS)
    if row is None:
        return None
    when = row.get("as_of")
    return {
        **{c: row.get(c) for c in CUSTOMER_COLUMNS if c != "as_of"},
        "as_of": None if when is None else pd.Timestamp(when).isoformat(),
        "segments_version": current.segments_version, **customer_value(current, row["user_key"]),
    }  # fmt: skip


def customer_value(current: Published, user_key: str) -> dict[str, Any]:
    """The :class:`CustomerValue` of a user key in the current lifetime values (one row group read: the
    customers are sorted by key); all None for a key without one."""
    return customer_value_fields(one_row(current.clv, user_key, ["p_alive", "clv", "horizon_months"]), current.clv_version)


# ------------------------------------------------------------------------------------ the app
class TokenCheck:
    """The one rule of who may call /v1: a Bearer token equal to SHOPLENS_API_KEY (compared in constant time).

    There is no open mode, also not in demo mode: a demo API on a shared network would hand out every
    customer's segment to anyone.
    """

    def __init__(self, settings: Settings) -> None:
        if settings.api_key is None:
            raise ConfigError(
                "SHOPLENS_API_KEY is not set (also in demo mode): set a long random secret "
                "(python -c 'import secrets;print(secrets.token_urlsafe(32))')"
            )
        self._expected = settings.api_key.get_secret_value().encode()

    def __call__(self, token: bytes | None) -> bool:
        return token is not None and secrets.compare_digest(token, self._expected)

    def of_header(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries the token."""
        scheme, _, token = (authorization or b"").partition(b" ")
        return scheme.lower() == b"bearer" and self(token.strip())


def auth_dependency(check: TokenCheck):
    """The /v1 routes' dependency: documents the Bearer scheme in OpenAPI and applies :class:`TokenCheck`."""
    bearer = HTTPBearer(auto_error=False, description="SHOPLENS_API_KEY")

    async def authorized(  # a closure: no Annotated; async: no thread hand-off per request
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        if creds is None or not check(creds.credentials.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return authorized


def json_values_bound(body: bytes) -> int:
    """An upper bound of the containers and values ``body``'s JSON decodes into (brackets and commas,
    counted in C, also inside strings), so that the decoder's memory is bounded before it runs."""
    return body.count(b"[") + body.count(b"{") + body.count(b",")


async def _reply(send: Any, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware in front of FastAPI: what must hold before a byte of the body is decoded.

    1. /v1 requests without the right bearer token get 401 before their body is read.
    2. The body's size is bounded by starlette's ``RequestBodyLimitMiddleware`` around this one (413 at
       once for a declared ``Content-Length`` over the limit, else as soon as the stream passes it).
    3. A body whose JSON would decode into more than ``max_values`` containers and values gets 413:
       5 MB of ``[],`` decode into ~1.7 million Python lists (~200 MB), and the schema's length bounds
       are checked only after decoding. Nesting is bounded by the same count (and Python's decoder
       refuses nesting past its recursion limit with a 400).

    Why here and not in a route: FastAPI reads and decodes the whole body before any dependency runs.
    """

    def __init__(self, app: Any, check: TokenCheck, max_values: int, routes: Sequence[BaseRoute]) -> None:
        self.app, self.check, self.max_values, self.routes = app, check, max_values, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # the route template, for :class:`Observe`'s labels also of what is refused before routing
        scope["route"] = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        if scope["path"].startswith("/v1/") and not self.check.of_header(dict(scope["headers"]).get(b"authorization")):
            await _reply(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        del chunks
        if json_values_bound(body) > self.max_values:
            await _reply(send, 413, f"request body holds more than {self.max_values} JSON values")
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


#: The most JSON containers and values a request may hold: the largest score body (MAX_EVENTS events of
#: nine fields) with room to spare.
MAX_JSON_VALUES = 2 * MAX_EVENTS * (len(RAW_COLUMNS) + 1) + 64


def create_app(settings: Settings, lake: Lake | None = None, check_seconds: float = CHECK_SECONDS) -> FastAPI:
    """The FastAPI app on ``lake`` (default: ``SHOPLENS_LAKE``); refuses to build without auth or key."""
    check = TokenCheck(settings)
    state = ApiState(lake or open_lake(settings), settings.key_bytes, check_seconds)
    authorized = auth_dependency(check)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(
        title="shoplens scoring API", version=API_VERSION, lifespan=lifespan,
        description="Behavioural segments for one user's events, and the published segment of a customer.",
    )  # fmt: skip
    app.state.shoplens = state
    app.add_middleware(Guard, check=check, max_values=MAX_JSON_VALUES, routes=app.router.routes)
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.api_max_body_bytes)
    app.add_middleware(Observe)  # outermost: the guards' 401s and 413s are counted too
    v1 = [Depends(authorized)]
    problems = {422: {"description": "events that break the data contract, with the reason per row"},
                401: {"description": "missing or wrong bearer token"},
                503: {"description": "nothing published yet"},
                413: {"description": "request body larger than SHOPLENS_API_MAX_BODY_BYTES"}}  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def _unprocessable(_request: Request, err: RequestValidationError) -> JSONResponse:
        """FastAPI's answer without the ``input`` and ``ctx`` it would echo (a raw id, a megabyte string)."""
        return JSONResponse(status_code=422, content={"detail": [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in err.errors()]})

    @app.exception_handler(InvalidEvents)
    async def _invalid(_request, err: InvalidEvents) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(err), "rows": err.rows})

    @app.exception_handler(NotReady)
    async def _not_ready(_request, err: NotReady) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(err)})

    @app.post("/v1/score", response_model=ScoreResponse, dependencies=v1, responses=problems,
              summary="Segment one user's recent events")  # fmt: skip
    def score(body: ScoreRequest) -> dict[str, Any]:  # reads the published lifetime values: in the thread pool
        if body.as_of not in (None, "last_event"):
            try:
                pd.Timestamp(body.as_of)
            except ValueError:
                raise HTTPException(422, "as_of is not a time (ISO 8601 or 'last_event')") from None
        current = state.current

        def value_of(user_id: str) -> dict[str, Any]:
            return customer_value(current, pseudonymize(user_id, state.key))

        return score_events(body.events, state.model(), body.as_of, current.propensity, value_of)

    def customer(user_id: str) -> dict:
        found = lookup_customer(state, user_id)
        if found is None:
            raise HTTPException(404, "no such customer in the published segments")
        return found

    not_found = {**problems, 404: {"description": "no such customer in the published segments"}}

    @app.post("/v1/customers/lookup", response_model=CustomerResponse, dependencies=v1, responses=not_found,
              summary="The published segment of a customer (raw user id in the body, hashed on the server)")  # fmt: skip
    def customer_lookup(body: CustomerLookup) -> dict:
        return customer(body.user_id)

    @app.get("/v1/customers/{user_id}", response_model=CustomerResponse, dependencies=v1, responses=not_found,
             summary="As POST /v1/customers/lookup, for trusted networks only: the raw id is in the URL, "
             "which proxies log")  # fmt: skip
    def customer_by_path(
        user_id: Annotated[str, PathParam(pattern=f"^{ID_PATTERN}$", description="raw user id")],
    ) -> dict:
        return customer(user_id)
    @app.post("/v1/erasure-requests", response_model=ErasureAccepted, status_code=202, dependencies=v1,
              responses={401: problems[401]}, summary="Ask for people to be erased (carried out by the pipeline)")
    def erasure_requests(body: ErasureBody) -> dict[str, Any]:
        from services.core import erasure_ledger
        from services.jobs.erasure import digests_for

        if not body.user_ids and not body.keys:
            raise HTTPException(422, "give user_ids and/or keys")
        digests = digests_for(body.user_ids, body.keys, state.key)
        sub = erasure_ledger.record(state.lake, digests, "api")
        return {"submission_id": sub.submission_id, "request_ids": [r.request_id for r in sub.requests],
                "deadline": sub.requests[0].deadline}  # fmt: skip

    @app.get("/healthz", response_model=Health, summary="Liveness (200 also before the first model)")
    def healthz() -> dict[str, Any]:
        cur = state.current
        return {"status": "ok", "model_version": cur.model.version if cur.model else None,
                "segments_version": cur.segments_version}  # fmt: skip

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)

    return app


class _AllWorkers:
    """The API's families summed over the worker processes' files (prometheus_client's multiprocess mode)."""

    def __init__(self, path: str) -> None:
        self._files = MultiProcessCollector(None, path)

    def collect(self):
        own = {m.name for m in REGISTRY.collect()}  # not the families other imported modules define
        return [m for m in self._files.collect() if m.name in own]


def metrics_text() -> bytes:
    """The /metrics page: this process's families, or with several workers their sum over all of them."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    registry.register(_AllWorkers(path))
    return generate_latest(registry)


def worker_app() -> FastAPI:
    """The app of one of several uvicorn worker processes (:func:`serve`): settings from the environment.

    Each worker loads the model itself and follows the lake pointers with its own refresh thread, so a
    newly published model reaches every worker within ``check_seconds``.
    """
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, settings.log_stream)
    return create_app(settings, open_lake(settings))


def serve(settings: Settings, lake_uri: str | None, host: str, port: int, workers: int = 1) -> None:
    """Run the API with uvicorn until interrupted (its access log off: it prints raw paths).

    ``workers`` > 1 runs that many processes on one socket (Python scores on one core per process). They
    get the settings through the environment (``SHOPLENS_LAKE`` set to ``lake_uri``), and /metrics counts
    the requests of all of them through ``PROMETHEUS_MULTIPROC_DIR``: the operator's if set (wipe it
    between runs, as prometheus_client says), else a fresh directory removed at exit.
    """
    import uvicorn

    options: dict[str, Any] = {"host": host, "port": port, "access_log": False, "log_config": None,
                               "server_header": False}  # fmt: skip
    if workers <= 1:
        uvicorn.run(create_app(settings, open_lake(settings, lake_uri)), **options)
        return
    TokenCheck(settings), settings.key_bytes  # no key: one ConfigError here, not one per worker
    os.environ["SHOPLENS_LAKE"] = lake_uri or settings.lake
    own_dir = MULTIPROC_ENV not in os.environ
    if own_dir:
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="shoplens-api-metrics-")
    log.info("serving with %d worker processes", workers, extra={"workers": workers})
    try:
        uvicorn.run("services.jobs.api:worker_app", factory=True, workers=workers, **options)
    finally:
        if own_dir:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)


__all__ = [
    "REGISTRY",
    "ApiState",
    "CustomerLookup",
    "Event",
    "Guard",
    "InvalidEvents",
    "NotReady",
    "ScoreRequest",
    "TokenCheck",
    "create_app",
    "customer_value",
    "event_columns",
    "json_values_bound",
    "lookup_customer",
    "metrics_text",
    "row_problems",
    "score_events",
    "serve",
    "worker_app",
]
