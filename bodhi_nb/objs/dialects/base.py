"""What every API dialect adapter provides (docs/ARCHITECTURE.md, "Dialects").

The gateway's own language is OpenAI chat completions ("chat" below: request bodies,
`chat.completion` objects and `chat.completion.chunk` events). A dialect module translates
between chat and one other API, in both directions, so it serves two places:

- **Client side** (a client speaks the dialect to the gateway: `bodhi/v1/responses`,
  `bodhi/v1/messages`): `request_to_chat` turns the client's body into a chat body, the
  gateway answers in chat, and `chat_to_response` / `ChatToEvents` turn the answer back.
- **Upstream side** (an API model whose `api_format` is the dialect): `chat_to_request`
  turns the chat body into the provider's body, and `response_to_chat` / `EventsToChat`
  turn the provider's answer back into chat.

Same dialect on both sides is never translated: the gateway relays the bytes. Every function
here is pure (no I/O), so each direction is tested on its own. A feature one side cannot
express is an `InvalidRequestError` (400) whose `code` names it, never dropped silently.

A stream event is `SseEvent(event, data)`: `event` is the SSE `event:` name (None for a
`data:`-only event), `data` the parsed JSON object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ChatToEventsProtocol", "DialectProtocol", "EventsToChatProtocol", "SseEvent", "UpstreamWire"]


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event: its `event:` name (None when absent) and its JSON data."""

    event: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class UpstreamWire:
    """Where and how a request in this dialect goes to a provider."""

    path: str  # relative to the API model's base_url, e.g. "messages" or "models/m:generateContent"
    headers: dict[str, str]  # auth and version headers (the key inside: the caller redacts)
    params: dict[str, str]  # query parameters, e.g. {"alt": "sse"}


class ChatToEventsProtocol(Protocol):
    """Client side, streaming: chat chunks in, this dialect's events out (stateful)."""

    def feed(self, chunk: dict[str, Any]) -> list[SseEvent]:
        """Events for one `chat.completion.chunk` (may be none); chunks with `usage` included."""
        ...

    def end(self) -> list[SseEvent]:
        """Closing events once the chat stream ended (`[DONE]`)."""
        ...

    def error(self, error: dict[str, Any]) -> list[SseEvent]:
        """The event(s) that tell this dialect's client the stream failed (an OpenAI error object in)."""
        ...


class EventsToChatProtocol(Protocol):
    """Upstream side, streaming: the provider's events in, chat chunks out (stateful)."""

    def feed(self, event: SseEvent) -> list[dict[str, Any]]:
        """Chat chunks for one provider event (may be none). A provider error event raises
        `UpstreamError` with the provider's message."""
        ...

    def end(self) -> list[dict[str, Any]]:
        """Final chunks (finish_reason, a usage chunk when usage is known) once the provider's stream ended."""
        ...


class DialectProtocol(Protocol):
    """The module-level functions of a dialect module (a module satisfies this Protocol)."""

    NAME: str  # the api_format value, e.g. "anthropic"

    # -- client side --------------------------------------------------------------------
    def request_to_chat(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def chat_to_response(self, completion: dict[str, Any], *, model: str) -> dict[str, Any]: ...
    def chat_to_events(self, *, model: str) -> ChatToEventsProtocol: ...
    def error_envelope(self, status: int, error: dict[str, Any]) -> dict[str, Any]: ...

    # -- upstream side ------------------------------------------------------------------
    def chat_to_request(self, chat: dict[str, Any], *, model: str) -> dict[str, Any]: ...
    def response_to_chat(self, response: dict[str, Any], *, model: str) -> dict[str, Any]: ...
    def events_to_chat(self, *, model: str) -> EventsToChatProtocol: ...
    def upstream_error(self, status: int, body: Any) -> dict[str, Any] | None: ...
    def wire(self, *, model: str, stream: bool, api_key: str | None) -> UpstreamWire: ...
    def models_wire(self, *, api_key: str | None) -> UpstreamWire: ...
    def parse_models(self, body: Any) -> list[str]: ...
