"""services/sse.py, the one home of the SSE wire format: framing, splitting and decoding."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from bodhi_nb.objs import sse
from bodhi_nb.objs.sse import (
    DONE,
    DONE_FRAME,
    MEDIA_TYPE,
    EventSplitter,
    SSEDecoder,
    encode_event,
    event_data,
    event_json,
    iter_sse_json,
    split_events,
)

CHUNKS = [{"id": "c1", "choices": [{"index": 0, "delta": {"content": "héllo \"x\"\n"}}]},
          {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}]


def _stream(sep: bytes = b"\n") -> bytes:
    """A well-formed stream with comments, other fields, multi-line data and [DONE]."""
    events = [b": keep-alive" + sep,
              b"event: message" + sep + b"id: 1" + sep + b"data: " + json.dumps(CHUNKS[0]).encode() + sep,
              b"data:" + json.dumps(CHUNKS[1], separators=(",", ":")).encode() + sep,
              b"data: [1," + sep + b"data:  2]" + sep,
              b"data: [DONE]" + sep]
    return b"".join(e + sep for e in events)


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, 9)
        out.append(data[i:i + n])
        i += n
    return out


class _OldDecoder:
    """The line parser sse.py had before it shared EventSplitter (kept here as the reference)."""

    def __init__(self):
        self._buf, self._data = b"", []

    def feed(self, chunk):
        self._buf += chunk
        out = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                return out
            line, self._buf = self._buf[:nl].rstrip(b"\r"), self._buf[nl + 1:]
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" ").decode())


def test_the_frames_are_byte_identical_to_what_was_written_before():
    assert DONE == "[DONE]" and DONE_FRAME == b"data: [DONE]\n\n" and MEDIA_TYPE == "text/event-stream"
    obj = {"a": [1, 2], "b": "é \"q\"", "c": None}
    assert encode_event(obj) == b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    assert encode_event(obj) == b'data: {"a":[1,2],"b":"\\u00e9 \\"q\\"","c":null}\n\n'
    assert event_json(encode_event(obj)) == obj


def test_event_data_and_json():
    assert event_data(b"data: a\ndata:  b\r\n\r\n") == b"a\nb"
    assert event_data(b"data:\n\n") == b""
    assert event_data(b": comment\nevent: x\n\n") is None and event_json(b": comment\n\n") is None
    assert event_json(b"data: not json\n\n") is None
    assert event_json(DONE_FRAME) is None and event_data(DONE_FRAME) == DONE.encode()


@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
def test_the_splitter_gives_whole_events_whatever_the_chunking(sep):
    data = _stream(sep)
    whole = split_events(data)
    assert b"".join(whole) == data and len(whole) == 5
    rng = random.Random(7)
    for _ in range(50):
        splitter, events = EventSplitter(), []
        for piece in _pieces(data, rng):
            part = splitter.feed(piece)
            events += split_events(part)
            assert b"".join(split_events(part)) == part  # only whole events come out
        assert splitter.end() == b"" and events == whole


def test_the_splitter_passes_whole_chunks_through_uncopied_and_hands_over_a_tail():
    splitter = EventSplitter()
    chunk = encode_event({"a": 1}) + encode_event({"b": 2})
    assert splitter.feed(chunk) is chunk
    assert splitter.feed(b"data: {\"c\"") == b""
    assert splitter.feed(b":3}\n\ndata: x") == b'data: {"c":3}\n\n'
    assert splitter.end() == b"data: x" and splitter.end() == b""


@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
def test_the_decoder_reads_what_the_old_line_parser_read(sep):
    data = _stream(sep)
    rng = random.Random(11)
    for _ in range(50):
        pieces = _pieces(data, rng)
        new, old = SSEDecoder(), _OldDecoder()
        got = [d for p in pieces for d in new.feed(p)]
        assert got == [d for p in pieces for d in old.feed(p)]
        assert got == [json.dumps(CHUNKS[0]), json.dumps(CHUNKS[1], separators=(",", ":")), "[1,\n2]", DONE]


def test_iter_sse_json_stops_at_done():
    async def chunks():
        for piece in _pieces(_stream() + encode_event({"after": "done"}), random.Random(3)):
            yield piece

    async def collect():
        return [e async for e in iter_sse_json(chunks())]

    assert asyncio.run(collect()) == [CHUNKS[0], CHUNKS[1], [1, 2]]


def test_every_export_is_listed():
    assert sorted(sse.__all__) == sorted(
        ["DONE", "DONE_FRAME", "MEDIA_TYPE", "EventSplitter", "SSEDecoder", "encode_event", "event_data",
         "event_json", "event_name", "iter_sse_json", "split_events"])


def test_named_events_round_trip():
    frame = sse.encode_event({"type": "message_stop"}, "message_stop")
    assert frame == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert sse.event_name(frame) == "message_stop" and sse.event_json(frame) == {"type": "message_stop"}
    assert sse.event_name(sse.encode_event({"a": 1})) is None
