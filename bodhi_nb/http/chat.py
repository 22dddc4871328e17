"""POST chat/completions: route, forward, relay.

Validation and opening the upstream happen before anything is written, so those
failures are ordinary error responses. After the first byte of a stream, a failure
becomes an SSE `data: {"error": ...}` event. A client that disconnects cancels the
relay, which closes the upstream stream at once.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import ChatCompletionRequest, ChatCompletionResponse
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

    @web.authenticated
    @authorized
    async def post(self) -> None:
        set_http_origin(self.request.headers)  # this request's context: its ledger row says "http" (+ kernel)
        await self.relay(await self.ops.chat.open(self.json_body()))
