"""Gateway: the one path for chat completions and embeddings. Validate, route, pick the
target, forward.

Remote API models and local aliases differ only in the `ForwardTarget` they produce;
the request then goes through `UpstreamClient.forward` either way (for the local engine,
adapted by `_local_adapter`, since llama.cpp does not read every OpenAI field). A router
alias tries its targets in that same way, one after another, until one answers
(docs/ARCHITECTURE.md, "Router aliases").
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..objs.errors import (
    BodhiError,
    BudgetExceeded,
    InvalidRequestError,
    LocalEngineUnavailable,
    ModelNotFound,
    NotFoundError,
    TargetsCoolingDown,
    UpstreamError,
)
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias
from ..objs.router_alias import RouterAlias
from ..objs.sse import iter_sse_json
from ..services.cache import ResponseCache, cache_key
from ..services.db import KeyNotReady
from ..services.local_engine import LOCAL_EXTRA_HINT, EngineEndpoint, Purpose
from ..services.retry import hinted_delay
from ..services.upstream_client import (
    ForwardTarget,
    UpstreamClient,
    UpstreamResponse,
    openai_error,
    upstream_status_error,
)
from ..services.usage import Ledger
from ._local_adapter import CHAT, EMBEDDINGS, adapt, forward_local
from ._metering import Meter
from .contract import ChatCompletionRequest, EmbeddingRequest, parse
from .model_router import Destination, Local, ModelRouter, Remote
from .opened import OpenChat, RoutedCompletion

__all__ = ["Gateway", "OpenChat", "LocalEngineProtocol", "cache_target", "RoutedCompletion", "TARGET_HEADER",
           "UpstreamResponse", "relayable_error_body"]

TARGET_HEADER = "x-bodhi-target"  # on every response of a router alias: the target that answered


class LocalEngineProtocol(Protocol):
    async def ensure(self, alias: UserModelAlias | DiscoveredModelAlias, purpose: Purpose = "chat") -> EngineEndpoint:
        """Start (or reuse) the engine for `alias` (able to embed for "embeddings"); return
        its OpenAI base URL and key."""
        ...


class Gateway:
    """Route a chat or embeddings request and open the upstream response."""

    def __init__(self, router: ModelRouter, upstream: UpstreamClient, engine: LocalEngineProtocol | None = None,
                 cache: ResponseCache | None = None, cache_by_default: bool = False,
                 ledger: Ledger | None = None) -> None:
        self.router = router
        self.upstream = upstream
        self.engine = engine
        self.cache = cache
        # Whether a request that does not say (the HTTP route) uses the cache: a server option.
        self.cache_by_default = cache_by_default
        self.ledger = ledger  # one usage row per request (None: not recorded)

    async def open_chat(self, body: object, *, cache: bool | None = None, surface: str | None = None,
                        endpoint: str = CHAT, request_key: str | None = None) -> OpenChat:
        """Route and open the upstream response; `cache` (default: the server option) lets a
        non-streamed chat request be answered from, and stored in, the response cache. The ledger
        row (`surface`: default from the caller's context) completes as the response is read.
        `endpoint` is chat/completions or embeddings: the same routing, forwarding and ledger.
        `request_key` names a batch row: its successful answer is one ledger row even if a crash
        made it be sent again."""
        meter = Meter(self.ledger, body, surface, request_key) if self.ledger is not None else None
        try:
            opened = await self._open(body, cache, meter, endpoint)
        except BaseException as exc:
            if meter is not None:
                meter.failed(exc)
            raise
        return meter.attach(opened) if meter is not None else opened

    async def open_embeddings(self, body: object, *, surface: str | None = None) -> OpenChat:
        """Route and open an embeddings response (never from the response cache)."""
        return await self.open_chat(body, cache=False, surface=surface, endpoint=EMBEDDINGS)

    async def open_native(self, body: dict[str, Any], api_format: str, *, surface: str | None = None
                          ) -> OpenChat | None:
        """Relay a request in a client's own dialect (`api_format`, e.g. "anthropic") as it is, when
        its name resolves to an API model of that same format: the body (model renamed), status,
        answer and events pass through, and the ledger reads the dialect's usage. None when the
        name is a router alias or resolves to anything else: the caller then translates to chat
        and calls `open_chat` (docs/ARCHITECTURE.md, "Dialects")."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequestError("model is required.", param="model")
        if not self.router.index_is_current():
            await asyncio.to_thread(self.router.refresh_index)
        if self.router.router_alias(model) is not None:
            return None
        dest = await self._resolve(model)
        if not isinstance(dest, Remote) or dest.api_alias.api_format.value != api_format:
            return None
        stream = body.get("stream") is True
        meter = Meter(self.ledger, body, surface) if self.ledger is not None else None
        try:
            if meter is not None:
                meter.routed(dest, body, stream, native=True)
            resp = await self.upstream.forward_native(await self.remote_target(dest), body, stream)
        except BaseException as exc:
            if meter is not None:
                meter.failed(exc)
            raise
        opened = OpenChat(resp, dest, stream)
        return meter.attach(opened) if meter is not None else opened

    async def native_json(self, body: dict[str, Any], api_format: str, path: str) -> dict[str, Any] | None:
        """A side request of a dialect (Anthropic's count_tokens) to an API model of that format,
        its JSON answer; None when the name does not resolve to one. Not a generation: no ledger
        row. An error answer raises."""
        model = body.get("model")
        if not isinstance(model, str) or self.router.router_alias(model) is not None:
            return None
        dest = await self._resolve(model)
        if not isinstance(dest, Remote) or dest.api_alias.api_format.value != api_format:
            return None
        resp = await self.upstream.forward_native(await self.remote_target(dest), body, False, path)
        if not resp.ok:
            raise await resp.error()
        data = (await resp.aread_json())[1]
        return data if isinstance(data, dict) else None

    async def _open(self, body: object, cache: bool | None, meter: Meter | None, endpoint: str) -> OpenChat:
        parse(ChatCompletionRequest if endpoint == CHAT else EmbeddingRequest, body)  # the raw body is forwarded
        assert isinstance(body, dict)
        req: dict[str, Any] = body
        stream = endpoint == CHAT and req.get("stream") is True
        use_cache = (self.cache is not None and endpoint == CHAT and not stream
                     and (self.cache_by_default if cache is None else cache))
        if not self.router.index_is_current():  # another process wrote the store: re-read it off the loop
            await asyncio.to_thread(self.router.refresh_index)
        await self.router.hub_fresh()
        ra = self.router.router_alias(req["model"])  # router aliases first (in-memory map)
        legs: list[tuple[str | None, Destination]] = (
            [(None, await self._resolve(req["model"]))] if ra is None else await self._legs(ra))
        # Each leg's body as it is forwarded: a user alias's request defaults filled in, once.
        bodies = [_with_alias_defaults(dest, endpoint, req) for _, dest in legs]
        keys = [cache_key(cache_target(dest), b) if use_cache else None for (_, dest), b in zip(legs, bodies, strict=True)]
        for (name, dest), key in zip(legs, keys, strict=True):  # any leg's earlier answer: a re-run sends nothing
            hit = await self.cache.aget(key) if key is not None and self.cache is not None else None
            if hit is not None:
                headers = {"content-type": "application/json", "x-bodhi-cache": "hit",
                           **({TARGET_HEADER: name} if name is not None else {})}
                return OpenChat(UpstreamResponse.replayed(200, headers, hit, _label(dest)), dest, False, cached=True, target=name)
        if ra is None:
            dest = legs[0][1]
            resp = await self._forward(dest, endpoint, bodies[0], stream, meter)
            return OpenChat(await self._kept(resp, keys[0]), dest, stream)
        return await self._fall_back(ra, legs, bodies, keys, stream, meter, endpoint)

    async def destination(self, name: str) -> Destination | RouterAlias:
        """Where `name` goes (a router alias, or one destination); `ModelNotFound` when nowhere."""
        if not self.router.index_is_current():
            await asyncio.to_thread(self.router.refresh_index)
        await self.router.hub_fresh()
        ra = self.router.router_alias(name)
        return ra if ra is not None else await self._resolve(name)

    async def _resolve(self, name: str) -> Destination:
        """API names resolve from the store's in-memory index; local ones read alias files and
        the Hugging Face cache, so that lookup runs off the event loop."""
        dest: Destination | None = self.router.resolve_api(name)
        return dest if dest is not None else await asyncio.to_thread(self.router.resolve_target, name)

    async def _legs(self, ra: RouterAlias) -> list[tuple[str | None, Destination]]:
        legs: list[tuple[str | None, Destination]] = []
        for name in ra.targets:
            try:
                legs.append((name, await self._resolve(name)))
            except ModelNotFound:
                continue  # not served (any more); explain() shows it as "unknown"
        if not legs:
            raise NotFoundError(f"No target of router alias '{ra.alias}' is served by an API model or local alias "
                                f"({', '.join(ra.targets)}).", param="model", code="model_not_found")
        return legs

    async def _kept(self, resp: UpstreamResponse, key: str | None) -> UpstreamResponse:
        """A successful completion stored in the response cache (when `key`), readable again."""
        if key is None or self.cache is None or not resp.ok:
            return resp
        raw, data = await resp.aread_json()
        if isinstance(data, dict) and isinstance(data.get("choices"), list):
            self.cache.put_later(key, raw)  # committed by the cache's writer thread
        return UpstreamResponse.replayed(resp.status, resp.headers, raw, resp.label, resp.upstream_seconds)

    async def completion(self, body: dict[str, Any], *, cache: bool | None = None) -> dict[str, Any]:
        """A non-streamed completion as a dict; an upstream error status raises."""
        oc = await self.open_chat({**body, "stream": False}, cache=cache)
        if not oc.response.ok:
            raise await oc.response.error()
        data = (await oc.response.aread_json())[1]
        if oc.target is not None and isinstance(data, dict):
            data = RoutedCompletion(data)
            data.target = oc.target
        return data

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

    async def _fall_back(self, ra: RouterAlias, legs: list[tuple[str | None, Destination]],
                         bodies: list[dict[str, Any]], keys: list[str | None], stream: bool, meter: Meter | None,
                         endpoint: str) -> OpenChat:
        """Try a router alias's targets in order. A 429, a 5xx or no connection moves on to the
        next target and cools the failed one down (its Retry-After when given and honoured),
        and cooling targets get no request. Other 4xx are the caller's: they are answered as
        they are. A stream falls back only here, before its first byte reaches the caller."""
        cooldowns = self.router.cooldowns
        failed: list[str] = []
        last: BodhiError | None = None
        tried = 0
        for (name, leg), body, key in zip(legs, bodies, keys, strict=True):
            assert name is not None
            if tried >= ra.attempts:
                break
            if cooldowns.remaining(name) > 0:
                continue
            try:
                resp = await self._forward(leg, endpoint, body, stream, meter)
            except BudgetExceeded as exc:  # today's budget, not this target's health: no cooldown
                last = exc
                continue
            except BodhiError as exc:
                tried += 1
                if not _falls_back(exc.status):
                    raise
                cooldowns.cool(name, ra.cooldown_for(hinted_delay(exc.headers)))
                failed.append(f"{name}: {exc.status}")
                last = exc
                continue
            tried += 1
            if _falls_back(resp.status):
                last = await resp.error()  # reads and closes it
                cooldowns.cool(name, ra.cooldown_for(hinted_delay(resp.headers)))
                failed.append(f"{name}: {resp.status}")
                continue
            cooldowns.ready(name)
            resp.headers[TARGET_HEADER] = name
            return OpenChat(await self._kept(resp, key), leg, stream, target=name)
        waits = [cooldowns.remaining(name) for name, _ in legs if name is not None]
        if last is None or all(w > 0 for w in waits):  # (None: one cooled off while we looked)
            raise TargetsCoolingDown(ra.alias, max(1, math.ceil(min(waits))), ", ".join(failed))
        raise last  # max_attempts used up by failures, or today's budget

    async def remote_target(self, dest: Remote) -> ForwardTarget:
        """An API model's request target; its key comes from the index the name was resolved from
        (decrypted once per snapshot, on the loop), or is read in a thread when memory cannot
        answer: the store changed since, or another process rotated the master key."""
        a = dest.api_alias
        hub = self.router.hub
        if hub is not None and hub.owns(a):  # the JupyterHub service's model: the user's own hub token
            return hub.target(dest.upstream_model)
        db = self.router.db
        try:
            key = db.indexed_api_key(a)
        except KeyNotReady:
            key = await asyncio.to_thread(db.get_api_key, a.id)
        return ForwardTarget(a.base_url, dest.upstream_model, key, f"API model '{a.id}'", a.api_format.value)

    async def _forward(self, dest: Destination, endpoint: str, body: dict[str, Any], stream: bool,
                       meter: Meter | None) -> UpstreamResponse:
        """Open one destination's response. The meter, when there is one, sees where it goes first
        (the budget check, and for a stream whether to ask for usage and strip it again). API models
        get the body as it is (model renamed); the local engine gets it adapted by `_local_adapter`
        (and its answer with it)."""
        if meter is not None:
            body = meter.routed(dest, body, stream)
        if isinstance(dest, Remote):
            target = await self.remote_target(dest)
            if endpoint == CHAT:
                return await self.upstream.forward_chat_completion(target, body, stream)
            return await self.upstream.forward(target, endpoint, body)
        fmt = dest.alias.context_params.chat_format if isinstance(dest.alias, UserModelAlias) else None
        plan = adapt(endpoint, body, model=dest.alias.alias, stream=stream, chat_format=fmt,
                     keep_usage=meter is not None)  # a 400 here comes before any engine start
        if self.engine is None:
            raise LocalEngineUnavailable(
                f"'{dest.alias.alias}' is a local model, but the local engine is not available here. "
                f"Install it with: {LOCAL_EXTRA_HINT}")
        engine = await self.engine.ensure(dest.alias, "embeddings" if endpoint == EMBEDDINGS else "chat")
        target = ForwardTarget(engine.base_url, dest.alias.alias, engine.api_key, "local engine")
        return await forward_local(self.upstream, target, plan)


async def relayable_error_body(resp: UpstreamResponse) -> bytes:
    """The body of a non-2xx upstream answer to relay to an HTTP client as it is (an OpenAI error
    envelope, the key already masked), or raise it as our error when it is anything else."""
    body = await resp.aread()
    if openai_error(body) is None:
        raise upstream_status_error(resp.status, body, resp.headers, resp.label)
    return body


def _falls_back(status: int) -> bool:
    """Worth the next router-alias target: rate limited, the provider failed, or unreachable (502/504)."""
    return status == 429 or status >= 500


def cache_target(dest: Destination) -> str:
    """Where a request really goes, as the cache key's first half (never a key or secret)."""
    if isinstance(dest, Remote):
        a = dest.api_alias
        return f"api:{a.id}|{a.base_url}|{dest.upstream_model}"
    a_local = dest.alias
    return f"local:{a_local.alias}|{a_local.repo}|{a_local.filename}|{a_local.snapshot}"


def _with_alias_defaults(dest: Destination, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """A chat body with a user alias's request defaults filled in where the request left a field
    unset (the one place they are applied: the cache key and the forwarded body both use it)."""
    if endpoint == CHAT and isinstance(dest, Local) and isinstance(dest.alias, UserModelAlias):
        return {**body, **dest.alias.request_params.defaults_for(body)}
    return body


def _label(dest: Destination) -> str:
    return f"API model '{dest.api_alias.id}'" if isinstance(dest, Remote) else "local engine"
