"""The OpenAI Responses API dialect (`api_format` "openai_responses"), to and from chat.

Why: Responses clients (the openai SDK's `responses.create`, agents built on it) talk to the
gateway at `bodhi/v1/responses`, and API models may be served only through `POST {base_url}/responses`.
Both need one exact translation between Responses (input items, output items, named SSE events)
and chat completions, the gateway's own language. Pure: no I/O. The wire format follows
OpenAI's OpenAPI document (openai/openai-openapi, vendored in tests/resources/openapi/) and the
openai SDK's `types/responses/`; the stream classes live in `_responses_stream.py`.

Choices:
- Upstream, chat system/developer messages stay input messages with their role (order and
  several of them kept); `instructions` is not sent. Client side, `instructions` becomes a
  system message first.
- `store` is always `false` upstream (the gateway keeps its own store). Client side, `store`
  and `previous_response_id` are the wiring's: it expands `previous_response_id` into input
  items (`response_items`) before `request_to_chat`, which refuses one it still sees (400).
- A chat tool without `strict` is sent with `"strict": false`: Responses makes a function
  strict by default, chat does not. A Responses tool without `strict` stays unset in chat.
- An assistant turn goes upstream as an `EasyInputMessage` with string content (a chat
  refusal becomes that text), followed by one `function_call` item per tool call.
- `max_output_tokens` goes upstream as given, although OpenAI refuses values below 16 (other
  Responses servers accept them); raising it silently would change what the caller asked for.
- `chat_to_response` / `chat_to_events` take the client's Responses request (optional
  `request=`) to echo its fields (instructions, tools, text, ...) into the response object.

Dropped because the other side has no place for them: `reasoning` output items (and
reasoning items in input), annotations other than `url_citation`, `max_tool_calls` (it only
limits built-in tools, which are refused), `stream_options.include_usage` (Responses always
reports usage), chat `store`, item `id`/`status` fields in input, annotations on input messages.
Everything else that one side cannot express is an `InvalidRequestError` whose code names it.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from ..errors import InvalidRequestError, UpstreamError
from ._responses_stream import (
    ChatToEvents,
    EventsToChat,
    finish_for,
    message_items,
    new_id,
    response_object,
    status_for,
    usage_to_chat,
    usage_to_responses,
)
from .base import UpstreamWire

__all__ = ["NAME", "chat_to_events", "chat_to_request", "chat_to_response", "error_envelope", "events_to_chat",
           "input_items", "models_wire", "parse_models", "request_to_chat", "response_items", "response_object",
           "response_to_chat", "upstream_error", "wire"]

NAME = "openai_responses"

# Same name and meaning in a chat request and a Responses request: copied as they are.
_SHARED = ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
           "prompt_cache_options", "service_tier", "parallel_tool_calls", "metadata", "moderation")
# Responses request fields with no chat counterpart, accepted only at their default value.
_DEFAULTS: dict[str, tuple[Any, ...]] = {"truncation": ("disabled",), "background": (False,), "include": ([],),
                                         "top_logprobs": (0,)}
_REFUSED = ("conversation", "prompt", "context_management")
# Chat request fields with no Responses counterpart, accepted only at their default value.
_CHAT_DEFAULTS: dict[str, tuple[Any, ...]] = {"n": (1,), "stop": ([], ""), "logprobs": (False,), "top_logprobs": (0,),
                                              "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0),
                                              "logit_bias": ({},), "modalities": (["text"],)}
_CHAT_REFUSED = ("seed", "audio", "prediction", "web_search_options", "functions", "function_call")


def _unsupported(field: str, why: str, code: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(f"'{field}' {why}", param=field, code=code or f"unsupported_{field.split('.')[-1]}")


def _need(obj: dict[str, Any], key: str, where: str = "", kind: type = str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        name = f"{where}.{key}" if where else key
        raise InvalidRequestError(f"'{name}' is required and must be a {kind.__name__}.", param=name,
                                  code="invalid_value")
    return value


# -- client side: a Responses request in, chat out ------------------------------------------
def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `input` as a list of items (a string is one user message; none is [])."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(i, dict) for i in value):
        return [dict(i) for i in value]
    raise InvalidRequestError("'input' must be a string or a list of items.", param="input", code="invalid_value")


def request_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request (as `responses.create` sends it) as a chat request body."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_value")
    try:
        return _request_to_chat(body)
    except (AttributeError, TypeError, KeyError) as exc:  # a field of the wrong JSON type
        raise InvalidRequestError(f"Malformed Responses request ({type(exc).__name__}: {exc}).",
                                  code="invalid_value") from exc


def _request_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("previous_response_id") is not None:
        raise InvalidRequestError("'previous_response_id' must be expanded into 'input' before translation.",
                                  param="previous_response_id", code="previous_response_id_not_expanded")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequestError("'instructions' must be a string.", param="instructions", code="invalid_value")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    messages += _items_to_messages(input_items(body))
    chat: dict[str, Any] = {"model": _need(body, "model"), "messages": messages}
    for key, value in body.items():
        if key in ("model", "input", "instructions", "previous_response_id", "store", "max_tool_calls") or value is None:
            continue
        if key in _SHARED:
            chat[key] = value
        elif key == "max_output_tokens":
            chat["max_completion_tokens"] = value
        elif key == "tools":
            chat["tools"] = [_tool_to_chat(t, f"tools[{i}]") for i, t in enumerate(value)]
        elif key == "tool_choice":
            chat["tool_choice"] = _tool_choice_to_chat(value)
        elif key == "text":
            chat.update(_text_to_chat(value))
        elif key == "reasoning":
            chat.update(_reasoning_to_chat(value))
        elif key == "stream":
            chat["stream"] = bool(value)
            if value:
                chat["stream_options"] = {**chat.get("stream_options", {}), "include_usage": True}
        elif key == "stream_options":
            if body.get("stream") and value.get("include_obfuscation") is not None:
                chat["stream_options"] = {**chat.get("stream_options", {}),
                                          "include_obfuscation": value["include_obfuscation"]}
        elif key in _DEFAULTS:
            if value not in _DEFAULTS[key]:
                raise _unsupported(key, f"= {value!r} has no chat completions equivalent.")
        elif key in _REFUSED:
            raise _unsupported(key, "has no chat completions equivalent.")
        else:
            raise InvalidRequestError(f"Unknown or unsupported parameter '{key}'.", param=key,
                                      code="unsupported_parameter")
    return chat


def _items_to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where, kind = f"input[{i}]", item.get("type", "message")
        if kind == "message":
            messages.append(_message_to_chat(item, where))
        elif kind == "function_call":
            call = {"id": _need(item, "call_id", where), "type": "function",
                    "function": {"name": _need(item, "name", where), "arguments": item.get("arguments") or ""}}
            if messages and messages[-1]["role"] == "assistant":  # the same turn: one chat message
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": _need(item, "call_id", where),
                             "content": _tool_output_to_chat(item.get("output"), where)})
        elif kind != "reasoning":
            raise _unsupported(f"{where}.type", f"= {kind!r}: only message, function_call and function_call_output "
                               "items translate to chat completions.", code="unsupported_input_item")
    return messages


def _message_to_chat(item: dict[str, Any], where: str) -> dict[str, Any]:
    role, content = item.get("role"), item.get("content")
    if role == "assistant":
        if isinstance(content, str):
            return {"role": "assistant", "content": content}
        parts = content if isinstance(content, list) else []
        text = [p.get("text", "") for p in parts if p.get("type") in ("output_text", "input_text")]
        refusal = [p.get("refusal", "") for p in parts if p.get("type") == "refusal"]
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
        if refusal:
            message["refusal"] = "".join(refusal)
        return message
    if role not in ("user", "system", "developer"):
        raise _unsupported(f"{where}.role", f"= {role!r} is not a message role.", code="invalid_role")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequestError(f"'{where}.content' must be a string or a list.", param=f"{where}.content",
                                  code="invalid_value")
    chat_parts = [_input_part_to_chat(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
    if role != "user" and any(p["type"] != "text" for p in chat_parts):
        raise _unsupported(f"{where}.content", "of a system message can only be text in chat completions.",
                           code="unsupported_content_part")
    return {"role": role, "content": chat_parts}


def _input_part_to_chat(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": _need(part, "text", where)}
    if kind == "input_image":
        if not part.get("image_url"):
            raise _unsupported(f"{where}.file_id", "images have no chat completions equivalent: send image_url.",
                               code="unsupported_image_file_id")
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") not in (None, "auto", "low", "high"):
            raise _unsupported(f"{where}.detail", f"= {part['detail']!r} has no chat completions equivalent.",
                               code="unsupported_image_detail")
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url"):
            raise _unsupported(f"{where}.file_url", "has no chat completions equivalent: send file_data.",
                               code="unsupported_file_url")
        return {"type": "file", "file": {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k)}}
    raise _unsupported(f"{where}.type", f"= {kind!r} has no chat completions equivalent.",
                       code="unsupported_content_part")


def _tool_output_to_chat(output: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(p, dict) and p.get("type") == "input_text" for p in output):
        return [{"type": "text", "text": p.get("text", "")} for p in output]
    raise _unsupported(f"{where}.output", "must be a string or input_text parts in chat completions.",
                       code="unsupported_tool_output")


def _tool_to_chat(tool: dict[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise _unsupported(f"{where}.type", f"= {tool.get('type')!r}: only function tools translate to chat "
                           "completions.", code="unsupported_tool_type")
    if "function" in tool:
        raise InvalidRequestError(f"'{where}' is nested under 'function': Responses tools are flat "
                                  "({type, name, description, parameters, strict}).", param=where, code="invalid_tool")
    extra = [k for k, v in tool.items() if k not in ("type", "name", "description", "parameters", "strict") and v]
    if extra:
        raise _unsupported(f"{where}.{extra[0]}", "has no chat completions equivalent.", code="unsupported_tool_field")
    fn = {"name": _need(tool, "name", where)}
    fn.update({k: tool[k] for k in ("description", "parameters", "strict") if tool.get(k) is not None})
    return {"type": "function", "function": fn}


def _tool_choice_to_chat(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": _need(choice, "name", "tool_choice")}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools" and all(
            t.get("type") == "function" for t in choice.get("tools") or []):
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": [
            {"type": "function", "function": {"name": t.get("name")}} for t in choice.get("tools") or []]}}
    raise _unsupported("tool_choice", f"= {choice!r} has no chat completions equivalent.")


def _text_to_chat(text: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in text.items():
        if key == "verbosity" and value is not None:
            out["verbosity"] = value
        elif key == "format" and value is not None:
            kind = value.get("type")
            if kind in ("text", "json_object"):
                out["response_format"] = {"type": kind}
            elif kind == "json_schema":
                schema = {"name": _need(value, "name", "text.format"), "schema": value.get("schema") or {}}
                schema.update({k: value[k] for k in ("strict", "description") if value.get(k) is not None})
                out["response_format"] = {"type": "json_schema", "json_schema": schema}
            else:
                raise _unsupported("text.format", f"= {kind!r} has no chat completions equivalent.")
        elif value is not None:
            raise _unsupported(f"text.{key}", "has no chat completions equivalent.")
    return out


def _reasoning_to_chat(reasoning: dict[str, Any]) -> dict[str, Any]:
    for key, value in reasoning.items():
        if key != "effort" and value is not None:
            raise _unsupported(f"reasoning.{key}", "has no chat completions equivalent (only reasoning.effort).",
                               code=f"unsupported_reasoning_{key}")
    return {"reasoning_effort": reasoning["effort"]} if reasoning.get("effort") is not None else {}


# -- client side: chat out, a Responses object back -----------------------------------------
def chat_to_response(completion: dict[str, Any], *, model: str,
                     request: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `chat.completion` as a Responses `response` object (fields echoed from `request`)."""
    choices = completion.get("choices") or []
    if not choices:
        raise UpstreamError("The chat completion has no choices to turn into a response.")
    choice = choices[0]
    status, reason = status_for(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    return response_object(response_id=new_id("resp_"), created_at=completion.get("created"), model=model,
                           status=status, output=message_items(choice.get("message") or {}, item_status),
                           usage=usage_to_responses(completion.get("usage")), incomplete_reason=reason,
                           request=request)


def response_items(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's output as input items for a follow-up turn (`previous_response_id`):
    messages and function calls as they are; reasoning items left out (chat cannot replay them)."""
    return [copy.deepcopy(i) for i in response.get("output") or [] if i.get("type") in ("message", "function_call")]


def chat_to_events(*, model: str, request: dict[str, Any] | None = None) -> ChatToEvents:
    """Chat chunks in, Responses stream events out; `.response` is the final object after `end()`."""
    return ChatToEvents(model=model, request=request)


def error_envelope(status: int, error: dict[str, Any]) -> dict[str, Any]:
    """Responses errors use the OpenAI envelope: {"error": {message, type, param, code}}."""
    return {"error": {"message": str(error.get("message") or f"HTTP {status}"),
                      "type": error.get("type") or ("invalid_request_error" if 400 <= status < 500 else "server_error"),
                      "param": error.get("param"), "code": error.get("code")}}


# -- upstream side: chat in, a Responses request out ------------------------------------------
def chat_to_request(chat: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A chat request body as the body of `POST {base_url}/responses` (always `store: false`)."""
    body: dict[str, Any] = {"model": model, "input": _messages_to_items(chat.get("messages"))}
    for key, value in chat.items():
        if key in ("model", "messages", "store") or value is None:
            continue
        if key in _SHARED:
            body[key] = value
        elif key in ("max_tokens", "max_completion_tokens"):
            if key == "max_completion_tokens" or chat.get("max_completion_tokens") is None:
                body["max_output_tokens"] = value
        elif key == "tools":
            body["tools"] = [_tool_to_responses(t, f"tools[{i}]") for i, t in enumerate(value)]
        elif key == "tool_choice":
            body["tool_choice"] = _tool_choice_to_responses(value)
        elif key == "response_format":
            body.setdefault("text", {})["format"] = _format_to_responses(value)
        elif key == "verbosity":
            body.setdefault("text", {})["verbosity"] = value
        elif key == "reasoning_effort":
            body["reasoning"] = {"effort": value}
        elif key == "stream":
            body["stream"] = bool(value)
        elif key == "stream_options":
            if chat.get("stream") and value.get("include_obfuscation") is not None:
                body["stream_options"] = {"include_obfuscation": value["include_obfuscation"]}
        elif key in _CHAT_DEFAULTS:
            if value not in _CHAT_DEFAULTS[key]:
                raise _unsupported(key, f"= {value!r} has no Responses API equivalent.")
        elif key in _CHAT_REFUSED:
            raise _unsupported(key, "has no Responses API equivalent.")
        else:
            raise InvalidRequestError(f"Unknown or unsupported parameter '{key}'.", param=key,
                                      code="unsupported_parameter")
    body["store"] = False
    return body


def _messages_to_items(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list.", param="messages", code="invalid_value")
    items: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where, role = f"messages[{i}]", m.get("role")
        if role in ("system", "developer", "user"):
            items.append({"type": "message", "role": role, "content": _content_to_input(m.get("content"), where)})
        elif role == "assistant":
            for key in ("function_call", "audio"):
                if m.get(key):
                    raise _unsupported(f"{where}.{key}", "has no Responses API equivalent.")
            text, calls = _assistant_text(m, where), m.get("tool_calls") or []
            if text or not calls:
                items.append({"type": "message", "role": "assistant", "content": text})
            for call in calls:
                fn = call.get("function") or {}
                items.append({"type": "function_call", "call_id": _need(call, "id", f"{where}.tool_calls"),
                              "name": _need(fn, "name", f"{where}.tool_calls.function"),
                              "arguments": fn.get("arguments") or ""})
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": _need(m, "tool_call_id", where),
                          "output": _tool_content(m.get("content"), where)})
        else:
            raise _unsupported(f"{where}.role", f"= {role!r} has no Responses API equivalent.", code="unsupported_role")
    return items


def _assistant_text(message: dict[str, Any], where: str) -> str:
    content = message.get("content")
    if isinstance(content, list):
        bad = [p.get("type") for p in content if p.get("type") not in ("text", "refusal")]
        if bad:
            raise _unsupported(f"{where}.content", f"part {bad[0]!r} has no Responses API equivalent.",
                               code="unsupported_content_part")
        content = "".join(p.get("text") or p.get("refusal") or "" for p in content)
    return content or message.get("refusal") or ""


def _content_to_input(content: Any, where: str) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind, at = part.get("type"), f"{where}.content[{j}]"
        if kind == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            image = {"url": image} if isinstance(image, str) else image
            parts.append({"type": "input_image", "image_url": _need(image, "url", f"{at}.image_url"),
                          "detail": image.get("detail") or "auto"})
        elif kind == "file":
            f = part.get("file") or {}
            parts.append({"type": "input_file", **{k: f[k] for k in ("file_data", "file_id", "filename") if f.get(k)}})
        else:
            raise _unsupported(f"{at}.type", f"= {kind!r} has no Responses API equivalent.",
                               code="unsupported_content_part")
    return parts


def _tool_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    if all(p.get("type") == "text" for p in content):
        return [{"type": "input_text", "text": p.get("text", "")} for p in content]
    raise _unsupported(f"{where}.content", "of a tool message can only be text in the Responses API.",
                       code="unsupported_content_part")


def _tool_to_responses(tool: dict[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise _unsupported(f"{where}.type", f"= {tool.get('type')!r}: only function tools translate.",
                           code="unsupported_tool_type")
    fn = tool.get("function") or {}
    out = {"type": "function", "name": _need(fn, "name", f"{where}.function")}
    if fn.get("description") is not None:
        out["description"] = fn["description"]
    # Responses makes a function strict unless told otherwise; chat does not.
    return {**out, "parameters": fn.get("parameters"), "strict": bool(fn.get("strict"))}


def _tool_choice_to_responses(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "name": _need(choice.get("function") or {}, "name", "tool_choice.function")}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"),
                "tools": [{"type": "function", "name": (t.get("function") or {}).get("name")}
                          for t in allowed.get("tools") or []]}
    raise _unsupported("tool_choice", f"= {choice!r} has no Responses API equivalent.")


def _format_to_responses(fmt: dict[str, Any]) -> dict[str, Any]:
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        js = fmt.get("json_schema") or {}
        out = {"type": "json_schema", "name": _need(js, "name", "response_format.json_schema"),
               "schema": js.get("schema") or {}}
        return {**out, **{k: js[k] for k in ("strict", "description") if js.get(k) is not None}}
    raise _unsupported("response_format", f"= {kind!r} has no Responses API equivalent.")


def response_to_chat(response: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A provider's Responses `response` object as a `chat.completion`."""
    status = response.get("status")
    if status == "failed":
        error = response.get("error") or {}
        raise UpstreamError(f"The provider's response failed: {error.get('message') or 'no reason given'}")
    if status not in ("completed", "incomplete"):
        raise UpstreamError(f"The provider's response is {status!r}, not completed.")
    text: list[str] = []
    refusal: list[str] = []
    annotations: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or []:
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    annotations += [{"type": "url_citation", "url_citation": {
                        k: a.get(k) for k in ("start_index", "end_index", "url", "title")}}
                        for a in part.get("annotations") or [] if a.get("type") == "url_citation"]
                    text.append(part.get("text", ""))
                elif part.get("type") == "refusal":
                    refusal.append(part.get("refusal", ""))
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id") or new_id("call_"), "type": "function",
                          "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or ""}})
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(text) if text else (None if calls or refusal else ""),
                               "refusal": "".join(refusal) if refusal else None}
    if calls:
        message["tool_calls"] = calls
    if annotations:
        message["annotations"] = annotations
    reason = (response.get("incomplete_details") or {}).get("reason")
    out: dict[str, Any] = {"id": new_id("chatcmpl-"), "object": "chat.completion",
                           "created": int(response.get("created_at") or time.time()), "model": model,
                           "choices": [{"index": 0, "message": message, "logprobs": None,
                                        "finish_reason": finish_for(status, reason, bool(calls))}]}
    usage = usage_to_chat(response.get("usage"))
    if usage:
        out["usage"] = usage
    return out


def events_to_chat(*, model: str) -> EventsToChat:
    """A provider's Responses events in, chat chunks out."""
    return EventsToChat(model=model)


def upstream_error(status: int, body: Any) -> dict[str, Any] | None:
    """The OpenAI error object ({message, type, param, code}) in a provider's error body (bytes,
    text or parsed JSON; the envelope or a stream `error` event), else None."""
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if not isinstance(body, dict):
        return None
    err = body.get("error") if isinstance(body.get("error"), dict) else body if body.get("type") == "error" else None
    if err is None or not isinstance(err.get("message"), str):
        return None
    kind = err.get("type") if err.get("type") not in (None, "error") else None
    out: dict[str, Any] = error_envelope(status, {**err, "type": kind})["error"]
    return out


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def wire(*, model: str, stream: bool, api_key: str | None) -> UpstreamWire:
    """`POST {base_url}/responses` with a bearer key; streaming is `"stream": true` in the body."""
    return UpstreamWire(path="responses", headers=_auth(api_key), params={})


def models_wire(*, api_key: str | None) -> UpstreamWire:
    """`GET {base_url}/models` with a bearer key."""
    return UpstreamWire(path="models", headers=_auth(api_key), params={})


def parse_models(body: Any) -> list[str]:
    """The model ids of an OpenAI model list ({"object": "list", "data": [{"id", ...}]})."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise UpstreamError("The provider's model list is not {\"object\": \"list\", \"data\": [...]}.")
    return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
