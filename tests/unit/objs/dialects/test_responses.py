"""The OpenAI Responses dialect (bodhi_nb/objs/dialects/responses.py), every direction.

What it produces is checked three ways: the translated fields themselves, the openai SDK's
pydantic types (`Response`, the `ResponseStreamEvent` union, `ChatCompletion[Chunk]`, and the
SDK's own stream accumulator and HTTP client over an in-process transport), and OpenAI's
published OpenAPI document (tests/resources/openapi_check.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from bodhi_nb.objs.dialects import responses as r
from bodhi_nb.objs.dialects.base import DialectProtocol, SseEvent
from bodhi_nb.objs.errors import InvalidRequestError, UpstreamError
from tests.resources.openapi_check import validate
from tests.resources.servers import start_fake

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
IMAGE = "data:image/png;base64,iVBORw0KGgo="


def chat_request() -> dict[str, Any]:
    """A chat request using everything Responses can express."""
    return {"model": "alias", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                     {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "Thanks"}],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather by city",
                                                    "parameters": WEATHER}}],
        "tool_choice": "auto", "max_tokens": 64, "temperature": 0.2, "top_p": 0.9,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER, "strict": True}},
        "n": 1, "stop": None, "user": "u1", "parallel_tool_calls": False, "metadata": {"k": "v"}}


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 2}}}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    out: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m",
                           "choices": [] if usage else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage:
        out["usage"] = usage
    return out


def check_events(events: list[SseEvent]) -> list[str]:
    """Every event valid for the SDK and OpenAPI, named after its type, numbered 0, 1, 2...; their types."""
    for n, e in enumerate(events):
        assert e.event == e.data["type"]
        assert e.data["sequence_number"] == n
        EVENTS.validate_python(e.data)
        validate("ResponseStreamEvent", e.data)
    return [e.event for e in events]  # type: ignore[misc]


def check_chunks(chunks: list[dict[str, Any]]) -> None:
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        validate("CreateChatCompletionStreamResponse", c)


def tool_stream() -> list[dict[str, Any]]:
    """Chat chunks: text split mid-word, then a tool call whose JSON arguments are split."""
    return [chunk({"role": "assistant", "content": ""}), chunk({"content": "Let me lo"}), chunk({"content": "ok."}),
            chunk({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                                   "function": {"name": "weather", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
            chunk({}, "tool_calls"),
            chunk(usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})]


def sse_bytes(events: list[SseEvent]) -> bytes:
    return b"".join(f"event: {e.event}\ndata: {json.dumps(e.data)}\n\n".encode() for e in events)


def sdk_client(handler: Any) -> openai.OpenAI:
    """The openai SDK over an in-process transport (no network)."""
    return openai.OpenAI(api_key="sk-test", base_url="http://fake/v1", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def error_of(status: int, body: Any) -> dict[str, Any]:
    err = r.upstream_error(status, body)
    assert err is not None
    return err


def refused(fn: Any, *args: Any, **kwargs: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        fn(*args, **kwargs)
    assert info.value.status == 400
    return info.value


def test_module_satisfies_the_dialect_protocol() -> None:
    dialect: DialectProtocol = r  # type: ignore[assignment]
    assert dialect.NAME == "openai_responses"


# -- upstream side ------------------------------------------------------------------------------
def test_wire_posts_to_responses_with_a_bearer_key() -> None:
    w = r.wire(model="gpt-4o", stream=True, api_key="sk-1")
    assert (w.path, w.headers, w.params) == ("responses", {"Authorization": "Bearer sk-1"}, {})
    assert r.wire(model="m", stream=False, api_key=None).headers == {}
    m = r.models_wire(api_key="sk-1")
    assert (m.path, m.headers) == ("models", {"Authorization": "Bearer sk-1"})
    body = {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"},
                                       {"id": "o3", "object": "model", "created": 1, "owned_by": "openai"}]}
    assert r.parse_models(body) == ["gpt-4o", "o3"]
    with pytest.raises(UpstreamError):
        r.parse_models({"models": []})


def test_chat_to_request_translates_every_feature() -> None:
    body = r.chat_to_request({**chat_request(), "reasoning_effort": "low", "verbosity": "low", "stream": True,
                              "stream_options": {"include_usage": True}}, model="gpt-4o")
    validate("CreateResponse", body, closed=True)
    assert body["model"] == "gpt-4o" and body["store"] is False and body["stream"] is True
    assert body["input"] == [
        {"type": "message", "role": "system", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Weather here?"},
            {"type": "input_image", "image_url": IMAGE, "detail": "low"}]},
        {"type": "message", "role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "message", "role": "user", "content": "Thanks"}]
    assert "instructions" not in body  # system messages stay input messages
    assert body["tools"] == [{"type": "function", "name": "weather", "description": "Weather by city",
                              "parameters": WEATHER, "strict": False}]  # flat; chat's non-strict default kept
    assert body["tool_choice"] == "auto"
    assert body["text"] == {"format": {"type": "json_schema", "name": "w", "schema": WEATHER, "strict": True},
                            "verbosity": "low"}
    assert body["reasoning"] == {"effort": "low"}
    assert (body["max_output_tokens"], body["temperature"], body["top_p"]) == (64, 0.2, 0.9)
    assert (body["user"], body["parallel_tool_calls"], body["metadata"]) == ("u1", False, {"k": "v"})
    assert "n" not in body and "stop" not in body and "stream_options" not in body


def test_chat_to_request_other_shapes() -> None:
    chat = {"messages": [{"role": "developer", "content": [{"type": "text", "text": "dev"}]},
                         {"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                                                                 "filename": "a.pdf"}}]},
                         {"role": "assistant", "content": None, "refusal": "I can't."},
                         {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "ok"}]}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "response_format": {"type": "json_object"}, "max_completion_tokens": 32, "max_tokens": 99,
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": WEATHER, "strict": True}}]}
    body = r.chat_to_request(chat, model="m")
    validate("CreateResponse", body, closed=True)
    assert body["input"][0] == {"type": "message", "role": "developer",
                                "content": [{"type": "input_text", "text": "dev"}]}
    assert body["input"][1]["content"] == [{"type": "input_file", "file_data": "data:application/pdf;base64,JVBE",
                                            "filename": "a.pdf"}]
    assert body["input"][2] == {"type": "message", "role": "assistant", "content": "I can't."}
    assert body["input"][3] == {"type": "function_call_output", "call_id": "c",
                                "output": [{"type": "input_text", "text": "ok"}]}
    assert body["tool_choice"] == {"type": "function", "name": "weather"}
    assert body["text"] == {"format": {"type": "json_object"}}
    assert body["max_output_tokens"] == 32  # max_completion_tokens wins over max_tokens
    assert body["tools"][0]["strict"] is True


@pytest.mark.parametrize(("extra", "code"), [
    ({"n": 2}, "unsupported_n"), ({"stop": ["\n"]}, "unsupported_stop"), ({"seed": 7}, "unsupported_seed"),
    ({"logprobs": True}, "unsupported_logprobs"), ({"top_logprobs": 3}, "unsupported_top_logprobs"),
    ({"frequency_penalty": 0.5}, "unsupported_frequency_penalty"),
    ({"presence_penalty": 0.5}, "unsupported_presence_penalty"), ({"logit_bias": {"1": 2}}, "unsupported_logit_bias"),
    ({"modalities": ["text", "audio"]}, "unsupported_modalities"), ({"audio": {"voice": "x"}}, "unsupported_audio"),
    ({"web_search_options": {}}, "unsupported_web_search_options"), ({"x_custom": 1}, "unsupported_parameter"),
    ({"tools": [{"type": "custom", "custom": {"name": "c"}}]}, "unsupported_tool_type"),
    ({"tool_choice": {"type": "custom", "custom": {"name": "c"}}}, "unsupported_tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "unsupported_content_part"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "unsupported_role"),
])
def test_chat_to_request_refuses_what_responses_cannot_express(extra: dict, code: str) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], **extra}
    err = refused(r.chat_to_request, chat, model="m")
    assert err.code == code
    assert err.param


def test_response_to_chat() -> None:
    resp = {"id": "resp_1", "object": "response", "created_at": 1700000000, "status": "completed", "model": "gpt-4o",
            "output": [{"type": "reasoning", "id": "rs_1", "summary": []},
                       {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [
                           {"type": "output_text", "text": "It is ", "annotations": [
                               {"type": "url_citation", "start_index": 0, "end_index": 2, "url": "https://w", "title": "W"}]},
                           {"type": "output_text", "text": "sunny.", "annotations": []}]},
                       {"type": "function_call", "id": "fc_1", "call_id": "call_7", "name": "weather",
                        "arguments": '{"city":"Paris"}', "status": "completed"}],
            "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                      "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 13}}
    chat = r.response_to_chat(resp, model="alias")
    ChatCompletion.model_validate(chat)
    validate("CreateChatCompletionResponse", chat)
    choice = chat["choices"][0]
    assert chat["model"] == "alias" and chat["object"] == "chat.completion" and chat["created"] == 1700000000
    assert choice["message"]["content"] == "It is sunny."
    assert choice["message"]["tool_calls"] == [{"id": "call_7", "type": "function", "function": {
        "name": "weather", "arguments": '{"city":"Paris"}'}}]
    assert choice["message"]["annotations"] == [{"type": "url_citation", "url_citation": {
        "start_index": 0, "end_index": 2, "url": "https://w", "title": "W"}}]
    assert choice["finish_reason"] == "tool_calls"
    assert chat["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
                             "prompt_tokens_details": {"cached_tokens": 3},
                             "completion_tokens_details": {"reasoning_tokens": 1}}


@pytest.mark.parametrize(("status", "reason", "finish"), [
    ("completed", None, "stop"), ("incomplete", "max_output_tokens", "length"),
    ("incomplete", "content_filter", "content_filter")])
def test_response_to_chat_stop_reasons(status: str, reason: str | None, finish: str) -> None:
    resp = {"status": status, "incomplete_details": {"reason": reason} if reason else None, "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}]}
    assert r.response_to_chat(resp, model="m")["choices"][0]["finish_reason"] == finish


def test_response_to_chat_failed_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="overloaded"):
        r.response_to_chat({"status": "failed", "error": {"code": "server_error", "message": "overloaded"},
                            "output": []}, model="m")


def provider_events(text_words: list[str], args: list[str]) -> list[SseEvent]:
    """A provider's Responses stream (as OpenAI sends it): a message, then a function call."""
    ev: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}},
        {"type": "response.in_progress", "response": {"id": "resp_1", "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {
            "type": "reasoning", "id": "rs_1", "summary": []}},
        {"type": "response.output_item.done", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1",
                                                                         "summary": []}},
        {"type": "response.output_item.added", "output_index": 1, "item": {
            "type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}},
        {"type": "response.content_part.added", "item_id": "msg_1", "output_index": 1, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}}]
    ev += [{"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0,
            "delta": w, "logprobs": []} for w in text_words]
    ev += [{"type": "response.output_text.done", "item_id": "msg_1", "output_index": 1, "content_index": 0,
            "text": "".join(text_words), "logprobs": []},
           {"type": "response.output_item.done", "output_index": 1, "item": {
               "type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": "".join(text_words), "annotations": []}]}},
           {"type": "response.output_item.added", "output_index": 2, "item": {
               "type": "function_call", "id": "fc_1", "call_id": "call_5", "name": "weather", "arguments": "",
               "status": "in_progress"}}]
    ev += [{"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": a}
           for a in args]
    ev += [{"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 2,
            "arguments": "".join(args)},
           {"type": "response.completed", "response": {
               "id": "resp_1", "status": "completed", "output": [],
               "usage": {"input_tokens": 6, "output_tokens": 5, "total_tokens": 11,
                         "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}}]
    return [SseEvent(e["type"], e) for e in ev]


def test_events_to_chat_stream() -> None:
    conv = r.events_to_chat(model="alias")
    chunks = [c for e in provider_events(["It is sun", "ny."], ['{"ci', 'ty": "Paris"}']) for c in conv.feed(e)]
    chunks += conv.end()
    check_chunks(chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "It is sunny."
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    assert calls[0] == {"index": 0, "id": "call_5", "type": "function", "function": {"name": "weather", "arguments": ""}}
    assert [tc["function"]["arguments"] for tc in calls[1:]] == ['{"ci', 'ty": "Paris"}']
    assert all(tc["index"] == 0 for tc in calls)
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 5,
                                                                 "total_tokens": 11}
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["model"] == "alias"


def test_events_to_chat_done_only_provider_and_incomplete() -> None:
    """A provider that sends only `.done` events still yields the text and the arguments."""
    conv = r.events_to_chat(model="m")
    events: list[dict[str, Any]] = [
              {"type": "response.created", "response": {}},
              {"type": "response.output_item.done", "output_index": 0, "item": {
                  "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "cut"}]}},
              {"type": "response.output_item.done", "output_index": 1, "item": {
                  "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}},
              {"type": "response.incomplete", "response": {"status": "incomplete",
                                                           "incomplete_details": {"reason": "max_output_tokens"}}}]
    chunks = [c for e in events for c in conv.feed(SseEvent(None, dict(e)))]  # data-only events: the type names them
    check_chunks(chunks)
    assert [c["choices"][0]["delta"] for c in chunks[1:3]] == [
        {"content": "cut"},
        {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_events_to_chat_errors() -> None:
    conv = r.events_to_chat(model="m")
    conv.feed(SseEvent("response.created", {"type": "response.created", "response": {}}))
    with pytest.raises(UpstreamError, match="rate limited"):
        conv.feed(SseEvent("error", {"type": "error", "code": "rate_limit_exceeded", "message": "rate limited",
                                     "param": None, "sequence_number": 2}))
    with pytest.raises(UpstreamError, match="boom"):
        r.events_to_chat(model="m").feed(SseEvent("response.failed", {"type": "response.failed", "response": {
            "status": "failed", "error": {"code": "server_error", "message": "boom"}}}))
    cut = r.events_to_chat(model="m")
    cut.feed(SseEvent("response.created", {"type": "response.created", "response": {}}))
    with pytest.raises(UpstreamError, match="before response.completed"):
        cut.end()


def test_upstream_error_reads_the_openai_envelope() -> None:
    env = {"error": {"message": "Bad key sk-x", "type": "invalid_request_error", "param": None,
                     "code": "invalid_api_key"}}
    for body in (env, json.dumps(env), json.dumps(env).encode()):
        assert r.upstream_error(401, body) == env["error"]
    assert r.upstream_error(500, {"error": {"message": "down"}}) == {
        "message": "down", "type": "server_error", "param": None, "code": None}
    assert error_of(200, {"type": "error", "code": "x", "message": "mid-stream", "param": None,
                                  "sequence_number": 3})["message"] == "mid-stream"
    assert r.upstream_error(502, b"<html>bad gateway</html>") is None
    assert r.upstream_error(400, {"detail": "x"}) is None


def test_error_envelope_is_the_openai_envelope() -> None:
    err = {"message": "no such model", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    assert r.error_envelope(404, err) == {"error": err}
    assert r.error_envelope(502, {"message": "down"}) == {"error": {"message": "down", "type": "server_error",
                                                                    "param": None, "code": None}}
    validate("ErrorResponse", r.error_envelope(400, {"message": "x", "type": "invalid_request_error"}))


# -- client side ---------------------------------------------------------------------------------
def sdk_request(**kwargs: Any) -> dict[str, Any]:
    """The body the openai SDK's `responses.create` sends for these arguments."""
    seen: dict[str, Any] = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.update(body=json.loads(request.content), path=request.url.path)
        return httpx2.Response(400, json={"error": {"message": "stop", "type": "invalid_request_error"}})

    with pytest.raises(openai.BadRequestError):
        sdk_client(handler).responses.create(**kwargs)
    assert seen["path"] == "/v1/responses"
    validate("CreateResponse", seen["body"], closed=True)
    return seen["body"]


def test_request_to_chat_from_the_sdk() -> None:
    body = sdk_request(
        model="alias", instructions="Be brief.", max_output_tokens=64, temperature=0.3, top_p=0.8, store=True,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                            {"type": "input_image", "image_url": IMAGE, "detail": "high"}]},
               {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
               {"type": "reasoning", "id": "rs_1", "summary": []},
               {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Paris"}'},
               {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": '{"city":"Rome"}'},
               {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
               {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
               {"role": "developer", "content": "Answer in French."}],
        tools=[{"type": "function", "name": "weather", "description": "d", "parameters": WEATHER, "strict": True}],
        tool_choice={"type": "function", "name": "weather"}, parallel_tool_calls=True, user="u1",
        safety_identifier="s1", metadata={"k": "v"}, reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "w", "schema": WEATHER, "strict": True}, "verbosity": "low"},
        stream=False)
    chat = r.request_to_chat(body)
    assert chat["model"] == "alias"
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image_url", "image_url": {"url": IMAGE, "detail": "high"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "developer", "content": "Answer in French."}]
    assert chat["tools"] == [{"type": "function", "function": {"name": "weather", "description": "d",
                                                               "parameters": WEATHER, "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER,
                                                                              "strict": True}}
    assert (chat["max_completion_tokens"], chat["temperature"], chat["top_p"]) == (64, 0.3, 0.8)
    assert (chat["verbosity"], chat["reasoning_effort"], chat["user"], chat["safety_identifier"]) == (
        "low", "low", "u1", "s1")
    assert chat["parallel_tool_calls"] is True and chat["metadata"] == {"k": "v"} and chat["stream"] is False
    assert "store" not in chat and "stream_options" not in chat


def test_request_to_chat_string_input_and_stream() -> None:
    body = sdk_request(model="m", input="hello", stream=True, text={"format": {"type": "json_object"}},
                       tool_choice="required", tools=[{"type": "function", "name": "f", "parameters": None,
                                                       "strict": None}])
    chat = r.request_to_chat(body)
    assert chat["messages"] == [{"role": "user", "content": "hello"}]
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["response_format"] == {"type": "json_object"} and chat["tool_choice"] == "required"
    assert chat["tools"] == [{"type": "function", "function": {"name": "f"}}]  # no strict: chat's default
    assert r.input_items({"input": "hi"}) == [{"type": "message", "role": "user", "content": "hi"}]
    assert r.input_items({}) == []


@pytest.mark.parametrize(("extra", "code"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id_not_expanded"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "invalid_tool"),
    ({"tools": [{"type": "web_search"}]}, "unsupported_tool_type"),
    ({"tool_choice": {"type": "file_search"}}, "unsupported_tool_choice"),
    ({"truncation": "auto"}, "unsupported_truncation"), ({"background": True}, "unsupported_background"),
    ({"include": ["reasoning.encrypted_content"]}, "unsupported_include"),
    ({"conversation": "conv_1"}, "unsupported_conversation"), ({"prompt": {"id": "p"}}, "unsupported_prompt"),
    ({"top_logprobs": 2}, "unsupported_top_logprobs"), ({"x_custom": 1}, "unsupported_parameter"),
    ({"reasoning": {"effort": "low", "summary": "auto"}}, "unsupported_reasoning_summary"),
    ({"text": {"format": {"type": "grammar"}}}, "unsupported_format"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "unsupported_input_item"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}]}]},
     "unsupported_image_file_id"),
    ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": IMAGE, "detail": "auto"}]}]},
     "unsupported_content_part"),
    ({"input": [{"role": "tool", "content": "x"}]}, "invalid_role"),
    ({"input": 5}, "invalid_value"), ({"model": None}, "invalid_value"),
    ({"tools": "weather"}, "invalid_value"), ({"text": "json"}, "invalid_value"),
])
def test_request_to_chat_refuses_what_chat_cannot_express(extra: dict, code: str) -> None:
    err = refused(r.request_to_chat, {"model": "m", "input": "hi", **extra})
    assert err.code == code


def test_chat_to_response() -> None:
    request = {"model": "alias", "input": "hi", "instructions": "Be brief.", "tools": [
        {"type": "function", "name": "weather", "parameters": WEATHER, "strict": True}], "tool_choice": "auto",
        "temperature": 0.5, "max_output_tokens": 100, "text": {"format": {"type": "json_object"}},
        "metadata": {"k": "v"}, "store": False, "previous_response_id": "resp_0", "user": "u1"}
    message = {"content": "It is sunny.", "annotations": [{"type": "url_citation", "url_citation": {
        "start_index": 0, "end_index": 2, "url": "https://w", "title": "W"}}], "tool_calls": [
        {"id": "call_3", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]}
    out = r.chat_to_response(completion(message, "tool_calls"), model="alias", request=request)
    Response.model_validate(out)
    validate("Response", out)
    assert out["id"].startswith("resp_") and out["object"] == "response" and out["status"] == "completed"
    assert out["model"] == "alias" and out["created_at"] == 1700000000
    msg, call = out["output"]
    assert msg["type"] == "message" and msg["role"] == "assistant" and msg["id"].startswith("msg_")
    assert msg["content"] == [{"type": "output_text", "text": "It is sunny.", "logprobs": [], "annotations": [
        {"type": "url_citation", "start_index": 0, "end_index": 2, "url": "https://w", "title": "W"}]}]
    assert {k: call[k] for k in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call", "call_id": "call_3", "name": "weather", "arguments": '{"city":"Paris"}',
        "status": "completed"}
    assert out["usage"] == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18,
                            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                            "output_tokens_details": {"reasoning_tokens": 2}}
    assert (out["instructions"], out["tools"], out["temperature"], out["max_output_tokens"]) == (
        "Be brief.", request["tools"], 0.5, 100)
    assert out["text"] == {"format": {"type": "json_object"}} and out["metadata"] == {"k": "v"}
    assert out["store"] is False and out["previous_response_id"] == "resp_0" and out["user"] == "u1"
    assert Response.model_validate(out).output_text == "It is sunny."


@pytest.mark.parametrize(("finish", "status", "reason"), [
    ("stop", "completed", None), ("length", "incomplete", "max_output_tokens"),
    ("content_filter", "incomplete", "content_filter")])
def test_chat_to_response_stop_reasons(finish: str, status: str, reason: str | None) -> None:
    out = r.chat_to_response(completion({"content": "hi"}, finish), model="m")
    Response.model_validate(out)
    validate("Response", out)
    assert out["status"] == status
    assert out["incomplete_details"] == ({"reason": reason} if reason else None)
    assert out["output"][0]["status"] == ("completed" if status == "completed" else "incomplete")
    assert (out["completed_at"] is not None) == (status == "completed")


def test_chat_to_response_refusal_and_defaults() -> None:
    out = r.chat_to_response(completion({"content": None, "refusal": "I can't help."}), model="m")
    Response.model_validate(out)
    validate("Response", out)
    assert out["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]
    assert (out["tools"], out["tool_choice"], out["parallel_tool_calls"], out["store"]) == ([], "auto", True, True)
    assert out["text"] == {"format": {"type": "text"}} and out["instructions"] is None


def test_chat_to_events_tool_stream() -> None:
    request: dict[str, Any] = {"model": "alias", "input": "hi", "tools": [
        {"type": "function", "name": "weather", "parameters": WEATHER, "strict": True}]}
    conv = r.chat_to_events(model="alias", request=request)
    events = [e for c in tool_stream() for e in conv.feed(c)] + conv.end()
    assert check_events(events) == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    data = [e.data for e in events]
    assert [d["delta"] for d in data if d["type"] == "response.output_text.delta"] == ["Let me lo", "ok."]
    assert data[6]["text"] == "Let me look." and data[7]["part"]["text"] == "Let me look."
    msg_id, fc_id = data[2]["item"]["id"], data[9]["item"]["id"]
    assert {d.get("item_id") for d in data[3:8]} == {msg_id} and {d["output_index"] for d in data[2:9]} == {0}
    assert data[9]["item"] == {"type": "function_call", "id": fc_id, "call_id": "call_9", "name": "weather",
                               "arguments": "", "status": "in_progress"}
    assert [d["delta"] for d in data[10:12]] == ['{"ci', 'ty": "Paris"}'] and data[12]["arguments"] == '{"city": "Paris"}'
    assert {d["output_index"] for d in data[9:14]} == {1} and data[12]["name"] == "weather"
    final = data[-1]["response"]
    assert conv.response is not None and final is conv.response and final["status"] == "completed" and final["tools"] == request["tools"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["arguments"] == '{"city": "Paris"}'
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 3
    assert final["id"] == data[0]["response"]["id"] and data[0]["response"]["status"] == "in_progress"
    validate("Response", final)
    # The SDK's own stream accumulator agrees.
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=request["tools"], text_format=openai.omit)
    for d in data:
        state.handle_event(EVENTS.validate_python(d))
    done = state._completed_response
    assert done is not None and done.output_text == "Let me look."
    assert done.output[1].arguments == '{"city": "Paris"}'  # type: ignore[union-attr]


def test_chat_to_events_through_the_sdk_client() -> None:
    """The openai SDK reads the whole stream (over an in-process transport) into the final response."""
    conv = r.chat_to_events(model="alias")
    stream = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo there"}),
              chunk({}, "length"), chunk(usage={"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4})]
    events = [e for c in stream for e in conv.feed(c)] + conv.end()
    assert check_events(events)[-1] == "response.incomplete"
    body = sse_bytes(events)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with sdk_client(handler).responses.stream(model="alias", input="hi") as s:
        seen = list(s)
    assert [e.type for e in seen][:2] == ["response.created", "response.in_progress"]
    assert [e.delta for e in seen if e.type == "response.output_text.delta"] == ["Hel", "lo there"]
    last = seen[-1]  # OpenAI ends a cut response with response.incomplete (the SDK's final-response helper
    assert last.type == "response.incomplete"  # waits for response.completed only)
    final = last.response
    assert final.status == "incomplete" and final.output_text == "Hello there"
    assert final.incomplete_details and final.incomplete_details.reason == "max_output_tokens"
    assert conv.response is not None and conv.response["output"][0]["status"] == "incomplete"


def test_chat_to_events_refusal_parallel_calls_and_error() -> None:
    conv = r.chat_to_events(model="m")
    events = conv.feed(chunk({"refusal": "No"})) + conv.feed(chunk({"refusal": "pe."}))
    events += conv.feed(chunk({"tool_calls": [
        {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}},
        {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{"}}]}))
    events += conv.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))
    events += conv.end()
    check_events(events)
    final = conv.response
    assert final is not None
    assert final["output"][0]["content"] == [{"type": "refusal", "refusal": "Nope."}]
    assert [(i["call_id"], i["arguments"]) for i in final["output"][1:]] == [("a", "{}"), ("b", "{")]
    assert conv.feed(chunk({"content": "late"})) == [] and conv.end() == []

    failing = r.chat_to_events(model="m")
    events = failing.feed(chunk({"content": "par"}))
    events += failing.error({"message": "Upstream overloaded", "type": "upstream_error", "code": "upstream_error"})
    assert check_events(events)[-2:] == ["error", "response.failed"]
    assert events[-2].data["message"] == "Upstream overloaded" and events[-2].data["code"] == "upstream_error"
    assert failing.response is not None and failing.response["status"] == "failed"
    assert failing.response["error"] == {"code": "server_error", "message": "Upstream overloaded"}
    limited = r.chat_to_events(model="m").error({"message": "slow down", "code": "rate_limit_exceeded"})
    assert limited[-1].data["response"]["error"]["code"] == "rate_limit_exceeded"
    check_events(limited)


def test_chat_to_events_empty_stream_still_completes() -> None:
    conv = r.chat_to_events(model="m")
    assert check_events(conv.end()) == ["response.created", "response.in_progress", "response.completed"]
    assert conv.response is not None and conv.response["output"] == []


def test_response_items_feed_a_follow_up_turn() -> None:
    out = r.chat_to_response(completion({"content": "Checking.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}, "tool_calls"),
        model="m")
    out["output"].insert(0, {"type": "reasoning", "id": "rs_1", "summary": []})
    items = r.response_items(out)
    assert [i["type"] for i in items] == ["message", "function_call"]
    items[0]["content"][0]["text"] = "changed"
    assert out["output"][1]["content"][0]["text"] == "Checking."  # copies, not views
    follow = {"model": "m", "input": [*r.input_items({"input": "weather?"}), *r.response_items(out),
                                      {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]}
    validate("CreateResponse", follow, closed=True)
    assert r.request_to_chat(follow)["messages"] == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]


# -- round trips ---------------------------------------------------------------------------------
def test_round_trip_request_chat_responses_chat() -> None:
    chat = chat_request()
    back = r.request_to_chat(r.chat_to_request(chat, model="alias"))
    assert back["messages"] == chat["messages"]  # system, image, assistant text + tool call, tool result
    assert back["tools"] == [{"type": "function", "function": {**chat["tools"][0]["function"], "strict": False}}]
    assert back["response_format"] == chat["response_format"]
    assert (back["max_completion_tokens"], back["temperature"], back["top_p"], back["tool_choice"]) == (64, 0.2, 0.9, "auto")


@pytest.mark.parametrize("finish", ["stop", "length", "tool_calls", "content_filter"])
def test_round_trip_completion_response_completion(finish: str) -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]
    original = completion({"content": "Sure.", **({"tool_calls": calls} if finish == "tool_calls" else {})}, finish)
    back = r.response_to_chat(r.chat_to_response(original, model="m"), model="m")
    ChatCompletion.model_validate(back)
    msg = back["choices"][0]["message"]
    assert msg["content"] == "Sure." and back["choices"][0]["finish_reason"] == finish
    assert msg.get("tool_calls", []) == (calls if finish == "tool_calls" else [])
    assert back["usage"] == original["usage"]


def test_round_trip_stream_chat_events_chat() -> None:
    conv = r.chat_to_events(model="m")
    events = [e for c in tool_stream() for e in conv.feed(c)] + conv.end()
    back = r.events_to_chat(model="m")
    chunks = [c for e in events for c in back.feed(SseEvent(e.event, json.loads(json.dumps(e.data))))] + back.end()
    check_chunks(chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look."
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    assert calls[0]["id"] == "call_9" and calls[0]["function"]["name"] == "weather"
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"city": "Paris"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


# -- the fake provider ---------------------------------------------------------------------------
def parse_sse(text: str) -> list[SseEvent]:
    events = []
    for frame in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append(SseEvent(lines.get("event"), json.loads(lines["data"])))
    return events


def test_fake_responses_server_checks_the_wire_and_answers() -> None:
    proc, port = start_fake("fake_responses.py", "--key", "sk-test", "--openapi")
    base = f"http://127.0.0.1:{port}/v1"
    auth = {"Authorization": "Bearer sk-test"}
    try:
        with httpx.Client(base_url=base, headers=auth, trust_env=False, timeout=30) as http:
            ok = {"model": "echo", "input": "hello there"}
            assert http.post("/responses", json=ok, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert http.post("/chat/completions", json=ok).status_code == 404
            assert http.post("/responses", content=json.dumps(ok), headers={"Content-Type": "text/plain"}).status_code == 400
            nested = {**ok, "tools": [{"type": "function", "function": {"name": "f", "parameters": WEATHER}}]}
            for bad in (nested, {**ok, "messages": []}, {"model": "echo"}, {**ok, "input": [{"role": "tool"}]},
                        {**ok, "max_output_tokens": 5}):
                res = http.post("/responses", json=bad)
                assert res.status_code == 400, bad
                assert set(res.json()["error"]) == {"message", "type", "param", "code"}
            assert http.get("/models").json()["data"][0] == {"id": "echo", "object": "model", "created": 0,
                                                             "owned_by": "fake"}
            assert {"echo", "tool"} <= set(r.parse_models(http.get("/models").json()))

            # Upstream path: chat -> Responses -> the fake -> chat.
            chat: dict[str, Any] = {
                "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello there"}],
                    "max_tokens": 32, "tools": [{"type": "function", "function": {"name": "weather",
                                                                                  "parameters": WEATHER}}]}
            res = http.post("/responses", json=r.chat_to_request(chat, model="echo"))
            assert res.status_code == 200, res.text
            Response.model_validate(res.json())
            validate("Response", res.json())
            assert r.response_to_chat(res.json(), model="alias")["choices"][0]["message"]["content"] == "echo: hello there"
            assert http.get(f"http://127.0.0.1:{port}/_last").json()["body"]["store"] is False

            res = http.post("/responses", json=r.chat_to_request({**chat, "stream": True}, model="tool"))
            events = parse_sse(res.text)
            check_events(events)
            conv = r.events_to_chat(model="alias")
            chunks = [c for e in events for c in conv.feed(e)] + conv.end()
            args = [tc["function"]["arguments"] for c in chunks if c["choices"]
                    for tc in c["choices"][0]["delta"].get("tool_calls") or []]
            assert len([a for a in args if a]) == 2 and json.loads("".join(args)) == {"city": "Paris"}
            assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"

            follow = {**chat, "messages": [*chat["messages"], {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_fake", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_fake", "content": "sunny"}]}
            res = http.post("/responses", json=r.chat_to_request(follow, model="tool"))
            assert r.response_to_chat(res.json(), model="m")["choices"][0]["message"]["content"] == "tool said: sunny"

            res = http.post("/responses", json={"model": "status-429", "input": "x"})
            assert res.status_code == 429 and res.headers["retry-after"] == "7"
            assert error_of(429, res.content)["message"] == "fake upstream says 429"
            res = http.post("/responses", json={"model": "echo-key", "input": "x"})
            assert res.status_code == 401 and "sk-test" in error_of(401, res.content)["message"]
            res = http.post("/responses", json={"model": "echo-key", "input": "x", "stream": True})
            quoting = r.events_to_chat(model="m")
            with pytest.raises(UpstreamError, match="sk-test"):
                for e in parse_sse(res.text):
                    quoting.feed(e)

            fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}
            res = http.post("/responses", json=r.chat_to_request({"messages": chat["messages"],
                                                                  "response_format": fmt}, model="structured"))
            assert json.loads(r.response_to_chat(res.json(), model="m")["choices"][0]["message"]["content"]) == {
                "city": "text"}
            res = http.post("/responses", json=r.chat_to_request({"messages": chat["messages"], "stream": True},
                                                                 model="incomplete"))
            cut = r.events_to_chat(model="m")
            chunks = [c for e in parse_sse(res.text) for c in cut.feed(e)] + cut.end()
            assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"

        # The openai SDK itself reads the fake's answers.
        client = openai.OpenAI(api_key="sk-test", base_url=base, max_retries=0)
        assert client.responses.create(model="echo", input="hi you").output_text == "echo: hi you"
        with client.responses.stream(model="echo", input="one two three") as s:
            deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
            assert s.get_final_response().usage is not None
        assert deltas == ["echo: ", "one ", "two ", "three"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
