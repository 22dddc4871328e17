"""POST chat/completions: route, forward, relay.

Validation and opening the upstream happen before anything is written, so those
failures are ordinary error responses. After the first byte of a stream, a failure
becomes an SSE `data: {"error": ...}` event. A client that disconnects cancels the
relay, which closes the upstream stream at once.
"""

from __future__ import annotations

import asyncio
import json
import time

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from .._handlers import BodhiHandler, Op
from ..objs.errors import BodhiError
from ..routes_app.objs import ChatCompletionRequest, ChatCompletionResponse
from ..services.ai_api_service import UpstreamResponse, openai_error, upstream_status_error
from ..services.usage import set_http_origin

__all__ = ["ChatCompletionsHandler"]

_DONE = b"data: [DONE]\n\n"


class ChatCompletionsHandler(BodhiHandler):
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
            body = await resp.aread()
            if openai_error(body) is None:  # an OpenAI envelope is relayed as it is
                raise upstream_status_error(resp.status, body, resp.headers, resp.label)
            self._start(resp)
            self.finish(body)
            return
        if opened.stream and resp.is_event_stream:
            self._start(resp)
            self._relay = asyncio.ensure_future(self._relay_stream(resp))
            try:
                await self._relay
            except asyncio.CancelledError:
                pass  # client went away; the upstream is already closed
            return
        body = (await resp.aread_json())[0] if not opened.stream else await resp.aread()
        self._start(resp)
        self.finish(body)

    def _start(self, resp: UpstreamResponse) -> None:
        self.set_status(resp.status)
        self.clear_header("Content-Type")
        for k, v in resp.headers.items():
            self.set_header(k, v)
        if resp.is_event_stream:
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")
        overhead = (time.perf_counter() - self._t0 - resp.upstream_seconds) * 1000
        self.set_header("x-bodhi-overhead-ms", f"{max(overhead, 0.0):.3f}")

    async def _relay_stream(self, resp: UpstreamResponse) -> None:
        tail = b""
        try:
            async for chunk in resp.aiter_bytes():
                self.write(chunk)
                await self.flush()
                tail = (tail + chunk)[-64:]
            if _DONE.strip() not in tail:
                self.write(_DONE)
        except BodhiError as exc:
            self.write(b"data: " + json.dumps(exc.to_envelope()).encode() + b"\n\n")
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
