"""User-alias operations (local models with their own parameters), for every surface.

Alias files are YAML under BODHI_HOME; reading and writing them runs in a worker
thread so the server's event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

from ...objs.alias import Alias
from ...objs.model_alias import UserModelAlias
from ...services.local_models import LocalModels, alias_not_found
from ..contract import AliasFileErrorObj, AliasListResponse, AliasRequest, AliasResponse, parse

__all__ = ["AliasOps"]


def _response(a: UserModelAlias) -> AliasResponse:
    return AliasResponse.model_validate(a.model_dump(mode="json"))


class AliasOps:
    """List, read, create, replace and delete user aliases; list discovered models."""

    def __init__(self, data: LocalModels) -> None:
        self._data = data

    async def list(self) -> AliasListResponse:
        aliases, errors = await asyncio.to_thread(self._data.list_user_aliases)
        return AliasListResponse(data=[_response(a) for a in aliases],
                                 errors=[AliasFileErrorObj(file=e.file, error=e.error) for e in errors])

    async def get(self, name: str) -> AliasResponse:
        found = await asyncio.to_thread(self._data.get_user_alias, name)
        if found is None:
            raise alias_not_found(name)
        return _response(found)

    async def create(self, req: AliasRequest | dict[str, Any]) -> AliasResponse:
        if isinstance(req, dict):
            req = parse(AliasRequest, req)
        created = await asyncio.to_thread(self._data.create_user_alias, Alias(**req.model_dump()))
        return _response(created)

    async def update(self, name: str, req: AliasRequest | dict[str, Any]) -> AliasResponse:
        """Replace an alias; a dict holds only the fields to change (the rest are kept)."""
        if isinstance(req, dict):
            current = (await self.get(name)).model_dump(mode="json", exclude={"source"})
            req = parse(AliasRequest, {**current, **req})
        updated = await asyncio.to_thread(self._data.update_user_alias, name, Alias(**req.model_dump()))
        return _response(updated)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._data.delete_user_alias, name)

    async def models(self) -> builtins.list[dict[str, Any]]:
        """Discovered GGUF models (Hugging Face cache and the bundled one)."""
        found = await asyncio.to_thread(self._data.list_model_aliases)
        return [m.model_dump(mode="json") for m in found]
