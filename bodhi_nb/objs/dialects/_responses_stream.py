"""The Responses dialect's shapes and its two stream translators (see responses.py).

Shared by the non-streaming functions in responses.py and the stream classes here: the
complete `response` object, output items from a chat message, usage and stop-reason mapping.

`ChatToEvents` (client side) turns chat chunks into the Responses event sequence a
Responses client expects, as OpenAI emits it: `response.created`, `response.in_progress`,
then per output item `response.output_item.added`, for a message `response.content_part.added`,
`response.output_text.delta`... `response.output_text.done`, `response.content_part.done`,
for a function call `response.function_call_arguments.delta`... `.done`, then
`response.output_item.done`, and last `response.completed` (or `response.incomplete` when
the output was cut, `error` + `response.failed` on failure) carrying the complete response,
which stays available as `.response`. Each event's SSE name equals its data's `type`, and
`sequence_number` counts from 0. The message item closes when a tool call starts; function
call items close at the end (so interleaved argument fragments of parallel calls still land).

`EventsToChat` (upstream side) turns a provider's Responses events into chat chunks: text
deltas, a tool_calls delta (index, id, name) per function_call item and its argument
fragments, and on `response.completed` / `response.incomplete` the finish_reason and a usage
chunk. `error` and `response.failed` raise `UpstreamError`; so does a stream that ends without
a terminal event. Reasoning, annotation and built-in tool events carry nothing chat can hold.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import UpstreamError
from .base import SseEvent

__all__ = ["ChatToEvents", "EventsToChat", "failure_code", "finish_for", "message_items", "new_id",
           "response_object", "status_for", "text_part", "usage_to_chat", "usage_to_responses"]

# The codes a Responses `error.code` may hold (OpenAPI `ResponseErrorCode`).
_ERROR_CODES = ("server_error", "rate_limit_exceeded", "invalid_prompt", "vector_store_timeout", "invalid_image",
                "invalid_image_format", "invalid_base64_image", "invalid_image_url", "image_too_large",
                "image_too_small", "image_parse_error", "image_content_policy_violation", "invalid_image_mode",
                "image_file_too_large", "unsupported_image_media_type", "empty_image_file",
                "failed_to_download_image", "image_file_not_found")


def new_id(prefix: str) -> str:
    """A unique id with the dialect's prefix (`resp_`, `msg_`, `fc_`, `chatcmpl-`)."""
    return f"{prefix}{uuid.uuid4().hex}"


def message_items(message: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """The output items of one chat assistant message: a message item, then one per tool call."""
    content, refusal, calls = message.get("content"), message.get("refusal"), message.get("tool_calls") or []
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    parts: list[dict[str, Any]] = []
    if content or not (calls or refusal):
        parts.append(text_part(content or "", [_annotation_to_responses(a) for a in message.get("annotations") or []
                                              if a.get("type") == "url_citation"]))
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    items = [{"type": "message", "id": new_id("msg_"), "status": status, "role": "assistant", "content": parts}] \
        if parts else []
    for call in calls:
        fn = call.get("function") or {}
        items.append({"type": "function_call", "id": new_id("fc_"), "call_id": call.get("id") or new_id("call_"),
                      "name": fn.get("name", ""), "arguments": fn.get("arguments") or "", "status": "completed"})
    return items


def text_part(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}


def _annotation_to_responses(a: dict[str, Any]) -> dict[str, Any]:
    c = a.get("url_citation") or {}
    return {"type": "url_citation", **{k: c.get(k) for k in ("start_index", "end_index", "url", "title")}}


def response_object(*, response_id: str, created_at: Any, model: str, status: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None = None, incomplete_reason: str | None = None,
                    error: dict[str, Any] | None = None, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete Responses `response` object: every field the OpenAPI schema requires, the
    request's settings echoed (defaults where the request did not set them)."""
    req = request or {}
    text = {"format": (req.get("text") or {}).get("format") or {"type": "text"}}
    if (req.get("text") or {}).get("verbosity"):
        text["verbosity"] = req["text"]["verbosity"]
    out: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": int(created_at or time.time()), "status": status,
        "completed_at": int(time.time()) if status == "completed" else None, "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": req.get("instructions"), "max_output_tokens": req.get("max_output_tokens"),
        "model": model, "output": output, "parallel_tool_calls": req.get("parallel_tool_calls") is not False,
        "previous_response_id": req.get("previous_response_id"), "reasoning": req.get("reasoning"),
        "store": req.get("store") is not False, "temperature": req.get("temperature"), "text": text,
        "tool_choice": req.get("tool_choice") or "auto", "tools": req.get("tools") or [],
        "top_p": req.get("top_p"), "truncation": req.get("truncation") or "disabled",
        "metadata": req.get("metadata") or {}}
    out.update({k: req[k] for k in ("user", "safety_identifier", "prompt_cache_key", "service_tier") if req.get(k)})
    if usage is not None:
        out["usage"] = usage
    return out


def status_for(finish_reason: str | None) -> tuple[str, str | None]:
    """A chat finish_reason as a response status and its incomplete reason."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def finish_for(status: str | None, reason: str | None, called: bool) -> str:
    """A response status (and incomplete reason) as a chat finish_reason."""
    if status == "incomplete":
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if called else "stop"


def usage_to_responses(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    pd, cd = usage.get("prompt_tokens_details") or {}, usage.get("completion_tokens_details") or {}
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": int(pd.get("cached_tokens") or 0),
                                                             "cache_write_tokens": int(pd.get("cache_write_tokens") or 0)},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": int(cd.get("reasoning_tokens") or 0)},
            "total_tokens": int(usage.get("total_tokens") or prompt + completion)}


def usage_to_chat(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": int(usage.get("total_tokens") or prompt + completion)}
    if (usage.get("input_tokens_details") or {}).get("cached_tokens"):
        out["prompt_tokens_details"] = {"cached_tokens": usage["input_tokens_details"]["cached_tokens"]}
    if (usage.get("output_tokens_details") or {}).get("reasoning_tokens"):
        out["completion_tokens_details"] = {"reasoning_tokens": usage["output_tokens_details"]["reasoning_tokens"]}
    return out


def failure_code(error: dict[str, Any]) -> str:
    """An OpenAI error object's code as one a Responses `error.code` may hold."""
    code = error.get("code")
    if code in _ERROR_CODES:
        return str(code)
    return "rate_limit_exceeded" if "rate_limit" in f"{code} {error.get('type')}" else "server_error"




@dataclass
class _Item:
    """One output item being streamed to a Responses client."""

    kind: str  # "message" | "function_call"
    index: int
    id: str
    parts: list[dict[str, Any]] = field(default_factory=list)  # message: output_text / refusal parts
    part_open: bool = False
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    done: bool = False

    def shape(self, status: str) -> dict[str, Any]:
        if self.kind == "message":
            return {"type": "message", "id": self.id, "status": status, "role": "assistant",
                    "content": [dict(p) for p in self.parts]}
        return {"type": "function_call", "id": self.id, "call_id": self.call_id, "name": self.name,
                "arguments": self.arguments, "status": status}


class ChatToEvents:
    """Client side, streaming: chat chunks in, Responses events out (see the module docstring)."""

    def __init__(self, *, model: str, request: dict[str, Any] | None = None) -> None:
        self._model, self._request = model, request
        self._id, self._created = new_id("resp_"), int(time.time())
        self._seq = 0
        self._started = self._ended = False
        self._items: list[_Item] = []
        self._message: _Item | None = None  # the open message item
        self._calls: dict[int, _Item] = {}  # chat tool_call index -> its item
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self.response: dict[str, Any] | None = None  # the final response object, once ended

    def _event(self, kind: str, **fields: Any) -> SseEvent:
        data = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return SseEvent(kind, data)

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(response_id=self._id, created_at=self._created, model=self._model, status=status,
                               request=self._request, **extra)

    def _start(self) -> list[SseEvent]:
        if self._started:
            return []
        self._started = True
        return [self._event("response.created", response=self._snapshot("in_progress", output=[])),
                self._event("response.in_progress", response=self._snapshot("in_progress", output=[]))]

    def feed(self, chunk: dict[str, Any]) -> list[SseEvent]:
        if self._ended:
            return []
        events = self._start()
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text("output_text", delta["content"])
            if delta.get("refusal"):
                events += self._text("refusal", delta["refusal"])
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def _text(self, kind: str, text: str) -> list[SseEvent]:
        events: list[SseEvent] = []
        item = self._message
        if item is None:
            item = self._message = _Item("message", len(self._items), new_id("msg_"))
            self._items.append(item)
            events.append(self._event("response.output_item.added", output_index=item.index,
                                      item=item.shape("in_progress")))
        if not item.part_open or item.parts[-1]["type"] != kind:
            events += self._close_part(item)
            item.parts.append(text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""})
            item.part_open = True
            events.append(self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                                      content_index=len(item.parts) - 1, part=dict(item.parts[-1])))
        part = item.parts[-1]
        where = {"item_id": item.id, "output_index": item.index, "content_index": len(item.parts) - 1}
        if kind == "output_text":
            part["text"] += text
            events.append(self._event("response.output_text.delta", **where, delta=text, logprobs=[]))
        else:
            part["refusal"] += text
            events.append(self._event("response.refusal.delta", **where, delta=text))
        return events

    def _close_part(self, item: _Item) -> list[SseEvent]:
        if not item.part_open:
            return []
        item.part_open = False
        part = item.parts[-1]
        where = {"item_id": item.id, "output_index": item.index, "content_index": len(item.parts) - 1}
        done = (self._event("response.output_text.done", **where, text=part["text"], logprobs=[])
                if part["type"] == "output_text" else self._event("response.refusal.done", **where,
                                                                  refusal=part["refusal"]))
        return [done, self._event("response.content_part.done", **where, part=dict(part))]

    def _close_message(self, status: str = "completed") -> list[SseEvent]:
        item, self._message = self._message, None
        if item is None:
            return []
        item.done = True
        return [*self._close_part(item), self._event("response.output_item.done", output_index=item.index,
                                                     item=item.shape(status))]

    def _tool_call(self, call: dict[str, Any]) -> list[SseEvent]:
        events: list[SseEvent] = []
        fn = call.get("function") or {}
        item = self._calls.get(call.get("index", 0))
        if item is None:
            events += self._close_message()
            item = _Item("function_call", len(self._items), new_id("fc_"), call_id=call.get("id") or new_id("call_"),
                         name=fn.get("name") or "")
            self._items.append(item)
            self._calls[call.get("index", 0)] = item
            events.append(self._event("response.output_item.added", output_index=item.index,
                                      item=item.shape("in_progress")))
        if fn.get("arguments"):
            item.arguments += fn["arguments"]
            events.append(self._event("response.function_call_arguments.delta", item_id=item.id,
                                      output_index=item.index, delta=fn["arguments"]))
        return events

    def end(self) -> list[SseEvent]:
        if self._ended:
            return []
        events = self._start()
        status, reason = status_for(self._finish)
        item_status = "completed" if status == "completed" else "incomplete"
        events += self._close_message(item_status)
        for item in self._items:
            if not item.done:
                item.done = True
                events.append(self._event("response.function_call_arguments.done", item_id=item.id,
                                          output_index=item.index, name=item.name, arguments=item.arguments))
                events.append(self._event("response.output_item.done", output_index=item.index,
                                          item=item.shape(item_status)))
        self._ended = True
        self.response = self._snapshot(status, output=[i.shape(item_status) for i in self._items],
                                       usage=usage_to_responses(self._usage), incomplete_reason=reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [*events, self._event(kind, response=self.response)]

    def error(self, error: dict[str, Any]) -> list[SseEvent]:
        if self._ended:
            return []
        events = self._start()
        message = str(error.get("message") or "The model failed while streaming.")
        self._ended = True
        self.response = self._snapshot("failed", output=[i.shape("incomplete") for i in self._items],
                                       usage=usage_to_responses(self._usage),
                                       error={"code": failure_code(error), "message": message})
        code = error.get("code") or error.get("type")
        return [*events, self._event("error", code=str(code) if code else None, message=message,
                                     param=error.get("param")),
                self._event("response.failed", response=self.response)]


@dataclass
class _Call:
    index: int  # the chat tool_calls index
    arguments: str = ""


class EventsToChat:
    """Upstream side, streaming: a provider's Responses events in, chat chunks out."""

    def __init__(self, *, model: str) -> None:
        self._model, self._id, self._created = model, new_id("chatcmpl-"), int(time.time())
        self._role_sent = self._finished = False
        self._calls: dict[int, _Call] = {}  # output_index -> call
        self._texts: set[int] = set()  # output indexes that streamed text

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def _with_role(self, *chunks: dict[str, Any]) -> list[dict[str, Any]]:
        if self._role_sent:
            return list(chunks)
        self._role_sent = True
        return [self._chunk({"role": "assistant", "content": ""}), *chunks]

    def _call_start(self, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        call = self._calls[index] = _Call(len(self._calls), item.get("arguments") or "")
        return self._with_role(self._chunk({"tool_calls": [{
            "index": call.index, "id": item.get("call_id") or new_id("call_"), "type": "function",
            "function": {"name": item.get("name") or "", "arguments": call.arguments}}]}))

    def _arguments(self, call: _Call, fragment: str) -> list[dict[str, Any]]:
        call.arguments += fragment
        return self._with_role(self._chunk({"tool_calls": [{"index": call.index, "function": {"arguments": fragment}}]}))

    def feed(self, event: SseEvent) -> list[dict[str, Any]]:
        data = event.data
        kind, index = data.get("type") or event.event, data.get("output_index", 0)
        if kind in ("response.created", "response.in_progress", "response.queued"):
            created = (data.get("response") or {}).get("created_at")
            if isinstance(created, (int, float)) and not self._role_sent:
                self._created = int(created)
            return self._with_role()
        if kind == "response.output_text.delta" and data.get("delta"):
            self._texts.add(index)
            return self._with_role(self._chunk({"content": data["delta"]}))
        if kind == "response.refusal.delta" and data.get("delta"):
            return self._with_role(self._chunk({"refusal": data["delta"]}))
        if kind == "response.output_item.added" and (data.get("item") or {}).get("type") == "function_call":
            return self._call_start(index, data["item"])
        if kind == "response.function_call_arguments.delta" and index in self._calls and data.get("delta"):
            return self._arguments(self._calls[index], data["delta"])
        if kind in ("response.function_call_arguments.done", "response.output_item.done"):
            return self._item_done(kind, index, data)
        if kind in ("response.completed", "response.incomplete"):
            return self._finish(data.get("response") or {})
        if kind == "response.failed":
            error = (data.get("response") or {}).get("error") or {}
            raise UpstreamError(f"The provider's response failed: {error.get('message') or 'no reason given'}")
        if kind == "error":
            raise UpstreamError(f"The provider's stream failed: {data.get('message') or 'no reason given'}")
        return []

    def _item_done(self, kind: str, index: int, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Whatever a provider sent only in a `.done` event (no deltas before it)."""
        item = data.get("item") or {}
        if kind == "response.output_item.done" and item.get("type") == "message" and index not in self._texts:
            text = "".join(p.get("text", "") for p in item.get("content") or [] if p.get("type") == "output_text")
            self._texts.add(index)
            return self._with_role(self._chunk({"content": text})) if text else []
        if kind == "response.output_item.done" and item.get("type") == "function_call" and index not in self._calls:
            return self._call_start(index, item)
        final = data.get("arguments") if kind == "response.function_call_arguments.done" else item.get("arguments")
        call = self._calls.get(index)
        if call is not None and not call.arguments and isinstance(final, str) and final:
            return self._arguments(call, final)
        return []

    def _finish(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        self._finished = True
        called = bool(self._calls) or any(i.get("type") == "function_call" for i in response.get("output") or [])
        reason = (response.get("incomplete_details") or {}).get("reason")
        chunks = self._with_role(self._chunk({}, finish_for(response.get("status"), reason, called)))
        usage = usage_to_chat(response.get("usage"))
        if usage:
            chunks.append({"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                           "model": self._model, "choices": [], "usage": usage})
        return chunks

    def end(self) -> list[dict[str, Any]]:
        if not self._finished:
            raise UpstreamError("The provider's Responses stream ended before response.completed.")
        return []
