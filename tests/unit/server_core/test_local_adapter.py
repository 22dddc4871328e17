"""The local-engine request rules (pure) and the structured-output rule, one by one."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import httpx
import pytest
from pydantic import BaseModel

from bodhi_nb.objs.errors import InvalidRequestError, StructuredOutputError
from bodhi_nb.server_core._local_adapter import CHAT, EMBEDDINGS, _as_base64, adapt
from bodhi_nb.server_core.operations import structured_format
from bodhi_nb.server_core.operations._chat import strict_schema
from bodhi_nb.services.upstream_client import UpstreamResponse

MSGS = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return {"model": "m", "messages": MSGS, **fields}


def test_max_completion_tokens_becomes_max_tokens_the_smaller_wins():
    assert adapt(CHAT, chat(max_completion_tokens=8), model="m").body == chat(max_tokens=8)
    assert adapt(CHAT, chat(max_completion_tokens=8, max_tokens=5), model="m").body["max_tokens"] == 5
    assert adapt(CHAT, chat(max_completion_tokens=8, max_tokens=50), model="m").body["max_tokens"] == 8
    with pytest.raises(InvalidRequestError) as ei:
        adapt(CHAT, chat(max_completion_tokens="8"), model="m")
    assert ei.value.param == "max_completion_tokens"


def test_stream_options_are_taken_off_and_the_usage_event_kept_only_when_wanted():
    asked = adapt(CHAT, chat(stream=True, stream_options={"include_usage": True}), model="m", stream=True)
    assert "stream_options" not in asked.body and asked.usage_event and asked.usage_asked
    quiet = adapt(CHAT, chat(stream=True), model="m", stream=True)
    assert not quiet.usage_event and not quiet.usage_asked
    metered = adapt(CHAT, chat(stream=True), model="m", stream=True, keep_usage=True)
    assert metered.usage_event and not metered.usage_asked  # the ledger reads it, then strips it
    assert not adapt(CHAT, chat(stream_options={"include_usage": True}), model="m").usage_event  # not a stream


def test_n_is_taken_off_and_bounded():
    plan = adapt(CHAT, chat(n=3), model="m")
    assert plan.n == 3 and "n" not in plan.body
    assert adapt(CHAT, chat(n=None), model="m").n == 1
    for bad in (0, 17, "2", True, 1.5):
        with pytest.raises(InvalidRequestError):
            adapt(CHAT, chat(n=bad), model="m")


def test_json_schema_becomes_llama_cpp_json_object_with_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert adapt(CHAT, chat(response_format=rf), model="m").body["response_format"] == \
        {"type": "json_object", "schema": schema}
    assert adapt(CHAT, chat(response_format={"type": "json_object"}), model="m").body["response_format"] == \
        {"type": "json_object"}


def test_tools_work_or_get_a_clear_400():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(InvalidRequestError) as ei:
        adapt(CHAT, chat(tools=tools), model="smollm2:135m")
    err = ei.value
    assert err.status == 400 and err.code == "tools_not_supported" and err.param == "tools"
    assert "'smollm2:135m' cannot call tools" in err.message
    with pytest.raises(InvalidRequestError):
        adapt(CHAT, chat(tools=tools, tool_choice="auto"), model="m")
    with pytest.raises(InvalidRequestError):
        adapt(CHAT, chat(functions=[{"name": "f", "parameters": {}}]), model="m")
    named = {"type": "function", "function": {"name": "f"}}
    assert adapt(CHAT, chat(tools=tools, tool_choice=named), model="m").body["tools"] == tools
    assert adapt(CHAT, chat(tools=tools, tool_choice="none"), model="m").body["tools"] == tools
    assert adapt(CHAT, chat(tools=tools), model="m", chat_format="chatml-function-calling").body["tools"] == tools
    assert adapt(CHAT, chat(functions=[{"name": "f"}], function_call={"name": "f"}), model="m")
    assert adapt(CHAT, chat(tools=[]), model="m").body["tools"] == []  # nothing to call, nothing dropped


def test_embeddings_text_only_no_dimensions_base64_by_the_gateway():
    plan = adapt(EMBEDDINGS, {"model": "m", "input": ["a", "b"], "encoding_format": "base64", "user": "u"}, model="m")
    assert plan.base64 and plan.body == {"model": "m", "input": ["a", "b"]}
    assert not adapt(EMBEDDINGS, {"model": "m", "input": "a"}, model="m").base64
    for body, param in (({"input": [[1, 2]]}, "input"), ({"input": [1, 2]}, "input"), ({"input": ["a", ""]}, "input"),
                        ({"input": "a", "dimensions": 8}, "dimensions")):
        with pytest.raises(InvalidRequestError) as ei:
            adapt(EMBEDDINGS, {"model": "m", **body}, model="m")
        assert ei.value.status == 400 and ei.value.param == param


def test_base64_is_float32_little_endian_like_openai():
    vecs = [[0.5, -1.25, 3.0e-8], [1.0, 0.0, -0.0]]
    body = {"object": "list", "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vecs)],
            "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    resp = UpstreamResponse(httpx.Response(200, json=body), "local engine")
    out = asyncio.run(_as_base64(resp))
    data = json.loads(asyncio.run(out.aread()))
    assert data["usage"] == body["usage"] and [d["index"] for d in data["data"]] == [0, 1]
    for d, v in zip(data["data"], vecs, strict=True):
        assert list(struct.unpack("<3f", base64.b64decode(d["embedding"]))) == pytest.approx(v, rel=1e-6)


class Inner(BaseModel):
    x: int = 3
    note: str | None = None


class Outer(BaseModel):
    name: str
    inner: Inner | None = None


def test_strict_schema_requires_every_field_and_allows_no_other():
    schema = Outer.model_json_schema()
    before = json.dumps(schema, sort_keys=True)
    strict = strict_schema(schema)
    assert json.dumps(schema, sort_keys=True) == before  # a copy
    assert strict["required"] == ["name", "inner"] and strict["additionalProperties"] is False
    inner = strict["$defs"]["Inner"]
    assert inner["required"] == ["x", "note"] and inner["additionalProperties"] is False
    assert "default" not in strict["properties"]["inner"] and inner["properties"]["x"]["default"] == 3


def test_structured_format_model_dict_and_fenced_replies():
    payload, parse = structured_format(Outer)
    assert payload["json_schema"]["name"] == "Outer" and payload["json_schema"]["strict"] is True
    assert parse('```json\n{"name": "a", "inner": null}\n```') == Outer(name="a")
    with pytest.raises(StructuredOutputError) as ei:
        parse('{"name": 1}')
    assert ei.value.raw == '{"name": 1}' and "name" in ei.value.message
    rf = {"type": "json_object"}
    payload, parse = structured_format(rf)
    assert payload is rf and parse('{"a": [1]}') == {"a": [1]}
    payload, parse = structured_format({"title": "My Thing!", "type": "object", "required": ["n"]})
    assert payload["json_schema"]["name"] == "My_Thing_"
    with pytest.raises(StructuredOutputError):
        parse("{}")
    assert structured_format({"type": "text"})[1] is None and structured_format(None) == (None, None)
    with pytest.raises(InvalidRequestError):
        structured_format(str)
