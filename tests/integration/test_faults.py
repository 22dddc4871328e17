"""Failure behaviour (issue: security / fault suite): every upstream or store fault ends in a
clear error, within the configured timeouts, with no upstream stream left open, and the
next request works."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time

import httpx
import pytest

from tests.conftest import TEST_KEY
from tests.resources.servers import free_port

MSG = [{"role": "user", "content": "x"}]


@pytest.fixture
def jp_server_config(jp_server_config):
    cfg = json.loads(json.dumps(jp_server_config))
    cfg["BodhiExtension"].update(request_timeout=3.0, first_byte_timeout=2.0, connect_timeout=1.0)
    return cfg


@pytest.fixture
def gw(jp_serverapp, http_server_client, jp_http_port, jp_base_url, api, upstream):
    """(url, headers, register) for raw httpx calls to the live gateway."""
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1"
    headers = {"Authorization": f"Bearer {jp_serverapp.identity_provider.token}"}

    async def register(id, base_url, models):
        code, data, _ = await api("POST", "api-models", {"id": id, "base_url": base_url, "api_key": TEST_KEY,
                                                         "models": models})
        assert code == 201, data

    return url, headers, register


async def _open_streams(upstream) -> int:
    async with httpx.AsyncClient(trust_env=False) as c:
        return (await c.get(f"http://127.0.0.1:{upstream.port}/_last")).json()["open_streams"]


async def _no_open_streams(upstream, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while await _open_streams(upstream) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await _open_streams(upstream) == 0


async def _next_request_works(c, url, headers):
    r = await c.post(f"{url}/chat/completions", headers=headers, json={"model": "echo", "messages": MSG})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: x"


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused(gw, upstream, stream):
    url, headers, register = gw
    await register("dead", f"http://127.0.0.1:{free_port()}/v1", ["dead-model"])
    await register("live", upstream.base_url, ["echo"])
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        t = time.monotonic()
        r = await c.post(f"{url}/chat/completions", headers=headers,
                         json={"model": "dead-model", "messages": MSG, "stream": stream})
        assert time.monotonic() - t < 10
        assert r.status_code == 502 and "connection refused" in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "upstream_error"
        models = await c.get(f"{url}/models", headers=headers)  # a dead provider never blocks the listing
        assert {"dead-model", "echo"} <= {m["id"] for m in models.json()["data"]}
        await _next_request_works(c, url, headers)


async def test_connect_timeout(gw, upstream):
    url, headers, register = gw
    # A listener whose backlog is full and never accepts: SYNs are dropped, connect() hangs.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    await register("blackhole", f"http://127.0.0.1:{port}/v1", ["bh"])
    await register("live", upstream.base_url, ["echo"])
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
            t = time.monotonic()
            r = await c.post(f"{url}/chat/completions", headers=headers, json={"model": "bh", "messages": MSG})
            took = time.monotonic() - t
            assert r.status_code == 504 and "timed out" in r.json()["error"]["message"], r.json()
            assert took < 8, took  # connect_timeout is 1 s
            await _next_request_works(c, url, headers)
    finally:
        for s in fillers:
            s.close()
        srv.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_slow_first_byte_times_out(gw, upstream, stream):
    url, headers, register = gw
    await register("live", upstream.base_url, ["echo", "slow-first"])
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        t = time.monotonic()
        r = await c.post(f"{url}/chat/completions", headers=headers,
                         json={"model": "slow-first", "messages": MSG, "stream": stream})
        took = time.monotonic() - t
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert took < 8, took  # first_byte 2 s (stream) / request 3 s
        await _next_request_works(c, url, headers)


@pytest.mark.parametrize("model,status,retry", [("status-500", 500, None), ("status-503", 503, None),
                                                ("status-429", 429, "7")])
async def test_upstream_error_statuses(gw, upstream, model, status, retry):
    url, headers, register = gw
    await register("live", upstream.base_url, ["echo", model])
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        for stream in (False, True):
            r = await c.post(f"{url}/chat/completions", headers=headers,
                             json={"model": model, "messages": MSG, "stream": stream})
            assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}
            assert r.headers.get("Retry-After") == retry
        await _next_request_works(c, url, headers)


async def test_invalid_json_from_upstream(gw, upstream):
    url, headers, register = gw
    await register("live", upstream.base_url, ["echo", "not-json"])
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        r = await c.post(f"{url}/chat/completions", headers=headers, json={"model": "not-json", "messages": MSG})
        assert r.status_code == 502 and "not JSON" in r.json()["error"]["message"]
        await _next_request_works(c, url, headers)


async def test_sse_cut_mid_stream(gw, upstream):
    url, headers, register = gw
    await register("live", upstream.base_url, ["echo", "cut"])
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        r = await c.post(f"{url}/chat/completions", headers=headers,
                         json={"model": "cut", "messages": MSG, "stream": True})
        events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
        assert r.status_code == 200 and json.loads(events[-1])["error"]["code"] == "upstream_error"
        await _no_open_streams(upstream)
        await _next_request_works(c, url, headers)


async def test_never_ending_stream_client_disconnect_closes_upstream(gw, upstream):
    url, headers, register = gw
    await register("live", upstream.base_url, ["echo", "forever"])
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        async with c.stream("POST", f"{url}/chat/completions", headers=headers,
                            json={"model": "forever", "messages": MSG, "stream": True}) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    break
        assert await _open_streams(upstream) <= 1
        await _no_open_streams(upstream)
        await _next_request_works(c, url, headers)


async def test_db_file_deleted_while_running_loses_nothing(gw, api, bodhi_home, upstream):
    url, headers, register = gw
    await register("keepme", upstream.base_url, ["echo"])
    (bodhi_home / "bodhi_nb.db.json").unlink()
    code, data, _ = await api("GET", "api-models/keepme")
    assert code == 200 and data["has_api_key"]
    assert (bodhi_home / "bodhi_nb.db.json").exists()
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        await _next_request_works(c, url, headers)  # the key was restored too


async def test_read_only_bodhi_home(gw, api, bodhi_home, upstream):
    url, headers, register = gw
    await register("before", upstream.base_url, ["echo"])
    home = str(bodhi_home)
    mounted = subprocess.run(f"mount --bind {home} {home} && mount -o remount,bind,ro {home}", shell=True,
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.strip()}")
    try:
        code, data, _ = await api("POST", "api-models", {"id": "after", "base_url": upstream.base_url,
                                                          "models": ["m"]})
        assert code == 500 and data["error"]["code"] == "store_error"
        assert "Read-only file system" in data["error"]["message"]
        code, data, _ = await api("GET", "api-models")
        assert [m["id"] for m in data["data"]] == ["before"]
        async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
            await _next_request_works(c, url, headers)
    finally:
        subprocess.run(["umount", home], check=True)
