"""Every dialect, upstream and downstream, with the official SDKs against a live Jupyter server.

Clients: the anthropic SDK (`bodhi/anthropic/v1/messages`), the openai SDK's `responses`
(`bodhi/v1/responses`) and the openai-agents SDK. Targets: API models of every format, each a
fake provider on 127.0.0.1 that checks its provider's exact wire format (tests/resources/
fake_*.py), and the bundled local model. Same dialect in and out is relayed as it is; every
other pair is translated both ways, streams chunk by chunk.
"""

from __future__ import annotations

import asyncio
import json
import logging

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from bodhi_nb.objs.api_model_alias import mask_api_key
from bodhi_nb.objs.errors import InvalidRequestError
from bodhi_nb.services.local_engine import local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from tests.conftest import TEST_KEY
from tests.resources.openapi_check import validate

no_local = not local_extra_available() or LocalModels.builtin_path() is None

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_FN = {"type": "function", "name": "get_weather", "description": "The weather in a city",
              "parameters": WEATHER["input_schema"]}
WEATHER_CHAT = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                                 "parameters": WEATHER["input_schema"]}}
def _city(args: object) -> bool:
    """The fakes' tool call: {"city": "Paris"}, or a minimal instance of the schema ({"city": "<text>"})."""
    return isinstance(args, dict) and set(args) == {"city"} and isinstance(args["city"], str)


FORMATS = {"fake": "openai", "ant": "anthropic", "resp": "openai_responses", "gem": "gemini"}


@pytest.fixture
def gateway(jp_serverapp, http_server_client, jp_http_port, jp_base_url, api, upstream, anthropic_upstream,
            responses_upstream, gemini_upstream):
    """Registers one API model per format (prefix = its id); returns (server root URL, token)."""
    ups = {"fake": upstream, "ant": anthropic_upstream, "resp": responses_upstream, "gem": gemini_upstream}

    async def make() -> tuple[str, str]:
        for id, fmt in FORMATS.items():
            code, body, _ = await api("POST", "api-models", {
                "id": id, "base_url": ups[id].base_url, "api_key": TEST_KEY, "api_format": fmt, "prefix": f"{id}/",
                "models": ["echo", "tool", "echo-key", "status-429"]})
            assert code == 201, body
        return f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token

    return make


def _anthropic(root: str, token: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=root + "bodhi/anthropic", api_key=token, max_retries=0)


def _openai(root: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=root + "bodhi/v1", api_key=token, max_retries=0,
                         http_client=httpx.Client(trust_env=False, timeout=120))


# -- Anthropic Messages downstream ------------------------------------------------------------


async def test_anthropic_sdk_reaches_openai_and_anthropic_upstreams(gateway, api):
    root, token = await gateway()

    def calls() -> dict:
        c = _anthropic(root, token)
        out: dict = {}
        for model in ("fake/echo", "ant/echo", "resp/echo", "gem/echo"):
            msg = c.messages.create(model=model, max_tokens=50, system="Be brief.",
                                    messages=[{"role": "user", "content": "hello there"}])
            with c.messages.stream(model=model, max_tokens=50,
                                   messages=[{"role": "user", "content": "one two three"}]) as s:
                streamed = "".join(s.text_stream)
                final = s.get_final_message()
            out[model] = (msg, streamed, final)
        for model in ("fake/tool", "ant/tool"):
            first = c.messages.create(model=model, max_tokens=50, tools=[WEATHER],
                                      messages=[{"role": "user", "content": "Weather in Paris?"}])
            use = next(b for b in first.content if b.type == "tool_use")
            second = c.messages.create(model=model, max_tokens=50, tools=[WEATHER], messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [b.model_dump(exclude_unset=True) for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}])
            with c.messages.stream(model=model, max_tokens=50, tools=[WEATHER],
                                   messages=[{"role": "user", "content": "Weather in Paris?"}]) as s:
                streamed_call = s.get_final_message()
            out[model] = (first, use, second, streamed_call)
        for model, cls in (("nope", anthropic.NotFoundError), ("fake/status-429", anthropic.RateLimitError),
                           ("ant/status-429", anthropic.RateLimitError)):
            with pytest.raises(cls) as ei:
                c.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "x"}])
            out[model] = ei.value
        out["count"] = c.messages.count_tokens(model="fake/echo", messages=[{"role": "user", "content": "x" * 40}])
        return out

    out = await asyncio.to_thread(calls)
    for model in ("fake/echo", "ant/echo", "resp/echo", "gem/echo"):
        msg, streamed, final = out[model]
        assert isinstance(msg, anthropic.types.Message) and msg.content[0].text == "echo: hello there", model
        assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0, model
        assert streamed == "echo: one two three" and final.stop_reason == "end_turn", model
        assert final.usage.output_tokens > 0, model
    for model in ("fake/tool", "ant/tool"):
        first, use, second, streamed_call = out[model]
        assert first.stop_reason == "tool_use" and use.name == "get_weather" and _city(use.input), model
        assert second.content[0].text == "tool said: sunny", model
        call = next(b for b in streamed_call.content if b.type == "tool_use")
        assert call.name == "get_weather" and _city(call.input), model
    assert out["nope"].status_code == 404 and out["nope"].body["type"] == "error"
    assert out["nope"].body["error"]["type"] == "not_found_error"
    assert out["fake/status-429"].status_code == 429 and out["ant/status-429"].status_code == 429
    assert out["count"].input_tokens >= 10
    # The ledger counts every dialect: one row per answered request, tokens included.
    _, usage, _ = await api("GET", "usage?by=model")
    tokens = {g["model"]: g["completion_tokens"] for g in usage["data"]}
    assert tokens["ant/echo"] > 0 and tokens["fake/echo"] > 0 and tokens["gem/echo"] > 0


async def test_anthropic_async_sdk_stream_and_errors(gateway):
    root, token = await gateway()
    c = anthropic.AsyncAnthropic(base_url=root + "bodhi/anthropic", api_key=token, max_retries=0)
    msg = await c.messages.create(model="ant/echo", max_tokens=20, messages=[{"role": "user", "content": "async hi"}])
    assert msg.content[0].text == "echo: async hi"
    async with c.messages.stream(model="fake/echo", max_tokens=20,
                                 messages=[{"role": "user", "content": "a b"}]) as s:
        text = "".join([t async for t in s.text_stream])
    assert text == "echo: a b"
    bad = anthropic.AsyncAnthropic(base_url=root + "bodhi/anthropic", api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as ei:
        await bad.messages.create(model="ant/echo", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert ei.value.status_code in (401, 403)
    await c.close()
    await bad.close()


async def test_x_api_key_is_the_jupyter_token(gateway, jp_fetch):
    root, token = await gateway()
    body = {"model": "fake/echo", "max_tokens": 10, "messages": [{"role": "user", "content": "key"}]}
    async with httpx.AsyncClient(trust_env=False) as h:
        ok = await h.post(root + "bodhi/v1/messages", json=body,
                          headers={"x-api-key": token, "anthropic-version": "2023-06-01"})
        refused = await h.post(root + "bodhi/v1/messages", json=body, headers={"x-api-key": "not-the-token"})
    assert ok.status_code == 200 and ok.json()["content"][0]["text"] == "echo: key"
    assert refused.status_code in (401, 403) and refused.json()["type"] == "error"


@pytest.mark.local_model
@pytest.mark.skipif(no_local, reason="needs the local extra")
async def test_anthropic_sdk_reaches_the_local_model(gateway):
    root, token = await gateway()
    c = anthropic.AsyncAnthropic(base_url=root + "bodhi/anthropic", api_key=token, max_retries=0, timeout=300)
    msg = await c.messages.create(model=BUILTIN_ALIAS, max_tokens=8,
                                  messages=[{"role": "user", "content": "Say hello."}])
    assert msg.content[0].text.strip() and msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    async with c.messages.stream(model=BUILTIN_ALIAS, max_tokens=8,
                                 messages=[{"role": "user", "content": "Say hello."}]) as s:
        text = "".join([t async for t in s.text_stream])
    assert text.strip()
    # A named tool: llama.cpp forces the call with a grammar built from its schema.
    called = await c.messages.create(model=BUILTIN_ALIAS, max_tokens=40, tools=[WEATHER],
                                     tool_choice={"type": "tool", "name": "get_weather"},
                                     messages=[{"role": "user", "content": "Weather in Paris?"}])
    use = next(b for b in called.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str)
    await c.close()


# -- OpenAI Responses downstream ----------------------------------------------------------------


async def test_responses_sdk_reaches_chat_anthropic_and_responses_upstreams(gateway, api, bodhi_home):
    root, token = await gateway()

    def calls() -> dict:
        c = _openai(root, token)
        out: dict = {}
        for model in ("fake/echo", "ant/echo", "resp/echo"):
            r = c.responses.create(model=model, input="hello")
            events = list(c.responses.create(model=model, input="one two", stream=True))
            first = c.responses.create(model=model.replace("echo", "tool"), input="Weather in Paris?",
                                       tools=[WEATHER_FN])
            call = next(i for i in first.output if i.type == "function_call")
            follow = c.responses.create(model=model.replace("echo", "tool"), previous_response_id=first.id,
                                        tools=[WEATHER_FN],
                                        input=[{"type": "function_call_output", "call_id": call.call_id,
                                                "output": "sunny"}])
            out[model] = (r, events, first, call, follow, c.responses.retrieve(first.id),
                          list(c.responses.input_items.list(follow.id)))
        c.responses.delete(out["fake/echo"][0].id)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(out["fake/echo"][0].id)
        return out

    out = await asyncio.to_thread(calls)
    for model, (r, events, first, call, follow, kept, items) in out.items():
        assert r.output_text == "echo: hello" and r.status == "completed", model
        validate("Response", r.model_dump(mode="json", exclude_unset=True))
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == "echo: one two" and events[-1].type == "response.completed", model
        assert [e.sequence_number for e in events] == list(range(len(events))), model
        for e in events:
            validate("ResponseStreamEvent", e.model_dump(mode="json", exclude_unset=True))
        assert call.name == "get_weather" and _city(json.loads(call.arguments)), model
        assert follow.output_text == "tool said: sunny", model  # the whole conversation reached the target
        assert kept.id == first.id and kept.output_text == first.output_text, model
        assert [i.type for i in items] == ["function_call_output"], model
    # Stored responses live in BODHI_HOME and hold no key.
    assert TEST_KEY.encode() not in (bodhi_home / "responses.sqlite").read_bytes()


@pytest.mark.local_model
@pytest.mark.skipif(no_local, reason="needs the local extra")
async def test_responses_sdk_reaches_the_local_model(gateway):
    root, token = await gateway()
    c = openai.AsyncOpenAI(base_url=root + "bodhi/v1", api_key=token, max_retries=0,
                           http_client=httpx.AsyncClient(trust_env=False, timeout=300))
    r = await c.responses.create(model=BUILTIN_ALIAS, input="Say hello.", max_output_tokens=16, temperature=0)
    assert r.output_text.strip() and r.usage.output_tokens > 0
    nxt = await c.responses.create(model=BUILTIN_ALIAS, input="Again.", previous_response_id=r.id,
                                   max_output_tokens=16, temperature=0)
    assert nxt.output_text.strip() and nxt.usage.input_tokens > r.usage.input_tokens  # the history was sent
    stream = await c.responses.create(model=BUILTIN_ALIAS, input="Say hello.", max_output_tokens=8, stream=True)
    types = [e.type async for e in stream]
    assert types[0] == "response.created" and "response.output_text.delta" in types
    assert types[-1] in ("response.completed", "response.incomplete")
    await c.close()


async def test_openai_agents_sdk_completes_a_tool_round_trip(gateway, api):
    root, token = await gateway()
    # The agents SDK reads "x/y" as a provider prefix: a router alias gives the fake a plain name.
    code, body, _ = await api("POST", "router-aliases", {"alias": "weather-agent", "targets": ["fake/tool"]})
    assert code == 201, body
    from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    set_tracing_disabled(True)
    set_default_openai_client(openai.AsyncOpenAI(base_url=root + "bodhi/v1", api_key=token, max_retries=0,
                                                 http_client=httpx.AsyncClient(trust_env=False)),
                              use_for_tracing=False)
    agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model="weather-agent")
    result = await Runner.run(agent, "Weather in Paris?")
    assert calls == ["Paris"] and result.final_output == "tool said: sunny"


# -- API models of every format behind chat completions and the facade -----------------------------


async def test_every_format_serves_chat_streams_tools_and_listing(gateway, api):
    root, token = await gateway()

    def calls() -> dict:
        c = _openai(root, token)
        out: dict = {}
        for id in FORMATS:
            text = c.chat.completions.create(model=f"{id}/echo", messages=[
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}])
            chunks = list(c.chat.completions.create(model=f"{id}/echo", stream=True,
                                                    stream_options={"include_usage": True},
                                                    messages=[{"role": "user", "content": "x y z"}]))
            tool = c.chat.completions.create(model=f"{id}/tool", tools=[WEATHER_CHAT],
                                             messages=[{"role": "user", "content": "Weather?"}])
            tool_chunks = list(c.chat.completions.create(model=f"{id}/tool", tools=[WEATHER_CHAT], stream=True,
                                                         messages=[{"role": "user", "content": "Weather?"}]))
            out[id] = (text, chunks, tool, tool_chunks)
        with pytest.raises(openai.BadRequestError) as ei:
            c.embeddings.create(model="ant/echo", input="x")
        out["embed"] = ei.value
        return out

    out = await asyncio.to_thread(calls)
    for id in FORMATS:
        text, chunks, tool, tool_chunks = out[id]
        assert text.choices[0].message.content == "echo: hi there", id
        validate("CreateChatCompletionResponse", text.model_dump(mode="json", exclude_unset=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "echo: x y z", id
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, id
        for ch in chunks:
            validate("CreateChatCompletionStreamResponse", ch.model_dump(mode="json", exclude_unset=True))
        call = tool.choices[0].message.tool_calls[0]
        assert tool.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", id
        assert _city(json.loads(call.function.arguments)), id
        args = "".join(tc.function.arguments or "" for ch in tool_chunks if ch.choices
                       for tc in (ch.choices[0].delta.tool_calls or []))
        assert _city(json.loads(args)), id
    assert out["embed"].status_code == 400 and out["embed"].code == "embeddings_not_supported"
    for id in FORMATS:
        code, listed, _ = await api("POST", "api-models/fetch-models", {"id": id})
        assert code == 200 and "echo" in listed["models"], id
        code, tested, _ = await api("POST", "api-models/test", {"id": id, "model": "echo", "prompt": "ping"})
        assert code == 200 and tested == {"success": True, "response": "echo: ping", "error": None}, id


async def test_the_key_canary_never_reaches_a_dialect_client(gateway, api, bodhi_home, caplog):
    caplog.set_level(logging.DEBUG)
    root, token = await gateway()
    seen: list[str] = []
    async with httpx.AsyncClient(trust_env=False, timeout=60) as h:
        auth = {"Authorization": f"Bearer {token}"}
        for id in FORMATS:
            for stream in (False, True):
                for path, body in (
                        ("bodhi/v1/chat/completions", {"messages": [{"role": "user", "content": "k"}]}),
                        ("bodhi/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "k"}]}),
                        ("bodhi/v1/responses", {"input": "k"})):
                    r = await h.post(root + path, json={**body, "model": f"{id}/echo-key", "stream": stream},
                                     headers=auth)
                    seen.append(f"{r.status_code} {dict(r.headers)} {r.text}")
    text = "\n".join(seen)
    assert TEST_KEY not in text and TEST_KEY[8:30] not in text
    assert mask_api_key(TEST_KEY) in text  # the providers did quote it, and it arrived masked
    for f in bodhi_home.glob("*.sqlite*"):
        assert TEST_KEY.encode() not in f.read_bytes(), f
    assert "echo-key" in caplog.text and TEST_KEY[8:30] not in caplog.text  # the server's logs, every level


class Verdict(BaseModel):
    answer: str
    score: int


def test_the_facade_works_with_every_format(bodhi, anthropic_upstream, gemini_upstream, responses_upstream):
    ups = {"ant": anthropic_upstream, "gem": gemini_upstream, "resp": responses_upstream}
    for id, fmt in (("ant", "anthropic"), ("gem", "gemini"), ("resp", "openai_responses")):
        rec = bodhi.api_models.create(id, ups[id].base_url, api_key=TEST_KEY, models=["echo", "structured"],
                                      prefix=f"{id}/", api_format=fmt)
        assert rec["api_format"] == fmt and "api_key" not in rec
        assert bodhi.chat(f"{id}/echo", "hello", system="Be brief.") == "echo: hello", id
        assert "".join(bodhi.chat(f"{id}/echo", "a b", stream=True)) == "echo: a b", id
        [row] = bodhi.map(f"{id}/echo", ["row one"], cache=False, progress=False)
        assert row.error is None and row.text == "echo: row one", id
        verdict = bodhi.chat(f"{id}/structured", "Judge it.", response_format=Verdict)
        assert isinstance(verdict, Verdict), id
        with pytest.raises(InvalidRequestError) as ei:
            bodhi.embed("x", f"{id}/echo", progress=False)
        assert ei.value.code == "embeddings_not_supported", id
        assert "echo" in bodhi.api_models.fetch_models(id), id
        assert bodhi.api_models.test("echo", "ping", id=id)["response"] == "echo: ping", id
    bodhi.services.ledger.flush()
    rows = bodhi.usage(by="model")
    assert {"ant/echo", "gem/echo", "resp/echo"} <= set(rows["model"])
