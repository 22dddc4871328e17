"""Private: one ledger row per gateway request, taken from the response as it is read.

The gateway opens a `Meter` when a request arrives and wraps the upstream response in
a `MeteredResponse`. Whoever reads the response (the HTTP relay, `Bodhi`, `map`, the
panels) therefore feeds the ledger without knowing it: a non-streamed body gives its
`usage`; a stream is watched by a `StreamTap` on its way through, which also removes
the usage event the gateway asked for on the client's behalf. The row is queued once,
when the response ends, fails or is abandoned; queuing never waits on the file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..objs.errors import BodhiError
from ..objs.openai import completion_text
from ..services.upstream_client import UpstreamResponse, upstream_status_error
from ..services.usage import (
    Ledger,
    StreamTap,
    TokenUsage,
    UsageRecord,
    usage_from_body,
    wants_usage,
    with_include_usage,
)
from .model_router import Destination, Remote
from .opened import OpenChat
from .origin import current_hub_user, current_origin, current_surface

__all__ = ["Meter", "MeteredResponse"]

CLIENT_CLOSED = 499  # the caller went away before the response ended (nginx's convention)


def _prompt(body: object) -> Any:
    """What the prompt was, for the ledger's optional content column: chat's and Anthropic's
    `messages`, the Responses API's `input`."""
    if not isinstance(body, dict):
        return None
    return body.get("messages", body.get("input"))


class Meter:
    """What is known about one request, from arrival to its last byte."""

    __slots__ = (
        "done",
        "kernel_id",
        "ledger",
        "local",
        "messages",
        "model",
        "notebook",
        "provider",
        "strip",
        "surface",
        "t0",
        "target",
        "ts",
        "upstream_model",
        "request_key",
        "hub",
    )

    def __init__(self, ledger: Ledger, body: object, surface: str | None = None,
                 request_key: str | None = None) -> None:
        self.ledger = ledger
        self.request_key = request_key  # a batch row's id: its answer is one ledger row, however often sent
        self.t0 = time.perf_counter()
        self.ts = time.time()
        self.surface = surface or current_surface()
        self.kernel_id, self.notebook = current_origin()
        self.hub = current_hub_user()  # the JupyterHub user whose row and budgets these are (hub service)
        model = body.get("model") if isinstance(body, dict) else None
        self.model: str | None = model if isinstance(model, str) else None
        self.provider: str | None = None
        self.upstream_model: str | None = None
        self.target: str | None = None  # the router-alias target that answered
        self.strip = False  # the gateway added include_usage: take the usage event out again
        self.local = False
        self.messages = _prompt(body) if ledger.log_content else None
        self.done = False

    def routed(self, dest: Destination, body: dict[str, Any], stream: bool, *, native: bool = False
               ) -> dict[str, Any]:
        """Before forwarding (each router-alias leg again): note where it goes, check the budget,
        and decide here, once, whether a stream's usage event is the caller's or only the ledger's:
        a remote stream is asked for usage on the caller's behalf, and the local engine always ends
        a stream with one (services/_engine_fidelity.py); either is stripped unless the caller asked."""
        self._where(dest)
        hub = self.hub
        self.ledger.check_budget(self.model or "", self.upstream_model, self.provider,
                                 user=hub.name if hub else None, groups=hub.groups if hub else ())
        if native:  # a dialect's own stream, relayed as it is: its usage is read, never stripped
            self.strip = False
        elif isinstance(dest, Remote):
            body, self.strip = with_include_usage(body)
        else:
            self.strip = stream and not wants_usage(body)
        return body

    def _where(self, dest: Destination) -> None:
        if isinstance(dest, Remote):
            self.provider, self.upstream_model = dest.api_alias.id, dest.upstream_model
        else:
            self.provider, self.upstream_model, self.local = "local", dest.alias.alias, True

    def attach(self, oc: OpenChat) -> OpenChat:
        """Wrap the opened response so reading it completes the row."""
        if self.provider is None:  # answered from the cache: routed() never ran
            self._where(oc.destination)
        self.target = getattr(oc, "target", None)
        oc.response = MeteredResponse(oc.response, self, oc.cached)
        return oc

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, BodhiError):
            self.finish(exc.status, exc.code)
        elif isinstance(exc, asyncio.CancelledError):
            self.finish(CLIENT_CLOSED, "client_closed")
        else:
            self.finish(500, "internal_error")

    def finish(self, status: int, error_code: str | None = None, usage: TokenUsage | None = None, *,
               ttft: float | None = None, cached: bool = False, reply: str | None = None) -> None:
        """Queue the row (once; later calls are ignored). Requests without a model name are not rows."""
        if self.done or self.model is None:
            return
        self.done = True
        now = time.perf_counter()
        content = None
        if self.messages is not None:
            content = json.dumps({"messages": self.messages, "reply": reply}, ensure_ascii=False, default=str)
        self.ledger.record(UsageRecord(
            model=self.model, surface=self.surface, provider=self.provider, upstream_model=self.upstream_model,
            target=self.target, status=status, error_code=error_code,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            cached=cached, latency_ms=round((now - self.t0) * 1000, 3),
            ttft_ms=None if ttft is None else round((ttft - self.t0) * 1000, 3),
            cost_usd=0.0 if cached else None, kernel_id=self.kernel_id, notebook=self.notebook, content=content,
            ts=self.ts, request_key=self.request_key if 200 <= status < 300 else None,
            hub_user=self.hub.name if self.hub else None, hub_server=self.hub.server if self.hub else None,
            hub_groups=self.hub.groups if self.hub else ()))


class MeteredResponse(UpstreamResponse):
    """An `UpstreamResponse` that completes its ledger row as it is read.

    Everything not overridden here is the wrapped response's own (attributes are looked
    up on it), so callers see the same object they always did.
    """

    def __init__(self, inner: UpstreamResponse, meter: Meter, cached: bool) -> None:
        # No super().__init__: state lives in `inner`, reached through __getattr__.
        self._inner = inner
        self._meter = meter
        self._cached = cached
        self._tap: StreamTap | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        m = self._meter
        tap = self._tap = StreamTap(strip=m.strip, count=m.local, content=m.messages is not None)
        try:
            async for out in tap.relay(self._inner.aiter_bytes()):
                yield out
        except BodhiError as exc:
            m.finish(exc.status, exc.code, self._usage(), ttft=tap.first_at)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._end_stream(completed=False)
            raise
        self._end_stream(completed=True)

    def _usage(self) -> TokenUsage | None:
        tap = self._tap
        if tap is None:
            return None
        if tap.usage is None and self._meter.local and tap.content_events:
            # llama.cpp streams one text event per generated token and reports no usage.
            return TokenUsage(None, tap.content_events, tap.content_events)
        return tap.usage

    def _end_stream(self, *, completed: bool) -> None:
        """Ended: an error event in the stream, the whole stream (or its [DONE]), or abandoned;
        the time to first token is the tap's, whoever ends the stream."""
        tap = self._tap
        first = tap.first_at if tap is not None else None
        if tap is not None and tap.error is not None:
            self._meter.finish(502, tap.error, self._usage(), ttft=first)
        elif completed or (tap is not None and tap.done):
            reply = "".join(tap.text) if tap is not None and self._meter.messages is not None else None
            self._meter.finish(self.status, None, self._usage(), ttft=first, cached=self._cached, reply=reply)
        else:
            self._meter.finish(CLIENT_CLOSED, "client_closed", self._usage(), ttft=first)

    async def aread(self) -> bytes:
        try:
            raw = await self._inner.aread()
        except BodhiError as exc:
            self._meter.failed(exc)
            raise
        self._body_read(raw, None)
        return raw

    async def aread_json(self) -> tuple[bytes, Any]:
        try:
            raw, data = await self._inner.aread_json()
        except BodhiError as exc:
            self._meter.failed(exc)
            raise
        self._body_read(raw, data)
        return raw, data

    def _body_read(self, raw: bytes, data: Any) -> None:
        if self._meter.done:
            return
        status = self.status
        if not 200 <= status < 300:
            err = upstream_status_error(status, raw, self.headers, self.label)
            self._meter.finish(status, err.code)
            return
        if data is None:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
        self._meter.finish(status, None, usage_from_body(data), cached=self._cached, reply=completion_text(data))

    async def aclose(self) -> None:
        await self._inner.aclose()
        if not self._meter.done:  # the reader stopped at [DONE] or went away
            self._end_stream(completed=False)
