"""Anthropic Messages for every target: `POST bodhi/v1/messages` and `count_tokens`.

A model name that resolves to an Anthropic-format API model gets the request as sent; any
other target (local models, OpenAI-format providers, Gemini, router aliases) gets it through
chat, translated both ways by objs/dialects/anthropic.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ...objs.dialects import dialect
from ..contract import AnthropicCountTokensRequest, AnthropicCountTokensResponse, AnthropicMessagesRequest, parse
from ..gateway import Gateway, OpenChat
from ._client_dialect import ClientDialect

__all__ = ["CHARS_PER_TOKEN", "MessagesOps"]

CHARS_PER_TOKEN = 4  # the documented estimate where the target's own count is not at hand


class MessagesOps:
    """Create a message; count a request's input tokens."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._client = ClientDialect(gateway, dialect("anthropic"))

    def envelope(self, status: int, error: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI error object in Anthropic's envelope (`{"type": "error", "error": {...}}`)."""
        return self._client.d.error_envelope(status, error)

    async def open(self, body: object) -> OpenChat:
        """The answer, open: an Anthropic Message, or its event stream when `stream` is true."""
        parse(AnthropicMessagesRequest, body)
        assert isinstance(body, dict)
        return await self._client.open(body)

    async def count_tokens(self, body: object) -> AnthropicCountTokensResponse:
        """Input tokens of a Messages request. An Anthropic-format API model counts them itself;
        for any other target the count is an estimate: the characters of the system prompt,
        messages and tools as JSON, divided by 4 (README, "Dialects")."""
        parse(AnthropicCountTokensRequest, body)
        assert isinstance(body, dict)
        counted = await self._gateway.native_json(body, "anthropic", "messages/count_tokens")
        if counted is not None and isinstance(counted.get("input_tokens"), int):
            return AnthropicCountTokensResponse(input_tokens=counted["input_tokens"])
        parts = [body.get("system"), body.get("messages"), body.get("tools")]
        text = json.dumps([p for p in parts if p], ensure_ascii=False, separators=(",", ":"))
        return AnthropicCountTokensResponse(input_tokens=max(1, math.ceil(len(text) / CHARS_PER_TOKEN)))
