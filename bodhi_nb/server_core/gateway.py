"""Gateway: the one chat path. Validate, route, pick the target, forward.

Remote API models and local aliases differ only in the `ForwardTarget` they produce;
the request then goes through `AiApiService.forward_chat_completion` either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..objs.errors import InvalidRequestError, LocalEngineUnavailable, UpstreamError
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias
from ..services._sse import iter_sse_json
from ..services.ai_api_service import AiApiService, ForwardTarget, UpstreamResponse
from ..services.local_engine import LOCAL_EXTRA_HINT
from .model_router import Destination, Local, ModelRouter, Remote

__all__ = ["Gateway", "OpenChat", "LocalEngineProtocol", "validate_chat_body"]


class LocalEngineProtocol(Protocol):
    async def ensure(self, alias: UserModelAlias | DiscoveredModelAlias) -> str:
        """Start (or reuse) the engine for `alias`; return its OpenAI base URL."""
        ...


@dataclass
class OpenChat:
    """An upstream chat response, open, with where it was routed."""

    response: UpstreamResponse
    destination: Destination
    stream: bool


def validate_chat_body(body: object) -> dict[str, Any]:
    """The checks made before any upstream call; messages name the field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("'model' is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' is required and must be a non-empty list.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] must be an object with a 'role'.", param=f"messages[{i}]")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean.", param="stream")
    return body


class Gateway:
    """Route a chat request and open the upstream response."""

    def __init__(self, router: ModelRouter, ai_api: AiApiService, engine: LocalEngineProtocol | None = None) -> None:
        self.router = router
        self.ai_api = ai_api
        self.engine = engine

    async def open_chat(self, body: object) -> OpenChat:
        req = validate_chat_body(body)
        stream = req.get("stream") is True
        dest = self.router.resolve(req["model"])
        target, req = await self._target(dest, req)
        resp = await self.ai_api.forward_chat_completion(target, req, stream)
        return OpenChat(resp, dest, stream)

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed completion as a dict; an upstream error status raises."""
        oc = await self.open_chat({**body, "stream": False})
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
        base_url = await self.engine.ensure(dest.alias)
        if isinstance(dest.alias, UserModelAlias):
            body = {**body, **dest.alias.request_params.defaults_for(body)}
        return ForwardTarget(base_url, dest.alias.alias, None, "local engine"), body
