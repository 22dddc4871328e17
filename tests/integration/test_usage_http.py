"""The usage ledger through the HTTP gateway of a live Jupyter server: counting against a
loopback upstream that reports known usage, streams with and without include_usage,
errors, grouping, prices, the budget's 429, and the OpenAPI document."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import TEST_KEY

MSG = [{"role": "user", "content": "hi there"}]  # fake upstream: prompt 3 tokens, reply "echo: hi there" = 3 words


async def _create(api, upstream):
    code, _, _ = await api("POST", "api-models", {
        "id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY, "prefix": "fake/",
        "models": ["echo", "slow-stream", "status-429", "cut"]})
    assert code == 201


async def _rows(api, query=""):
    code, page, _ = await api("GET", "usage" + (f"?{query}" if query else ""))
    assert code == 200, page
    return page


def _events(text: str) -> list:
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            payload = block[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def test_non_stream_is_counted_with_the_upstream_usage(api, upstream):
    await _create(api, upstream)
    code, data, _ = await api("POST", "chat/completions", {"model": "fake/echo", "messages": MSG})
    assert code == 200 and data["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    page = await _rows(api)
    assert page["total"] == 1 and page["page"] == 1 and page["page_size"] == 100
    row = page["data"][0]
    assert {k: row[k] for k in ("surface", "model", "provider", "upstream_model", "status", "error_code",
                                "prompt_tokens", "completion_tokens", "total_tokens", "cached", "ttft_ms",
                                "content", "kernel_id")} == {
        "surface": "http", "model": "fake/echo", "provider": "fake", "upstream_model": "echo", "status": 200,
        "error_code": None, "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6, "cached": False,
        "ttft_ms": None, "content": None, "kernel_id": None}
    assert row["latency_ms"] > 0 and row["time"].endswith("Z")


async def test_a_kernel_client_names_its_kernel_and_notebook(api, upstream, monkeypatch):
    from bodhi_nb import openai_client
    from bodhi_nb.notebook.server_info import ServerInfo
    from bodhi_nb.server_core import origin as context

    monkeypatch.setenv("JPY_SESSION_NAME", "work/report.ipynb")
    context.kernel_identity.cache_clear()
    try:
        client = openai_client(ServerInfo("http://127.0.0.1:1/", "t"))
        sent = {k.lower(): v for k, v in client.default_headers.items()}
        assert sent["x-bodhi-notebook"] == "work/report.ipynb" and "x-bodhi-kernel-id" not in sent
    finally:
        context.kernel_identity.cache_clear()
    await _create(api, upstream)
    headers = {"x-bodhi-kernel-id": "k-123", "x-bodhi-notebook": "work/report.ipynb"}
    code, _, _ = await api("POST", "chat/completions", {"model": "fake/echo", "messages": MSG}, headers=headers)
    assert code == 200
    row = (await _rows(api))["data"][0]
    assert (row["surface"], row["kernel_id"], row["notebook"]) == ("http", "k-123", "work/report.ipynb")
    groups = await _rows(api, "by=notebook")
    assert groups["data"] == [{"notebook": "work/report.ipynb", "requests": 1, "errors": 0, "error_rate": 0.0,
                               "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6, "cost_usd": None}]


async def test_stream_that_did_not_ask_gets_no_usage_chunk_but_is_counted(api, upstream):
    await _create(api, upstream)
    body = {"model": "fake/slow-stream", "messages": MSG, "stream": True, "max_tokens": 5}
    code, text, headers = await api("POST", "chat/completions", body)
    assert code == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert upstream.last()["body"]["stream_options"] == {"include_usage": True}  # asked upstream for the client
    events = _events(text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) == 6 and all(c["choices"] for c in chunks)  # 5 words + the finish chunk, nothing else
    assert not any("usage" in c for c in chunks) and '"usage"' not in text
    row = (await _rows(api))["data"][0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (3, 5, 8)
    assert row["status"] == 200 and row["ttft_ms"] is not None and 0 < row["ttft_ms"] <= row["latency_ms"]


async def test_stream_that_asked_for_usage_keeps_its_usage_chunk(api, upstream):
    await _create(api, upstream)
    body = {"model": "fake/slow-stream", "messages": MSG, "stream": True, "max_tokens": 4,
            "stream_options": {"include_usage": True}}
    code, text, _ = await api("POST", "chat/completions", body)
    assert code == 200
    assert upstream.last()["body"]["stream_options"] == {"include_usage": True}
    last = _events(text)[-2]
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    row = (await _rows(api))["data"][0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (3, 4, 7)


async def test_errors_are_rows_and_groups_sum_them(api, upstream):
    await _create(api, upstream)
    for _ in range(2):
        code, _, _ = await api("POST", "chat/completions", {"model": "fake/echo", "messages": MSG})
        assert code == 200
    code, data, _ = await api("POST", "chat/completions", {"model": "fake/status-429", "messages": MSG})
    assert code == 429
    code, data, _ = await api("POST", "chat/completions", {"model": "no-such-model", "messages": MSG})
    assert code == 404
    page = await _rows(api)
    assert page["total"] == 4
    by_status = {r["model"]: (r["status"], r["error_code"]) for r in page["data"]}
    assert by_status["fake/status-429"] == (429, "rate_limit_exceeded")
    assert by_status["no-such-model"] == (404, "model_not_found")
    groups = await _rows(api, "by=provider")
    assert groups["total"] == 2
    fake = next(g for g in groups["data"] if g.get("provider") == "fake")
    assert fake == {"provider": "fake", "requests": 3, "errors": 1, "error_rate": pytest.approx(1 / 3),
                    "prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12, "cost_usd": None}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    days = await _rows(api, "by=day,surface")
    assert days["data"][0]["day"] == today and days["data"][0]["surface"] == "http"
    assert days["data"][0]["requests"] == 4
    paged = await _rows(api, "page=2&page_size=3")
    assert paged["total"] == 4 and len(paged["data"]) == 1 and paged["data"][0]["model"] == "fake/echo"
    assert (await _rows(api, f"since={today}&surface=http"))["total"] == 4
    assert (await _rows(api, "until=2000-01-01"))["total"] == 0
    for bad, param in (("by=colour", "by"), ("since=yesterday", "since"), ("page_size=0", "page_size")):
        code, data, _ = await api("GET", f"usage?{bad}")
        assert code == 400 and data["error"]["param"] == param and data["error"]["type"] == "invalid_request_error"


async def test_prices_give_the_cost_and_the_budget_blocks_with_429(api, upstream, bodhi_home):
    await _create(api, upstream)
    code, price, _ = await api("PUT", "usage/prices", {"name": "fake", "scope": "provider",
                                                       "input_usd_per_mtok": 1_000_000, "output_usd_per_mtok": 0.5e6})
    assert code == 200 and price["scope"] == "provider" and price["updated_at"].endswith("Z")
    code, price, _ = await api("PUT", "usage/prices", {"name": "fake/echo", "input_usd_per_mtok": 2e6,
                                                       "output_usd_per_mtok": 0})
    assert code == 200
    code, data, _ = await api("PUT", "usage/prices", {"name": "x", "input_usd_per_mtok": -1,
                                                      "output_usd_per_mtok": 0})
    assert code == 422 and data["error"]["param"] == "input_usd_per_mtok"
    code, listed, _ = await api("GET", "usage/prices")
    assert [(p["scope"], p["name"]) for p in listed["data"]] == [("model", "fake/echo"), ("provider", "fake")]
    await api("POST", "chat/completions", {"model": "fake/echo", "messages": MSG})  # model price: 3 x $2
    await api("POST", "chat/completions", {"model": "fake/slow-stream", "messages": MSG, "stream": True,
                                           "max_tokens": 2})  # provider price: 3 x $1 + 2 x $0.5
    rows = {r["model"]: r["cost_usd"] for r in (await _rows(api))["data"]}
    assert rows == {"fake/echo": pytest.approx(6.0), "fake/slow-stream": pytest.approx(4.0)}

    code, budget, _ = await api("PUT", "usage/budget", {"daily_usd": 12})
    assert code == 200 and budget["daily_usd"] == 12 and budget["spent_today_usd"] == pytest.approx(10.0)
    assert not budget["exceeded"] and budget["remaining_usd"] == pytest.approx(2.0)
    code, _, _ = await api("POST", "chat/completions", {"model": "fake/echo", "messages": MSG})
    assert code == 200  # $10 < $12: allowed, and now $16 are spent
    deadline = time.monotonic() + 20
    while True:  # the gateway's cached spend catches up once the row is written
        code, data, headers = await api("POST", "chat/completions", {"model": "fake/echo", "messages": MSG})
        if code == 429:
            break
        assert code == 200 and time.monotonic() < deadline, "the budget never blocked"
    err = data["error"]
    assert err["code"] == "budget_exceeded" and err["type"] == "insufficient_quota"
    assert "$12.00" in err["message"] and "budget" in err["message"] and 0 < int(headers["Retry-After"]) <= 86400
    code, budget, _ = await api("GET", "usage/budget")
    assert budget["exceeded"] and budget["remaining_usd"] == 0
    blocked = [r for r in (await _rows(api))["data"] if r["status"] == 429]
    assert blocked and blocked[0]["error_code"] == "budget_exceeded" and blocked[0]["cost_usd"] is None
    code, budget, _ = await api("PUT", "usage/budget", {"daily_usd": None})
    assert code == 200 and budget["daily_usd"] is None
    code, _, _ = await api("POST", "chat/completions", {"model": "fake/echo", "messages": MSG})
    assert code == 200
    code, _, _ = await api("DELETE", "usage/prices/provider/fake")
    assert code == 204
    code, data, _ = await api("DELETE", "usage/prices/provider/fake")
    assert code == 404
    code, data, _ = await api("DELETE", "usage/prices/team/fake")
    assert code == 400 and data["error"]["param"] == "scope"
    raw = b"".join(p.read_bytes() for p in bodhi_home.glob("usage.sqlite*"))
    assert TEST_KEY.encode() not in raw and b"hi there" not in raw  # no key, and no prompt text by default


async def test_usage_routes_are_in_the_openapi_document(api):
    code, doc, _ = await api("GET", "openapi.json")
    assert code == 200
    get = doc["paths"]["/usage"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PaginatedUsageResponse")
    assert {p["name"] for p in get["parameters"]} >= {"since", "until", "by", "page", "page_size"}
    row = doc["components"]["schemas"]["UsageRow"]["properties"]
    assert {"time", "surface", "model", "provider", "upstream_model", "target", "status", "error_code",
            "prompt_tokens", "completion_tokens", "total_tokens", "cached", "latency_ms", "ttft_ms", "cost_usd",
            "kernel_id", "notebook"} <= set(row)
    assert {"put", "get"} <= set(doc["paths"]["/usage/budget"]) and "put" in doc["paths"]["/usage/prices"]
