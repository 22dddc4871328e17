"""The official openai SDK against the live gateway (upstream: a real server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

import bodhi_nb
from bodhi_nb.notebook.server_info import ServerInfo, find_server
from tests.conftest import TEST_KEY


@pytest.fixture
def make_gateway(jp_serverapp, http_server_client, jp_http_port, jp_base_url, api, upstream):
    """Register the fake provider on the live server; returns its ServerInfo (no async fixtures here)."""

    async def make() -> ServerInfo:
        code, _, _ = await api("POST", "api-models", {"id": "fake", "base_url": upstream.base_url,
                                                      "api_key": TEST_KEY, "models": ["echo", "status-401"],
                                                      "prefix": "fake/"})
        assert code == 201
        return ServerInfo(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token)

    return make


async def test_async_sdk_stream_and_not(make_gateway):
    gateway = await make_gateway()
    client = openai.AsyncOpenAI(base_url=gateway.gateway_url, api_key=gateway.token, http_client=httpx.AsyncClient(trust_env=False))
    r = await client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "hi sdk"}])
    assert r.choices[0].message.content == "echo: hi sdk"
    stream = await client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "x y"}],
                                                  stream=True)
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: x y"
    models = [m.id async for m in client.models.list()]
    assert "fake/echo" in models
    await client.close()


async def test_sync_sdk_and_error_classes(make_gateway):
    gateway = await make_gateway()
    def sync_calls():
        c = bodhi_nb.openai_client(gateway, http_client=httpx.Client(trust_env=False))
        out = {"reply": c.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "s"}]).choices[0].message.content,
               "streamed": "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                   model="fake/echo", messages=[{"role": "user", "content": "s t"}], stream=True) if ch.choices)}
        for model, cls in (("nope", openai.NotFoundError), ("fake/status-401", openai.AuthenticationError)):
            with pytest.raises(cls) as ei:
                c.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
            out[model] = ei.value.status_code
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="fake/echo", messages=[])
        bad = openai.OpenAI(base_url=gateway.gateway_url, api_key="wrong", http_client=httpx.Client(trust_env=False))
        with pytest.raises(openai.PermissionDeniedError):
            bad.models.list()
        return out

    out = await asyncio.to_thread(sync_calls)  # the server runs on this loop; keep it free
    assert out == {"reply": "echo: s", "streamed": "echo: s t", "nope": 404, "fake/status-401": 401}


def test_find_server_from_environment(monkeypatch):
    monkeypatch.setenv("BODHI_GATEWAY_URL", "http://127.0.0.1:8888/lab-base/bodhi/v1")
    monkeypatch.setenv("BODHI_GATEWAY_TOKEN", "tok")
    info = find_server()
    assert info.gateway_url == "http://127.0.0.1:8888/lab-base/bodhi/v1" and info.token == "tok"
    assert "tok" not in repr(info)
    monkeypatch.delenv("BODHI_GATEWAY_URL")
    monkeypatch.setenv("JUPYTER_SERVER_URL", "http://127.0.0.1:9999/")
    monkeypatch.setenv("JUPYTER_TOKEN", "t2")
    assert find_server().gateway_url == "http://127.0.0.1:9999/bodhi/v1"


async def test_find_server_from_runtime_files(make_gateway, jp_runtime_dir, monkeypatch, jp_http_port):
    gateway = await make_gateway()
    for v in ("BODHI_GATEWAY_URL", "JUPYTER_SERVER_URL"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(jp_runtime_dir))
    info = {"url": gateway.url, "token": gateway.token, "pid": __import__("os").getpid(), "port": jp_http_port,
            "base_url": "/jupyter/", "hostname": "127.0.0.1", "root_dir": "/", "secure": False, "sock": "",
            "password": False, "version": "2"}
    (jp_runtime_dir / f"jpserver-{info['pid']}.json").write_text(json.dumps(info))
    found = await asyncio.to_thread(find_server)
    assert found.gateway_url == gateway.gateway_url

    def call():
        c = bodhi_nb.openai_client(http_client=httpx.Client(trust_env=False))
        return [m.id for m in c.models.list()]

    assert "fake/echo" in await asyncio.to_thread(call)
