"""Drive the panels like a user (set values, click, await the scheduled task) against real
services and a real OpenAI-compatible upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import ipywidgets as W
import pytest

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.notebook.widgets import (
    AliasesPanel,
    ApiModelsPanel,
    BatchesPanel,
    ChatPanel,
    RouterAliasesPanel,
    UsagePanel,
    panel,
)
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET


@pytest.fixture
def bodhi(bodhi_home):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    yield b
    b.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def _fill_new(p: ApiModelsPanel, upstream, key=TEST_KEY):
    p.id.value = "fake"
    p.base_url.value = upstream.base_url
    p.api_key.value = key
    p.prefix.value = "fake/"


def test_create_fetch_test_edit_delete(bodhi, upstream):
    async def scenario():
        p = ApiModelsPanel(bodhi)
        assert "No API models yet" in p.table.value
        _fill_new(p, upstream)
        p.fetch_btn.click()
        assert p.fetch_btn.disabled and "Fetching" in p.status.value  # loading state while it runs
        await p.runner.wait()
        assert not p.fetch_btn.disabled and "5 models available" in p.status.value
        assert p.models.options[:2] == ("echo", "echo-2")
        p.search.value = "ech"
        assert p.models.options == ("echo", "echo-2")
        p.select_all_btn.click()
        assert p.models.value == ("echo", "echo-2")
        p.search.value = ""
        p.prompt.value = "hello panel"
        p.test_btn.click()
        await p.runner.wait()
        assert "echo: hello panel" in p.result.value and "succeeded" in p.status.value
        p.save_btn.click()
        assert "Created fake" in p.status.value and p.api_key.value == ""
        assert "fake" in p.table.value and TEST_KEY[:3] + "..." + TEST_KEY[-4:] in p.table.value
        state = json.dumps(W.Widget.get_manager_state())
        assert TEST_KEY not in state and "SECRET-9f8e7d6c5b4a3210" not in state

        # edit without touching the key
        assert p.selector.value == "fake" and p.id.disabled and "leave empty to keep" in p.api_key.placeholder
        p.clear_btn.click()
        p.models.value = ("echo",)
        p.save_btn.click()
        assert "Saved fake" in p.status.value
        assert bodhi.api_models.get("fake")["models"] == ["echo"]
        assert bodhi.chat("fake/echo", "key kept") == "echo: key kept"
        # test with the stored key (empty field in edit mode)
        p.test_btn.click()
        await p.runner.wait()
        assert "succeeded" in p.status.value

        # a failing test prompt shows the error
        p.selector.value = "+ new"
        _fill_new(p, upstream, key="sk-wrong-0000000000000")
        p._set_models(["echo"], ["echo"])
        p.test_btn.click()
        await p.runner.wait()
        assert "bodhi-error" in p.status.value and "rejected the API key" in p.status.value
        p.prompt.value = "x" * 31
        p.test_btn.click()
        await p.runner.wait()
        assert "at most 30" in p.status.value

        # delete with a confirm step
        p.selector.value = "fake"
        p.delete_btn.click()
        assert p.confirm_btn.layout.display is None and bodhi.api_models.list()  # nothing deleted yet
        p.confirm_btn.click()
        assert bodhi.api_models.list() == [] and "Deleted fake" in p.status.value

    run(scenario())


def test_create_error_is_shown_and_key_kept_for_retry(bodhi, upstream):
    p = ApiModelsPanel(bodhi)
    _fill_new(p, upstream)
    p.id.value = "bad id"
    p._set_models(["echo"], ["echo"])
    p.save_btn.click()
    assert "bodhi-error" in p.status.value and "id must start" in p.status.value
    assert p.api_key.value == TEST_KEY and TEST_KEY not in p.status.value


def test_chat_streams_escapes_and_counts(bodhi, upstream):
    bodhi.api_models.create("fake", upstream.base_url, api_key=TEST_KEY, models=["echo", "forever"], prefix="fake/")

    async def scenario():
        c = ChatPanel(bodhi)
        labels = dict(c.model.options)
        assert {"API · fake/echo", "API · fake/forever"} <= set(labels)
        assert c.model.value == "fake/echo"  # preselected: Send works without touching the picker
        c.model.value = "fake/echo"
        c.input.value = "<script>alert(1)</script> hi"
        c.send_btn.click()
        assert c.send_btn.disabled and not c.stop_btn.disabled
        await c.runner.wait()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in c.transcript.value
        assert "<script>" not in c.transcript.value
        assert c.messages[-1] == {"role": "assistant", "content": "echo: <script>alert(1)</script> hi"}
        assert c.stats.value.startswith("3 tokens") and "tok/s" in c.stats.value
        assert c.stop_btn.disabled and not c.send_btn.disabled
        c.clear_btn.click()
        assert c.messages == [] and c.history == [] and c.transcript.value == ""

    run(scenario())


def test_stop_mid_stream_closes_the_upstream(bodhi, upstream):
    bodhi.api_models.create("fake", upstream.base_url, api_key=TEST_KEY, models=["forever"], prefix="fake/")

    async def scenario():
        c = ChatPanel(bodhi)
        c.model.value = "fake/forever"
        c.input.value = "go"
        c.send_btn.click()
        while "tick2" not in c.reply:
            await asyncio.wait_for(c.chunk_arrived(), 10)
        c.stop_btn.click()
        await c.runner.wait()
        assert "Stopped" in c.status.value and c.messages[-1]["content"].startswith("tick0 tick1 tick2")
        # the upstream notices the closed connection on its next write (every 50 ms)
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(trust_env=False) as h:
            while (await h.get(f"http://127.0.0.1:{upstream.port}/_last")).json()["open_streams"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert (await h.get(f"http://127.0.0.1:{upstream.port}/_last")).json()["open_streams"] == 0

    run(scenario())


def test_chat_error_is_shown(bodhi):
    async def scenario():
        c = ChatPanel(bodhi)
        c.model.options = [("x", "no-such-model")]
        c.model.value = "no-such-model"
        c.input.value = "hi"
        c.send_btn.click()
        await c.runner.wait()
        assert "bodhi-error" in c.status.value and "does not exist" in c.status.value

    run(scenario())


def test_aliases_panel_crud(bodhi):
    p = AliasesPanel(bodhi)
    p.alias.value = "tiny:chat"
    p.repo.value = "HuggingFaceTB/SmolLM2-135M-Instruct"
    p.filename.value = "SmolLM2-135M-Instruct.Q4_1.gguf"
    p.request_params.value = '{"temperature": 0.1}'
    p.context_params.value = "not json"
    p.save_btn.click()
    assert "context_params must be a JSON object" in p.status.value
    p.context_params.value = '{"n_ctx": "big"}'
    p.save_btn.click()
    assert "context_params.n_ctx" in p.status.value
    p.context_params.value = '{"n_ctx": 512}'
    p.save_btn.click()
    assert "Saved tiny:chat" in p.status.value and "tiny:chat" in p.user_table.value
    assert bodhi.aliases.get("tiny:chat")["context_params"]["n_ctx"] == 512
    p.request_params.value = '{"temperature": 0.3}'
    p.save_btn.click()
    assert bodhi.aliases.get("tiny:chat")["request_params"]["temperature"] == 0.3
    p.delete_btn.click()
    p.confirm_btn.click()
    assert bodhi.aliases.list() == [] and "Deleted" in p.status.value


def test_panel_is_a_tab_of_every_panel(bodhi):
    t = panel(bodhi)
    assert [t.get_title(i) for i in range(6)] == ["Chat", "API models", "Local aliases", "Usage", "Router aliases",
                                                  "Batches"]
    assert [type(c) for c in t.children] == [ChatPanel, ApiModelsPanel, AliasesPanel, UsagePanel, RouterAliasesPanel,
                                             BatchesPanel]
