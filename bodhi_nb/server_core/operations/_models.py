"""Model-name operations: list, look up and explain what the router serves.

Listing reads the store and the local aliases (YAML files, the Hugging Face cache), so it
runs in a worker thread; no provider is contacted, so a dead provider never blocks it.
"""

from __future__ import annotations

import asyncio
import builtins

from ...objs.errors import ModelNotFound
from ..contract import OpenAIModel, OpenAIModelList
from ..model_router import Candidate, ModelEntry, ModelRouter, Resolved

__all__ = ["ModelOps"]


def _obj(e: ModelEntry) -> OpenAIModel:
    return OpenAIModel(id=e.id, created=e.created, owned_by=e.owned_by)


class ModelOps:
    def __init__(self, router: ModelRouter) -> None:
        self._router = router

    async def list(self) -> OpenAIModelList:
        await self._router.hub_fresh()
        entries = await asyncio.to_thread(self._router.list_models)
        return OpenAIModelList(data=[_obj(e) for e in entries])

    async def entries(self) -> builtins.list[ModelEntry]:
        """Every servable name with where it is served (for pickers that group by source)."""
        await self._router.hub_fresh()
        return await asyncio.to_thread(self._router.list_models)

    async def get(self, name: str) -> OpenAIModel:
        await self._router.hub_fresh()
        for e in await asyncio.to_thread(self._router.list_models):
            if e.id == name:
                return _obj(e)
        raise ModelNotFound(name)

    async def resolve(self, name: str) -> Resolved:
        await self._router.hub_fresh()
        return await asyncio.to_thread(self._router.resolve, name)

    async def explain(self, name: str) -> builtins.list[Candidate]:
        await self._router.hub_fresh()
        return await asyncio.to_thread(self._router.explain, name)
