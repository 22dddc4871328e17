"""Private: incremental Server-Sent Events parsing for OpenAI-style streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

DONE = "[DONE]"


class SSEDecoder:
    """Feed raw bytes in any chunking; get back the `data:` payloads of complete events."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        out: list[str] = []
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
            # comments (":") and other fields (event:, id:) are ignored


async def iter_sse_json(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Decode each `data:` event as JSON until `[DONE]`."""
    dec = SSEDecoder()
    async for chunk in chunks:
        for data in dec.feed(chunk):
            if data == DONE:
                return
            yield json.loads(data)
