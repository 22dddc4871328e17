"""The Gemini generateContent dialect, each direction on its own.

The judges are the published shapes, not our reading of them: chat bodies and chunks are
validated against OpenAI's OpenAPI document (tests/resources/openapi_check.py), Gemini bodies
against the google-genai SDK's own pydantic types (which forbid unknown fields and take the
REST camelCase names as aliases). The upstream side is sent to tests/resources/fake_gemini.py,
a real server that checks requests as the REST API documents them, and the real google-genai
client is pointed at that fake to prove the fake speaks the SDK's wire format.
"""

from __future__ import annotations

import copy
import json
import subprocess

import httpx
import pytest
from google import genai
from google.genai import types as T

from bodhi_nb.objs.dialects import gemini as G
from bodhi_nb.objs.dialects.base import SseEvent
from bodhi_nb.objs.errors import InvalidRequestError, UpstreamError
from tests.resources.openapi_check import validate
from tests.resources.servers import start_fake

KEY = "AIzaSy-test-0123456789"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
TOOL_CHAT = {"model": "m", "tools": [WEATHER], "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    {"role": "user", "content": "Thanks."}]}


def rejects(fn, *args, code: str, param: str | None = None, **kwargs) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        fn(*args, **kwargs)
    assert info.value.status == 400 and info.value.code == code, info.value
    if param is not None:
        assert info.value.param == param
    return info.value


def sdk_request(body: dict) -> None:
    """Every part of a generateContent body through the SDK's types (unknown fields refused)."""
    assert set(body) <= {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig"}
    for content in body["contents"]:
        T.Content.model_validate(content)
    if "systemInstruction" in body:
        T.Content.model_validate(body["systemInstruction"])
    if "generationConfig" in body:
        T.GenerationConfig.model_validate(body["generationConfig"])
    for tool in body.get("tools", []):
        T.Tool.model_validate(tool)
    if "toolConfig" in body:
        T.ToolConfig.model_validate(body["toolConfig"])


def response(parts: list[dict], finish: str | None = "STOP", **extra) -> dict:
    cand = {"content": {"role": "model", "parts": parts}, "index": 0, **({"finishReason": finish} if finish else {})}
    body = {"candidates": [cand], "modelVersion": "gemini-2.5-flash", "responseId": "r1", **extra}
    T.GenerateContentResponse.model_validate(body)  # our fixtures are what the SDK reads
    return body


def no_ids(messages: list[dict]) -> list[dict]:
    """Messages with tool call ids replaced by their position (Gemini has no ids to keep)."""
    out, ids = copy.deepcopy(messages), {}
    for m in out:
        for tc in m.get("tool_calls") or []:
            tc["id"] = ids.setdefault(tc["id"], f"#{len(ids)}")
        if m.get("role") == "tool":
            m["tool_call_id"] = ids[m["tool_call_id"]]
    return out


# -- wire -----------------------------------------------------------------------------------

def test_wire_puts_the_model_and_method_in_the_path_and_the_key_in_a_header_only():
    w = G.wire(model="gemini-2.5-flash", stream=False, api_key=KEY)
    assert (w.path, w.headers, w.params) == ("models/gemini-2.5-flash:generateContent", {"x-goog-api-key": KEY}, {})
    s = G.wire(model="models/gemini-2.5-flash", stream=True, api_key=KEY)
    assert (s.path, s.params) == ("models/gemini-2.5-flash:streamGenerateContent", {"alt": "sse"})
    assert KEY not in s.path + json.dumps(s.params)
    assert G.wire(model="tunedModels/t1", stream=False, api_key=None).headers == {}
    assert G.wire(model="tunedModels/t1", stream=False, api_key=None).path == "tunedModels/t1:generateContent"
    m = G.models_wire(api_key=KEY)
    assert (m.path, m.headers, m.params) == ("models", {"x-goog-api-key": KEY}, {"pageSize": "1000"})


def test_parse_models_keeps_generate_content_models_without_the_prefix():
    body = {"models": [{"name": "models/gemini-2.5-flash", "supportedGenerationMethods": ["generateContent"]},
                       {"name": "models/text-embedding-004", "supportedGenerationMethods": ["embedContent"]},
                       {"name": "models/aqa"}], "nextPageToken": "t"}
    assert G.parse_models(body) == G.parse_models(json.dumps(body).encode()) == ["gemini-2.5-flash"]
    assert G.parse_models({}) == []
    with pytest.raises(UpstreamError):
        G.parse_models(b"[1, 2]")


def test_client_route_reads_model_and_stream_from_the_path():
    assert G.client_route("v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse") == ("gemini-2.5-flash", True)
    assert G.client_route("models/echo:generateContent") == ("echo", False)
    rejects(G.client_route, "models/echo:countTokens", code="invalid_request")


# -- chat -> Gemini (upstream request) ------------------------------------------------------

def test_text_system_and_sampling_translate_to_camel_case_fields():
    chat = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "user": "u", "store": False,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": [
                {"type": "text", "text": "Use French."}]}, {"role": "user", "content": "Hello"}],
            "max_tokens": 100, "max_completion_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stop": "END",
            "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.3, "n": 1, "logprobs": False}
    body = G.chat_to_request(chat, model="m")
    sdk_request(body)
    assert body == {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
                    "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use French."}]},
                    "generationConfig": {"maxOutputTokens": 50, "temperature": 0.2, "topP": 0.9, "seed": 7,
                                         "presencePenalty": 0.1, "frequencyPenalty": 0.3, "stopSequences": ["END"]}}


def test_a_tool_conversation_becomes_calls_and_named_results_in_merged_turns():
    chat = {**TOOL_CHAT, "tool_choice": "auto", "parallel_tool_calls": True}
    chat["messages"] = [*chat["messages"][:1], {"role": "user", "content": "Please."}, *chat["messages"][1:]]
    body = G.chat_to_request(chat, model="m")
    sdk_request(body)
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}, {"text": "Please."}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "Sunny"}}},
                                   {"text": "Thanks."}]}]
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "The weather in a city.",
        "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


def test_a_json_tool_result_is_the_response_object_and_a_signature_goes_back_on_its_call():
    signed = {**CALL, "extra_content": {"google": {"thought_signature": "c2lnbmVk"}}}
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "Let me look.", "tool_calls": [signed]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": '{"temp": 21}'}]}]
    body = G.chat_to_request({"model": "m", "messages": msgs}, model="m")
    assert body["contents"][1]["parts"] == [{"text": "Let me look."}, {
        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmVk"}]
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {"temp": 21}
    msgs[2]["content"] = "[1, 2]"  # JSON, but not an object
    body = G.chat_to_request({"model": "m", "messages": msgs}, model="m")
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {"result": "[1, 2]"}
    sdk_request(body)


def test_images_audio_and_files_become_inline_or_file_data():
    content = [{"type": "text", "text": "Look"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
               {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg?size=2"}},
               {"type": "image_url", "image_url": {"url": "https://example.org/render"}},
               {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
               {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]
    body = G.chat_to_request({"model": "m", "messages": [{"role": "user", "content": content}]}, model="m")
    sdk_request(body)
    assert body["contents"][0]["parts"] == [
        {"text": "Look"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"fileUri": "https://example.org/cat.jpg?size=2", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://example.org/render"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]


@pytest.mark.parametrize(("choice", "config", "declared"), [
    ("none", {"mode": "NONE"}, ["get_weather", "get_time"]),
    ("required", {"mode": "ANY"}, ["get_weather", "get_time"]),
    ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
     ["get_weather", "get_time"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_time"}}]}},
     {"mode": "ANY", "allowedFunctionNames": ["get_time"]}, ["get_weather", "get_time"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "get_time"}}]}}, {"mode": "AUTO"}, ["get_time"])])
def test_tool_choice_becomes_a_function_calling_config(choice, config, declared):
    time_tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER, time_tool],
            "tool_choice": choice}
    body = G.chat_to_request(chat, model="m")
    sdk_request(body)
    assert body["toolConfig"] == {"functionCallingConfig": config}
    assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == declared


def test_response_format_becomes_a_mime_type_and_a_json_schema_cut_to_what_gemini_takes():
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Answer", "type": "object",
              "properties": {"kind": {"const": "city"}, "where": {"$ref": "#/$defs/Place", "description": "x"},
                             "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3},
                             "size": {"allOf": [{"type": "integer"}], "default": 1},
                             "maybe": {"type": ["string", "null"], "pattern": "a+"}},
              "required": ["kind"], "additionalProperties": False,
              "$defs": {"Place": {"type": "object", "properties": {"name": {"type": "string", "examples": ["P"]}}}}}
    rf = {"type": "json_schema", "json_schema": {"name": "Answer", "strict": True, "schema": schema}}
    body = G.chat_to_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": rf},
                             model="m")
    sdk_request(body)
    assert body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": {
        "title": "Answer", "type": "object",
        "properties": {"kind": {"enum": ["city"]}, "where": {"$ref": "#/$defs/Place"},
                       "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                       "size": {"type": "integer"}, "maybe": {"type": ["string", "null"]}},
        "required": ["kind"], "additionalProperties": False,
        "$defs": {"Place": {"type": "object", "properties": {"name": {"type": "string"}}}}}}
    body = G.chat_to_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "json_object"}}, model="m")
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    assert "generationConfig" not in G.chat_to_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                                        "response_format": {"type": "text"}}, model="m")


def test_a_property_named_like_a_keyword_is_kept():
    schema = {"type": "object", "properties": {"default": {"type": "string"}, "pattern": {"type": "integer"}}}
    assert G.clean_schema(schema) == schema


USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(("extra", "code", "param"), [
    ({"n": 2}, "unsupported_n", "n"),
    ({"logprobs": True}, "unsupported_logprobs", "logprobs"),
    ({"top_logprobs": 3}, "unsupported_logprobs", "logprobs"),
    ({"logit_bias": {"50256": -100}}, "unsupported_logit_bias", "logit_bias"),
    ({"parallel_tool_calls": False}, "unsupported_parallel_tool_calls", "parallel_tool_calls"),
    ({"modalities": ["text", "audio"]}, "unsupported_audio", "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "unsupported_audio", "modalities"),
    ({"functions": [{"name": "f"}]}, "unsupported_functions", "functions"),
    ({"reasoning_effort": "low"}, "unsupported_parameter", "reasoning_effort"),
    ({"web_search_options": {}}, "unsupported_parameter", "web_search_options"),
    ({"prediction": {"type": "content", "content": "x"}}, "unsupported_parameter", "prediction"),
    ({"x_custom": 1}, "unsupported_parameter", "x_custom"),
    ({"stop": 5}, "invalid_request", "stop"),
    ({"tools": [{"type": "custom", "custom": {"name": "c"}}]}, "unsupported_tool_type", "tools[0]"),
    ({"tools": [WEATHER], "tool_choice": {"type": "custom", "custom": {"name": "c"}}}, "unsupported_tool_choice",
     "tool_choice"),
    ({"response_format": {"type": "grammar"}}, "unsupported_response_format", "response_format"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]},
     "unsupported_image_url", "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
     "unsupported_content_part", "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x",
                                                                                        "format": "flac"}}]}]},
     "unsupported_content_part", "messages[0].content[0]"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}, *USER]},
     "unsupported_content_part", "messages[0].content"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "unsupported_role", "messages[0].role"),
    ({"messages": [*USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "unknown_tool_call_id",
     "messages[1].tool_call_id"),
    ({"messages": [*USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": "[1]"}}]}]}, "invalid_tool_arguments", "messages[1].tool_calls"),
    ({"messages": [*USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom"}]}]},
     "unsupported_tool_type", "messages[1]"),
    ({"messages": [*USER, {"role": "assistant", "content": None, "audio": {"id": "a1"}}]}, "unsupported_functions",
     "messages[1]"),
    ({"messages": [{"role": "system", "content": "only this"}]}, "no_contents", "messages")])
def test_what_gemini_cannot_express_is_a_400_naming_it(extra, code, param):
    rejects(G.chat_to_request, {"model": "m", "messages": USER, **extra}, model="m", code=code, param=param)


def test_an_empty_assistant_turn_is_left_out():
    chat = {"model": "m", "messages": [*USER, {"role": "assistant", "content": ""}, {"role": "user", "content": "y"}]}
    assert G.chat_to_request(chat, model="m")["contents"] == [{"role": "user", "parts": [{"text": "x"}, {"text": "y"}]}]


# -- Gemini -> chat (client-side request) and the round trip --------------------------------

def test_a_chat_request_survives_the_round_trip_through_gemini():
    rf = {"type": "json_schema", "json_schema": {"name": "response", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    signed = {**CALL, "extra_content": {"google": {"thought_signature": "c2ln"}}}
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Where?"},
                                             {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                             {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}]},
                {"role": "assistant", "content": "Looking.", "tool_calls": [signed]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
                {"role": "user", "content": "Thanks."}]
    chat = {"messages": messages, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {
        "name": "get_weather"}}, "response_format": rf, "max_tokens": 64, "temperature": 0.5, "top_p": 0.8,
        "stop": ["END"], "seed": 3}
    back = G.request_to_chat(G.chat_to_request({"model": "m", **chat}, model="m"))
    validate("CreateChatCompletionRequest", {"model": "m", **back})
    assert no_ids(back["messages"]) == no_ids(messages)
    assert {k: v for k, v in back.items() if k != "messages"} == {k: v for k, v in chat.items() if k != "messages"}


def test_request_to_chat_reads_what_the_sdk_and_older_clients_send():
    body = {"contents": [
        {"role": "user", "parts": [{"text": "Hi"}, {"inlineData": {"mimeType": "audio/mpeg", "data": "SUQz"}},
                                   {"fileData": {"mimeType": "image/png", "fileUri": "https://x.org/p.png"}}]},
        {"role": "model", "parts": [{"text": "thinking...", "thought": True},
                                    {"functionCall": {"id": "fc-1", "name": "a", "args": {}}},
                                    {"functionCall": {"name": "b", "args": {"x": 1}}}]},
        {"role": "function", "parts": [{"functionResponse": {"name": "b", "response": {"ok": True}}},
                                       {"functionResponse": {"id": "fc-1", "name": "a", "response": {"result": "A"}}}]}],
        "systemInstruction": {"role": "user", "parts": [{"text": "One"}, {"text": "Two"}]},
        "generationConfig": {"candidateCount": 1, "responseMimeType": "application/json", "responseSchema": {
            "type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": True}}, "propertyOrdering": ["n"]}},
        "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b", "parameters": {
            "type": "OBJECT", "properties": {"x": {"type": "NUMBER"}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a", "b"]}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]}
    chat = G.request_to_chat(body)
    validate("CreateChatCompletionRequest", {"model": "m", **chat})
    system, user, assistant, tool_b, tool_a = chat["messages"]
    assert system == {"role": "system", "content": "One\nTwo"}
    assert user["content"][1:] == [{"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
                                   {"type": "image_url", "image_url": {"url": "https://x.org/p.png"}}]
    assert assistant["content"] is None and assistant["tool_calls"][0]["id"] == "fc-1"
    assert (tool_a["tool_call_id"], tool_a["content"]) == ("fc-1", "A")
    assert (tool_b["tool_call_id"], json.loads(tool_b["content"])) == (assistant["tool_calls"][1]["id"], {"ok": True})
    assert chat["n"] == 1 and chat["response_format"]["json_schema"]["schema"] == {
        "type": "object", "properties": {"n": {"type": ["integer", "null"]}}}
    assert chat["tools"][1]["function"]["parameters"] == {"type": "object", "properties": {"x": {"type": "number"}}}
    assert chat["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]}}


GEN = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}


@pytest.mark.parametrize(("extra", "code", "param"), [
    ({"cachedContent": "cachedContents/1"}, "unsupported_parameter", "cachedContent"),
    ({"contents": ["hi"]}, "invalid_request", "contents"),
    ({"contents": [{"role": "user", "parts": "hi"}]}, "invalid_request", "contents[0].parts"),
    ({"generationConfig": [1]}, "invalid_request", "generationConfig"),
    ({"tools": [{"functionDeclarations": ["f"]}]}, "invalid_request", "tools[0].functionDeclarations"),
    ({"generationConfig": {"topK": 3}}, "unsupported_parameter", "generationConfig.topK"),
    ({"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}, "unsupported_parameter",
     "generationConfig.thinkingConfig"),
    ({"generationConfig": {"responseLogprobs": True}}, "unsupported_parameter", "generationConfig.responseLogprobs"),
    ({"generationConfig": {"responseMimeType": "text/x.enum"}}, "unsupported_response_format",
     "generationConfig.responseMimeType"),
    ({"tools": [{"googleSearch": {}}]}, "unsupported_tool_type", "tools[0]"),
    ({"toolConfig": {"functionCallingConfig": {"mode": "VALIDATED"}}}, "unsupported_tool_choice", "toolConfig"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "unsupported_role", "contents[0].role"),
    ({"contents": [{"role": "user", "parts": [{"executableCode": {"code": "1"}}]}]}, "unsupported_content_part",
     "contents[0].parts[0]"),
    ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "unknown_tool_call_id", "contents[0].parts[0]"),
    ({"systemInstruction": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}]}},
     "unsupported_content_part", "systemInstruction")])
def test_what_chat_cannot_express_from_gemini_is_a_400(extra, code, param):
    rejects(G.request_to_chat, {**GEN, **extra}, code=code, param=param)


# -- answers ------------------------------------------------------------------------------

def test_a_text_answer_with_thinking_and_cache_counts_becomes_a_chat_completion():
    body = response([{"text": "thinking", "thought": True}, {"text": "Hello "}, {"text": "there", "thoughtSignature": "eA=="}],
                    usageMetadata={"promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 5,
                                   "cachedContentTokenCount": 4, "totalTokenCount": 17})
    out = G.response_to_chat(body, model="alias")
    validate("CreateChatCompletionResponse", out)
    assert out["model"] == "alias" and out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion"
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}]
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                            "completion_tokens_details": {"reasoning_tokens": 5},
                            "prompt_tokens_details": {"cached_tokens": 4}}


def test_function_calls_become_tool_calls_with_json_arguments_ids_and_signatures():
    body = response([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                     {"functionCall": {"id": "g-2", "name": "get_time", "args": {}}}])
    out = G.response_to_chat(body, model="m")
    validate("CreateChatCompletionResponse", out)
    choice = out["choices"][0]
    first, second = choice["message"]["tool_calls"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert first["id"].startswith("call_") and first["id"] != G.response_to_chat(body, model="m")["choices"][0][
        "message"]["tool_calls"][0]["id"]
    assert first["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert first["extra_content"] == {"google": {"thought_signature": "c2ln"}}
    assert second["id"] == "g-2" and json.loads(second["function"]["arguments"]) == {}


@pytest.mark.parametrize(("reason", "calls", "finish"), [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
    ("MAX_TOKENS", True, "length"), ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
    ("BLOCKLIST", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"),
    ("SPII", False, "content_filter"), ("IMAGE_SAFETY", False, "content_filter"), ("OTHER", False, "stop"),
    ("MALFORMED_FUNCTION_CALL", False, "stop"), ("LANGUAGE", False, "stop")])
def test_finish_reasons(reason, calls, finish):
    parts = [{"functionCall": {"name": "f", "args": {}}}] if calls else [{"text": "x"}]
    assert G.response_to_chat(response(parts, reason), model="m")["choices"][0]["finish_reason"] == finish


def test_a_blocked_prompt_is_an_empty_content_filter_answer():
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}
    T.GenerateContentResponse.model_validate(body)
    out = G.response_to_chat(body, model="m")
    validate("CreateChatCompletionResponse", out)
    assert out["choices"][0]["message"]["content"] == "" and out["choices"][0]["finish_reason"] == "content_filter"
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4}


def test_a_chat_completion_survives_the_round_trip_through_a_gemini_response():
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Checking.",
                                                                "tool_calls": [CALL]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15,
                  "completion_tokens_details": {"reasoning_tokens": 2}}}
    gem = G.chat_to_response(completion, model="gemini-x")
    parsed = T.GenerateContentResponse.model_validate(gem)
    assert parsed.text == "Checking." and parsed.function_calls[0].id == "call_1"
    assert parsed.usage_metadata.candidates_token_count == 4 and parsed.usage_metadata.thoughts_token_count == 2
    assert gem["responseId"] == "chatcmpl-1" and gem["candidates"][0]["finishReason"] == "STOP"
    back = G.response_to_chat(gem, model="m")
    assert back["choices"][0]["message"]["content"] == "Checking."
    assert back["choices"][0]["message"]["tool_calls"] == [CALL]
    assert back["choices"][0]["finish_reason"] == "tool_calls" and back["usage"] == completion["usage"]
    for finish in ("stop", "length", "content_filter"):
        one = {**completion, "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant",
                                                                                          "content": "x"}}]}
        assert G.response_to_chat(G.chat_to_response(one, model="g"), model="m")["choices"][0]["finish_reason"] == finish


# -- streams ------------------------------------------------------------------------------

def gemini_chunk(parts: list[dict] | None = None, finish: str | None = None, usage: dict | None = None) -> SseEvent:
    cand = {"content": {"role": "model", "parts": parts or []}, "index": 0, **({"finishReason": finish} if finish else {})}
    data = {"candidates": [cand], "modelVersion": "g", "responseId": "r", **({"usageMetadata": usage} if usage else {})}
    T.GenerateContentResponse.model_validate(data)
    return SseEvent(None, data)


def run(conv, events: list[SseEvent]) -> list[dict]:
    chunks = [c for e in events for c in conv.feed(e)] + conv.end()
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    return chunks


def test_streamed_text_arrives_as_it_comes_then_the_finish_reason_and_usage():
    partial = {"promptTokenCount": 3, "totalTokenCount": 3}
    full = {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
    chunks = run(G.events_to_chat(model="alias"), [gemini_chunk([{"text": "Hel"}], usage=partial),
                                                   gemini_chunk([{"text": "lo wor"}], usage=partial),
                                                   gemini_chunk([{"text": "ld"}], "STOP", full)])
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [{"role": "assistant", "content": "Hel"},
                                                              {"content": "lo wor"}, {"content": "ld"}]
    assert chunks[3]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert chunks[4]["choices"] == [] and chunks[4]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2,
                                                                 "total_tokens": 5}
    assert chunks[0]["model"] == "alias" and chunks[0]["object"] == "chat.completion.chunk"


def test_a_streamed_function_call_is_one_tool_call_delta_with_its_whole_arguments():
    chunks = run(G.events_to_chat(model="m"), [
        gemini_chunk([{"text": "Let me check."}]),
        gemini_chunk([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}]),
        gemini_chunk([{"functionCall": {"name": "get_time", "args": {}}}], "STOP",
                     {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2})])
    first, second = chunks[1]["choices"][0]["delta"]["tool_calls"], chunks[2]["choices"][0]["delta"]["tool_calls"]
    assert first[0]["index"] == 0 and second[0]["index"] == 1 and first[0]["id"].startswith("call_")
    assert first[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert first[0]["extra_content"] == {"google": {"thought_signature": "c2ln"}}
    assert chunks[3]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_blocked_or_finishless_stream_still_ends_with_a_finish_reason():
    blocked = SseEvent(None, {"promptFeedback": {"blockReason": "SAFETY"},
                              "usageMetadata": {"promptTokenCount": 2, "totalTokenCount": 2}})
    chunks = run(G.events_to_chat(model="m"), [blocked])
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": "content_filter"}]
    assert chunks[1]["usage"]["prompt_tokens"] == 2
    chunks = run(G.events_to_chat(model="m"), [gemini_chunk([{"text": "x"}])])
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "stop"]


def test_an_error_event_mid_stream_raises_the_providers_message():
    conv = G.events_to_chat(model="m")
    conv.feed(gemini_chunk([{"text": "x"}]))
    with pytest.raises(UpstreamError) as info:
        conv.feed(SseEvent(None, {"error": {"code": 503, "message": "The model is overloaded.",
                                            "status": "UNAVAILABLE"}}))
    assert "The model is overloaded." in info.value.message and info.value.code == "service_unavailable"
    with pytest.raises(UpstreamError) as info:
        G.events_to_chat(model="m").feed(SseEvent(None, {"error": {"code": "oops", "message": "odd"}}))
    assert info.value.code == "internal_error"


def chat_chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return {**body, **extra}


CHAT_STREAM = [
    chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": "Let me "}), chat_chunk({"content": "check."}),
    chat_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
    chat_chunk({}, "tool_calls"),
    chat_chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})]


def test_chat_chunks_become_gemini_events_with_the_call_whole_in_the_last():
    conv = G.chat_to_events(model="gemini-x")
    events = [e for c in CHAT_STREAM for e in conv.feed(c)] + conv.end()
    parsed = [T.GenerateContentResponse.model_validate(e.data) for e in events]
    assert all(e.event is None for e in events)
    assert [p.text for p in parsed[:2]] == ["Let me ", "check."]
    last = parsed[-1]
    assert last.function_calls[0].name == "get_weather" and last.function_calls[0].args == {"city": "Paris"}
    assert last.function_calls[0].id == "call_1" and last.candidates[0].finish_reason == "STOP"
    assert last.usage_metadata.total_token_count == 9 and len(events) == 3
    assert {e.data["responseId"] for e in events} == {events[0].data["responseId"]}


def test_a_stream_survives_the_round_trip_through_gemini_events():
    conv = G.chat_to_events(model="gemini-x")
    events = [e for c in CHAT_STREAM for e in conv.feed(c)] + conv.end()
    chunks = run(G.events_to_chat(model="m"), events)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert text == "Let me check."
    assert [(tc["id"], tc["function"]) for tc in calls] == [("call_1", {"name": "get_weather",
                                                                       "arguments": '{"city":"Paris"}'})]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_a_streamed_refusal_is_text_and_a_call_with_bad_arguments_is_an_error_event():
    conv = G.chat_to_events(model="g")
    [event] = conv.feed(chat_chunk({"refusal": "I can't."}))
    assert T.GenerateContentResponse.model_validate(event.data).text == "I can't."
    conv.feed(chat_chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "[1]"}}]}))
    [event] = conv.end()
    assert event.data["error"]["code"] == 502


def test_a_client_stream_error_is_googles_envelope():
    [event] = G.chat_to_events(model="m").error({"message": "slow down", "type": "rate_limit_error",
                                                 "code": "rate_limit_exceeded", "param": None})
    assert event.data == {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
    [event] = G.chat_to_events(model="m").error({"error": {"message": "boom", "type": "upstream_error"}})
    assert event.data["error"]["code"] == 502 and event.data["error"]["status"] == "INTERNAL"


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "gstatus", "etype", "code"), [
    (400, "INVALID_ARGUMENT", "invalid_request_error", "invalid_argument"),
    (400, "FAILED_PRECONDITION", "invalid_request_error", "failed_precondition"),
    (401, "UNAUTHENTICATED", "authentication_error", "invalid_api_key"),
    (403, "PERMISSION_DENIED", "permission_error", "permission_denied"),
    (404, "NOT_FOUND", "invalid_request_error", "not_found"),
    (429, "RESOURCE_EXHAUSTED", "rate_limit_error", "rate_limit_exceeded"),
    (500, "INTERNAL", "api_error", "internal_error"),
    (503, "UNAVAILABLE", "api_error", "service_unavailable"),
    (504, "DEADLINE_EXCEEDED", "api_error", "timeout"),
    (500, "DATA_LOSS", "api_error", "data_loss")])
def test_googles_error_envelope_becomes_an_openai_error(status, gstatus, etype, code):
    body = {"error": {"code": status, "message": f"says {gstatus}", "status": gstatus}}
    out = G.upstream_error(status, json.dumps(body).encode())
    validate("ErrorResponse", out)
    assert out == {"error": {"message": f"says {gstatus}", "type": etype, "param": None, "code": code}}
    back = {"FAILED_PRECONDITION": "INVALID_ARGUMENT", "DATA_LOSS": "INTERNAL"}.get(gstatus, gstatus)
    assert G.error_envelope(status, out["error"]) == {"error": {"code": status, "message": f"says {gstatus}",
                                                                "status": back}}


def test_a_bad_key_list_bodies_and_foreign_bodies():
    bad_key = [{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}]
    assert G.upstream_error(400, bad_key)["error"]["code"] == "invalid_api_key"
    assert G.upstream_error(500, {"error": {"message": "no status"}})["error"]["type"] == "api_error"
    assert G.upstream_error(502, b"<html>bad gateway</html>") is None
    assert G.upstream_error(400, {"detail": "x"}) is None


def test_error_envelope_is_googles_shape():
    err = {"message": "no such model", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    assert G.error_envelope(404, err) == {"error": {"code": 404, "message": "no such model", "status": "NOT_FOUND"}}
    assert G.error_envelope(422, {"error": err})["error"]["status"] == "INVALID_ARGUMENT"
    assert G.error_envelope(502, err)["error"]["status"] == "INTERNAL"


# -- the upstream side against a real server ------------------------------------------------

@pytest.fixture(scope="module")
def fake():
    proc, port = start_fake("fake_gemini.py", "--key", KEY)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def send(fake: str, chat: dict, model: str, *, stream: bool = False, key: str = KEY) -> httpx.Response:
    w = G.wire(model=model, stream=stream, api_key=key)
    return httpx.post(f"{fake}/v1beta/{w.path}", headers=w.headers, params=w.params,
                      json=G.chat_to_request(chat, model=model), trust_env=False)


def stream_chat(fake: str, chat: dict, model: str) -> list[dict]:
    r = send(fake, chat, model, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    events = [SseEvent(None, json.loads(b[len("data: "):])) for b in r.text.split("\r\n\r\n") if b.startswith("data: ")]
    return run(G.events_to_chat(model=model), events)


def last(fake: str) -> dict:
    return httpx.get(f"{fake}/_last", trust_env=False).json()


def test_the_fake_refuses_what_the_rest_api_would(fake):
    ok = G.chat_to_request({"model": "m", "messages": USER}, model="m")
    url, head = f"{fake}/v1beta/models/echo:generateContent", {"x-goog-api-key": KEY}
    cases = [
        httpx.post(url, headers={"x-goog-api-key": "wrong"}, json=ok, trust_env=False),
        httpx.post(url, params={"key": KEY}, headers=head, json=ok, trust_env=False),
        httpx.post(f"{fake}/v1beta/models/echo:streamGenerateContent", headers=head, json=ok, trust_env=False),
        httpx.post(f"{fake}/v1/models/echo:generateContent", headers=head, json=ok, trust_env=False),
        httpx.post(f"{fake}/v1beta/chat/completions", headers=head, json=ok, trust_env=False),
        httpx.post(url, headers=head, json={"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                                            "generation_config": {"max_output_tokens": 5}}, trust_env=False),
        httpx.post(url, headers=head, json={"contents": [{"role": "system", "parts": [{"text": "x"}]}]},
                   trust_env=False),
        httpx.post(url, headers=head, json={"contents": []}, trust_env=False),
        httpx.post(url, headers=head, json={**ok, "model": "echo"}, trust_env=False),
        httpx.post(url, headers=head, json={"contents": [{"role": "user", "parts": [{"image": "x"}]}]},
                   trust_env=False),
        httpx.post(url, headers=head, json={"contents": [{"role": "user", "parts": [
            {"functionResponse": {"name": "f", "response": "Sunny"}}]}]}, trust_env=False)]
    for r in cases:
        assert r.status_code == 400, (r.request.url, r.text)
        assert set(r.json()["error"]) >= {"code", "message", "status"} and r.json()["error"]["code"] == 400
    assert httpx.post(url, headers={"Authorization": f"Bearer {KEY}"}, json=ok, trust_env=False).status_code == 401
    assert httpx.post(url, json=ok, trust_env=False).status_code == 403


def test_the_fake_echoes_our_translated_request_whole_and_streamed(fake):
    chat = {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": [{"type": "text", "text": "hello there"}, {
                                           "type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}],
            "temperature": 0.2, "stream_options": {"include_usage": True}, "user": "u1"}
    r = send(fake, chat, "echo")
    assert r.status_code == 200, r.text
    out = G.response_to_chat(r.json(), model="alias")
    validate("CreateChatCompletionResponse", out)
    assert out["choices"][0]["message"]["content"] == "echo: hello there"
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    seen = last(fake)
    assert seen["headers"]["X-Goog-Api-Key"] == KEY and "Authorization" not in seen["headers"]
    assert seen["query"] == {} and KEY not in seen["path"] and seen["body"]["systemInstruction"]["parts"] == [
        {"text": "Be brief."}]
    chunks = stream_chat(fake, chat, "echo-2")
    assert last(fake)["query"] == {"alt": ["sse"]}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "echo: hello there"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    cut = G.response_to_chat(send(fake, {**chat, "max_tokens": 2}, "echo").json(), model="m")
    assert cut["choices"][0]["finish_reason"] == "length" and cut["choices"][0]["message"]["content"] == "echo: hello"


def test_a_tool_conversation_with_signed_calls_runs_against_the_fake(fake):
    chat = {"model": "m", "tools": [WEATHER], "tool_choice": "required",
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    first = G.response_to_chat(send(fake, chat, "tool-sig").json(), model="m")
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert first["choices"][0]["finish_reason"] == "tool_calls" and json.loads(call["function"]["arguments"]) == {
        "city": "Paris"}
    history = [*chat["messages"], first["choices"][0]["message"],
               {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "clear"}'}]
    r = send(fake, {**chat, "messages": history}, "tool-sig")
    assert r.status_code == 200, r.text
    assert G.response_to_chat(r.json(), model="m")["choices"][0]["message"]["content"] == 'tool said: {"sky": "clear"}'
    unsigned = copy.deepcopy(history)
    del unsigned[1]["tool_calls"][0]["extra_content"]
    assert send(fake, {**chat, "messages": unsigned}, "tool-sig").status_code == 400  # as Gemini 3 answers
    chunks = stream_chat(fake, chat, "tool")
    [tc] = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert tc["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


def test_structured_output_blocked_prompts_errors_and_the_model_list_against_the_fake(fake):
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}, "tag": {"const": "x"}}}}}
    out = G.response_to_chat(send(fake, {"model": "m", "messages": USER, "response_format": rf}, "structured").json(),
                             model="m")
    assert json.loads(out["choices"][0]["message"]["content"]) == {"n": 1, "tag": "x"}
    blocked = G.response_to_chat(send(fake, {"model": "m", "messages": USER}, "blocked").json(), model="m")
    assert blocked["choices"][0]["finish_reason"] == "content_filter"
    r = send(fake, {"model": "m", "messages": USER}, "status-429")
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert G.upstream_error(429, r.content)["error"]["code"] == "rate_limit_exceeded"
    r = send(fake, {"model": "m", "messages": USER}, "echo-key")
    assert KEY in r.text and G.upstream_error(r.status_code, r.content)["error"]["code"] == "invalid_api_key"
    w = G.models_wire(api_key=KEY)
    r = httpx.get(f"{fake}/v1beta/{w.path}", headers=w.headers, params=w.params, trust_env=False)
    assert G.parse_models(r.json()) == ["echo", "echo-2", "tool", "tool-sig", "structured", "blocked"]


def test_googles_own_client_speaks_to_the_fake_and_its_body_reads_as_chat(fake):
    client = genai.Client(api_key=KEY, http_options=T.HttpOptions(base_url=fake, api_version="v1beta"))
    config = T.GenerateContentConfig(system_instruction="Be brief.", temperature=0.1, max_output_tokens=20,
                                     stop_sequences=["END"], response_mime_type="application/json",
                                     response_json_schema={"type": "object"})
    answer = client.models.generate_content(model="echo", contents="hello sdk", config=config)
    assert answer.text == "echo: hello sdk" and answer.usage_metadata.total_token_count == 5
    sent = last(fake)
    assert sent["path"] == "/v1beta/models/echo:generateContent" and sent["headers"]["X-Goog-Api-Key"] == KEY
    chat = G.request_to_chat(sent["body"])
    assert chat["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello sdk"}]
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "response",
                                                                              "schema": {"type": "object"}}}
    assert (chat["temperature"], chat["max_tokens"], chat["stop"]) == (0.1, 20, ["END"])
    streamed = [c.text for c in client.models.generate_content_stream(model="echo", contents="a b")]
    assert streamed == ["echo: ", "a ", "b"] and last(fake)["query"] == {"alt": ["sse"]}
    assert "models/echo" in [m.name for m in client.models.list()]
