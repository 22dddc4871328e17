"""The key never appears in a response, header, log line or the store file."""

from __future__ import annotations

import json
import logging

from tests.conftest import TEST_KEY

MARK = "SECRET-9f8e7d6c5b4a3210"  # the distinctive middle of TEST_KEY


async def test_management_and_chat_flow_leaks_no_key(api, upstream, caplog, bodhi_home):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def call(method, path, body=None, **kw):
        code, data, headers = await api(method, path, body, **kw)
        seen.append(json.dumps(data))
        seen.append(json.dumps(list(headers.get_all())))
        return code, data

    base = {"id": "leak", "base_url": upstream.base_url, "api_key": TEST_KEY, "models": ["echo", "status-401"]}
    assert (await call("POST", "api-models", base))[0] == 201
    await call("POST", "api-models", base)  # 409
    await call("POST", "api-models", {**base, "id": "bad id"})  # 422
    await call("POST", "api-models", {**base, "id": "x2", "api_key": TEST_KEY + " with space"})  # 400
    await call("POST", "api-models", {**base, "id": "x3", "api_key": [TEST_KEY]})  # wrong type
    await call("GET", "api-models")
    await call("GET", "api-models/leak")
    await call("PUT", "api-models/leak", {"api_key": TEST_KEY, "models": ["echo"]})
    await call("PUT", "api-models/leak", {"api_key": TEST_KEY, "models": []})  # 422
    await call("POST", "api-models/test", {"id": "leak", "model": "echo", "prompt": "hi"})
    await call("POST", "api-models/test", {"base_url": upstream.base_url, "api_key": TEST_KEY, "model": "echo"})
    await call("POST", "api-models/test", {"base_url": "http://127.0.0.1:9/v1", "api_key": TEST_KEY, "model": "e"})
    await call("POST", "api-models/test", {"base_url": upstream.base_url, "api_key": TEST_KEY, "model": "e",
                                           "prompt": "x" * 40})
    await call("POST", "api-models/fetch-models", {"base_url": upstream.base_url, "api_key": TEST_KEY})
    await call("POST", "api-models/fetch-models", {"base_url": "http://127.0.0.1:9/v1", "api_key": TEST_KEY})
    await call("POST", "api-models/fetch-models", {"base_url": "ftp://nowhere", "api_key": TEST_KEY})
    await call("POST", "chat/completions", {"model": "echo", "messages": [{"role": "user", "content": "x"}]})
    await call("POST", "chat/completions", {"model": "status-401", "messages": [{"role": "user", "content": "x"}]})
    await call("GET", "openapi.json")
    await call("DELETE", "api-models/leak")

    assert upstream.last()["headers"]["Authorization"] == f"Bearer {TEST_KEY}"  # it did travel upstream
    haystack = "\n".join(seen) + caplog.text + "".join(repr(r.args) + str(r.exc_info) for r in caplog.records)
    assert len(seen) == 40
    assert TEST_KEY not in haystack and MARK not in haystack
    for f in bodhi_home.rglob("*"):
        if f.is_file():
            assert MARK.encode() not in f.read_bytes(), f
