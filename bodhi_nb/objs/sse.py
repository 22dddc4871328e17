"""The one home of the Server-Sent Events wire format of OpenAI-style streams.

A streamed chat completion is a run of events, each one or more `data:` lines ended by a
blank line, the last one `data: [DONE]`. Everything in bodhi_nb that reads or writes that
format (the usage tap, the gateway, the local adapter, the chat handler) uses these names,
so where an event ends, what its data is and how one is written are decided once:

- `MEDIA_TYPE`: `"text/event-stream"`, the content type of a stream.
- `DONE`: `"[DONE]"`, the data of the last event.
- `DONE_FRAME`: `b"data: [DONE]\\n\\n"`, that whole last event.
- `encode_event(obj, event=None)`: one `data:` event holding a JSON value, compact separators
  (`b'data: {"a":1}\\n\\n'`), after an `event:` line when named.
- `EventSplitter`: feed it byte chunks split anywhere; `feed` returns the complete events
  so far (as one run of bytes) and holds back an incomplete tail, `end()` hands that tail
  over when the stream ends.
- `split_events(part)`: the events of such a run, each with its terminator.
- `event_name(event)`: the `event:` name of one event (None when it has none).
- `event_data(event)`: the data of one event, its `data:` lines joined by `\\n` (None when
  it has none).
- `event_json(event)`: that data parsed as JSON (None when it has none or is not JSON).
- `SSEDecoder`: feed byte chunks, get the data (text) of each complete event.
- `iter_sse_json(chunks)`: each event's JSON value, until `[DONE]`.

The rules: an event ends at a blank line (`\\n\\n`, or `\\r\\n\\r\\n` as sse-starlette writes
it, or a mix of the two); a line starting `data:` carries data, with the spaces after the
colon dropped; every other line (comments `:`, `event:`, `id:`, `retry:`) is ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

__all__ = [
    "DONE",
    "DONE_FRAME",
    "MEDIA_TYPE",
    "EventSplitter",
    "SSEDecoder",
    "encode_event",
    "event_data",
    "event_name",
    "event_json",
    "iter_sse_json",
    "split_events",
]

MEDIA_TYPE = "text/event-stream"
DONE = "[DONE]"
DONE_FRAME = b"data: " + DONE.encode() + b"\n\n"

# One event, terminator included.
_EVENT = re.compile(rb".*?\r?\n\r?\n", re.DOTALL)


def encode_event(obj: Any, event: str | None = None) -> bytes:
    """One `data:` event holding the JSON value `obj` (compact separators, ASCII), after an
    `event:` line when `event` is given (Anthropic and the Responses API name their events)."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def event_name(event: bytes) -> str | None:
    """The `event:` name of one event (None when it has none)."""
    for line in event.splitlines():
        if line.startswith(b"event:"):
            return line[6:].strip().decode()
    return None


def split_events(part: bytes) -> list[bytes]:
    """The events of `part` (complete events, as `EventSplitter.feed` returns), terminators kept."""
    return _EVENT.findall(part)


def event_data(event: bytes) -> bytes | None:
    """The data of one event: its `data:` lines joined by a newline; None when it has none."""
    data = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


def event_json(event: bytes) -> Any:
    """The data of one event parsed as JSON; None when it has no data or the data is not JSON."""
    data = event_data(event)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _last_boundary(buf: bytes) -> int:
    """The end of the last complete event in `buf` (0 when there is none)."""
    a, b = buf.rfind(b"\n\n"), buf.rfind(b"\n\r\n")
    return max(a + 2 if a >= 0 else 0, b + 3 if b >= 0 else 0)


class EventSplitter:
    """Cuts a byte stream, chunked anyhow, at event boundaries.

    `feed` returns the complete events so far as one run of bytes (the chunk itself, not
    a copy, in the usual case of a chunk of whole events) and keeps an incomplete last
    event until a later chunk completes it.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._pending + chunk if self._pending else chunk
        if buf.endswith(b"\n\n"):  # the usual case: whole events, nothing held back
            self._pending = b""
            return buf
        end = _last_boundary(buf)
        complete, self._pending = buf[:end], buf[end:]
        return complete

    def end(self) -> bytes:
        """What is held back when the stream ends: an unterminated last event (or nothing)."""
        rest, self._pending = self._pending, b""
        return rest


class SSEDecoder:
    """Feed raw bytes in any chunking; get back the `data:` payloads of complete events."""

    def __init__(self) -> None:
        self._events = EventSplitter()

    def feed(self, chunk: bytes) -> list[str]:
        out: list[str] = []
        for event in split_events(self._events.feed(chunk)):
            data = event_data(event)
            if data is not None:
                out.append(data.decode())
        return out


async def iter_sse_json(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Decode each `data:` event as JSON until `[DONE]`."""
    dec = SSEDecoder()
    async for chunk in chunks:
        for data in dec.feed(chunk):
            if data == DONE:
                return
            yield json.loads(data)
