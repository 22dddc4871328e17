"""Handlers for router-alias CRUD: parse, call the operations layer, serialise.

Every rule (names, targets, update semantics, conflicts) is in the operations layer and
the store (server_core/operations/_router_aliases.py, services/db/router_aliases.py).
"""

from __future__ import annotations

from urllib.parse import unquote

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import (
    RouterAliasListResponse,
    RouterAliasRequest,
    RouterAliasResponse,
    RouterAliasUpdateRequest,
)
from ._base import MANAGE_RESOURCE, BodhiHandler, Op

__all__ = ["RouterAliasesHandler", "RouterAliasHandler"]

_TAGS = ("router-aliases",)


class RouterAliasesHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = "router-aliases"
    openapi = {
        "get": Op("List router aliases, with each target's state", response=RouterAliasListResponse, tags=_TAGS),
        "post": Op("Create a router alias (ordered fallback targets)", request=RouterAliasRequest,
                   response=RouterAliasResponse, status=201, errors=(400, 403, 409, 422), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json(await self.ops.router_aliases.list())

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_json(await self.ops.router_aliases.create(self.parse(RouterAliasRequest)), 201)


class RouterAliasHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = r"router-aliases/(?P<alias>.+)"
    openapi = {
        "get": Op("Get a router alias", response=RouterAliasResponse, errors=(403, 404), tags=_TAGS),
        "put": Op("Update a router alias (absent fields keep their values)", request=RouterAliasUpdateRequest,
                  response=RouterAliasResponse, errors=(400, 403, 404, 409, 422), tags=_TAGS),
        "delete": Op("Delete a router alias", status=204, errors=(403, 404), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self, alias: str) -> None:
        self.send_json(await self.ops.router_aliases.get(unquote(alias)))

    @web.authenticated
    @authorized
    async def put(self, alias: str) -> None:
        self.send_json(await self.ops.router_aliases.update(unquote(alias), self.parse(RouterAliasUpdateRequest)))

    @web.authenticated
    @authorized
    async def delete(self, alias: str) -> None:
        await self.ops.router_aliases.delete(unquote(alias))
        self.set_status(204)
        self.finish()
