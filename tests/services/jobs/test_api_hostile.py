"""Hostile requests against a real ``shoplens api`` (uvicorn on 127.0.0.1): oversized, deeply nested and
many-valued bodies, long strings, unauthenticated floods, and a schemathesis fuzz run from the OpenAPI
schema. Each gets a named 4xx, the server's memory stays bounded (its RSS is sampled while the request
runs) and no raw id comes back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.core.lake import Lake
from services.core.process_meter import metered
from services.core.settings import ConfigError
from services.core.storage import LocalStore
from services.jobs.api import MAX_JSON_VALUES, create_app
from tests.apiserver import ApiProcess, raw_post, start_api
from tests.conftest import TEST_KEY
from tests.services.jobs.test_api import TOKEN, history, settings_for, source  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.slow
MB = 1_000_000
#: The most a hostile request may add to the server's RSS. Decoding 5 MB of JSON into Python objects
#: costs up to ~30x its size (about 150 MB); one body-sized buffer or two, plus allocator slack, fit.
RSS_BOUND = 40 * MB


@pytest.fixture(scope="module")
def api(source, tmp_path_factory) -> Iterator[ApiProcess]:  # noqa: F811 - the fixture imported above
    work = tmp_path_factory.mktemp("hostile")
    env = {"SHOPLENS_PSEUDONYM_KEY": TEST_KEY, "SHOPLENS_API_KEY": TOKEN, "SHOPLENS_WORK_DIR": str(work),
           "SHOPLENS_LOG_FORMAT": "json", "SHOPLENS_LOG_LEVEL": "INFO"}  # fmt: skip
    server = start_api(env, str(source.root))
    try:
        yield server
    finally:
        server.stop()




def _chunks(total: int, size: int = 256 * 1024, fill: bytes = b" ") -> Iterator[bytes]:
    """``total`` bytes of a JSON document that opens but never gets small: ``{"events": [`` then padding."""
    yield b'{"events": ['
    sent = 12
    while sent < total:
        yield fill * size
        sent += size


def _chunked(parts: Iterator[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


AUTHED = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def test_a_declared_oversized_body_gets_413_before_it_is_read(api):
    with metered(api.processes[0].pid, tree=False, interval=0.005) as rss:
        status, body, sent = raw_post(api.port, "/v1/score", _chunks(1_000 * MB),
                                      {**AUTHED, "Content-Length": str(1_000 * MB)})  # fmt: skip
    assert status == 413, body
    assert sent < 64 * MB  # the server answered long before the client could send the gigabyte
    assert rss.grown < RSS_BOUND, rss
    assert api.request("GET", "/healthz")[0] == 200


def test_a_streamed_oversized_body_gets_413_as_it_passes_the_limit(api):
    with metered(api.processes[0].pid, tree=False, interval=0.005) as rss:
        status, body, sent = raw_post(api.port, "/v1/score", _chunked(_chunks(64 * MB)),
                                      {**AUTHED, "Transfer-Encoding": "chunked"})  # fmt: skip
    assert status == 413, body
    assert rss.grown < RSS_BOUND, rss
    assert sent < 64 * MB
    metrics = api.request("GET", "/metrics")[1]  # refused before routing, still counted by route template
    assert 'method="POST",route="/v1/score",status="413"' in metrics


def test_an_unauthenticated_body_is_refused_before_it_is_read(api):
    headers = {"Content-Type": "application/json", "Content-Length": str(4 * MB)}
    status, body, sent = raw_post(api.port, "/v1/score", _chunks(4 * MB), headers)
    assert status == 401 and json.loads(body)["detail"] == "missing or wrong bearer token"
    assert sent < 4 * MB  # answered without waiting for the body
    assert 'method="POST",route="/v1/score",status="401"' in api.request("GET", "/metrics")[1]


@pytest.mark.parametrize(("name", "payload"), [
    # 250,000 levels: the decoder would recurse; refused by the values bound before decoding
    ("deep", b'{"events": ' + b"[" * 250_000 + b"]" * 250_000 + b"}"),
    # 1.5 million empty lists in 4.5 MB: ~170 MB of Python lists once decoded
    ("wide", b'{"events": [' + b"[]," * 1_500_000 + b"[]]}"),
])  # fmt: skip
def test_bodies_that_decode_into_too_many_values_get_413(api, name, payload):
    with metered(api.processes[0].pid, tree=False, interval=0.005) as rss:
        status, body, _ = raw_post(api.port, "/v1/score", iter([payload]), {**AUTHED, "Content-Length": str(len(payload))})
    assert status == 413 and "JSON values" in json.loads(body)["detail"], (name, body)
    assert rss.grown < RSS_BOUND, (name, rss)


def test_nesting_under_the_values_bound_is_a_400_not_a_crash(api):
    payload = b'{"events": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"  # 10,000 values, past the decoder's recursion limit
    assert MAX_JSON_VALUES > 5_000
    status, body, _ = raw_post(api.port, "/v1/score", iter([payload]), {**AUTHED, "Content-Length": str(len(payload))})
    assert status == 400, body
    assert api.request("GET", "/healthz")[0] == 200


def test_long_strings_are_refused_without_echo(api, history):  # noqa: F811
    events, _ = history
    marker = "9" * 40 + "x" * 4 * MB  # bigger than any field's bound, under the body limit
    for field in ("brand", "category_code", "user_session", "event_time", "user_id", "price"):
        event = {**events[0], field: marker}
        with metered(api.processes[0].pid, tree=False, interval=0.005) as rss:
            status, body = api.request("POST", "/v1/score", {"events": [event]}, token=TOKEN)
        assert status == 422, (field, body)
        assert field in json.dumps(body) and "9" * 40 not in json.dumps(body) and "xxxx" not in json.dumps(body)
        assert rss.grown < RSS_BOUND, (field, rss)
    long_id = "7" * 40
    status, body = api.request("POST", "/v1/customers/lookup", {"user_id": long_id}, token=TOKEN)
    assert status == 422 and long_id not in json.dumps(body)
    status, body = api.request("GET", f"/v1/customers/{long_id}", token=TOKEN)
    assert status == 422 and long_id not in json.dumps(body)


def test_post_lookup_answers_as_the_get_and_keeps_the_id_out_of_the_url_and_logs(api, source):  # noqa: F811
    raw = source.raw_ids["known"]
    by_post = api.request("POST", "/v1/customers/lookup", {"user_id": raw}, token=TOKEN)
    by_get = api.request("GET", f"/v1/customers/{raw}", token=TOKEN)
    assert by_post[0] == 200 and by_post == by_get and raw not in json.dumps(by_post[1])
    assert api.request("POST", "/v1/customers/lookup", {"user_id": source.raw_ids["unknown"]}, token=TOKEN)[0] == 404
    assert api.request("POST", "/v1/customers/lookup", {"user_id": raw})[0] == 401
    assert api.request("POST", "/v1/customers/lookup", {"user_id": raw, "extra": 1}, token=TOKEN)[0] == 422
    text = api.request("GET", "/metrics")[1]
    assert 'route="/v1/customers/lookup",status="200"' in text
    log = api.log.read_text()
    assert "/v1/customers/lookup" in log and raw not in log and source.raw_ids["unknown"] not in log


def test_demo_mode_does_not_open_the_api(source, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="SHOPLENS_API_KEY"):
        create_app(settings_for(source.root, tmp_path, api_key=None, demo=True))


def test_openapi_documents_the_post_lookup_and_the_get_as_trusted_only(source, tmp_path):  # noqa: F811
    app = create_app(settings_for(source.root, tmp_path), Lake(LocalStore(source.root), tmp_path / "w"))
    spec = TestClient(app).get("/openapi.json").json()
    post = spec["paths"]["/v1/customers/lookup"]["post"]
    assert post["requestBody"]["required"] and "trusted networks" in spec["paths"]["/v1/customers/{user_id}"]["get"]["summary"]
    assert "413" in spec["paths"]["/v1/score"]["post"]["responses"]


# ------------------------------------------------------------------------------------ fuzz
FUZZ_EXAMPLES = 150  # requests per generation mode (positive: fits the schema, negative: breaks it)
ID_FIELDS = ("user_id", "user_session")


def _ids_sent(case) -> set[str]:
    """The id values a generated request carries (path and body), long enough not to match by chance."""
    found = [str(v) for k, v in (case.path_parameters or {}).items() if k in ID_FIELDS]

    def walk(node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ID_FIELDS and isinstance(v, str | int) and not isinstance(v, bool):
                    found.append(str(v))
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(case.body if isinstance(case.body, dict | list) else None)
    return {v for v in found if len(v) >= 6}


def test_a_fuzz_run_from_the_openapi_schema_finds_no_5xx_and_no_echoed_id(api):
    """schemathesis' generated requests (both modes) against 127.0.0.1, each with the right token: bounded
    by FUZZ_EXAMPLES per mode and a 10 s timeout each; every answer is below 500 and repeats no id."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    assert api.url.startswith("http://127.0.0.1:")
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    calls: list[tuple[str, int]] = []
    sent_ids: set[str] = set()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)))
    def run(case) -> None:
        response = case.call(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        calls.append((case.operation.label, response.status_code))
        assert response.status_code < 500, (case.operation.label, response.status_code, response.content[:300])
        text = response.content.decode("utf-8", "replace")
        sent_ids.update(_ids_sent(case))
        if response.status_code == 422 and isinstance(detail := json.loads(text)["detail"], list):
            assert all(set(d) <= {"type", "loc", "msg"} for d in detail), "a 422 echoes its input"
        for raw in _ids_sent(case):
            assert raw not in text, (case.operation.label, "an id sent came back")

    run()
    operations = {label for label, _ in calls}
    assert {"POST /v1/score", "POST /v1/customers/lookup", "GET /v1/customers/{user_id}"} <= operations, operations
    assert any(status == 422 for _, status in calls) and any(status in (200, 404) for _, status in calls)
    log = api.log.read_text()
    # 8+ characters: shorter digit runs occur in timestamps and durations by chance
    assert sent_ids and not [i for i in sent_ids if len(i) >= 8 and i in log], "an id sent reached the log"
