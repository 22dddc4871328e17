"""A client that speaks another dialect than chat completions, answered in its own dialect.

`bodhi/v1/messages` (Anthropic) and `bodhi/v1/responses` (OpenAI Responses) reach every
target: an API model of the client's own format gets the request as it is (the gateway's
`open_native`); anything else (local models, chat-completions providers, other formats,
router aliases) gets it translated to chat, and the chat answer, stream or not, is
translated back chunk by chunk (docs/ARCHITECTURE.md, "Dialects"). The ledger, the budget,
router aliases and key redaction apply on both paths, since both go through the gateway.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ...objs.dialects import Dialect
from ...objs.errors import BodhiError, InvalidRequestError, UpstreamError
from ...objs.sse import EventSplitter, encode_event, event_json, split_events
from ..gateway import Gateway, OpenChat, UpstreamResponse

__all__ = ["ClientDialect", "Finished"]

_JSON = {"content-type": "application/json"}

Finished = Callable[[dict[str, Any]], Awaitable[None]]
"""Awaited with the final answer in the client's dialect once it is complete (stream or not)."""


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class ClientDialect:
    """Open a request in dialect `d` and answer it in `d`, whatever the target speaks."""

    def __init__(self, gateway: Gateway, d: Dialect) -> None:
        self._gateway = gateway
        self.d = d

    async def open(self, body: dict[str, Any], *, native_body: dict[str, Any] | None = None,
                   on_final: Finished | None = None, client_body: dict[str, Any] | None = None) -> OpenChat:
        """The answer, open: a body or an event stream in the client's dialect. `native_body` is
        what to send to a provider of the same dialect (default: `body`); `on_final` receives
        the complete answer (for the Responses store); `client_body` is the request as the
        client sent it (default: `body`), whose fields an answer echoes."""
        request = client_body if client_body is not None else body
        native = await self._gateway.open_native(native_body if native_body is not None else body, self.d.NAME)
        if native is not None:
            if on_final is not None and native.response.ok:
                native.response = await _watched(native.response, self.d, on_final)
            return native
        model = str(body.get("model"))
        try:
            chat = self.d.request_to_chat(body)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:  # a shape the types let by
            raise InvalidRequestError(f"This is not a valid {self.d.NAME} request ({type(exc).__name__}: "
                                      f"{str(exc)[:200]}).") from None
        opened = await self._gateway.open_chat(chat)
        resp = opened.response
        if not resp.ok:
            opened.response = await self._error(resp)
        elif chat.get("stream") is True and resp.is_event_stream:
            opened.response = UpstreamResponse.streamed(resp, self._events(resp, model, request, on_final))
        else:
            data = (await resp.aread_json())[1]
            out = self.d.chat_to_response(data, model=model, request=request)
            if on_final is not None:
                await on_final(out)
            opened.response = UpstreamResponse.replayed(resp.status, {**resp.headers, **_JSON}, _compact(out),
                                                        resp.label, resp.upstream_seconds)
        return opened

    async def _error(self, resp: UpstreamResponse) -> UpstreamResponse:
        """A chat error answer (the OpenAI envelope) in the client's envelope, status and headers kept."""
        raw = await resp.aread()
        try:
            err = json.loads(raw)["error"]
            if not isinstance(err, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            err = {"message": f"The {resp.label} answered HTTP {resp.status}.", "type": "upstream_error",
                   "param": None, "code": None}
        return UpstreamResponse.replayed(resp.status, {**resp.headers, **_JSON},
                                         _compact(self.d.error_envelope(resp.status, err)), resp.label,
                                         resp.upstream_seconds)

    async def _events(self, resp: UpstreamResponse, model: str, request: dict[str, Any],
                      on_final: Finished | None) -> AsyncIterator[bytes]:
        """Chat chunks in, the client's events out, as they arrive. A failure after the first
        event becomes the dialect's own error event."""
        to = self.d.chat_to_events(model=model, request=request)
        events = EventSplitter()
        try:
            try:
                async for chunk in resp.aiter_bytes():
                    out = b"".join(f for c in _chunks(split_events(events.feed(chunk))) for f in _frames(to.feed(c)))
                    if out:
                        yield out
                yield b"".join(_frames(to.end()))
            except BodhiError as exc:
                yield b"".join(_frames(to.error(exc.to_envelope()["error"])))
                return
        finally:
            await resp.aclose()
        final = getattr(to, "response", None)
        if on_final is not None and isinstance(final, dict):
            await on_final(final)


def _chunks(events: list[bytes]) -> list[dict[str, Any]]:
    """The chat chunks among some SSE events ([DONE] and comments left out); an error event
    raises, so it reaches the client as its dialect's error event."""
    out = []
    for e in events:
        data = event_json(e)
        if not isinstance(data, dict):
            continue
        if "error" in data and "choices" not in data:
            err = data["error"]
            raise UpstreamError(str(err.get("message") if isinstance(err, dict) else err))
        out.append(data)
    return out


def _frames(events: list[Any]) -> list[bytes]:
    return [encode_event(e.data, e.event) for e in events]


async def _watched(resp: UpstreamResponse, d: Dialect, on_final: Finished) -> UpstreamResponse:
    """A same-dialect answer relayed as it is, with its final object handed to `on_final`:
    the body itself, or, for a stream, the object a `response.completed`-style event carries."""
    if not resp.is_event_stream:
        raw, data = await resp.aread_json()
        if isinstance(data, dict):
            await on_final(data)
        return UpstreamResponse.replayed(resp.status, resp.headers, raw, resp.label, resp.upstream_seconds)

    async def relay() -> AsyncIterator[bytes]:
        events = EventSplitter()
        final: dict[str, Any] | None = None
        try:
            async for chunk in resp.aiter_bytes():
                for e in split_events(events.feed(chunk)):
                    data = event_json(e)
                    done = d.final_object(data) if isinstance(data, dict) else None
                    final = done if done is not None else final
                yield chunk
        finally:
            await resp.aclose()
        if final is not None:
            await on_final(final)

    return UpstreamResponse.streamed(resp, relay())
