"""Bodhi() against a real OpenAI-compatible server on 127.0.0.1 (the remote edge)."""

from __future__ import annotations

import asyncio

import pytest

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.objs import InvalidRequestError, LocalEngineUnavailable, ModelNotFound, UpstreamError
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET


@pytest.fixture
def fake_models():
    """The `bodhi` fixture (tests/integration/conftest.py) registers these upstream models."""
    return ["echo", "cut"]


def test_chat_non_streamed(bodhi, upstream):
    assert bodhi.chat("fake/echo", "hello there") == "echo: hello there"
    last = upstream.last()
    assert last["body"]["model"] == "echo" and last["headers"]["Authorization"] == f"Bearer {TEST_KEY}"


def test_chat_streamed_yields_deltas(bodhi):
    parts = list(bodhi.chat("fake/echo", "one two three", stream=True))
    assert len(parts) == 4 and "".join(parts) == "echo: one two three"


def test_completion_returns_full_response_and_params_pass(bodhi, upstream):
    resp = bodhi.completion("fake/echo", "hi", system="be brief", temperature=0.2, my_field=1)
    assert resp["object"] == "chat.completion" and resp["usage"]["total_tokens"] > 0
    body = upstream.last()["body"]
    assert body["temperature"] == 0.2 and body["my_field"] == 1 and body["messages"][0]["role"] == "system"


def test_stream_cut_midway_raises_after_partial_output(bodhi):
    got = []
    with pytest.raises(UpstreamError):
        for t in bodhi.chat("fake/cut", "x", stream=True):
            got.append(t)
    assert got == ["first ", "second "]


def test_management_round_trip(bodhi, upstream):
    assert bodhi.api_models.fetch_models("fake") == ["echo", "echo-2", "slow-stream", "forever", "cut"]
    assert bodhi.api_models.fetch_models(base_url=upstream.base_url, api_key=TEST_KEY)[0] == "echo"
    ok = bodhi.api_models.test("echo", "ping", id="fake")
    assert ok == {"success": True, "response": "echo: ping", "error": None}
    bad = bodhi.api_models.test("echo", "ping", base_url=upstream.base_url, api_key="sk-wrong-key-000000")
    assert not bad["success"] and "rejected the API key" in bad["error"]
    upd = bodhi.api_models.update("fake", models=["echo", "echo-2", "cut"])
    assert upd["has_api_key"] and upd["api_key_masked"] == TEST_KEY[:3] + "..." + TEST_KEY[-4:]
    assert bodhi.chat("fake/echo-2", "still works") == "echo: still works"  # key kept
    view = bodhi.api_models.get("fake")
    assert TEST_KEY not in repr(view) and "api_key" not in view
    assert "fake/echo-2" in bodhi.models()
    assert [c.name for c in bodhi.explain("fake/echo")] == ["fake"]


def test_errors(bodhi):
    with pytest.raises(ModelNotFound):
        bodhi.chat("nope", "x")
    with pytest.raises(InvalidRequestError):
        bodhi.api_models.create("bad id", "http://x")
    with pytest.raises(InvalidRequestError, match="at most 30"):
        bodhi.api_models.test("echo", "x" * 31, id="fake")


def test_chat_from_inside_a_running_event_loop(bodhi):
    """As in a Jupyter kernel: the loop is running; sync and async calls both work."""

    async def in_kernel():
        loop = asyncio.get_running_loop()
        ticks = []
        ticker = loop.call_later(0, ticks.append, 1)  # proves the loop stays responsive
        sync_reply = bodhi.chat("fake/echo", "sync in loop")
        async_reply = await bodhi.achat("fake/echo", "async in loop")
        streamed = [t async for t in await bodhi.achat("fake/echo", "a b", stream=True)]
        await asyncio.sleep(0)
        ticker.cancel()
        fetched = await bodhi.api_models.afetch_models("fake")
        return sync_reply, async_reply, streamed, ticks, fetched

    sync_reply, async_reply, streamed, ticks, fetched = asyncio.run(in_kernel())
    assert sync_reply == "echo: sync in loop" and async_reply == "echo: async in loop"
    assert "".join(streamed) == "echo: a b" and ticks == [1] and "echo" in fetched


def test_local_alias_without_engine_gives_clear_error(bodhi_home):
    from bodhi_nb.server_core.app_services import AppServices
    from bodhi_nb.server_core.gateway import Gateway

    services = AppServices.create(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    services.gateway = Gateway(services.router, services.upstream, engine=None)  # before the operations are built
    b = Bodhi(services=services)
    b.aliases.create("lonely", repo="HuggingFaceTB/SmolLM2-135M-Instruct", filename="SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(LocalEngineUnavailable, match=r"pip install 'bodhi_nb\[local\]'"):
        b.chat("lonely", "hi")


def test_interrupting_a_sync_stream_closes_the_upstream(bodhi, upstream):
    """Jupyter's interrupt raises KeyboardInterrupt inside the loop over a sync stream."""
    import time as _time

    import httpx as _httpx

    bodhi.api_models.update("fake", models=["echo", "cut", "forever"])
    it = bodhi.chat("fake/forever", "go", stream=True)
    got = [next(it) for _ in range(3)]
    assert got[0] == "tick0 "
    it.close()  # what an interrupt or a `break` does to the generator
    deadline = _time.monotonic() + 10
    open_streams = 1
    while open_streams and _time.monotonic() < deadline:
        open_streams = _httpx.get(f"http://127.0.0.1:{upstream.port}/_last", trust_env=False).json()["open_streams"]
        _time.sleep(0.02 if open_streams else 0)  # bounded poll of another process's counter
    assert open_streams == 0
    assert bodhi.chat("fake/echo", "after") == "echo: after"
