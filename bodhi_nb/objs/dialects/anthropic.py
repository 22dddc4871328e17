"""The Anthropic Messages dialect (`api_format: "anthropic"`), translated to and from chat.

Upstream side, for an API model whose base_url is e.g. `https://api.anthropic.com/v1`:
`POST {base_url}/messages` with `x-api-key`, `anthropic-version: 2023-06-01` and a JSON body;
`GET {base_url}/models?limit=1000` lists models. The version is pinned: 2026-10-21 removes
`temperature`, `top_p` and `top_k`, which chat bodies carry, and 2023-06-01 has everything
used here (structured output as `output_config.format` included).

`chat_to_request`:
- `max_tokens` is required by Anthropic: `max_completion_tokens`, else `max_tokens`, else
  `DEFAULT_MAX_TOKENS` (4096).
- system and developer messages, wherever they stand, become the top-level `system` (one
  string, or text blocks for several); whitespace-only ones carry nothing and are left out,
  as are empty turns (Anthropic refuses empty text).
- `tool` messages become `tool_result` blocks of a user turn, assistant `tool_calls` become
  `tool_use` blocks (arguments must be a JSON object), and consecutive turns of one role
  are merged (Anthropic wants user and assistant to alternate).
- an image `data:` URL becomes a base64 source, an http(s) URL a url source (`detail` has no
  Anthropic form and is not sent); a `file` part with PDF `file_data` becomes a document.
- `stop` -> `stop_sequences`; `temperature`, `top_p` and the common `top_k` extension as
  they are; `user` (or `safety_identifier`) -> `metadata.user_id`; `tools` -> `{name,
  description, input_schema, strict}`; `tool_choice` auto/none/required/named ->
  auto/none/any/tool; `parallel_tool_calls: false` -> `disable_parallel_tool_use`.
- `response_format` json_schema -> `output_config.format`; `json_object` has no Anthropic
  form (its structured output needs a schema): 400 `response_format_not_supported`.
  `reasoning_effort` low..xhigh -> `output_config.effort`.
- `seed`, `n` > 1, `logprobs`, `top_logprobs`, non-zero penalties, `logit_bias`, audio,
  `web_search_options`, `verbosity`, legacy `functions` and any unknown field: 400
  `unsupported_parameter` naming them (null, `n: 1`, zero penalties and the like are fine).
  Not sent, as Anthropic has no place for them and they change no answer: `stream_options`
  (usage always comes), `metadata`, `store: false`, `service_tier`, `prediction` and the
  prompt-cache hints.

Client side (`bodhi/v1/messages`): `request_to_chat` reads a Messages body as the anthropic
SDK sends it; `chat_to_response` and `chat_to_events` answer in Anthropic's shapes. Streams
and the tables both sides share live in `_anthropic_stream.py`.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..errors import InvalidRequestError, UpstreamError
from ._anthropic_stream import (
    ERROR_STATUS,
    FINISH_TO_STOP,
    STOP_TO_FINISH,
    ChatToEvents,
    EventsToChat,
    anthropic_usage,
    as_object,
    chat_usage,
    error_envelope,
    message_id,
)
from .base import UpstreamWire

__all__ = [
    "API_VERSION", "DEFAULT_MAX_TOKENS", "NAME", "ChatToEvents", "EventsToChat", "chat_to_events", "chat_to_request",
    "chat_to_response", "error_envelope", "events_to_chat", "models_wire", "parse_models", "request_to_chat",
    "response_to_chat", "upstream_error", "wire",
]

NAME = "anthropic"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # sent when a chat body sets no limit; Anthropic requires one
MODELS_PAGE = "1000"  # the largest page GET /v1/models serves (its default is 20)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[^,;]*)*),(.*)", re.DOTALL)
_EFFORTS = ("low", "medium", "high", "xhigh")
_UNSUPPORTED = "unsupported_content"


def _bad(where: str, message: str, code: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(f"{where}: {message}", param=where, code=code)


def _unsupported(names: list[str], why: str = "has no equivalent in the Anthropic Messages API") -> InvalidRequestError:
    listed = ", ".join(f"`{n}`" for n in names)
    return InvalidRequestError(f"{listed} {why}; leave {'it' if len(names) == 1 else 'them'} out for this model.",
                               param=names[0], code="unsupported_parameter")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _arguments(value: Any) -> dict[str, Any] | None:
    """Tool call arguments (a JSON string) as the object Anthropic's `input` must be, else None."""
    try:
        args = json.loads(value or "{}")
    except (TypeError, ValueError):
        return None
    return args if isinstance(args, dict) else None


def _dumps(value: Any) -> str:
    return json.dumps(value or {}, separators=(",", ":"))


# -- upstream side: chat -> Anthropic request ------------------------------------------------

_CHAT_MAPPED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop",
                "stream", "tools", "tool_choice", "parallel_tool_calls", "user", "safety_identifier",
                "response_format", "reasoning_effort"}
_CHAT_IGNORED = {"stream_options", "metadata", "service_tier", "prediction", "prompt_cache_key",
                 "prompt_cache_retention"}
_NEUTRAL = {  # a value of a field without Anthropic form that asks for nothing
    "n": lambda v: v == 1, "logprobs": lambda v: v is False, "store": lambda v: v is False,
    "presence_penalty": lambda v: v == 0, "frequency_penalty": lambda v: v == 0, "top_logprobs": lambda v: v == 0,
    "logit_bias": lambda v: v == {}, "modalities": lambda v: v == ["text"],
}


def _neutral(name: str, value: Any) -> bool:
    if value is None:
        return True
    if name not in _NEUTRAL or (isinstance(value, bool) and name not in ("logprobs", "store")):
        return False
    check: Any = _NEUTRAL[name]
    return bool(check(value))


def _texts(content: Any, where: str) -> list[str]:
    """The texts of a system, developer or tool message: its string, or its text parts."""
    if content is None or isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or a list of parts.")
    if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        raise _bad(f"{where}.content", "only text parts are accepted here.", _UNSUPPORTED)
    return [p["text"] for p in content if p["text"]]


def _data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a base64 `data:` URL, else None."""
    m = _DATA_URL.fullmatch(url)
    return (m.group(1).lower(), m.group(3)) if m and ";base64" in m.group(2).lower() else None


def _user_block(part: Any, where: str) -> dict[str, Any] | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]} if part["text"] else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        parsed = _data_url(url) if isinstance(url, str) else None
        if parsed and parsed[0] in IMAGE_TYPES:
            return {"type": "image", "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]}}
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        raise _bad(f"{where}.image_url", f"an image is an http(s) URL or a base64 data: URL of {', '.join(IMAGE_TYPES)} "
                   "for an Anthropic model.", _UNSUPPORTED)
    if kind == "file":
        file = as_object(part.get("file"))
        parsed = _data_url(file["file_data"]) if isinstance(file.get("file_data"), str) else None
        if not parsed or parsed[0] != "application/pdf":
            raise _bad(f"{where}.file", "an Anthropic model reads a file sent inline as `file_data`, a base64 data: "
                       "URL of a PDF (not `file_id`).", _UNSUPPORTED)
        block = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": parsed[1]}}
        return {**block, "title": file["filename"]} if isinstance(file.get("filename"), str) else block
    raise _bad(where, f"a `{kind}` part has no Anthropic form (text, image_url and file do).", _UNSUPPORTED)


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or a list of parts.")
    return [b for i, part in enumerate(content) if (b := _user_block(part, f"{where}.content.{i}"))]


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    for field in ("audio", "function_call"):
        if message.get(field) is not None:
            raise _unsupported([f"{where}.{field}"])
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
    if not isinstance(parts, list):
        raise _bad(f"{where}.content", "must be a string or a list of parts.")
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("refusal" if kind == "refusal" else "text") if kind in ("text", "refusal") else None
        if not isinstance(text, str):
            raise _bad(f"{where}.content.{i}", "assistant content parts are text or refusal.", _UNSUPPORTED)
        if text:
            blocks.append({"type": "text", "text": text})
    for j, call in enumerate(map(as_object, message.get("tool_calls") or [])):
        fn = as_object(call.get("function"))
        if call.get("type", "function") != "function" or not isinstance(fn.get("name"), str):
            raise _bad(f"{where}.tool_calls.{j}", "must be a function call with a name.")
        args = _arguments(fn.get("arguments"))
        if args is None:
            raise _bad(f"{where}.tool_calls.{j}.function.arguments", "must be a JSON object for an Anthropic model.")
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn["name"], "input": args})
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(message.get("tool_call_id"), str):
        raise _bad(f"{where}.tool_call_id", "is required.")
    texts = _texts(message.get("content"), where)
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    if texts:
        block["content"] = texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]
    return block


def _convert_messages(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Chat messages as (system texts, Anthropic turns with alternating roles)."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "must be a non-empty list.")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system += [t for t in _texts(message.get("content"), where) if t.strip()]
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise _bad(f"{where}.role", "must be system, developer, user, assistant or tool.")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise _bad("messages", "an Anthropic model needs at least one user or assistant message with content.")
    for turn in turns:
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]
    return system, turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools if isinstance(tools, list) else [None]):
        fn = as_object(tool.get("function") if isinstance(tool, dict) else None)
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn.get("name"), str):
            raise _bad(f"tools.{i}", "only function tools with a name can be sent to an Anthropic model.",
                       "tool_not_supported")
        spec = {"name": fn["name"], "description": fn.get("description"),
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}, "strict": fn.get("strict")}
        out.append({k: v for k, v in spec.items() if v is not None and (k != "strict" or v is True)})
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        picked: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice in ("auto", "none", "required"):
        picked = {"type": "any" if choice == "required" else choice}
    elif isinstance(choice, dict) and isinstance(as_object(choice.get("function")).get("name"), str):
        picked = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _bad("tool_choice", "must be auto, none, required or a named function.", "unsupported_parameter")
    if picked is not None and parallel is False and picked["type"] != "none":
        picked["disable_parallel_tool_use"] = True
    return picked


def _output_config(chat: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    rf = chat.get("response_format")
    kind = as_object(rf).get("type", "?") if rf is not None else None
    if kind == "json_schema":
        schema = as_object(as_object(rf).get("json_schema")).get("schema")
        if not isinstance(schema, dict):
            raise _bad("response_format", "json_schema.schema must be a JSON schema object.")
        config["format"] = {"type": "json_schema", "schema": schema}
    elif kind == "json_object":
        raise _bad("response_format", "an Anthropic model has no free-form JSON mode: its structured output needs a "
                   "schema. Send response_format as json_schema instead.", "response_format_not_supported")
    elif kind not in (None, "text"):
        raise _bad("response_format", "must be text or json_schema for an Anthropic model.",
                   "response_format_not_supported")
    effort = chat.get("reasoning_effort")
    if effort in _EFFORTS:
        config["effort"] = effort
    elif effort not in (None, "none"):
        raise _bad("reasoning_effort", f"must be one of {', '.join(_EFFORTS)} for an Anthropic model.",
                   "unsupported_parameter")
    return config


def _max_tokens(chat: dict[str, Any]) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = chat.get(field)
        if value is not None:
            if not _is_int(value) or value < 0:
                raise _bad(field, "must be a non-negative integer.")
            return int(value)
    return DEFAULT_MAX_TOKENS


def chat_to_request(chat: dict[str, Any], *, model: str) -> dict[str, Any]:
    """The Anthropic Messages body for a chat body, sent to upstream `model` (see the module
    docstring for each field)."""
    bad = [k for k, v in chat.items() if k not in _CHAT_MAPPED | _CHAT_IGNORED and not _neutral(k, v)]
    if bad:
        raise _unsupported(bad)
    system, turns = _convert_messages(chat.get("messages"))
    body: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(chat), "messages": turns}
    if system:
        body["system"] = system[0] if len(system) == 1 else [{"type": "text", "text": t} for t in system]
    stop = chat.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("stop", "must be a string or a list of strings.")
    if stops:
        body["stop_sequences"] = stops
    body |= {f: chat[f] for f in ("temperature", "top_p", "top_k") if chat.get(f) is not None}
    if chat.get("stream"):
        body["stream"] = True
    if chat.get("tools"):
        body["tools"] = _tools(chat["tools"])
        choice = _tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    user = chat.get("user") if chat.get("user") is not None else chat.get("safety_identifier")
    if user is not None:
        body["metadata"] = {"user_id": str(user)}
    if config := _output_config(chat):
        body["output_config"] = config
    return body


# -- upstream side: Anthropic answer -> chat -------------------------------------------------

def response_to_chat(response: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A `chat.completion` for an Anthropic Message: text blocks joined into `content`,
    tool_use blocks as `tool_calls` (input as a JSON string), thinking and server-tool blocks
    left out; stop_reason as finish_reason (end_turn/stop_sequence/pause_turn -> stop,
    max_tokens -> length, tool_use -> tool_calls, refusal -> content_filter)."""
    content = response.get("content") if isinstance(response, dict) else None
    if not isinstance(content, list) or response.get("type") != "message":
        raise UpstreamError("The Anthropic upstream answered with something that is not a Message.",
                            code="upstream_bad_response")
    blocks = [as_object(b) for b in content]
    texts = [b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
    calls = [{"id": b.get("id"), "type": "function", "function": {"name": b.get("name"), "arguments": _dumps(b.get("input"))}}
             for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                               "refusal": None, **({"tool_calls": calls} if calls else {})}
    finish = STOP_TO_FINISH.get(str(response.get("stop_reason")), "stop")
    return {"id": response.get("id") or "chatcmpl-anthropic", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": chat_usage(as_object(response.get("usage")))}


def events_to_chat(*, model: str) -> EventsToChat:
    """A fresh translator of one Anthropic stream into chat chunks."""
    return EventsToChat(model=model)


def upstream_error(status: int, body: Any) -> dict[str, Any] | None:
    """The OpenAI error object (`message`, `type`, `param`, `code`) for an Anthropic error body
    (`{"type": "error", "error": {"type", "message"}, "request_id"}`, as bytes, text or parsed);
    None when the body is not one. The type stays Anthropic's (rate_limit_error,
    overloaded_error, ...), or follows the status when the body names none."""
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    err = as_object(body).get("error")
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return None
    etype = err.get("type") if err.get("type") in ERROR_STATUS else error_envelope(status, {})["error"]["type"]
    return {"message": err["message"], "type": etype, "param": None, "code": None}


def _headers(api_key: str | None) -> dict[str, str]:
    return {"anthropic-version": API_VERSION, **({"x-api-key": api_key} if api_key else {})}


def wire(*, model: str, stream: bool, api_key: str | None) -> UpstreamWire:
    """`POST {base_url}/messages`, the key in `x-api-key`; a stream is asked for in the body."""
    return UpstreamWire(path="messages", headers={**_headers(api_key), "content-type": "application/json"}, params={})


def models_wire(*, api_key: str | None) -> UpstreamWire:
    """`GET {base_url}/models`, one page of up to 1000 models."""
    return UpstreamWire(path="models", headers=_headers(api_key), params={"limit": MODELS_PAGE})


def parse_models(body: Any) -> list[str]:
    """The model ids of a `GET /v1/models` answer, in its order."""
    data = as_object(body).get("data")
    if not isinstance(data, list):
        raise UpstreamError("The Anthropic upstream's model list has no `data` list.", code="upstream_bad_response")
    return [m["id"] for m in map(as_object, data) if isinstance(m.get("id"), str)]


# -- client side: Anthropic request -> chat, chat answer -> Anthropic -------------------------

_MESSAGES_HANDLED = {"model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p", "top_k",
                     "stream", "tools", "tool_choice", "metadata", "output_config", "output_format", "thinking"}
_MESSAGES_IGNORED = {"cache_control", "service_tier"}  # prompt caching and capacity: nothing to ask of chat


def _blocks_of(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise _bad(f"{where}.content", "must be a string or a list of content blocks.")


def _chat_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A text, image or document block of a user turn as a chat content part."""
    kind, source = block.get("type"), as_object(block.get("source"))
    if kind == "text" and isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    if kind == "image" and source.get("type") == "base64" and isinstance(source.get("data"), str):
        return {"type": "image_url", "image_url": {"url": f"data:{source.get('media_type')};base64,{source['data']}"}}
    if kind == "image" and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if kind == "document" and source.get("type") == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if kind == "document" and source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        title = block["title"] if isinstance(block.get("title"), str) else "document.pdf"
        return {"type": "file", "file": {"filename": title, "file_data": f"data:application/pdf;base64,{source.get('data')}"}}
    raise _bad(where, f"a `{kind}` block (with this source) cannot be sent to a chat model; text, base64 or url "
               "images, and text or base64 PDF documents can.", _UNSUPPORTED)


def _tool_message(block: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(block.get("tool_use_id"), str):
        raise _bad(f"{where}.tool_use_id", "is required.")
    text = "\n".join(_texts(block.get("content"), where))  # a chat tool message holds text only
    if block.get("is_error") is True:  # chat tool messages have no error flag: the model reads it
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}


def _chat_user(content: Any, where: str) -> list[dict[str, Any]]:
    """One user turn as chat messages: its tool results as tool messages, the rest as user
    messages, in order."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(_blocks_of(content, where)):
        if block.get("type") != "tool_result":
            parts.append(_chat_part(block, f"{where}.content.{i}"))
            continue
        if parts:
            out.append({"role": "user", "content": parts})
            parts = []
        out.append(_tool_message(block, f"{where}.content.{i}"))
    return out + ([{"role": "user", "content": parts}] if parts else [])


def _chat_assistant(content: Any, where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(_blocks_of(content, where)):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use" and isinstance(block.get("id"), str) and isinstance(block.get("name"), str):
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": _dumps(block.get("input"))}})
        elif kind not in ("thinking", "redacted_thinking"):  # earlier reasoning: a chat model takes none back
            raise _bad(f"{where}.content.{i}", f"a `{kind}` block cannot be sent to a chat model.", _UNSUPPORTED)
    text: Any = texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts] if texts else None
    return {"role": "assistant", "content": "" if text is None and not calls else text,
            **({"tool_calls": calls} if calls else {})}


def _chat_system(system: Any) -> dict[str, Any]:
    if isinstance(system, str):
        return {"role": "system", "content": system}
    if not isinstance(system, list) or not all(as_object(b).get("type") == "text" for b in system):
        raise _bad("system", "must be a string or a list of text blocks.")
    return {"role": "system", "content": [{"type": "text", "text": t} for t in _texts(system, "system")]}


def _chat_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools if isinstance(tools, list) else [None]):
        tool = as_object(tool)
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            raise _bad(f"tools.{i}", f"the server tool `{tool.get('type')}` cannot be run by a chat model; only "
                       "client tools (name, input_schema) can.", "tool_not_supported")
        fn = {"name": tool.get("name"), "description": tool.get("description"), "parameters": tool["input_schema"],
              "strict": True if tool.get("strict") is True else None}
        out.append({"type": "function", "function": {k: v for k, v in fn.items() if v is not None}})
    return out


def _chat_tool_choice(choice: Any) -> tuple[Any, bool]:
    """(chat tool_choice, whether parallel tool calls stay allowed)."""
    kind = as_object(choice).get("type")
    parallel = as_object(choice).get("disable_parallel_tool_use") is not True
    if kind in ("auto", "any", "none"):
        return {"auto": "auto", "any": "required", "none": "none"}[kind], parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise _bad("tool_choice", "type must be auto, any, tool (with a name) or none.")


def request_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat body for an Anthropic Messages request (as the anthropic SDK sends it).

    `system` and system-role messages become system messages; a user turn's tool_result
    blocks become tool messages (an `is_error` one reads "Error: ..."), tool_use blocks
    tool_calls, images image_url parts, base64 PDF documents file parts, text documents
    text; thinking blocks of earlier turns are left out. `stop_sequences` -> `stop`,
    `metadata.user_id` -> `user`, `output_config.format` -> `response_format` json_schema,
    `output_config.effort` -> `reasoning_effort`, tool_choice any -> required,
    `disable_parallel_tool_use` -> `parallel_tool_calls: false`; `top_k` is passed on as the
    chat extension many engines read; a stream asks for usage. A 400 for what a chat model
    cannot do: server tools, extended `thinking`, other Anthropic-only fields
    (`cache_control` and `service_tier` are hints, and are ignored).
    """
    extra = [k for k in body if k not in _MESSAGES_HANDLED and k not in _MESSAGES_IGNORED]
    if extra:
        raise _unsupported(extra, "cannot be passed on to this model (it is served through chat completions)")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad("model", "Field required.")
    if not _is_int(body.get("max_tokens")) or body["max_tokens"] < 0:
        raise _bad("max_tokens", "Field required (a non-negative integer).")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise _bad("messages", "Field required (a non-empty list).")
    if body.get("thinking") is not None and as_object(body["thinking"]).get("type") != "disabled":
        raise _bad("thinking", "extended thinking cannot be returned by this model (it is served through chat "
                   "completions, which have no thinking blocks); leave it out.", "thinking_not_supported")
    messages = [_chat_system(body["system"])] if body.get("system") is not None else []
    for i, message in enumerate(body["messages"]):
        role, content = as_object(message).get("role"), as_object(message).get("content")
        if role == "user":
            messages += _chat_user(content, f"messages.{i}")
        elif role == "assistant":
            messages.append(_chat_assistant(content, f"messages.{i}"))
        elif role == "system":  # anthropic SDK 2.x also has system turns
            messages.append(_chat_system(content))
        else:
            raise _bad(f"messages.{i}.role", "must be user or assistant.")
    chat: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": body["max_tokens"]}
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    chat |= {f: body[f] for f in ("temperature", "top_p", "top_k") if body.get(f) is not None}
    if body.get("tools"):
        chat["tools"] = _chat_tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"], parallel = _chat_tool_choice(body["tool_choice"])
        if not parallel:
            chat["parallel_tool_calls"] = False
    if isinstance(user := as_object(body.get("metadata")).get("user_id"), str) and user:
        chat["user"] = user
    config = as_object(body.get("output_config"))
    if (fmt := config.get("format") or body.get("output_format")) is not None:
        if as_object(fmt).get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise _bad("output_config.format", "must be {type: json_schema, schema}.")
        chat["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}
    if (effort := config.get("effort")) is not None:
        if effort not in _EFFORTS:
            raise _unsupported(["output_config.effort"], f"'{effort}' has no chat reasoning_effort")
        chat["reasoning_effort"] = effort
    if body.get("stream"):
        chat |= {"stream": True, "stream_options": {"include_usage": True}}
    return chat


def chat_to_response(completion: dict[str, Any], *, model: str) -> dict[str, Any]:
    """The Anthropic Message for a `chat.completion` (its first choice): its text as a text
    block, each tool call a tool_use block (arguments must be a JSON object), finish_reason as
    stop_reason (stop -> end_turn, length -> max_tokens, tool_calls -> tool_use,
    content_filter -> refusal), usage as input/output tokens."""
    choices = completion.get("choices")
    choice = as_object(choices[0]) if isinstance(choices, list) and choices else {}
    message = as_object(choice.get("message"))
    content: list[dict[str, Any]] = [{"type": "text", "text": t} for t in (message.get("content"), message.get("refusal"))
                                     if isinstance(t, str) and t]
    for call in map(as_object, message.get("tool_calls") or []):
        fn = as_object(call.get("function"))
        args = _arguments(fn.get("arguments"))
        if args is None:
            raise UpstreamError(f"The model called the tool '{fn.get('name')}' with arguments that are not a JSON "
                                "object, which an Anthropic client cannot read.", code="invalid_tool_arguments")
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args})
    stop = FINISH_TO_STOP.get(str(choice.get("finish_reason"))) or ("tool_use" if message.get("tool_calls")
                                                                    else "end_turn")
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": anthropic_usage(completion.get("usage"))}


def chat_to_events(*, model: str) -> ChatToEvents:
    """A fresh translator of one chat stream into Anthropic events."""
    return ChatToEvents(model=model)
