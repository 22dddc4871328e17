"""Token counts from OpenAI-shaped responses, and the stream tap that finds them.

Pure code (no I/O) so every rule here is tested directly: where `usage` sits in a
completion body and in the final chunk of a stream, how the gateway asks a remote
stream for usage the client did not request, and how that extra usage event is
taken back out so the client receives exactly the stream it asked for.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ...objs.sse import DONE, EventSplitter, encode_event, event_json, split_events

__all__ = ["StreamTap", "TokenUsage", "usage_from_body", "wants_usage", "with_include_usage"]

# The SSE wire format (where an event ends, its data, how one is written) is services/sse.py's.
_DONE = DONE.encode()
_USAGE = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')
_ERROR = (b'{"error"', b'"type":"error"', b'"type": "error"')  # OpenAI's envelope; Anthropic's and Responses' events
_TEXT = (b'"content":"', b'"content": "')
_EMPTY = (b'"content":""', b'"content": ""')


@dataclass(frozen=True)
class TokenUsage:
    """Token counts as the provider reported them (None where it did not say)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def usage_from_body(body: object) -> TokenUsage | None:
    """The `usage` of a chat completion, an embeddings response or a stream's usage chunk; also
    of the other dialects a client may speak natively (docs/ARCHITECTURE.md, "Dialects"): an
    Anthropic message or its message_start / message_delta events (`input_tokens`,
    `output_tokens`), and a Responses object or its response.completed event."""
    if not isinstance(body, dict):
        return None
    u = body.get("usage")
    if not isinstance(u, dict):
        inner = body.get("message") if isinstance(body.get("message"), dict) else body.get("response")
        u = inner.get("usage") if isinstance(inner, dict) else None
        if not isinstance(u, dict):
            return None
    p = _int(u.get("prompt_tokens", u.get("input_tokens")))
    c = _int(u.get("completion_tokens", u.get("output_tokens")))
    t = _int(u.get("total_tokens"))
    if p is None and c is None and t is None:
        return None
    if t is None:
        t = (p or 0) + (c or 0)
    return TokenUsage(p, c, t)


def _merged(old: TokenUsage | None, new: TokenUsage) -> TokenUsage:
    """Counts reported across several events (Anthropic: input at message_start, output at the
    end) as one: a later count wins, a count not given keeps the earlier one."""
    if old is None:
        return new
    p = new.prompt_tokens if new.prompt_tokens is not None else old.prompt_tokens
    c = new.completion_tokens if new.completion_tokens is not None else old.completion_tokens
    return TokenUsage(p, c, (p or 0) + (c or 0))


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed request asked for the final usage chunk itself."""
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def with_include_usage(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """For a stream that did not ask for usage: the body asking for it, and True (strip it later).

    Non-streamed requests and streams that already ask come back unchanged with False.
    The caller's dict is never modified.
    """
    if body.get("stream") is not True or wants_usage(body):
        return body, False
    opts = body.get("stream_options")
    extra = dict(opts) if isinstance(opts, dict) else {}
    extra["include_usage"] = True
    return {**body, "stream_options": extra}, True


class StreamTap:
    """Watches the SSE bytes of a chat stream for the usage event as they are relayed.

    `feed` returns the bytes to pass on. Without `strip` they are exactly the bytes fed
    (no buffering, so relaying stays byte-for-byte and as fast as before); only events
    containing a non-null `"usage"` are decoded. With `strip` (the gateway added
    `include_usage` on the client's behalf), output is held back to whole events so the
    usage-only event (`choices: []`) can be dropped; a usage field riding on a content
    chunk is removed from that chunk. `count=True` counts the events that carry text (a
    llama.cpp stream sends one per generated token and no usage); `content=True` also
    collects the reply text.
    """

    def __init__(self, *, strip: bool = False, count: bool = False, content: bool = False) -> None:
        self.strip = strip
        self.count = count
        self.collect = content
        self.usage: TokenUsage | None = None
        self.content_events = 0  # events whose delta carried text (a token count for engines that report none)
        self.text: list[str] = []
        self.done = False  # the `data: [DONE]` event went through
        self.error: str | None = None  # the code of an error event the upstream sent mid-stream
        self._events = EventSplitter()  # holds an incomplete trailing event (parsed once it completes)
        self.first_at: float | None = None  # perf_counter() when `relay` saw the first chunk

    async def relay(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The bytes to pass on for a whole stream: `feed` for each chunk, then `end` (the one
        relay loop of the gateway's taps: the ledger's and the local adapter's)."""
        async for chunk in chunks:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            out = self.feed(chunk)
            if out:
                yield out
        rest = self.end()
        if rest:
            yield rest

    def feed(self, chunk: bytes) -> bytes:
        complete = self._events.feed(chunk)
        if self.count:
            self.content_events += sum(complete.count(t) for t in _TEXT) - sum(complete.count(t) for t in _EMPTY)
        if self.collect:
            self._collect(complete)
        if _DONE in complete[-16:]:  # always the last event
            self.done = True
        if any(e in complete for e in _ERROR):
            self._find_error(complete)
        if _USAGE in complete:
            complete = self._scan(complete)
        return complete if self.strip else chunk

    def end(self) -> bytes:
        """What is left when the upstream ends (an unterminated last event, passed on as is)."""
        rest = self._events.end()
        return rest if self.strip else b""

    def _scan(self, part: bytes) -> bytes:
        out: list[bytes] = []
        changed = False
        for event in split_events(part):
            if _USAGE not in event or any(n in event for n in _NULL_USAGE):
                out.append(event)
                continue
            data = event_json(event)
            usage = usage_from_body(data)
            if usage is not None:
                self.usage = _merged(self.usage, usage)
            if self.strip and isinstance(data, dict) and usage is not None:
                changed = True
                if data.get("choices"):
                    data.pop("usage", None)
                    out.append(encode_event(data))
                continue
            out.append(event)
        return b"".join(out) if changed else part

    def _find_error(self, part: bytes) -> None:
        for event in split_events(part):
            if any(e in event for e in _ERROR):
                data = event_json(event)
                if isinstance(data, dict) and ("error" in data or data.get("type") == "error"):
                    err = data.get("error", data)
                    code = (err.get("code") or err.get("type")) if isinstance(err, dict) else None
                    self.error = code if isinstance(code, str) and code and code != "error" else "upstream_error"

    def _collect(self, part: bytes) -> None:
        for event in split_events(part):
            data = event_json(event)
            if isinstance(data, dict):
                for choice in data.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
                    if isinstance(text, str):
                        self.text.append(text)

