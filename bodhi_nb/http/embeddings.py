"""POST embeddings: route, forward, relay (OpenAI shape, local and API models).

The same router and forwarding path as chat completions: an API model's answer is
relayed as it came (the key masked), a local one as the gateway adapted it (base64 when
asked). An upstream error in the OpenAI envelope is relayed as it is; anything else
becomes one.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import EmbeddingRequest, EmbeddingResponse
from ..server_core.origin import set_http_origin
from ._base import Op
from ._relay import UpstreamRelayHandler

__all__ = ["EmbeddingsHandler"]


class EmbeddingsHandler(UpstreamRelayHandler):
    path = "embeddings"
    openapi = {"post": Op("OpenAI embeddings: one vector per input text, float or base64 (float32 little-endian)",
                          request=EmbeddingRequest, response=EmbeddingResponse,
                          errors=(400, 403, 404, 429, 500, 502, 503, 504), tags=("openai",))}

    @web.authenticated
    @authorized
    async def post(self) -> None:
        set_http_origin(self.request.headers)  # this request's context: its ledger row says "http" (+ kernel)
        resp = (await self.ops.embeddings.open(self.json_body())).response
        body = (await resp.aread_json())[0] if resp.ok else await self.error_body(resp)
        self.start_relay(resp)
        self.finish(body)
