"""POST embeddings: route, forward, relay (OpenAI shape, local and API models).

The same router and forwarding path as chat completions: an API model's answer is
relayed as it came (the key masked), a local one as the gateway adapted it (base64 when
asked). An upstream error in the OpenAI envelope is relayed as it is; anything else
becomes one.
"""

from __future__ import annotations

import time

from jupyter_server.auth.decorator import authorized
from tornado import web

from .._handlers import BodhiHandler, Op
from ..routes_app.objs import EmbeddingRequest, EmbeddingResponse
from ..services.ai_api_service import UpstreamResponse, openai_error, upstream_status_error
from ..services.usage import set_http_origin

__all__ = ["EmbeddingsHandler"]


class EmbeddingsHandler(BodhiHandler):
    path = "embeddings"
    openapi = {"post": Op("OpenAI embeddings: one vector per input text, float or base64 (float32 little-endian)",
                          request=EmbeddingRequest, response=EmbeddingResponse,
                          errors=(400, 403, 404, 429, 500, 502, 503, 504), tags=("openai",))}

    @web.authenticated
    @authorized
    async def post(self) -> None:
        set_http_origin(self.request.headers)  # this request's context: its ledger row says "http" (+ kernel)
        resp = (await self.ops.embeddings.open(self.json_body())).response
        if not resp.ok:
            body = await resp.aread()
            if openai_error(body) is None:  # an OpenAI envelope is relayed as it is
                raise upstream_status_error(resp.status, body, resp.headers, resp.label)
        else:
            body = (await resp.aread_json())[0]
        self._start(resp)
        self.finish(body)

    def _start(self, resp: UpstreamResponse) -> None:
        self.set_status(resp.status)
        self.clear_header("Content-Type")
        for k, v in resp.headers.items():
            self.set_header(k, v)
        overhead = (time.perf_counter() - self._t0 - resp.upstream_seconds) * 1000
        self.set_header("x-bodhi-overhead-ms", f"{max(overhead, 0.0):.3f}")
