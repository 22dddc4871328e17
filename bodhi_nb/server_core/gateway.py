"""Gateway: the one chat path. Validate, route, pick the target, forward.

Remote API models and local aliases differ only in the `ForwardTarget` they produce;
the request then goes through `AiApiService.forward_chat_completion` either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ..objs.errors import LocalEngineUnavailable, UpstreamError
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias
from ..services._sse import iter_sse_json
from ..services.ai_api_service import AiApiService, ForwardTarget, UpstreamResponse
from ..services.cache import ResponseCache, cache_key
from ..services.local_engine import LOCAL_EXTRA_HINT, EngineEndpoint
from ..services.usage import Ledger
from ._metering import Meter
from .contract import ChatCompletionRequest, parse
from .model_router import Destination, Local, ModelRouter, Remote

__all__ = ["Gateway", "OpenChat", "LocalEngineProtocol", "cache_target"]


class LocalEngineProtocol(Protocol):
    async def ensure(self, alias: UserModelAlias | DiscoveredModelAlias) -> EngineEndpoint:
        """Start (or reuse) the engine for `alias`; return its OpenAI base URL and key."""
        ...


@dataclass
class OpenChat:
    """An upstream chat response, open, with where it was routed."""

    response: UpstreamResponse
    destination: Destination
    stream: bool
    cached: bool = False  # answered from the response cache, no upstream request


class Gateway:
    """Route a chat request and open the upstream response."""

    def __init__(self, router: ModelRouter, ai_api: AiApiService, engine: LocalEngineProtocol | None = None,
                 cache: ResponseCache | None = None, cache_by_default: bool = False,
                 ledger: Ledger | None = None) -> None:
        self.router = router
        self.ai_api = ai_api
        self.engine = engine
        self.cache = cache
        # Whether a request that does not say (the HTTP route) uses the cache: a server option.
        self.cache_by_default = cache_by_default
        self.ledger = ledger  # one usage row per request (None: not recorded)

    async def open_chat(self, body: object, *, cache: bool | None = None, surface: str | None = None) -> OpenChat:
        """Route and open the upstream response; `cache` (default: the server option) lets a
        non-streamed request be answered from, and stored in, the response cache. The ledger
        row (`surface`: default from the caller's context) completes as the response is read."""
        if self.ledger is None:
            return await self._open_chat(body, cache, None)
        meter = Meter(self.ledger, body, surface)
        try:
            return meter.attach(await self._open_chat(body, cache, meter))
        except BaseException as exc:
            meter.failed(exc)
            raise

    async def _open_chat(self, body: object, cache: bool | None, meter: Meter | None) -> OpenChat:
        parse(ChatCompletionRequest, body)  # validates; the raw body is what is forwarded
        assert isinstance(body, dict)
        req: dict[str, Any] = body
        stream = req.get("stream") is True
        # API names resolve from the store's in-memory index; local ones read alias files
        # and the Hugging Face cache, so that lookup runs off the event loop.
        dest: Destination | None = self.router.resolve_api(req["model"])
        if dest is None:
            dest = await asyncio.to_thread(self.router.resolve, req["model"])
        key = None
        if self.cache is not None and not stream and (self.cache_by_default if cache is None else cache):
            key = cache_key(cache_target(dest), _with_alias_defaults(dest, req))
            hit = await self.cache.aget(key)
            if hit is not None:
                return OpenChat(_replay(200, {"content-type": "application/json", "x-bodhi-cache": "hit"}, hit,
                                        _label(dest)), dest, False, cached=True)
        if meter is not None:
            req = meter.routed(dest, req)  # budget check; remote streams asked for usage
        target, req = await self._target(dest, req)
        resp = await self.ai_api.forward_chat_completion(target, req, stream)
        if key is not None and self.cache is not None and resp.ok:
            raw, data = await resp.aread_json()
            if isinstance(data, dict) and isinstance(data.get("choices"), list):
                self.cache.put_later(key, raw)  # committed by the cache's writer thread
            resp = _replay(resp.status, resp.headers, raw, resp.label, resp.upstream_seconds)
        return OpenChat(resp, dest, stream)

    async def completion(self, body: dict[str, Any], *, cache: bool | None = None) -> dict[str, Any]:
        """A non-streamed completion as a dict; an upstream error status raises."""
        oc = await self.open_chat({**body, "stream": False}, cache=cache)
        if not oc.response.ok:
            raise await oc.response.error()
        return (await oc.response.aread_json())[1]

    async def stream_chunks(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`chat.completion.chunk` dicts as they arrive; closing the iterator closes the upstream."""
        oc = await self.open_chat({**body, "stream": True})
        resp = oc.response
        try:
            if not resp.ok:
                raise await resp.error()
            async for event in iter_sse_json(resp.aiter_bytes()):
                if "error" in event:
                    err = event["error"]
                    msg = err.get("message") if isinstance(err, dict) else str(err)
                    raise UpstreamError(f"The {resp.label} failed mid-stream: {resp.redact(str(msg))}")
                yield event
        finally:
            await resp.aclose()

    async def _target(self, dest: Destination, body: dict[str, Any]) -> tuple[ForwardTarget, dict[str, Any]]:
        if isinstance(dest, Remote):
            a = dest.api_alias
            key = self.router.db.get_api_key(a.id)
            return ForwardTarget(a.base_url, dest.upstream_model, key, f"API model '{a.id}'"), body
        assert isinstance(dest, Local)
        if self.engine is None:
            raise LocalEngineUnavailable(
                f"'{dest.alias.alias}' is a local model, but the local engine is not available here. "
                f"Install it with: {LOCAL_EXTRA_HINT}")
        engine = await self.engine.ensure(dest.alias)
        if isinstance(dest.alias, UserModelAlias):
            body = {**body, **dest.alias.request_params.defaults_for(body)}
        target = ForwardTarget(engine.base_url, dest.alias.alias, engine.api_key, "local engine")
        return target, _local_response_format(body)


def _local_response_format(body: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's server takes a JSON schema as `{"type": "json_object", "schema": ...}`, not
    OpenAI's `{"type": "json_schema", "json_schema": {"schema": ...}}`; structured output
    then works the same for local and remote models."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema" and isinstance(rf.get("json_schema"), dict):
        schema = rf["json_schema"].get("schema")
        return {**body, "response_format": {"type": "json_object", **({"schema": schema} if schema else {})}}
    return body


def cache_target(dest: Destination) -> str:
    """Where a request really goes, as the cache key's first half (never a key or secret)."""
    if isinstance(dest, Remote):
        a = dest.api_alias
        return f"api:{a.id}|{a.base_url}|{dest.upstream_model}"
    a_local = dest.alias
    return f"local:{a_local.alias}|{a_local.repo}|{a_local.filename}|{a_local.snapshot}"


def _with_alias_defaults(dest: Destination, body: dict[str, Any]) -> dict[str, Any]:
    if isinstance(dest, Local) and isinstance(dest.alias, UserModelAlias):
        return {**body, **dest.alias.request_params.defaults_for(body)}
    return body


def _label(dest: Destination) -> str:
    return f"API model '{dest.api_alias.id}'" if isinstance(dest, Remote) else "local engine"


def _replay(status: int, headers: dict[str, str], body: bytes, label: str, upstream_seconds: float = 0.0
            ) -> UpstreamResponse:
    """A response already read (or from the cache) as an `UpstreamResponse` callers can read again."""
    out = UpstreamResponse(httpx.Response(status, headers=headers, content=body), label)
    out.upstream_seconds = upstream_seconds
    return out
