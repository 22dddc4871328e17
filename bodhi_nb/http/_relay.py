"""Private: what every OpenAI-compatible handler does with an open upstream response.

Chat completions and embeddings relay the same way: an upstream error already in the
OpenAI envelope passes as it is (its key masked by the response), any other error status
becomes our envelope, and the status line and filtered headers are copied with the
gateway's own overhead in `x-bodhi-overhead-ms`.
"""

from __future__ import annotations

import asyncio
import time

from tornado.iostream import StreamClosedError

from ..objs.errors import BodhiError
from ..objs.sse import DONE_FRAME, encode_event
from ..server_core.gateway import OpenChat, UpstreamResponse, relayable_error_body
from ._base import BodhiHandler

__all__ = ["UpstreamRelayHandler"]


class UpstreamRelayHandler(BodhiHandler):
    """A handler that relays an upstream response.

    Streams: validate and open before the first byte (errors until then are ordinary error
    answers); after it, a failure becomes an error event in the client's dialect
    (`stream_error_event`), and a client that goes away cancels the relay, which closes the
    upstream at once.
    """

    ends_with_done = True  # chat completions end a stream with `data: [DONE]`; other dialects do not
    _relay: asyncio.Task[None] | None = None

    def stream_error_event(self, exc: BodhiError) -> bytes:
        """The event that tells this handler's client its stream failed (OpenAI's: the envelope)."""
        return encode_event(exc.to_envelope())

    async def relay(self, opened: OpenChat, *, errors_as_is: bool = False) -> None:
        """Relay an opened answer: its error, its body, or its event stream. `errors_as_is`: an
        error answer is already in the client's envelope (the other dialects)."""
        resp = opened.response
        if not resp.ok:
            body = await resp.aread() if errors_as_is else await self.error_body(resp)
            self.start_relay(resp)
            self.finish(body)
            return
        if opened.stream and resp.is_event_stream:
            self.start_relay(resp)
            self._relay = asyncio.ensure_future(self._relay_stream(resp))
            try:
                await self._relay
            except asyncio.CancelledError:
                pass  # client went away; the upstream is already closed
            return
        body = (await resp.aread_json())[0] if not opened.stream else await resp.aread()
        self.start_relay(resp)
        self.finish(body)

    async def _relay_stream(self, resp: UpstreamResponse) -> None:
        tail = b""
        try:
            async for chunk in resp.aiter_bytes():
                self.write(chunk)
                await self.flush()
                tail = (tail + chunk)[-64:]
            if self.ends_with_done and DONE_FRAME.strip() not in tail:
                self.write(DONE_FRAME)
        except BodhiError as exc:
            self.write(self.stream_error_event(exc))
        except StreamClosedError:
            return
        finally:
            await resp.aclose()
        try:
            self.finish()
        except StreamClosedError:
            pass

    def on_connection_close(self) -> None:
        if self._relay is not None and not self._relay.done():
            self._relay.cancel()
        super().on_connection_close()

    async def error_body(self, resp: UpstreamResponse) -> bytes:
        """The body of a non-2xx upstream answer to relay, or raise it as our error."""
        return await relayable_error_body(resp)

    def start_relay(self, resp: UpstreamResponse) -> None:
        """The upstream's status and headers, before its body."""
        self.set_status(resp.status)
        self.clear_header("Content-Type")
        for k, v in resp.headers.items():
            self.set_header(k, v)
        if resp.is_event_stream:
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")
        overhead = (time.perf_counter() - self._t0 - resp.upstream_seconds) * 1000
        self.set_header("x-bodhi-overhead-ms", f"{max(overhead, 0.0):.3f}")
