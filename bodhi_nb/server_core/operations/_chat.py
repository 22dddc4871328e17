"""Chat operations and the pure rules every chat surface shares.

`build_messages` (text or messages, plus an optional system prompt), `delta_text`
(the text of a streamed chunk) and `reply_text` (the text of a completion) are written
once here and used by `Bodhi`, the chat panel, the magic and the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..gateway import Gateway, OpenChat

__all__ = ["ChatOps", "Messages", "build_messages", "delta_text", "reply_text"]

Messages = str | list[dict[str, Any]]


def build_messages(text_or_messages: Messages, system: str | None = None) -> list[dict[str, Any]]:
    """A user message from text (or the messages as given), after an optional system prompt."""
    msgs = ([{"role": "user", "content": text_or_messages}] if isinstance(text_or_messages, str)
            else list(text_or_messages))
    if system and system.strip():
        msgs = [{"role": "system", "content": system}, *msgs]
    return msgs


def delta_text(chunk: dict[str, Any]) -> str:
    """The text a `chat.completion.chunk` adds (every choice's delta content)."""
    out = []
    for choice in chunk.get("choices") or []:
        text = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
        if text:
            out.append(text)
    return "".join(out)


def reply_text(resp: dict[str, Any]) -> str:
    """The first choice's message content of a chat completion ('' when there is none)."""
    try:
        return resp["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


class ChatOps:
    """Chat completions, validated by the contract and forwarded by the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def open(self, body: object, *, cache: bool | None = None) -> OpenChat:
        """Validate, route and open the upstream response (for relaying as it arrives);
        `cache` as in `Gateway.open_chat` (None: the server's response-cache option)."""
        return await self._gateway.open_chat(body, cache=cache)

    async def completion(self, body: dict[str, Any], *, cache: bool | None = None) -> dict[str, Any]:
        return await self._gateway.completion(body, cache=cache)

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._gateway.stream_chunks(body)
