"""UpstreamClient against pytest-httpx: every branch of fetch, test prompt and forwarding.

pytest-httpx mocks httpx's own transport, so these tests give UpstreamClient that one; the
product's aiohttp transport (services/_transport.py) is tested against real sockets in
tests/unit/services/test_transport.py and by every test that drives a server."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from pydantic import ValidationError

from bodhi_nb.objs import ApiModelAlias, InvalidRequestError, UpstreamError, mask_api_key
from bodhi_nb.services import upstream_client
from bodhi_nb.services.upstream_client import (
    ForwardTarget,
    KeyRedactor,
    RawCredentials,
    StoredCredentials,
    UpstreamClient,
    upstream_status_error,
)
from tests.conftest import TEST_KEY

BASE = "http://provider.test/v1"
RAW = RawCredentials(BASE, TEST_KEY)


@pytest.fixture(autouse=True)
def _httpx_transport(monkeypatch):
    monkeypatch.setattr(upstream_client, "DEFAULT_TRANSPORT", httpx.AsyncHTTPTransport)


def run(coro):
    return asyncio.run(coro)


async def _fetch(creds=RAW, svc=None):
    svc = svc or UpstreamClient()
    try:
        return await svc.fetch_models(creds)
    finally:
        await svc.aclose()


def test_fetch_models_in_upstream_order_with_bearer(httpx_mock):
    httpx_mock.add_response(url=f"{BASE}/models", json={"data": [{"id": "z"}, {"id": "a"}, {"id": "m"}]})
    assert run(_fetch()) == ["z", "a", "m"]
    assert httpx_mock.get_request().headers["authorization"] == f"Bearer {TEST_KEY}"


@pytest.mark.parametrize(
    "status,code,our_status,words",
    [(401, "upstream_unauthorized", 401, "rejected the API key"),
     (403, "upstream_unauthorized", 403, "rejected the API key"),
     (404, "upstream_not_found", 404, "check the base URL"),
     (429, "rate_limit_exceeded", 429, "retry after 12 s"),
     (500, "upstream_error", 500, "failed (500)"),
     (503, "upstream_error", 503, "failed (503)")],
)
def test_fetch_models_maps_upstream_errors(httpx_mock, status, code, our_status, words):
    headers = {"Retry-After": "12"} if status == 429 else {}
    httpx_mock.add_response(url=f"{BASE}/models", status_code=status, headers=headers,
                            json={"error": {"message": f"upstream says {status}"}})
    with pytest.raises(UpstreamError) as ei:
        run(_fetch())
    e = ei.value
    assert (e.status, e.code) == (our_status, code)
    assert words in e.message and f"upstream says {status}" in e.message
    assert TEST_KEY not in e.message and TEST_KEY not in repr(e)
    if status == 429:
        assert e.headers == {"retry-after": "12"}


def test_fetch_models_timeout_and_refused(httpx_mock):
    httpx_mock.add_exception(httpx.ConnectTimeout("timed out"))
    with pytest.raises(UpstreamError) as ei:
        run(_fetch())
    assert ei.value.status == 504 and "did not answer in time" in ei.value.message
    httpx_mock.add_exception(httpx.ConnectError("refused"))
    with pytest.raises(UpstreamError) as ei:
        run(_fetch())
    assert ei.value.status == 502 and "connection refused" in ei.value.message


def test_fetch_models_non_list_body(httpx_mock):
    httpx_mock.add_response(url=f"{BASE}/models", json={"nope": 1})
    with pytest.raises(UpstreamError, match="not an OpenAI model list"):
        run(_fetch())


def test_bad_base_url_is_a_validation_error():
    with pytest.raises(InvalidRequestError, match="base_url"):
        run(_fetch(RawCredentials("ftp://x", TEST_KEY)))


def test_stored_credentials_use_stored_url_and_key(httpx_mock, db):
    db.create(ApiModelAlias(id="p", base_url="http://stored.test/v1", models=["m"]), TEST_KEY)
    httpx_mock.add_response(url="http://stored.test/v1/models", json={"data": [{"id": "m"}]})
    assert run(_fetch(StoredCredentials("p"), UpstreamClient(db))) == ["m"]
    assert httpx_mock.get_request().headers["authorization"] == f"Bearer {TEST_KEY}"


# -- test prompt ---------------------------------------------------------------------------


async def _test(prompt="hi", model="gpt", creds=RAW):
    svc = UpstreamClient()
    try:
        return await svc.test_prompt(creds, model, prompt)
    finally:
        await svc.aclose()


def test_test_prompt_success(httpx_mock):
    httpx_mock.add_response(url=f"{BASE}/chat/completions",
                            json={"choices": [{"message": {"role": "assistant", "content": "Hello!"}}]})
    res = run(_test())
    assert res.success and res.response == "Hello!" and res.error is None
    sent = json.loads(httpx_mock.get_request().content)
    assert sent["messages"] == [{"role": "user", "content": "hi"}] and sent["max_tokens"] <= 100


def test_test_prompt_over_30_chars_fails_before_any_call(httpx_mock, db):
    from bodhi_nb.server_core.operations import ApiModelOps

    ops = ApiModelOps(db, UpstreamClient(db))
    with pytest.raises(InvalidRequestError, match="at most 30") as ei:
        run(ops.test({"model": "m", "prompt": "x" * 31, "base_url": BASE}))
    assert ei.value.status == 422 and ei.value.param == "prompt"
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize("kind", ["401", "500", "refused", "garbage"])
def test_test_prompt_failures_never_raise(httpx_mock, kind):
    url = f"{BASE}/chat/completions"
    if kind == "refused":
        httpx_mock.add_exception(httpx.ConnectError("refused"))
    elif kind == "garbage":
        httpx_mock.add_response(url=url, text="<html>")
    else:
        httpx_mock.add_response(url=url, status_code=int(kind), json={"error": {"message": "nope"}})
    res = run(_test())
    assert not res.success and res.response is None and res.error
    assert TEST_KEY not in res.error


# -- forwarding ----------------------------------------------------------------------------


class GatedStream(httpx.AsyncByteStream):
    """Yields a chunk, then waits until the test says the previous chunk arrived."""

    def __init__(self, chunks, cut_after=None):
        self.chunks = chunks
        self.cut_after = cut_after
        self.received = asyncio.Event()
        self.closed = False

    async def __aiter__(self):
        for i, c in enumerate(self.chunks):
            if i == self.cut_after:
                raise httpx.RemoteProtocolError("peer closed connection")
            self.received.clear()
            yield c
            await asyncio.wait_for(self.received.wait(), 5)

    async def aclose(self):
        self.closed = True


def _target():
    return ForwardTarget(BASE, "upstream-model", TEST_KEY, "API model 'p'")


def _mock_sse(httpx_mock, stream: GatedStream) -> GatedStream:
    httpx_mock.add_callback(lambda req: httpx.Response(200, headers={"content-type": "text/event-stream"},
                                                       stream=stream), url=f"{BASE}/chat/completions")
    return stream


async def _open_stream(svc: UpstreamClient):
    return await svc.forward_chat_completion(_target(), {"model": "x", "messages": []}, stream=True)


def test_forward_rewrites_model_keeps_unknown_fields_and_filters_headers(httpx_mock):
    httpx_mock.add_response(url=f"{BASE}/chat/completions", status_code=200, json={"ok": True},
                            headers={"Set-Cookie": "a=b", "Connection": "keep-alive", "X-Request-Id": "r1"})

    async def go():
        svc = UpstreamClient()
        body = {"model": "p/alias", "messages": [], "my_vendor_field": {"x": [1, 2]}, "temperature": 0.3}
        r = await svc.forward_chat_completion(_target(), body, stream=False)
        data = await r.aread()
        await svc.aclose()
        return r, data, body

    r, data, body = run(go())
    sent = json.loads(httpx_mock.get_request().content)
    assert sent["model"] == "upstream-model" and sent["my_vendor_field"] == {"x": [1, 2]}
    assert sent["temperature"] == 0.3 and body["model"] == "p/alias"  # caller's dict untouched
    req = httpx_mock.get_request()
    assert req.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert r.status == 200 and json.loads(data) == {"ok": True}
    assert "set-cookie" not in r.headers and "connection" not in r.headers
    assert r.headers["x-request-id"] == "r1"


def test_forward_passes_error_status_through(httpx_mock):
    httpx_mock.add_response(url=f"{BASE}/chat/completions", status_code=429, headers={"Retry-After": "3"},
                            json={"error": {"message": "slow down"}})

    async def go():
        svc = UpstreamClient()
        r = await svc.forward_chat_completion(_target(), {"model": "x", "messages": []}, stream=False)
        err = await r.error()
        await svc.aclose()
        return r, err

    r, err = run(go())
    assert r.status == 429 and err.status == 429 and err.headers == {"retry-after": "3"}
    assert "slow down" in err.message


def test_sse_is_relayed_chunk_by_chunk(httpx_mock):
    chunks = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"]
    stream = _mock_sse(httpx_mock, GatedStream(chunks))

    async def go():
        svc = UpstreamClient()
        r = await _open_stream(svc)
        got = []
        async for c in r.aiter_bytes():
            got.append(c)
            stream.received.set()  # the next chunk is only produced after this one arrived
        await r.aclose()
        await svc.aclose()
        return r, got

    r, got = run(go())
    assert got == chunks and r.is_event_stream
    assert json.loads(httpx_mock.get_request().content)["stream"] is True


def test_stream_cut_midway_raises_upstream_error(httpx_mock):
    stream = _mock_sse(httpx_mock, GatedStream([b'data: {"n":1}\n\n', b'data: {"n":2}\n\n'], cut_after=1))

    async def go():
        svc = UpstreamClient()
        r = await _open_stream(svc)
        got = []
        with pytest.raises(UpstreamError, match="broke off"):
            async for c in r.aiter_bytes():
                got.append(c)
                stream.received.set()
        await svc.aclose()
        return got

    assert run(go()) == [b'data: {"n":1}\n\n']


def test_consumer_stopping_early_closes_the_upstream_stream(httpx_mock):
    stream = _mock_sse(httpx_mock, GatedStream([b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]))

    async def go():
        svc = UpstreamClient()
        r = await _open_stream(svc)
        async for _ in r.aiter_bytes():
            break
        await r.aclose()
        await svc.aclose()

    run(go())
    assert stream.closed


def test_connect_failures_raise_before_anything_is_sent(httpx_mock):
    httpx_mock.add_exception(httpx.ConnectError("refused"))

    async def go():
        svc = UpstreamClient()
        try:
            await svc.forward_chat_completion(_target(), {"model": "x", "messages": []}, stream=True)
        finally:
            await svc.aclose()

    with pytest.raises(UpstreamError) as ei:
        run(go())
    assert ei.value.status == 502 and "API model 'p'" in ei.value.message


def test_key_only_in_authorization_header(httpx_mock):
    httpx_mock.add_response(url=f"{BASE}/chat/completions", json={"choices": [{"message": {"content": "x"}}]})
    run(_test())
    req = httpx_mock.get_request()
    assert TEST_KEY not in str(req.url) and TEST_KEY.encode() not in req.content
    assert [k for k, v in req.headers.items() if TEST_KEY in v] == ["authorization"]


def test_one_client_per_loop_closed_on_shutdown():
    """One client per event loop for whole bodies and one for streams, however many requests,
    both closed on shutdown; another loop gets its own (an httpx client belongs to the loop it
    first ran on)."""
    svc = UpstreamClient()

    async def go():
        got = [svc._client(stream=i % 2 == 1) for i in range(10)]
        await svc.aclose()
        return got

    got = run(go())
    assert len({id(c) for c in got[::2]}) == 1 and len({id(c) for c in got[1::2]}) == 1
    assert got[0] is not got[1] and got[0].is_closed and got[1].is_closed
    assert run(go())[0] is not got[0]


def test_upstream_cookies_are_never_kept_or_sent(httpx_mock):
    httpx_mock.add_response(url=f"{BASE}/models", json={"data": []}, headers={"Set-Cookie": "session=abc; Path=/"})
    httpx_mock.add_response(url=f"{BASE}/models", json={"data": []})

    async def go():
        svc = UpstreamClient()
        await svc.fetch_models(RAW)
        await svc.fetch_models(RAW)
        await svc.aclose()

    run(go())
    second = httpx_mock.get_requests()[1]
    assert "cookie" not in second.headers


# -- redaction: a provider that quotes the key it received -----------------------------------

MASK = mask_api_key(TEST_KEY)
ECHO = f"Incorrect API key provided: {TEST_KEY}."


def _echo_401(httpx_mock, url=f"{BASE}/chat/completions"):
    httpx_mock.add_response(url=url, status_code=401, headers={"WWW-Authenticate": f'Bearer key="{TEST_KEY}"'},
                            json={"error": {"message": ECHO, "type": "invalid_request_error"}})


def test_redactor_masks_every_form_of_the_key():
    r = KeyRedactor("sk-a/b\"c-0123456789")
    escaped = json.dumps("sk-a/b\"c-0123456789")[1:-1]  # sk-a/b\"c-...
    for form in ("sk-a/b\"c-0123456789", escaped, escaped.replace("/", "\\/")):
        assert r.text(f"x {form} y {form}") == "x sk-...6789 y sk-...6789"
        assert r.error_body(f"[{form}]".encode()) == b"[sk-...6789]"
        assert r.body(form.encode()) == b"sk-...6789"
    assert r.headers({"www-authenticate": "key=sk-a/b\"c-0123456789"}) == {"www-authenticate": "key=sk-...6789"}
    assert "0123456789" not in repr(r) and KeyRedactor(None).text("anything") == "anything"


def test_a_short_placeholder_key_is_masked_in_errors_only():
    r = KeyRedactor("ollama")
    assert r.text("bad key: ollama") == "bad key: ***" and r.error_body(b"ollama") == b"***"
    body = b'{"owned_by": "ollama", "content": "ollama is a tool"}'
    assert r.body(body) == body and r.headers({"x-by": "ollama"}) == {"x-by": "ollama"}
    assert r.feed(b"", b"ollama") == (b"ollama", b"")


def _feed_all(r: KeyRedactor, chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    out, held = [], b""
    for c in chunks:
        sent, held = r.feed(held, c)
        out.append(sent)
    return out, held


def test_a_key_split_across_stream_chunks_is_still_masked():
    r = KeyRedactor(TEST_KEY)
    stream = f'data: {{"n": 1}}\n\ndata: {{"error": {{"message": "{ECHO}"}}}}\n\n'.encode()
    want = stream.replace(TEST_KEY.encode(), MASK.encode())
    for i in range(1, len(stream)):
        for j in range(i, len(stream)):  # every split into three chunks
            out, held = _feed_all(r, [stream[:i], stream[i:j], stream[j:]])
            assert b"".join(out) + held == want, (i, j)
            assert held == b""  # a stream ending in a blank line leaves nothing behind
            assert not any(TEST_KEY[:len(TEST_KEY) // 2].encode() in o for o in out)


def test_sse_chunks_are_never_held_back():
    r = KeyRedactor(TEST_KEY)
    for event in (b'data: {"choices": [{"delta": {"content": "s"}}]}\n\n', b"data: [DONE]\n\n"):
        assert r.feed(b"", event) == (event, b"")
    # only a tail that could start the key waits for the next chunk
    assert r.feed(b"", b"abc sk-bod") == (b"abc ", b"sk-bod")
    assert r.feed(b"sk-bod", b"y") == (b"sk-body", b"")


def test_forwarded_error_body_headers_and_error_hold_only_the_mask(httpx_mock):
    _echo_401(httpx_mock)

    async def go():
        svc = UpstreamClient()
        r = await svc.forward_chat_completion(_target(), {"model": "x", "messages": []}, stream=False)
        headers = dict(r.headers)
        body = await r.aread()
        err = upstream_status_error(r.status, body, r.headers, r.label)
        await svc.aclose()
        return headers, body, err

    headers, body, err = run(go())
    assert MASK in json.loads(body)["error"]["message"] and TEST_KEY.encode() not in body
    assert headers["www-authenticate"] == f'Bearer key="{MASK}"'
    assert err.status == 401 and MASK in err.message
    assert TEST_KEY not in err.message and TEST_KEY not in repr(err) and TEST_KEY not in json.dumps(err.to_envelope())


def test_mid_stream_error_event_is_masked(httpx_mock):
    event = f'data: {{"error": {{"message": "{ECHO}"}}}}\n\n'.encode()
    half = event.index(TEST_KEY.encode()) + 10
    stream = _mock_sse(httpx_mock, GatedStream([b'data: {"n":1}\n\n', event[:half], event[half:]]))

    async def go():
        svc = UpstreamClient()
        r = await _open_stream(svc)
        got = []
        async for c in r.aiter_bytes():
            got.append(c)
            stream.received.set()
        await svc.aclose()
        return got

    got = run(go())
    assert b"".join(got) == b'data: {"n":1}\n\n' + event.replace(TEST_KEY.encode(), MASK.encode())
    assert not any(TEST_KEY[:20].encode() in c for c in got)


def test_fetch_models_and_test_prompt_never_quote_the_key(httpx_mock):
    _echo_401(httpx_mock, f"{BASE}/models")
    with pytest.raises(UpstreamError) as ei:
        run(_fetch())
    assert ei.value.status == 401 and MASK in ei.value.message
    assert TEST_KEY not in str(ei.value) and TEST_KEY not in repr(ei.value)
    _echo_401(httpx_mock)
    res = run(_test())
    assert not res.success and MASK in res.error and TEST_KEY not in res.error


@pytest.mark.parametrize("bad", ["http://h/v1\r\nX: 1", "http://h:70000/v1", "http://user:pw@provider.test/v1"])
def test_a_stored_base_url_from_a_looser_rule_is_a_400_before_any_request(httpx_mock, bad):
    """A record written before the stricter rule still loads, but is never used as it is."""
    from bodhi_nb.objs.api_model_alias import STORED

    old = ApiModelAlias.model_validate({"id": "old", "base_url": bad, "models": ["m"]}, context=STORED)
    assert old.base_url == bad
    with pytest.raises(ValidationError):
        ApiModelAlias.model_validate({"id": "old", "base_url": bad, "models": ["m"]})

    async def go():
        svc = UpstreamClient()
        try:
            await svc.forward_chat_completion(ForwardTarget(bad, "m", TEST_KEY, "API model 'old'"),
                                              {"model": "m", "messages": []}, stream=False)
        finally:
            await svc.aclose()

    with pytest.raises(InvalidRequestError, match="API model 'old' cannot be used") as ei:
        run(go())
    assert ei.value.status == 400 and bad not in ei.value.message and "user:pw" not in ei.value.message
    assert httpx_mock.get_requests() == []
