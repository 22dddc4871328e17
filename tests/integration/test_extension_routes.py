"""Every gateway route on a live Jupyter server (pytest-jupyter, non-root base_url)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import TEST_KEY
from tests.route_table import every_route


def _key_free(*things) -> None:
    for t in things:
        s = t if isinstance(t, str) else json.dumps(t, default=str)
        assert TEST_KEY not in s and "SECRET-9f8e7d6c5b4a3210" not in s


async def _create(api, upstream, **kw):
    body = {"id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY, "models": ["echo", "cut"],
            "prefix": "fake/"}
    body.update(kw)
    return await api("POST", "api-models", body)


async def test_extension_is_enabled_and_serves_under_base_url(jp_serverapp, api):
    assert "bodhi_nb" in jp_serverapp.extension_manager.extension_apps
    code, data, _ = await api("GET", "models")
    assert code == 200 and data["object"] == "list"


async def test_api_model_crud(api, upstream):
    code, created, _ = await _create(api, upstream)
    assert code == 201 and created["has_api_key"] and created["api_key_masked"] == TEST_KEY[:3] + "..." + TEST_KEY[-4:]
    assert "api_key" not in created and created["created_at"].endswith("Z")
    code, data, _ = await _create(api, upstream)
    assert code == 409 and data["error"]["param"] == "id"
    code, data, _ = await _create(api, upstream, id="other")
    assert code == 409 and data["error"]["param"] == "prefix"
    code, one, _ = await api("GET", "api-models/fake")
    assert code == 200 and one["models"] == ["echo", "cut"]
    code, upd, _ = await api("PUT", "api-models/fake", {"models": ["echo", "echo-2"]})
    assert code == 200 and upd["has_api_key"] and upd["models"] == ["echo", "echo-2"]
    code, data, _ = await api("POST", "chat/completions", {"model": "fake/echo-2", "messages": [{"role": "user", "content": "k"}]})
    assert code == 200 and data["choices"][0]["message"]["content"] == "echo: k"  # stored key kept
    code, data, _ = await api("PUT", "api-models/fake", {"models": []})
    assert code == 422 and "models" in data["error"]["message"]
    code, data, _ = await api("PUT", "api-models/nope", {"models": ["x"]})
    assert code == 404 and data["error"]["type"] == "not_found_error"
    code, data, _ = await api("DELETE", "api-models/fake")
    assert code == 204
    code, data, _ = await api("GET", "api-models/fake")
    assert code == 404


async def test_list_is_paginated_newest_first(api, upstream):
    for i in range(3):
        await api("POST", "api-models", {"id": f"m{i}", "base_url": upstream.base_url, "models": [f"x{i}"]})
    code, page, _ = await api("GET", "api-models?page=1&page_size=2")
    assert code == 200 and page["total"] == 3 and [m["id"] for m in page["data"]] == ["m2", "m1"]
    code, page, _ = await api("GET", "api-models?page=2&page_size=2")
    assert [m["id"] for m in page["data"]] == ["m0"]
    code, data, _ = await api("GET", "api-models?page=0")
    assert code == 400
    code, data, _ = await api("GET", "api-models?page=abc")
    assert code == 400 and data["error"]["param"] == "page"


@pytest.mark.parametrize("body,status,param", [
    ({"id": "bad id", "base_url": "http://x"}, 422, "id"),
    ({"id": "ok", "base_url": "ftp://x", "models": ["m"]}, 422, None),
    ({"id": "ok", "base_url": "http://x", "models": []}, 422, None),
    ({"id": "ok", "base_url": "http://x", "models": ["m"], "surprise": 1}, 422, "surprise"),
])
async def test_create_validation(api, body, status, param):
    code, data, _ = await api("POST", "api-models", body)
    assert code == status and set(data) == {"error"}
    assert data["error"]["type"] == "invalid_request_error"
    if param:
        assert data["error"]["param"] == param


async def test_bad_json_and_non_object(api):
    for raw in ("{not json", "[1,2]"):
        code, data, _ = await api("POST", "api-models", raw=raw)
        assert code == 400 and "error" in data


async def test_test_prompt_and_fetch_models(api, upstream):
    await _create(api, upstream)
    code, data, _ = await api("POST", "api-models/fetch-models", {"id": "fake"})
    assert code == 200 and data["models"][:2] == ["echo", "echo-2"]
    code, data, _ = await api("POST", "api-models/fetch-models", {"base_url": upstream.base_url, "api_key": TEST_KEY})
    assert code == 200 and "cut" in data["models"]
    code, data, _ = await api("POST", "api-models/fetch-models", {"base_url": upstream.base_url, "api_key": "sk-wrong-000000000000"})
    assert code == 401 and "rejected the API key" in data["error"]["message"]
    code, data, _ = await api("POST", "api-models/fetch-models", {"base_url": "http://127.0.0.1:9/v1"})
    assert code == 502 and "connection refused" in data["error"]["message"]
    code, data, _ = await api("POST", "api-models/test", {"id": "fake", "model": "echo", "prompt": "ping"})
    assert code == 200 and data == {"success": True, "response": "echo: ping", "error": None}
    code, data, _ = await api("POST", "api-models/test", {"base_url": upstream.base_url, "api_key": "sk-bad-000000000000", "model": "echo"})
    assert code == 200 and data["success"] is False and "rejected" in data["error"]
    code, data, _ = await api("POST", "api-models/test", {"id": "fake", "model": "echo", "prompt": "x" * 31})
    assert code == 422 and data["error"]["param"] == "prompt"
    code, data, _ = await api("POST", "api-models/test", {"id": "missing", "model": "echo"})
    assert code == 404


async def test_chat_non_stream_routing_and_errors(api, upstream):
    await _create(api, upstream)
    body = {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}], "vendor_x": {"y": 1}}
    code, data, headers = await api("POST", "chat/completions", body)
    assert code == 200 and data["object"] == "chat.completion"
    assert float(headers["x-bodhi-overhead-ms"]) >= 0
    assert "upstream=1" not in str(headers.get_list("Set-Cookie")) and headers.get("X-Upstream") == "yes"
    sent = upstream.last()["body"]
    assert sent["model"] == "echo" and sent["vendor_x"] == {"y": 1}
    code, data, headers = await api("POST", "chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert code == 404 and data["error"]["code"] == "model_not_found"
    assert float(headers["x-bodhi-overhead-ms"]) >= 0  # errors carry it too
    for bad in ({"messages": [{"role": "user"}]}, {"model": "fake/echo", "messages": "hi"}, {"model": "fake/echo"}):
        code, data, _ = await api("POST", "chat/completions", bad)
        assert code == 400 and data["error"]["type"] == "invalid_request_error"
    code, data, _ = await api("POST", "chat/completions", raw="{oops")
    assert code == 400 and "not valid JSON" in data["error"]["message"]


async def test_upstream_error_statuses_pass_through(api, upstream):
    await _create(api, upstream, models=["status-429", "status-500", "not-json"])
    code, data, headers = await api("POST", "chat/completions", {"model": "fake/status-429", "messages": [{"role": "user", "content": "x"}]})
    assert code == 429 and headers["Retry-After"] == "7" and data["error"]["message"] == "fake upstream says 429"
    code, data, _ = await api("POST", "chat/completions", {"model": "fake/status-500", "messages": [{"role": "user", "content": "x"}]})
    assert code == 500 and "error" in data


async def test_streaming_relay_ends_with_done_and_passes_usage(jp_serverapp, jp_http_port, jp_base_url, api, upstream):
    await _create(api, upstream)
    token = jp_serverapp.identity_provider.token
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1/chat/completions"
    body = {"model": "fake/echo", "messages": [{"role": "user", "content": "a b c"}], "stream": True,
            "stream_options": {"include_usage": True}}
    events = []
    async with httpx.AsyncClient(trust_env=False) as c:
        async with c.stream("POST", url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "echo: a b c"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


async def test_stream_cut_midway_becomes_an_sse_error_event(jp_serverapp, jp_http_port, jp_base_url, api, upstream):
    await _create(api, upstream)
    token = jp_serverapp.identity_provider.token
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1/chat/completions"
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.post(url, json={"model": "fake/cut", "messages": [{"role": "user", "content": "x"}], "stream": True},
                         headers={"Authorization": f"Bearer {token}"})
    events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert r.status_code == 200 and len(events) == 3
    assert json.loads(events[-1])["error"]["type"] == "upstream_error"


async def test_models_list_and_get(api, upstream):
    await _create(api, upstream)
    await api("POST", "aliases", {"alias": "mine:q4", "repo": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                  "filename": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    code, data, _ = await api("GET", "models")
    ids = [m["id"] for m in data["data"]]
    assert ids[:2] == ["fake/echo", "fake/cut"] and "mine:q4" in ids and len(ids) == len(set(ids))
    code, one, _ = await api("GET", "models/fake/echo")
    assert code == 200 and one == {"id": "fake/echo", "object": "model", "created": one["created"], "owned_by": "fake"}
    code, data, _ = await api("GET", "models/nope")
    assert code == 404 and data["error"]["code"] == "model_not_found"


async def test_alias_crud(api):
    body = {"alias": "tiny:chat", "repo": "o/r", "filename": "f.Q4_0.gguf", "request_params": {"temperature": 0.1}}
    code, created, _ = await api("POST", "aliases", body)
    assert code == 201 and created["source"] == "user" and created["request_params"]["temperature"] == 0.1
    code, data, _ = await api("POST", "aliases", body)
    assert code == 409
    code, one, _ = await api("GET", "aliases/tiny:chat")
    assert code == 200 and one["alias"] == "tiny:chat"
    code, upd, _ = await api("PUT", "aliases/tiny:chat", {**body, "context_params": {"n_ctx": 256}})
    assert code == 200 and upd["context_params"]["n_ctx"] == 256
    code, data, _ = await api("POST", "aliases", {**body, "alias": "x", "context_params": {"n_ctx": "big"}})
    assert code == 422 and data["error"]["param"] == "context_params.n_ctx"
    code, listing, _ = await api("GET", "aliases")
    assert [a["alias"] for a in listing["data"]] == ["tiny:chat"] and listing["errors"] == []
    code, _, _ = await api("DELETE", "aliases/tiny:chat")
    assert code == 204
    code, data, _ = await api("GET", "aliases/tiny:chat")
    assert code == 404


async def test_openapi_document_is_valid_and_complete(api, jp_base_url):
    from openapi_spec_validator import validate

    code, doc, _ = await api("GET", "openapi.json")
    assert code == 200
    validate(doc)
    assert doc["openapi"].startswith("3.1") and doc["servers"] == [{"url": f"{jp_base_url}bodhi/v1"}]
    from bodhi_nb.http.extension import ROUTES
    from bodhi_nb.http.openapi import _path

    # Every route of the one route table is documented, and nothing else is.
    assert set(doc["paths"]) == {_path(h.path)[0] for h in ROUTES if h.openapi}
    assert {"/chat/completions", "/models", "/models/{model_id}", "/api-models", "/api-models/{id}",
            "/api-models/test", "/api-models/fetch-models", "/aliases", "/aliases/{alias}",
            "/openapi.json"} <= set(doc["paths"])
    assert doc["paths"]["/api-models"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/ApiModelResponse"}
    assert "api_key" not in doc["components"]["schemas"]["ApiModelResponse"]["properties"]
    _key_free(doc)


async def test_every_route_refuses_unauthenticated(http_server_client, jp_http_port, jp_base_url):
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1/"
    calls = every_route()
    async with httpx.AsyncClient(trust_env=False) as c:
        for method, path in calls:
            for headers in ({}, {"Authorization": "token wrong-token"}, {"Authorization": "Bearer wrong"}):
                r = await c.request(method, base + path, headers=headers, content=b"{}")
                assert r.status_code == 403, (method, path, headers, r.status_code)
                assert r.json()["error"]["type"] == "permission_error"
