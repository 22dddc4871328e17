"""The Anthropic Messages dialect, each direction on its own.

The judges are the published shapes, not our reading of them: chat bodies and chunks are
validated against OpenAI's OpenAPI document (tests/resources/openapi_check.py), Anthropic
objects and events against the anthropic SDK's own types, and the client side is driven by
the real anthropic SDK (its requests captured, our answers parsed and streamed back through
an in-memory transport). The upstream side is sent to tests/resources/fake_anthropic.py, a
real server that checks requests as the API does.
"""

from __future__ import annotations

import json
import subprocess

import anthropic
import httpx
import httpx2
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.beta_error_response import BetaErrorResponse

from bodhi_nb.objs.dialects import anthropic as A
from bodhi_nb.objs.dialects.base import SseEvent
from bodhi_nb.objs.errors import InvalidRequestError, UpstreamError
from tests.resources.openapi_check import validate
from tests.resources.servers import start_fake

KEY = "sk-ant-test-0123456789"
EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def sse(events: list[SseEvent]) -> bytes:
    return b"".join(f"event: {e.event}\ndata: {json.dumps(e.data)}\n\n".encode() for e in events)


def parse_sse(raw: str) -> list[SseEvent]:
    out = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            out.append(SseEvent(fields.get("event"), json.loads(fields["data"])))
    return out


def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return {**body, **extra}


def rejects(fn, *args, code: str | None = None, param: str | None = None, **kwargs) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        fn(*args, **kwargs)
    assert info.value.status == 400
    if code is not None:
        assert info.value.code == code, info.value
    if param is not None:
        assert info.value.param == param, info.value
    return info.value


# -- upstream side: chat -> Anthropic ------------------------------------------------------

def test_wire_posts_to_messages_with_the_key_and_the_pinned_version():
    w = A.wire(model="claude-x", stream=True, api_key=KEY)
    assert (w.path, w.params) == ("messages", {})
    assert w.headers == {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    assert "authorization" not in {k.lower() for k in w.headers}
    m = A.models_wire(api_key=KEY)
    assert (m.path, m.params, m.headers) == ("models", {"limit": "1000"},
                                             {"x-api-key": KEY, "anthropic-version": "2023-06-01"})
    assert "x-api-key" not in A.wire(model="m", stream=False, api_key=None).headers


def test_a_plain_chat_body_becomes_a_messages_body():
    chat = {"model": "alias", "messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Hi"}],
            "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "u-1", "stream": True,
            "stream_options": {"include_usage": True}, "n": 1, "seed": None, "presence_penalty": 0}
    validate("CreateChatCompletionRequest", chat, closed=True)
    assert A.chat_to_request(chat, model="claude-x") == {
        "model": "claude-x", "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}], "system": "Be brief.", "stop_sequences": ["END"],
        "temperature": 0.5, "top_p": 0.9, "stream": True, "metadata": {"user_id": "u-1"}}


@pytest.mark.parametrize(("limits", "sent"), [
    ({}, 4096), ({"max_tokens": 50}, 50), ({"max_completion_tokens": 70}, 70),
    ({"max_tokens": 50, "max_completion_tokens": 70}, 70), ({"max_tokens": None}, 4096)])
def test_max_tokens_is_always_sent(limits, sent):
    body = A.chat_to_request({"model": "a", "messages": [{"role": "user", "content": "x"}], **limits}, model="m")
    assert body["max_tokens"] == sent


def test_system_and_developer_messages_go_top_level_and_blank_ones_carry_nothing():
    chat = {"model": "a", "messages": [
        {"role": "system", "content": "One."}, {"role": "developer", "content": [{"type": "text", "text": "Two."}]},
        {"role": "system", "content": "  \n"}, {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Three."}]}
    body = A.chat_to_request(chat, model="m")
    assert body["system"] == [{"type": "text", "text": t} for t in ("One.", "Two.", "Three.")]
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    blank = A.chat_to_request({"model": "a", "messages": [{"role": "system", "content": " "},
                                                          {"role": "user", "content": "x"}]}, model="m")
    assert "system" not in blank


TOOL_CHAT = {"model": "a", "tools": [WEATHER], "messages": [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "Rain"}]},
    {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                 {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}}]},
    {"role": "user", "content": "Thanks."}]}


def test_tool_turns_become_tool_use_and_tool_result_blocks_in_alternating_turns():
    validate("CreateChatCompletionRequest", TOOL_CHAT, closed=True)
    body = A.chat_to_request(TOOL_CHAT, model="m")
    assert body["tools"] == [{"name": "get_weather", "description": "The weather in a city.",
                              "input_schema": WEATHER["function"]["parameters"]}]
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "Rain"},
        {"type": "text", "text": "And this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "Thanks."}]


def test_a_pdf_file_part_becomes_a_document_block():
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
    body = A.chat_to_request({"model": "a", "messages": [{"role": "user", "content": [part]}]}, model="m")
    assert body["messages"][0]["content"] == [{"type": "document", "title": "a.pdf", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]


@pytest.mark.parametrize(("choice", "parallel", "sent"), [
    (None, None, None), ("auto", None, {"type": "auto"}), ("none", None, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ("none", False, {"type": "none"}), ("auto", True, {"type": "auto"})])
def test_tool_choice(choice, parallel, sent):
    chat = {"model": "a", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER]}
    chat |= {k: v for k, v in (("tool_choice", choice), ("parallel_tool_calls", parallel)) if v is not None}
    assert A.chat_to_request(chat, model="m").get("tool_choice") == sent


def test_structured_output_and_effort_go_to_output_config():
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"],
              "additionalProperties": False}
    chat = {"model": "a", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "high",
            "response_format": {"type": "json_schema", "json_schema": {"name": "Out", "schema": schema, "strict": True}}}
    validate("CreateChatCompletionRequest", chat, closed=True)
    assert A.chat_to_request(chat, model="m")["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}, "effort": "high"}
    text = {**chat, "response_format": {"type": "text"}, "reasoning_effort": None}
    assert "output_config" not in A.chat_to_request(text, model="m")
    rejects(A.chat_to_request, {**chat, "response_format": {"type": "json_object"}}, model="m",
            code="response_format_not_supported", param="response_format")


@pytest.mark.parametrize(("extra", "named"), [
    ({"seed": 7}, "seed"), ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"), ({"modalities": ["text", "audio"]}, "modalities"),
    ({"functions": [{"name": "f"}]}, "functions"), ({"x_unknown": 1}, "x_unknown"), ({"store": True}, "store")])
def test_fields_without_an_anthropic_equivalent_are_named_in_a_400(extra, named):
    chat = {"model": "a", "messages": [{"role": "user", "content": "x"}], **extra}
    err = rejects(A.chat_to_request, chat, model="m", code="unsupported_parameter", param=named)
    assert f"`{named}`" in err.message


def test_several_unsupported_fields_are_all_named():
    chat = {"model": "a", "messages": [{"role": "user", "content": "x"}], "seed": 1, "logprobs": True}
    assert "`seed`, `logprobs`" in rejects(A.chat_to_request, chat, model="m").message


def test_neutral_values_of_those_fields_are_fine():
    chat = {"model": "a", "messages": [{"role": "user", "content": "x"}], "seed": None, "n": 1, "logprobs": False,
            "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "store": False,
            "metadata": {"k": "v"}, "service_tier": "auto", "modalities": ["text"]}
    validate("CreateChatCompletionRequest", chat, closed=True)
    assert A.chat_to_request(chat, model="m")["messages"] == [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}],
     "messages.0.tool_calls.0.function.arguments"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}],
     "messages.0.content.0"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}]}],
     "messages.0.content.0.image_url"),
    ([{"role": "system", "content": "only a system prompt"}], "messages"),
    ([], "messages")])
def test_messages_an_anthropic_model_cannot_take_are_400s(messages, param):
    rejects(A.chat_to_request, {"model": "a", "messages": messages}, model="m", param=param)


def test_a_non_function_tool_is_refused():
    chat = {"model": "a", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {}}]}
    rejects(A.chat_to_request, chat, model="m", code="tool_not_supported")


# -- upstream side: Anthropic -> chat ------------------------------------------------------

MESSAGE = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
           "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                       {"type": "text", "text": "Let me check. "}, {"type": "text", "text": "One moment."},
                       {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
           "stop_reason": "tool_use", "stop_sequence": None,
           "usage": {"input_tokens": 20, "output_tokens": 9, "cache_creation_input_tokens": 3,
                     "cache_read_input_tokens": 100}}


def test_a_message_becomes_a_chat_completion():
    Message.model_validate(MESSAGE)
    out = A.response_to_chat(MESSAGE, model="alias")
    validate("CreateChatCompletionResponse", out)
    assert out["model"] == "alias" and out["id"] == "msg_01"
    [choice] = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check. One moment."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert out["usage"] == {"prompt_tokens": 123, "completion_tokens": 9, "total_tokens": 132,
                            "prompt_tokens_details": {"cached_tokens": 100}}


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter")])
def test_stop_reasons(stop, finish):
    msg = {**MESSAGE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    Message.model_validate(msg)
    assert A.response_to_chat(msg, model="m")["choices"][0]["finish_reason"] == finish


def test_something_that_is_not_a_message_is_an_upstream_error():
    with pytest.raises(UpstreamError):
        A.response_to_chat({"type": "error", "error": {}}, model="m")


STREAM = [  # as the API streams a thinking block, a text block and a tool_use block
    SseEvent("message_start", {"type": "message_start", "message": {
        "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}}),
    SseEvent("ping", {"type": "ping"}),
    SseEvent("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
    SseEvent("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "thinking_delta", "thinking": "Let me think"}}),
    SseEvent("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "signature_delta", "signature": "EqQB"}}),
    SseEvent("content_block_stop", {"type": "content_block_stop", "index": 0}),
    SseEvent("content_block_start", {"type": "content_block_start", "index": 1,
                                     "content_block": {"type": "text", "text": ""}}),
    SseEvent("content_block_delta", {"type": "content_block_delta", "index": 1,
                                     "delta": {"type": "text_delta", "text": "Okay, che"}}),
    SseEvent("content_block_delta", {"type": "content_block_delta", "index": 1,
                                     "delta": {"type": "text_delta", "text": "cking."}}),
    SseEvent("content_block_stop", {"type": "content_block_stop", "index": 1}),
    SseEvent("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}}),
    SseEvent("content_block_delta", {"type": "content_block_delta", "index": 2,
                                     "delta": {"type": "input_json_delta", "partial_json": ""}}),
    SseEvent("content_block_delta", {"type": "content_block_delta", "index": 2,
                                     "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}}),
    SseEvent("content_block_delta", {"type": "content_block_delta", "index": 2,
                                     "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}}),
    SseEvent("content_block_stop", {"type": "content_block_stop", "index": 2}),
    SseEvent("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                               "usage": {"output_tokens": 42}}),
    SseEvent("message_stop", {"type": "message_stop"}),
]


def _run(events: list[SseEvent]) -> list[dict]:
    t = A.events_to_chat(model="alias")
    out = [c for e in events for c in t.feed(e)]
    return out + t.end()


def test_anthropic_events_become_chat_chunks():
    for e in STREAM:
        if e.event != "ping":
            EVENT.validate_python(e.data)
    chunks = _run(STREAM)
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
        assert c["id"] == "msg_02" and c["model"] == "alias"
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Okay, checking."  # no thinking text
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "toolu_9", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert all(tc["index"] == 0 for tc in calls)
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 30, "completion_tokens": 42, "total_tokens": 72, "prompt_tokens_details": {"cached_tokens": 5}}


def test_an_error_event_raises_with_anthropics_message():
    t = A.events_to_chat(model="m")
    t.feed(STREAM[0])
    with pytest.raises(UpstreamError) as info:
        t.feed(SseEvent("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    assert (info.value.message, info.value.code, info.value.status) == ("Overloaded", "overloaded_error", 529)


def test_a_stream_cut_before_its_end_is_an_upstream_error():
    t = A.events_to_chat(model="m")
    for e in STREAM[:8]:
        t.feed(e)
    with pytest.raises(UpstreamError, match="ended before"):
        t.end()


def test_upstream_error_reads_the_anthropic_envelope():
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}, "request_id": "req_1"}
    BetaErrorResponse.model_validate(body)
    want = {"message": "Slow down", "type": "rate_limit_error", "param": None, "code": None}
    assert A.upstream_error(429, body) == want
    assert A.upstream_error(429, json.dumps(body).encode()) == want
    assert A.upstream_error(429, json.dumps(body)) == want
    odd = {"type": "error", "error": {"type": "something_new", "message": "?"}}
    assert A.upstream_error(503, odd)["type"] == "overloaded_error"
    assert A.upstream_error(500, b"<html>oops</html>") is None
    assert A.upstream_error(500, {"detail": "x"}) is None


def test_parse_models_keeps_the_order():
    body = {"data": [{"type": "model", "id": "claude-b", "display_name": "B", "created_at": "2025-01-01T00:00:00Z"},
                     {"type": "model", "id": "claude-a", "display_name": "A", "created_at": "2025-01-01T00:00:00Z"}],
            "has_more": False, "first_id": "claude-b", "last_id": "claude-a"}
    assert A.parse_models(body) == ["claude-b", "claude-a"]
    with pytest.raises(UpstreamError):
        A.parse_models({"object": "list"})


# -- client side: the anthropic SDK talks to us ---------------------------------------------

class SdkSide:
    """An anthropic SDK client whose HTTP goes to a handler in memory: what it sends is kept,
    and what `answer` holds (a JSON body, or bytes of SSE) is what it reads back."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.answer: dict | bytes = {}
        self.client = anthropic.Anthropic(api_key=KEY, base_url="http://bodhi.test/bodhi", max_retries=0,
                                          http_client=httpx2.Client(transport=httpx2.MockTransport(self._handle)))

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        self.sent.append({"path": request.url.path, "headers": dict(request.headers),
                          "body": json.loads(request.content)})
        if isinstance(self.answer, bytes):
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=self.answer)
        return httpx2.Response(200, json=self.answer)


@pytest.fixture
def sdk():
    return SdkSide()


def _sdk_body(sdk: SdkSide, **params) -> dict:
    sdk.answer = {**MESSAGE, "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn"}
    sdk.client.messages.create(**params)
    return sdk.sent[-1]["body"]


def test_the_sdk_headers_are_what_the_wiring_must_accept(sdk):
    _sdk_body(sdk, model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    sent = sdk.sent[-1]
    assert sent["path"] == "/bodhi/v1/messages"
    # SDK 2.x sends the key as a bearer token and the newest API version
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["headers"]["anthropic-version"] == "2026-10-21"


def test_an_sdk_request_becomes_a_chat_body(sdk):
    body = _sdk_body(
        sdk, model="alias", max_tokens=300, stop_sequences=["END"], metadata={"user_id": "u-7"},
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        tools=[{"name": "get_weather", "description": "The weather.", "input_schema": WEATHER["function"]["parameters"]}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        output_config={"effort": "low"},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": PNG}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                                         {"type": "text", "text": "And tomorrow?"}]}])
    chat = A.request_to_chat(body)
    validate("CreateChatCompletionRequest", chat, closed=True)
    assert chat == {
        "model": "alias", "max_tokens": 300, "stop": ["END"], "user": "u-7", "reasoning_effort": "low",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "The weather.",
                                                    "parameters": WEATHER["function"]["parameters"]}}],
        "tool_choice": "required", "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather",
                                                                   "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}]}


def test_structured_output_and_streams_from_the_sdk(sdk):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    chat = A.request_to_chat(_sdk_body(sdk, model="m", max_tokens=9, messages=[{"role": "user", "content": "x"}],
                                       output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert chat["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": schema, "strict": True}}
    streamed = A.request_to_chat({"model": "m", "max_tokens": 9, "stream": True,
                                  "messages": [{"role": "user", "content": "x"}]})
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}
    failed = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "no such city", "is_error": True}]}]}
    assert A.request_to_chat(failed)["messages"] == [{"role": "tool", "tool_call_id": "t",
                                                      "content": "Error: no such city"}]


@pytest.mark.parametrize(("extra", "code", "param"), [
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking_not_supported", "thinking"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tool_not_supported", "tools.0"),
    ({"container": "c"}, "unsupported_parameter", "container"),
    ({"output_config": {"effort": "max"}}, "unsupported_parameter", "output_config.effort"),
    ({"max_tokens": None}, None, "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t",
                                                 "content": []}]}]}, "unsupported_content", "messages.0.content.0")])
def test_what_a_chat_model_cannot_do_is_a_400(extra, code, param):
    body = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}], **extra}
    rejects(A.request_to_chat, body, code=code, param=param)


def test_thinking_disabled_and_caching_hints_are_fine():
    body = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}],
            "thinking": {"type": "disabled"}, "cache_control": {"type": "ephemeral"}, "service_tier": "auto"}
    assert A.request_to_chat(body)["messages"] == [{"role": "user", "content": "x"}]


COMPLETION = {"id": "chatcmpl-7", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
                  "role": "assistant", "content": "Checking.", "refusal": None, "tool_calls": [
                      {"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}}],
              "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38,
                        "prompt_tokens_details": {"cached_tokens": 10}}}


def test_a_chat_completion_becomes_a_message_the_sdk_reads(sdk):
    validate("CreateChatCompletionResponse", COMPLETION)
    out = A.chat_to_response(COMPLETION, model="claude-alias")
    Message.model_validate(out)
    sdk.answer = out
    msg = sdk.client.messages.create(model="claude-alias", max_tokens=9, messages=[{"role": "user", "content": "x"}])
    assert (msg.id, msg.model, msg.stop_reason, msg.stop_sequence) == ("msg_chatcmpl-7", "claude-alias", "tool_use", None)
    assert msg.content[0].text == "Checking."
    assert (msg.content[1].id, msg.content[1].name, msg.content[1].input) == ("call_1", "get_weather", {"city": "Paris"})
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (20, 10, 8)


@pytest.mark.parametrize(("finish", "stop"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")])
def test_finish_reasons(finish, stop):
    done = {**COMPLETION, "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                                       "message": {"role": "assistant", "content": "x", "refusal": None}}]}
    assert A.chat_to_response(done, model="m")["stop_reason"] == stop


def test_tool_arguments_that_are_not_an_object_cannot_be_answered():
    bad = json.loads(json.dumps(COMPLETION))
    bad["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"city": '
    with pytest.raises(UpstreamError):
        A.chat_to_response(bad, model="m")


CHAT_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hi th"}), chunk({"content": "ere."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                           "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]}),
    chunk({}, "tool_calls"),
    chunk(None, usage={"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}),
]


def test_chat_chunks_become_the_event_sequence_of_a_messages_stream():
    for c in CHAT_STREAM:
        validate("CreateChatCompletionStreamResponse", c)
    t = A.chat_to_events(model="claude-alias")
    events = [e for c in CHAT_STREAM for e in t.feed(c)] + t.end()
    for e in events:
        assert e.event == e.data["type"]
        EVENT.validate_python(e.data)
    shape = [(e.event, e.data.get("index")) for e in events]
    assert shape == [
        ("message_start", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_delta", 2), ("content_block_stop", 2),
        ("message_delta", None), ("message_stop", None)]
    start = events[0].data["message"]
    assert (start["model"], start["content"], start["stop_reason"], start["usage"]) == (
        "claude-alias", [], None, {"input_tokens": 0, "output_tokens": 0})
    assert events[5].data["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    assert events[-2].data["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2].data["usage"]["input_tokens"] == 12 and events[-2].data["usage"]["output_tokens"] == 30


def test_the_sdk_accumulates_our_stream_into_the_whole_message(sdk):
    t = A.chat_to_events(model="claude-alias")
    sdk.answer = sse([e for c in CHAT_STREAM for e in t.feed(c)] + t.end())
    with sdk.client.messages.stream(model="claude-alias", max_tokens=9,
                                    messages=[{"role": "user", "content": "x"}]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Hi there."
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("text", None), ("tool_use", {"city": "Paris"}), ("tool_use", {"city": "Rome"})]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 30)


def test_an_empty_chat_stream_still_opens_and_closes_the_message():
    t = A.chat_to_events(model="m")
    assert [e.event for e in t.end()] == ["message_start", "message_delta", "message_stop"]


def test_a_failed_stream_ends_with_an_error_event_the_sdk_raises(sdk):
    t = A.chat_to_events(model="m")
    events = t.feed(CHAT_STREAM[1]) + t.error({"message": "The API model 'x' failed (503)", "type": "upstream_error",
                                              "param": None, "code": "upstream_error"})
    assert events[-1] == SseEvent("error", {"type": "error", "error": {
        "type": "api_error", "message": "The API model 'x' failed (503)"}})
    sdk.answer = sse(events)
    with pytest.raises(anthropic.APIStatusError) as info:
        with sdk.client.messages.stream(model="m", max_tokens=9, messages=[{"role": "user", "content": "x"}]) as s:
            s.get_final_message()
    assert info.value.body["error"]["message"] == "The API model 'x' failed (503)"


@pytest.mark.parametrize(("status", "etype"), [
    (400, "invalid_request_error"), (422, "invalid_request_error"), (401, "authentication_error"),
    (402, "billing_error"), (403, "permission_error"), (404, "not_found_error"), (409, "invalid_request_error"),
    (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"),
    (503, "overloaded_error"), (504, "timeout_error"), (529, "overloaded_error")])
def test_error_envelope_by_status(status, etype):
    err = InvalidRequestError("Nope.", param="x").to_envelope()["error"]
    body = A.error_envelope(status, err)
    assert body == {"type": "error", "error": {"type": etype, "message": "Nope."}}
    if etype != "request_too_large":  # documented, but not in the SDK's union of error objects
        BetaErrorResponse.model_validate(A.error_envelope(status, err, request_id="req_1"))


@pytest.mark.parametrize(("error", "etype"), [
    ({"type": "invalid_request_error", "code": "model_not_found"}, "not_found_error"),
    ({"type": "insufficient_quota", "code": "budget_exceeded"}, "rate_limit_error"),
    ({"type": "upstream_error", "code": "upstream_unauthorized"}, "authentication_error"),
    ({"type": "upstream_error", "code": "upstream_timeout"}, "timeout_error"),
    ({"type": "overloaded_error", "code": None}, "overloaded_error"),
    ({"type": "server_error", "code": "store_error"}, "api_error")])
def test_a_stream_error_without_status_is_typed_by_its_type_and_code(error, etype):
    [event] = A.chat_to_events(model="m").error({"message": "x", "param": None, **error})
    assert event.data["error"]["type"] == etype


# -- round trips --------------------------------------------------------------------------

def test_a_chat_body_through_anthropic_and_back_keeps_what_it_says():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    chat = {**TOOL_CHAT, "messages": [{"role": "system", "content": "Be brief."}, *TOOL_CHAT["messages"]],
            "stop": ["END"], "temperature": 0.3, "max_tokens": 99, "tool_choice": "required",
            "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": schema,
                                                                       "strict": True}}}
    back = A.request_to_chat(A.chat_to_request(chat, model="alias"))
    validate("CreateChatCompletionRequest", back, closed=True)
    assert {k: back[k] for k in ("stop", "temperature", "max_tokens", "tool_choice", "response_format")} == {
        k: chat[k] for k in ("stop", "temperature", "max_tokens", "tool_choice", "response_format")}
    assert back["tools"] == [WEATHER]
    roles = [m["role"] for m in back["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user"]
    assert back["messages"][0]["content"] == "Be brief."
    assert back["messages"][2]["tool_calls"] == TOOL_CHAT["messages"][1]["tool_calls"]
    assert [(m["tool_call_id"], m["content"]) for m in back["messages"][3:5]] == [("call_1", "Sunny"),
                                                                                  ("call_2", "Rain")]
    assert back["messages"][5]["content"] == [  # the two user turns after the results, merged
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "Thanks."}]


def test_a_message_through_chat_and_back_is_the_same_message():
    back = A.chat_to_response(A.response_to_chat(MESSAGE, model="claude-x"), model="claude-x")
    Message.model_validate(back)
    assert back["content"] == [{"type": "text", "text": "Let me check. One moment."}, MESSAGE["content"][3]]
    assert (back["stop_reason"], back["usage"]) == ("tool_use", {
        "input_tokens": 23, "output_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100})


def test_a_stream_through_chat_and_back_reads_as_the_same_message(sdk):
    to = A.chat_to_events(model="claude-x")
    sdk.answer = sse([e for c in _run(STREAM) for e in to.feed(c)] + to.end())
    with sdk.client.messages.stream(model="claude-x", max_tokens=9,
                                    messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        {"type": "text", "text": "Okay, checking."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}}]
    assert (final.stop_reason, final.usage.input_tokens, final.usage.cache_read_input_tokens,
            final.usage.output_tokens) == ("tool_use", 25, 5, 42)


# -- the upstream side against a real server ------------------------------------------------

@pytest.fixture(scope="module")
def fake():
    proc, port = start_fake("fake_anthropic.py", "--key", KEY)
    yield f"http://127.0.0.1:{port}/v1"
    proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _send(fake: str, chat: dict, model: str) -> httpx.Response:
    w = A.wire(model=model, stream=bool(chat.get("stream")), api_key=KEY)
    return httpx.post(f"{fake}/{w.path}", headers=w.headers, params=w.params, json=A.chat_to_request(chat, model=model),
                      trust_env=False)


def _stream(fake: str, chat: dict, model: str) -> list[dict]:
    w = A.wire(model=model, stream=True, api_key=KEY)
    r = httpx.post(f"{fake}/{w.path}", headers=w.headers, json=A.chat_to_request({**chat, "stream": True}, model=model),
                   trust_env=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    return _run(parse_sse(r.text))


def test_the_fake_accepts_our_tool_conversation_and_we_read_its_answer(fake):
    chat = {**TOOL_CHAT, "messages": [{"role": "system", "content": "Be brief."}, *TOOL_CHAT["messages"]],
            "temperature": 0.2, "user": "u-1", "tool_choice": "auto", "parallel_tool_calls": False, "stop": ["zzz"]}
    r = _send(fake, chat, "echo")
    assert r.status_code == 200, r.text
    Message.model_validate(r.json())
    out = A.response_to_chat(r.json(), model="alias")
    validate("CreateChatCompletionResponse", out)
    assert out["choices"][0]["message"]["content"] == "echo: And this? Thanks."  # the merged last user turn
    last = httpx.get(fake.removesuffix("/v1") + "/_last", trust_env=False).json()
    assert last["headers"]["X-Api-Key"] == KEY and "Authorization" not in last["headers"]


def test_stop_sequences_and_max_tokens_come_back_as_finish_reasons(fake):
    base = {"model": "a", "messages": [{"role": "user", "content": "one two three four"}]}
    stopped = A.response_to_chat(_send(fake, {**base, "stop": ["three"]}, "echo").json(), model="a")
    assert stopped["choices"][0] | {"message": None} == {"index": 0, "message": None, "finish_reason": "stop",
                                                         "logprobs": None}
    assert stopped["choices"][0]["message"]["content"] == "echo: one two "
    cut = A.response_to_chat(_send(fake, {**base, "max_tokens": 2}, "echo").json(), model="a")
    assert cut["choices"][0]["finish_reason"] == "length"


def test_a_tool_call_streams_from_the_fake_into_chat_chunks(fake):
    chat = {"model": "a", "messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER]}
    chunks = _stream(fake, chat, "text-tool")
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look."
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("toolu_")
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "text"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_the_tool_model_reads_the_tool_result_back(fake):
    chat = {"model": "a", "tools": [WEATHER], "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}]}
    out = A.response_to_chat(_send(fake, chat, "tool").json(), model="a")
    assert out["choices"][0]["message"]["content"] == "tool said: Sunny"
    first = A.response_to_chat(_send(fake, {**chat, "messages": chat["messages"][:1]}, "tool").json(), model="a")
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(first["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "text"}


def test_echo_key_quotes_the_key_it_received(fake):
    """The fake's stand-in for a provider that echoes the key (the gateway must redact it)."""
    r = _send(fake, {"model": "a", "messages": [{"role": "user", "content": "x"}]}, "echo-key")
    assert r.status_code == 401 and KEY in A.upstream_error(401, r.content)["message"]
    with pytest.raises(UpstreamError) as info:
        _stream(fake, {"model": "a", "messages": [{"role": "user", "content": "x"}]}, "echo-key")
    assert KEY in info.value.message and info.value.code == "authentication_error"
    w = A.models_wire(api_key=KEY)
    listed = httpx.get(f"{fake.removesuffix('/v1')}/echo-key/v1/models", headers=w.headers, trust_env=False)
    assert listed.status_code == 401 and KEY in listed.text


def test_thinking_is_left_out_of_the_streamed_text(fake):
    chunks = _stream(fake, {"model": "a", "messages": [{"role": "user", "content": "hi"}]}, "thinking")
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"]) == "echo: hi"


def test_structured_output_through_the_fake(fake):
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"],
              "additionalProperties": False}
    chat = {"model": "a", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "Out", "schema": schema}}}
    out = A.response_to_chat(_send(fake, chat, "structured").json(), model="a")
    assert json.loads(out["choices"][0]["message"]["content"]) == {"label": "text"}


def test_a_mid_stream_overload_raises(fake):
    with pytest.raises(UpstreamError, match="Overloaded"):
        _stream(fake, {"model": "a", "messages": [{"role": "user", "content": "hi"}]}, "overloaded")


def test_the_fake_lists_models_in_pages(fake):
    w = A.models_wire(api_key=KEY)
    r = httpx.get(f"{fake}/{w.path}", headers=w.headers, params=w.params, trust_env=False)
    assert A.parse_models(r.json()) == ["echo", "echo-2", "tool", "structured", "thinking"]
    page = httpx.get(f"{fake}/models", headers=w.headers, params={"limit": "2"}, trust_env=False).json()
    assert (page["has_more"], page["first_id"], page["last_id"]) == (True, "echo", "echo-2")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 529])
def test_upstream_statuses_read_as_openai_errors(fake, status):
    r = _send(fake, {"model": "a", "messages": [{"role": "user", "content": "x"}]}, f"status-{status}")
    assert r.status_code == status
    assert (r.headers.get("retry-after") == "7") == (status == 429)
    err = A.upstream_error(r.status_code, r.content)
    assert err["message"] == f"fake upstream says {status}"
    assert err["type"] == A.error_envelope(status, err)["error"]["type"]


# -- the fake refuses what the real API refuses ---------------------------------------------

def _raw(fake: str, body: object, headers: dict | None = None) -> httpx.Response:
    sent = headers if headers is not None else A.wire(model="m", stream=False, api_key=KEY).headers
    return httpx.post(f"{fake}/messages", headers=sent, content=json.dumps(body), trust_env=False)


GOOD = {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("headers", "status"), [
    ({"anthropic-version": "2023-06-01", "authorization": f"Bearer {KEY}"}, 401),
    ({"anthropic-version": "2023-06-01", "x-api-key": "wrong"}, 401),
    ({"x-api-key": KEY}, 400), ({"x-api-key": KEY, "anthropic-version": "2026-10-21"}, 400)])
def test_the_fake_checks_key_and_version(fake, headers, status):
    r = _raw(fake, GOOD, {"content-type": "application/json", **headers})
    assert r.status_code == status
    BetaErrorResponse.model_validate(r.json())


@pytest.mark.parametrize("body", [
    {**GOOD, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]},
    {**GOOD, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
    {**GOOD, "messages": [{"role": "assistant", "content": "a"}]},
    {**GOOD, "messages": []},
    {**GOOD, "messages": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]},
    {**GOOD, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
    {**GOOD, "messages": [{"role": "user", "content": "a"},
                          {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                          {"role": "user", "content": "no result"}]},
    {**GOOD, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}]},
    {k: v for k, v in GOOD.items() if k != "max_tokens"},
    {**GOOD, "max_tokens": "5"},
    {**GOOD, "n": 1},
    {**GOOD, "tool_choice": {"type": "auto"}},
    {**GOOD, "temperature": 1.5}])
def test_the_fake_refuses_invalid_bodies(fake, body):
    r = _raw(fake, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_the_sdk_reads_the_fakes_answers(fake):
    """The fake's Messages and streams are what the anthropic SDK parses (it speaks 2023-06-01
    to the fake here, with x-api-key)."""
    client = anthropic.Anthropic(api_key=KEY, base_url=fake.removesuffix("/v1"), max_retries=0,
                                 default_headers={"anthropic-version": "2023-06-01", "x-api-key": KEY},
                                 http_client=httpx2.Client(trust_env=False))
    msg = client.messages.create(model="echo", max_tokens=50, messages=[{"role": "user", "content": "hi there"}])
    assert (msg.content[0].text, msg.stop_reason) == ("echo: hi there", "end_turn")
    tools = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]
    with client.messages.stream(model="text-tool", max_tokens=50, tools=tools,
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"] and final.content[1].input == {"city": "text"}
    assert final.stop_reason == "tool_use"
    assert [m.id for m in client.models.list()] == ["echo", "echo-2", "tool", "structured", "thinking"]
