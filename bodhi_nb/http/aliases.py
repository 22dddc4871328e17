"""Handlers for user-alias CRUD: parse, call the operations layer, serialise."""

from __future__ import annotations

from urllib.parse import unquote

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import AliasListResponse, AliasRequest, AliasResponse
from ._base import MANAGE_RESOURCE, BodhiHandler, Op

__all__ = ["AliasesHandler", "AliasHandler"]

_TAGS = ("aliases",)


class AliasesHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = "aliases"
    openapi = {
        "get": Op("List user aliases (and alias files that could not be read)", response=AliasListResponse,
                  tags=_TAGS),
        "post": Op("Create a user alias", request=AliasRequest, response=AliasResponse, status=201,
                   errors=(400, 403, 409, 422), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json(await self.ops.aliases.list())

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_json(await self.ops.aliases.create(self.parse(AliasRequest)), 201)


class AliasHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = r"aliases/(?P<alias>.+)"
    openapi = {
        "get": Op("Get a user alias", response=AliasResponse, errors=(400, 403, 404), tags=_TAGS),
        "put": Op("Replace a user alias", request=AliasRequest, response=AliasResponse,
                  errors=(400, 403, 404, 422), tags=_TAGS),
        "delete": Op("Delete a user alias", status=204, errors=(400, 403, 404), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self, alias: str) -> None:
        self.send_json(await self.ops.aliases.get(unquote(alias)))

    @web.authenticated
    @authorized
    async def put(self, alias: str) -> None:
        self.send_json(await self.ops.aliases.update(unquote(alias), self.parse(AliasRequest)))

    @web.authenticated
    @authorized
    async def delete(self, alias: str) -> None:
        await self.ops.aliases.delete(unquote(alias))
        self.set_status(204)
        self.finish()
