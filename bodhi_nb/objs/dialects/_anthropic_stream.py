"""Private: Anthropic Messages streams in both directions, and the tables that the stream and
the whole-message translations in `anthropic.py` share (stop reasons, usage, error types).

An Anthropic stream is a run of named SSE events (`event: <type>` then `data: {...}` whose
`type` repeats the name):

    message_start        {"message": {id, model, content: [], stop_reason: null, usage}}
    ping                 (any number, anywhere)
    content_block_start  {"index": i, "content_block": {"type": "text", "text": ""} |
                                                       {"type": "tool_use", id, name, input: {}}}
    content_block_delta  {"index": i, "delta": {"type": "text_delta", text} |
                                               {"type": "input_json_delta", partial_json}}
    content_block_stop   {"index": i}
    message_delta        {"delta": {stop_reason, stop_sequence}, "usage": {output_tokens, ...}}
    message_stop         {}
    error                {"error": {type, message}}

Usage in `message_delta` is cumulative (it replaces what `message_start` said, field by
field). Blocks are numbered from 0 in the order they start; thinking blocks count too.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..errors import UpstreamError
from .base import SseEvent

__all__ = [
    "ChatToEvents",
    "EventsToChat",
    "FINISH_TO_STOP",
    "STOP_TO_FINISH",
    "anthropic_error_type",
    "anthropic_usage",
    "as_object",
    "chat_usage",
    "error_envelope",
    "message_id",
]

# Anthropic stop_reason -> chat finish_reason. pause_turn (a long server-tool turn paused)
# ends this answer like a natural stop; the context window running out is a length stop.
STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# chat finish_reason -> Anthropic stop_reason. Chat does not say which stop sequence matched,
# so a chat "stop" is always end_turn.
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# The error types of Anthropic's documented error envelope, and the status each comes with.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_STATUS_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# Our OpenAI-shaped error types and codes, as Anthropic error types (for an error that
# arrives without its status, such as one that ends a stream).
_OPENAI_TYPE = {
    "invalid_request_error": "invalid_request_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
}
_OPENAI_CODE = {
    "upstream_unauthorized": "authentication_error",
    "invalid_api_key": "authentication_error",
    "upstream_not_found": "not_found_error",
    "model_not_found": "not_found_error",
    "rate_limit_exceeded": "rate_limit_error",
    "upstream_timeout": "timeout_error",
}


def anthropic_error_type(status: int | None, error: dict[str, Any]) -> str:
    """The Anthropic error type for an error with this status (when known) and OpenAI error object:
    400/422 invalid_request_error, 401 authentication_error, 402 billing_error, 403
    permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 503/529
    overloaded_error, 504 timeout_error, any other 4xx invalid_request_error (as Anthropic's own
    docs say of unlisted 4xx), everything else api_error. Without a status the error's code
    decides where it says more (model_not_found, upstream_timeout...), then its type."""
    if status is not None:
        if status in _STATUS_TYPE:
            return _STATUS_TYPE[status]
        return "invalid_request_error" if 400 <= status < 500 else "api_error"
    etype, code = error.get("type"), error.get("code")
    if code in _OPENAI_CODE:
        return _OPENAI_CODE[code]
    if etype in ERROR_STATUS:
        return str(etype)
    return _OPENAI_TYPE.get(str(etype), "api_error")


def error_envelope(status: int | None, error: dict[str, Any], *, request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's error body for an OpenAI error object: `{"type": "error", "error": {"type",
    "message"}}`, plus `request_id` when one is given."""
    message = error.get("message")
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": anthropic_error_type(status, error),
                  "message": message if isinstance(message, str) and message else "The request failed."},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return body


def as_object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (to read optional fields safely)."""
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def chat_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage as chat usage. Anthropic's input total is input_tokens plus both cache
    counts; chat's prompt_tokens includes cached tokens, which it also names in
    `prompt_tokens_details.cached_tokens`."""
    read = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + _int(usage.get("cache_creation_input_tokens")) + read
    completion = _int(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": read}}


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """Chat usage as Anthropic usage: cached prompt tokens become cache_read_input_tokens and
    are taken out of input_tokens (Anthropic counts them apart)."""
    usage = usage or {}
    cached = _int((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
    prompt = _int(usage.get("prompt_tokens"))
    return {"input_tokens": max(prompt - cached, 0), "output_tokens": _int(usage.get("completion_tokens")),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def message_id(chat_id: Any) -> str:
    """An Anthropic-style message id (`msg_...`) for a chat completion id."""
    if isinstance(chat_id, str) and chat_id:
        return chat_id if chat_id.startswith("msg_") else f"msg_{chat_id}"
    return f"msg_{uuid.uuid4().hex}"


def _event(data: dict[str, Any]) -> SseEvent:
    return SseEvent(data["type"], data)


class EventsToChat:
    """Upstream side: an Anthropic stream's events in, `chat.completion.chunk` objects out.

    message_start gives the role chunk; a text block's deltas become content; a tool_use block
    becomes one tool call (its start gives index, id and name, each input_json_delta an
    arguments fragment); thinking, signature and citation deltas and server-tool blocks have
    no chat form and are skipped; message_delta gives the finish_reason chunk; `end()` gives
    the usage chunk. An `error` event raises `UpstreamError` with Anthropic's message.
    """

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-anthropic"
        self.created = int(time.time())
        self._text_blocks: set[int] = set()
        self._tool_blocks: dict[int, int] = {}  # Anthropic block index -> chat tool call index
        self._usage: dict[str, Any] = {}
        self._started = self._finished = self._stopped = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def feed(self, event: SseEvent) -> list[dict[str, Any]]:
        data = event.data if isinstance(event.data, dict) else {}
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message") or {}
            if isinstance(message.get("id"), str):
                self.id = message["id"]
            self._take_usage(message.get("usage"))
            self._started = True
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            self._take_usage(data.get("usage"))
            if self._finished:
                return []
            self._finished = True
            stop = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, STOP_TO_FINISH.get(str(stop), "stop"))]
        if kind == "message_stop":
            self._stopped = True
            return []
        if kind == "error":
            err = as_object(data.get("error"))
            etype = str(err.get("type") or "api_error")
            said = err.get("message")
            raise UpstreamError(said if isinstance(said, str) else "The Anthropic stream failed.",
                                status=ERROR_STATUS.get(etype, 502), code=etype)
        return []  # ping, content_block_stop, and event types added after this was written

    def _block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        index, block = data.get("index"), data.get("content_block") or {}
        if not isinstance(index, int):
            return []
        if block.get("type") == "text":
            self._text_blocks.add(index)
            text = block.get("text")
            return [self._chunk({"content": text})] if isinstance(text, str) and text else []
        if block.get("type") == "tool_use":
            call = self._tool_blocks[index] = len(self._tool_blocks)
            start = block.get("input")
            arguments = json.dumps(start, separators=(",", ":")) if start else ""
            return [self._chunk({"tool_calls": [{"index": call, "id": block.get("id"), "type": "function",
                                                 "function": {"name": block.get("name"), "arguments": arguments}}]})]
        return []

    def _block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        index, delta = data.get("index"), data.get("delta") or {}
        if delta.get("type") == "text_delta" and index in self._text_blocks and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and index in self._tool_blocks and delta.get("partial_json"):
            call = self._tool_blocks[index]  # type: ignore[index]
            return [self._chunk({"tool_calls": [{"index": call, "function": {"arguments": delta["partial_json"]}}]})]
        return []

    def end(self) -> list[dict[str, Any]]:
        if not self._started or not (self._finished or self._stopped):
            raise UpstreamError("The Anthropic stream ended before the message was complete "
                                "(no message_delta or message_stop event).", code="upstream_stream_incomplete")
        out = [] if self._finished else [self._chunk({}, "stop")]
        out.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": chat_usage(self._usage)})
        return out


class ChatToEvents:
    """Client side: `chat.completion.chunk` objects in, the Anthropic events a Messages client
    reads out: message_start first (usage zero: a chat stream tells usage only at its end),
    content_block_start / deltas / content_block_stop around each text run and each tool call
    (indexes from 0 in order), then at `end()` message_delta with the stop_reason and the
    usage (input_tokens included, which replaces message_start's zero) and message_stop.
    """

    def __init__(self, *, model: str) -> None:
        self.model = model
        self._started = False
        self._index = -1  # the last block started
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool_use", chat tool index)
        self._tool_blocks: dict[int, int] = {}  # chat tool call index -> block index
        self._stop: str | None = None
        self._usage: dict[str, Any] | None = None

    def _start(self, chunk: dict[str, Any] | None) -> list[SseEvent]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {"id": message_id((chunk or {}).get("id")), "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [_event({"type": "message_start", "message": message})]

    def _close(self) -> list[SseEvent]:
        if self._open is None:
            return []
        self._open = None
        return [_event({"type": "content_block_stop", "index": self._index})]

    def _begin(self, block: dict[str, Any], opened: tuple[str, int]) -> list[SseEvent]:
        out = self._close()
        self._index += 1
        self._open = opened
        out.append(_event({"type": "content_block_start", "index": self._index, "content_block": block}))
        return out

    def feed(self, chunk: dict[str, Any]) -> list[SseEvent]:
        out = self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for text in (delta.get("content"), delta.get("refusal")):
                if isinstance(text, str) and text:
                    if self._open != ("text", -1):
                        out += self._begin({"type": "text", "text": ""}, ("text", -1))
                    out.append(_event({"type": "content_block_delta", "index": self._index,
                                       "delta": {"type": "text_delta", "text": text}}))
            for call in delta.get("tool_calls") or []:
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._stop = FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
        return out

    def _tool_delta(self, call: dict[str, Any]) -> list[SseEvent]:
        out: list[SseEvent] = []
        at = call.get("index", 0)
        fn = call.get("function") or {}
        if at not in self._tool_blocks:
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                     "name": fn.get("name") or "", "input": {}}
            out += self._begin(block, ("tool_use", at))
            self._tool_blocks[at] = self._index
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            # An interleaved call's fragment goes to its own block by index, as clients accumulate.
            out.append(_event({"type": "content_block_delta", "index": self._tool_blocks[at],
                               "delta": {"type": "input_json_delta", "partial_json": arguments}}))
        return out

    def end(self) -> list[SseEvent]:
        out = self._start(None) + self._close()
        stop = self._stop or ("tool_use" if self._tool_blocks else "end_turn")
        out.append(_event({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": anthropic_usage(self._usage)}))
        out.append(_event({"type": "message_stop"}))
        return out

    def error(self, error: dict[str, Any]) -> list[SseEvent]:
        return [SseEvent("error", error_envelope(None, error))]
