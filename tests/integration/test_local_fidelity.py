"""Local models honour the OpenAI request fields llama_cpp.server ignores, and API models get every
field exactly as sent. The official openai SDK and langchain-openai against a real Jupyter server;
the bundled SmolLM2-135M model (short answers: 2 shared cores) and the loopback fake upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from bodhi_nb.services.local_engine import local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from tests.conftest import TEST_KEY

no_local = not local_extra_available() or LocalModels.builtin_path() is None
M = BUILTIN_ALIAS
HI = [{"role": "user", "content": "Write a long story about a dragon."}]


@pytest.fixture
def client(jp_serverapp, http_server_client, jp_http_port, jp_base_url):
    """A factory of sync SDK clients for the live gateway (call them in a thread: the server runs on this loop)."""
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1"
    token = jp_serverapp.identity_provider.token
    return lambda: openai.OpenAI(base_url=url, api_key=token, max_retries=0,
                                 http_client=httpx.Client(trust_env=False, timeout=300))


@pytest.mark.local_model
@pytest.mark.skipif(no_local, reason="needs the local extra")
async def test_length_cap_usage_chunk_and_n_on_the_local_model(client):

    def calls():
        c = client()
        capped = c.chat.completions.create(model=M, messages=HI, max_completion_tokens=8, temperature=0)
        with_usage = list(c.chat.completions.create(model=M, messages=HI, max_completion_tokens=8, temperature=0,
                                                    stream=True, stream_options={"include_usage": True}))
        without = list(c.chat.completions.create(model=M, messages=HI, max_tokens=4, stream=True))
        two = c.chat.completions.create(model=M, messages=HI, max_tokens=4, n=2)
        two_streamed = list(c.chat.completions.create(model=M, messages=HI, max_tokens=3, n=2, stream=True,
                                                      stream_options={"include_usage": True}))
        from langchain_openai import ChatOpenAI

        lc = ChatOpenAI(model=M, base_url=str(c.base_url), api_key=c.api_key, max_tokens=5, temperature=0,
                        max_retries=0, http_client=httpx.Client(trust_env=False, timeout=300)).invoke(HI[0]["content"])
        return capped, with_usage, without, two, two_streamed, lc

    capped, with_usage, without, two, two_streamed, lc = await asyncio.to_thread(calls)
    # max_completion_tokens is a cap (llama.cpp alone would generate until the model stops).
    assert capped.usage.completion_tokens <= 8 and capped.choices[0].finish_reason == "length"
    # include_usage: one final chunk in OpenAI's shape, counted by the engine; the same counts as the
    # non-streamed answer to the same greedy request.
    last = with_usage[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == \
        (capped.usage.prompt_tokens, capped.usage.completion_tokens)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert "".join(ch.choices[0].delta.content or "" for ch in with_usage if ch.choices)
    # Not asked: no usage chunk.
    assert all(ch.usage is None and ch.choices for ch in without)
    # n=2: two choices, indexed, non-streamed and streamed (one after the other, re-indexed).
    assert sorted(ch.index for ch in two.choices) == [0, 1]
    assert all(ch.message.content for ch in two.choices)
    assert two.usage.completion_tokens <= 8
    seen = {ch.choices[0].index for ch in two_streamed if ch.choices}
    assert seen == {0, 1} and two_streamed[-1].usage is not None and two_streamed[-1].usage.completion_tokens <= 6
    # langchain-openai sends max_completion_tokens; the cap holds.
    assert lc.response_metadata["token_usage"]["completion_tokens"] <= 5


class Verdict(BaseModel):
    answer: Literal["yes", "no"]  # short values: a 40-token cap must not cut the JSON
    confident: bool


@pytest.mark.local_model
@pytest.mark.skipif(no_local, reason="needs the local extra")
async def test_json_schema_and_tools_on_the_local_model(client):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                                               "score": {"type": "integer"}},
              "required": ["answer", "score"], "additionalProperties": False}
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a unit",
                                             "parameters": {"type": "object", "properties": {
                                                 "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                                                 "required": ["unit"]}}}
    ask = [{"role": "user", "content": "Is Paris in France? Answer in JSON."}]

    def calls():
        c = client()
        structured = c.chat.completions.create(model=M, messages=ask, max_tokens=40, temperature=0, response_format={
            "type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}})
        parsed = c.chat.completions.parse(model=M, messages=ask, max_tokens=40, temperature=0, response_format=Verdict)
        with pytest.raises(openai.BadRequestError) as refused:
            c.chat.completions.create(model=M, messages=ask, max_tokens=8, tools=[tool])
        called = c.chat.completions.create(model=M, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                           max_tokens=40, temperature=0, tools=[tool],
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
        return structured, parsed, refused.value, called

    structured, parsed, refused, called = await asyncio.to_thread(calls)
    jsonschema.validate(json.loads(structured.choices[0].message.content), schema)
    assert isinstance(parsed.choices[0].message.parsed, Verdict)
    # tools the local chat format cannot call: a clear 400, never silently dropped.
    assert refused.status_code == 400 and refused.code == "tools_not_supported"
    assert "cannot call tools" in refused.message and refused.param == "tools"
    # A named tool_choice: llama.cpp forces the call with a grammar from its parameters.
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


async def test_api_models_get_every_field_as_sent(client, api, upstream):
    code, _, _ = await api("POST", "api-models", {"id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY,
                                                  "models": ["echo"], "prefix": "fake/"})
    assert code == 201
    body = {"model": "fake/echo", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 8,
            "n": 2, "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": {"type": "object"},
                                                                               "strict": True}},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto", "x_vendor": {"keep": [1, 2]}}
    got, _, _ = await api("POST", "chat/completions", body)
    assert got == 200
    sent = upstream.last()["body"]
    assert sent == {**body, "model": "echo"}  # only the model name changed
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    got, _, _ = await api("POST", "chat/completions", streamed)
    assert got == 200 and upstream.last()["body"] == {**streamed, "model": "echo"}
