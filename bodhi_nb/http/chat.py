"""POST chat/completions: route, forward, relay.

Validation and opening the upstream happen before anything is written, so those
failures are ordinary error responses. After the first byte of a stream, a failure
becomes an SSE `data: {"error": ...}` event. A client that disconnects cancels the
relay, which closes the upstream stream at once.
"""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from ..objs.errors import BodhiError
from ..objs.sse import DONE_FRAME, encode_event
from ..server_core.contract import ChatCompletionRequest, ChatCompletionResponse
from ..server_core.gateway import UpstreamResponse
from ..server_core.origin import set_http_origin
from ._base import Op
from ._relay import UpstreamRelayHandler

__all__ = ["ChatCompletionsHandler"]

class ChatCompletionsHandler(UpstreamRelayHandler):
    path = "chat/completions"
    openapi = {"post": Op("OpenAI chat completions; stream: true answers with SSE ending in data: [DONE]",
                          request=ChatCompletionRequest, response=ChatCompletionResponse,
                          errors=(400, 403, 404, 429, 500, 502, 503, 504),
                          tags=("openai",), stream=True)}

    _relay: asyncio.Task[None] | None = None

    @web.authenticated
    @authorized
    async def post(self) -> None:
        set_http_origin(self.request.headers)  # this request's context: its ledger row says "http" (+ kernel)
        opened = await self.ops.chat.open(self.json_body())
        resp = opened.response
        if not resp.ok:
            body = await self.error_body(resp)
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
            if DONE_FRAME.strip() not in tail:
                self.write(DONE_FRAME)
        except BodhiError as exc:
            self.write(encode_event(exc.to_envelope()))
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
