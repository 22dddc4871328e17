"""Private: requests to providers whose wire format is not OpenAI chat completions.

An API model's `api_format` names its dialect (objs/dialects). Its requests still arrive here
as chat bodies and leave as chat answers, so the gateway, the ledger, the cache, router
aliases and every surface treat every provider alike: the dialect module turns the chat
body into the provider's request, and its answer (a body, an error, or a stream of events)
back into chat. What reaches a caller has passed the same key redaction as any upstream
answer (the translated bytes are made from redacted ones).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..objs.dialects import Dialect, dialect
from ..objs.dialects.base import SseEvent, UpstreamWire
from ..objs.errors import InvalidRequestError, UpstreamError
from ..objs.sse import DONE_FRAME, EventSplitter, encode_event, event_json, event_name, split_events
from ._upstream import ForwardTarget, UpstreamResponse

__all__ = ["forward_chat", "forward_native", "models"]

_JSON = {"content-type": "application/json"}


class UpstreamClient(Protocol):
    """What this module needs of services/upstream_client.py's client (which calls it)."""

    async def send(self, target: ForwardTarget, wire: UpstreamWire, payload: dict[str, Any],
                   stream: bool) -> UpstreamResponse: ...

    async def get(self, base_url: str, wire: UpstreamWire, key: str | None, label: str) -> bytes: ...


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def forward_chat(client: UpstreamClient, target: ForwardTarget, endpoint: str, body: dict[str, Any],
                       stream: bool) -> UpstreamResponse:
    """A chat request to a provider of another dialect, answered in chat."""
    d = dialect(target.api_format)
    if endpoint != "chat/completions":
        raise InvalidRequestError(f"The {target.label} speaks the {d.NAME} format, which has no {endpoint} "
                                  "endpoint here; use an OpenAI-format API model or a local model for it.",
                                  param="model", code=f"{endpoint.replace('/', '_')}_not_supported")
    # stream_options is chat's own switch for the usage chunk: every dialect's stream reports usage,
    # and the translated stream always ends with a usage chunk (stripped later if nobody asked).
    payload = d.chat_to_request({k: v for k, v in body.items() if k != "stream_options"}, model=target.model)
    resp = await client.send(target, d.wire(model=target.model, stream=stream, api_key=target.api_key), payload,
                             stream)
    if not resp.ok:
        return await _error_as_chat(d, resp)
    if stream and resp.is_event_stream:
        return UpstreamResponse.streamed(resp, _chat_events(d, resp, target.model))
    raw, data = await resp.aread_json()
    try:
        chat = d.response_to_chat(data, model=target.model)
    except (KeyError, TypeError, ValueError):
        raise UpstreamError(f"The {target.label} answered with something that is not a {d.NAME} response.") from None
    return UpstreamResponse.replayed(resp.status, {**resp.headers, **_JSON}, _compact(chat), resp.label,
                                     resp.upstream_seconds)


async def forward_native(client: UpstreamClient, target: ForwardTarget, body: dict[str, Any],
                         stream: bool, path: str | None = None) -> UpstreamResponse:
    """A request already in the provider's own dialect (a client that speaks it), relayed as it
    is apart from the model name: status, body and events pass through. `path` replaces the
    dialect's generation path (e.g. Anthropic's messages/count_tokens)."""
    d = dialect(target.api_format)
    payload = {**body, "model": target.model}
    wire = d.wire(model=target.model, stream=stream, api_key=target.api_key)
    if path is not None:
        wire = UpstreamWire(path, wire.headers, {})
    return await client.send(target, wire, payload, stream)


async def models(client: UpstreamClient, base_url: str, key: str | None, label: str, api_format: str) -> list[str]:
    """The provider's model ids, listed the way its dialect lists them."""
    d = dialect(api_format)
    r = await client.get(base_url, d.models_wire(api_key=key), key, label)
    try:
        return d.parse_models(json.loads(r))
    except (KeyError, TypeError, ValueError):
        raise UpstreamError(f"The {label} answered its model listing with something that is not a "
                            f"{d.NAME} model list.") from None


async def _error_as_chat(d: Dialect, resp: UpstreamResponse) -> UpstreamResponse:
    """A provider's error answer as the OpenAI envelope, status and headers (Retry-After) kept."""
    raw = await resp.aread()
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = raw.decode(errors="replace")
    err = d.upstream_error(resp.status, data) or {
        "message": f"The {resp.label} answered HTTP {resp.status}.", "type": "upstream_error", "param": None,
        "code": None}
    return UpstreamResponse.replayed(resp.status, {**resp.headers, **_JSON}, _compact({"error": err}), resp.label,
                                     resp.upstream_seconds)


async def _chat_events(d: Dialect, resp: UpstreamResponse, model: str) -> AsyncIterator[bytes]:
    """The provider's events as chat chunks, as they arrive, ending with [DONE]; a provider
    error event raises `UpstreamError` (the relay turns it into an error event)."""
    translate = d.events_to_chat(model=model)
    events = EventSplitter()
    try:
        async for chunk in resp.aiter_bytes():
            out = [encode_event(c) for e in split_events(events.feed(chunk)) for c in _feed(translate, e)]
            if out:
                yield b"".join(out)
        rest = [encode_event(c) for e in split_events(events.end() + b"\n\n") for c in _feed(translate, e)]
        yield b"".join([*rest, *(encode_event(c) for c in translate.end()), DONE_FRAME])
    finally:
        await resp.aclose()


def _feed(translate: Any, event: bytes) -> list[dict[str, Any]]:
    data = event_json(event)
    if not isinstance(data, dict):
        return []  # a comment, a keep-alive, a [DONE] some providers send
    out: list[dict[str, Any]] = translate.feed(SseEvent(event_name(event), data))
    return out
