"""Router-alias operations: the one set of rules for every surface (docs/ARCHITECTURE.md).

HTTP handlers, `Bodhi`, the panel and the CLI parse their input into the contract's
request objects and call these. Store writes (file lock, fsync) run in a worker thread,
so the Jupyter server's event loop never waits on them. Responses carry each target's
state as this process sees it (ready, cooling down until when, or not served).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from ...objs.errors import InvalidRequestError
from ...objs.router_alias import RouterAlias, RouterAliasSpec
from ..contract import (
    RouterAliasListResponse,
    RouterAliasRequest,
    RouterAliasResponse,
    RouterAliasUpdateRequest,
    RouterTargetStateObj,
    parse,
)
from ..model_router import ModelRouter

__all__ = ["RouterAliasOps"]


class RouterAliasOps:
    """List, read, create, update and delete router aliases."""

    def __init__(self, router: ModelRouter) -> None:
        self._router = router
        self._store = router.router_aliases

    def _response(self, r: RouterAlias) -> RouterAliasResponse:
        states = [self._router.target_state(t) for t in r.targets]
        return RouterAliasResponse(
            alias=r.alias, targets=list(r.targets), cooldown_seconds=r.cooldown_seconds, max_attempts=r.attempts,
            honor_retry_after=r.honor_retry_after, created_at=r.created_at, updated_at=r.updated_at,
            state=[RouterTargetStateObj(target=s.name, state=s.state, cooling_until=s.cooling_until,
                                        served_by=s.served_by) for s in states])

    async def list(self) -> RouterAliasListResponse:
        def work() -> RouterAliasListResponse:
            return RouterAliasListResponse(data=[self._response(r) for r in self._store.list()])

        return await asyncio.to_thread(work)

    async def get(self, alias: str) -> RouterAliasResponse:
        return await asyncio.to_thread(lambda: self._response(self._store.get(alias)))

    async def create(self, req: RouterAliasRequest | dict[str, Any]) -> RouterAliasResponse:
        if isinstance(req, dict):
            req = parse(RouterAliasRequest, req)
        spec = RouterAliasSpec.model_validate(req.model_dump())
        return await asyncio.to_thread(lambda: self._response(self._store.create(spec)))

    async def update(self, alias: str, req: RouterAliasUpdateRequest | dict[str, Any]) -> RouterAliasResponse:
        """Change the fields given; absent or null ones keep their values, except an explicit null
        `max_attempts`, which means every target again. The name stays."""
        if isinstance(req, dict):
            req = parse(RouterAliasUpdateRequest, req)
        if req.alias is not None and req.alias != alias:
            raise InvalidRequestError(f"A router alias cannot be renamed ('{alias}' to '{req.alias}'): create "
                                      "the new name and delete the old one.", param="alias")
        changes = {k: v for k, v in req.model_dump(exclude={"alias"}, exclude_unset=True).items()
                   if v is not None or k == "max_attempts"}
        try:
            updated = await asyncio.to_thread(self._store.update, alias, changes)
        except ValidationError as exc:
            raise InvalidRequestError.from_validation(exc) from None
        return await asyncio.to_thread(self._response, updated)

    async def delete(self, alias: str) -> None:
        await asyncio.to_thread(self._store.delete, alias)
