"""API dialect adapters: OpenAI Responses, Anthropic Messages and Gemini, each translated to
and from OpenAI chat completions, the gateway's own language (base.py has the interface;
docs/ARCHITECTURE.md, "Dialects", the rules). Pure: the I/O is the callers'.

`dialect(name)` is the one lookup, by `api_format` value. It returns the dialect module seen
through `Dialect`, which evens out the few places where the modules differ (what
`upstream_error` returns, which calls take the client's request), so callers treat every
dialect alike.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

from ..errors import InvalidRequestError
from . import anthropic, gemini, responses
from .base import ChatToEventsProtocol, EventsToChatProtocol, SseEvent, UpstreamWire

__all__ = ["DIALECTS", "Dialect", "SseEvent", "UpstreamWire", "dialect"]

_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


class Dialect:
    """One dialect module, with one calling convention for every dialect."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.NAME: str = module.NAME
        self._takes_request = "request" in inspect.signature(module.chat_to_response).parameters

    def __repr__(self) -> str:
        return f"Dialect({self.NAME!r})"

    # -- client side ----------------------------------------------------------------------
    def request_to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.module.request_to_chat(body)
        return out

    def chat_to_response(self, completion: dict[str, Any], *, model: str,
                         request: dict[str, Any] | None = None) -> dict[str, Any]:
        """The chat completion as this dialect's answer; `request` (the client's own body) fills
        the fields an answer echoes, where the dialect has them (the Responses API)."""
        kw = {"request": request} if self._takes_request else {}
        out: dict[str, Any] = self.module.chat_to_response(completion, model=model, **kw)
        return out

    def chat_to_events(self, *, model: str, request: dict[str, Any] | None = None) -> ChatToEventsProtocol:
        kw = {"request": request} if self._takes_request else {}
        out: ChatToEventsProtocol = self.module.chat_to_events(model=model, **kw)
        return out

    def error_envelope(self, status: int, error: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.module.error_envelope(status, error)
        return out

    def final_object(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The complete answer a stream event carries, if it is the last one (Responses'
        response.completed and the like); None for every other event and dialect."""
        if event.get("type") in _FINAL_EVENTS and isinstance(event.get("response"), dict):
            final: dict[str, Any] = event["response"]
            return final
        return None

    # -- upstream side --------------------------------------------------------------------
    def chat_to_request(self, chat: dict[str, Any], *, model: str) -> dict[str, Any]:
        out: dict[str, Any] = self.module.chat_to_request(chat, model=model)
        return out

    def response_to_chat(self, response: dict[str, Any], *, model: str) -> dict[str, Any]:
        out: dict[str, Any] = self.module.response_to_chat(response, model=model)
        return out

    def events_to_chat(self, *, model: str) -> EventsToChatProtocol:
        out: EventsToChatProtocol = self.module.events_to_chat(model=model)
        return out

    def upstream_error(self, status: int, body: Any) -> dict[str, Any] | None:
        """The provider's error answer as an OpenAI error object (`{message, type, param, code}`)."""
        err = self.module.upstream_error(status, body)
        if isinstance(err, dict) and set(err) == {"error"} and isinstance(err["error"], dict):
            err = err["error"]  # a module that returns the whole envelope
        return err if isinstance(err, dict) else None

    def wire(self, *, model: str, stream: bool, api_key: str | None) -> UpstreamWire:
        out: UpstreamWire = self.module.wire(model=model, stream=stream, api_key=api_key)
        return out

    def models_wire(self, *, api_key: str | None) -> UpstreamWire:
        out: UpstreamWire = self.module.models_wire(api_key=api_key)
        return out

    def parse_models(self, body: Any) -> list[str]:
        out: list[str] = self.module.parse_models(body)
        return out

    def input_items(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """A Responses request's `input` as a list of items (only the Responses dialect has them)."""
        out: list[dict[str, Any]] = self.module.input_items(body)
        return out


DIALECTS: dict[str, Dialect] = {m.NAME: Dialect(m) for m in (responses, anthropic, gemini)}


def dialect(name: str) -> Dialect:
    """The dialect of an `api_format` other than "openai" (chat completions needs none)."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise InvalidRequestError(f"Unknown API format '{name}'; use one of openai, {', '.join(DIALECTS)}.",
                                  param="api_format", code="unknown_api_format") from None
