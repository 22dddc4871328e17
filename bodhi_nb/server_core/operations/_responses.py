"""OpenAI Responses for every target: `POST bodhi/v1/responses`, retrieve, delete, input items.

The gateway keeps conversation state itself (services/responses_store.py): a response created
with `store` (the default, as OpenAI) is kept with its turn's input, and `previous_response_id`
is expanded into the whole conversation before the request goes anywhere. So a local model, a
chat-completions provider or an Anthropic one continues a conversation exactly as OpenAI's own
API would; an `openai_responses` API model gets the expanded input with `store: false`, so the
state lives in one place.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ...objs.dialects import dialect
from ...services.responses_store import ResponsesStore
from ..contract import ResponseDeleted, ResponseInputItemList, ResponsesCreateRequest, parse
from ..gateway import Gateway, OpenChat
from ._client_dialect import ClientDialect
from ._owners import Owners

__all__ = ["ResponsesOps"]


class ResponsesOps:
    """Create, retrieve and delete responses; list a response's input items."""

    def __init__(self, gateway: Gateway, store: ResponsesStore, owners: Owners | None = None) -> None:
        self._store = store
        self._owners = owners or Owners()
        self._d = dialect("openai_responses")
        self._client = ClientDialect(gateway, self._d)

    def envelope(self, status: int, error: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI error object in the Responses API's envelope (OpenAI's own)."""
        return self._client.d.error_envelope(status, error)

    async def create(self, body: object) -> OpenChat:
        """The answer, open: a Response, or its event stream when `stream` is true."""
        req = parse(ResponsesCreateRequest, body)
        assert isinstance(body, dict)
        items = [_with_id(i) for i in self._d.input_items(body)]
        earlier = await asyncio.to_thread(self._store.history, req.previous_response_id, **self._owners.scope()) \
            if req.previous_response_id else []
        owner = self._owners.current()
        full = {k: v for k, v in body.items() if k not in ("previous_response_id", "store")}
        # Ids are the store's (for input_items); a provider with store=false knows none of them.
        full["input"] = [{k: v for k, v in i.items() if k != "id"} for i in earlier + items]
        keep = req.store is not False

        async def stored(final: dict[str, Any]) -> None:
            final["previous_response_id"] = req.previous_response_id
            final["store"] = keep
            if keep and isinstance(final.get("id"), str):
                await asyncio.to_thread(self._store.put, final, items, owner)

        return await self._client.open(full, native_body={**full, "store": False}, on_final=stored,
                                       client_body=body)

    async def retrieve(self, id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self._store.get, id, **self._owners.scope())

    async def delete(self, id: str) -> ResponseDeleted:
        await asyncio.to_thread(self._store.delete, id, **self._owners.scope())
        return ResponseDeleted(id=id)

    async def input_items(self, id: str) -> ResponseInputItemList:
        """That turn's input items, newest first (the API's default order)."""
        items = list(reversed(await asyncio.to_thread(self._store.input_items, id, **self._owners.scope())))
        return ResponseInputItemList(data=items, first_id=items[0]["id"] if items else None,
                                     last_id=items[-1]["id"] if items else None)


def _with_id(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as the API lists it: with an id (and a message's `type`)."""
    out = dict(item)
    if "role" in out and "type" not in out:
        out["type"] = "message"
    out.setdefault("id", f"msg_{uuid.uuid4().hex}" if out.get("type") == "message" else f"item_{uuid.uuid4().hex}")
    return out
