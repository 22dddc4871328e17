"""Anthropic Messages: POST messages and messages/count_tokens, under bodhi/v1/ and, for the
Anthropic SDK's `base_url`, under bodhi/anthropic/v1/ too.

The Anthropic SDK sends its key as `x-api-key`; here that key is the Jupyter token, moved to
`Authorization: Bearer` before jupyter_server authenticates, so it is checked like any token.
Errors, before and during a stream, leave in Anthropic's envelope.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..objs.errors import BodhiError
from ..objs.sse import encode_event
from ..server_core.contract import (
    AnthropicCountTokensRequest,
    AnthropicCountTokensResponse,
    AnthropicErrorEnvelope,
    AnthropicMessage,
    AnthropicMessagesRequest,
)
from ..server_core.origin import set_http_origin
from ._base import BodhiHandler, Op
from ._relay import UpstreamRelayHandler

__all__ = ["CountTokensHandler", "MessagesHandler"]
_TAGS = ("anthropic",)
_ERRORS = (400, 401, 403, 404, 429, 500, 502, 503, 504)


class _AnthropicAuth(BodhiHandler):
    """The Jupyter token as Anthropic clients send a key (`x-api-key`), errors as Anthropic's."""

    async def prepare(self) -> None:  # type: ignore[override]
        key = self.request.headers.get("x-api-key")
        if key and "Authorization" not in self.request.headers:
            self.request.headers["Authorization"] = f"Bearer {key}"
        await super().prepare()

    def error_envelope(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.ops.messages.envelope(status, body["error"])


class MessagesHandler(_AnthropicAuth, UpstreamRelayHandler):
    path = "messages"
    openapi = {"post": Op("Anthropic Messages for every model (stream: true answers with Anthropic's event "
                          "sequence); the Jupyter token as x-api-key or Bearer", request=AnthropicMessagesRequest,
                          response=AnthropicMessage, errors=_ERRORS, tags=_TAGS, stream=True,
                          error=AnthropicErrorEnvelope)}
    ends_with_done = False

    def stream_error_event(self, exc: BodhiError) -> bytes:
        return encode_event(self.ops.messages.envelope(exc.status, exc.to_envelope()["error"]), "error")

    @web.authenticated
    @authorized
    async def post(self) -> None:
        set_http_origin(self.request.headers)
        await self.relay(await self.ops.messages.open(self.json_body()), errors_as_is=True)


class CountTokensHandler(_AnthropicAuth):
    path = "messages/count_tokens"
    openapi = {"post": Op("Input tokens of a Messages request (the provider's count for Anthropic-format API "
                          "models, else an estimate)", request=AnthropicCountTokensRequest,
                          response=AnthropicCountTokensResponse, errors=(400, 403, 404), tags=_TAGS,
                          error=AnthropicErrorEnvelope)}

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_json(await self.ops.messages.count_tokens(self.json_body()))
