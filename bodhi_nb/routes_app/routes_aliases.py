"""Handlers for user-alias CRUD (local models with their own parameters)."""

from __future__ import annotations

from urllib.parse import unquote

from jupyter_server.auth.decorator import authorized
from tornado import web

from .._handlers import BodhiHandler, Op
from ..objs.alias import Alias
from ..objs.errors import NotFoundError
from .objs import AliasListResponse, AliasRequest, AliasResponse

__all__ = ["AliasesHandler", "AliasHandler"]

_TAGS = ("aliases",)


class AliasesHandler(BodhiHandler):
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
        aliases, errors = self.services.data.list_user_aliases()
        self.send_json({"data": [a.model_dump(mode="json") for a in aliases],
                        "errors": [{"file": e.file, "error": e.error} for e in errors]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        req = self.parse(AliasRequest)
        created = self.services.data.create_user_alias(Alias(**req.model_dump()))
        self.send_json(created.model_dump(mode="json"), 201)


class AliasHandler(BodhiHandler):
    path = r"aliases/(?P<alias>.+)"
    openapi = {
        "get": Op("Get a user alias", response=AliasResponse, errors=(403, 404), tags=_TAGS),
        "put": Op("Replace a user alias", request=AliasRequest, response=AliasResponse,
                  errors=(400, 403, 404, 422), tags=_TAGS),
        "delete": Op("Delete a user alias", status=204, errors=(403, 404), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self, alias: str) -> None:
        name = unquote(alias)
        found = self.services.data.get_user_alias(name)
        if found is None:
            raise NotFoundError(f"User alias '{name}' not found.", param="alias")
        self.send_json(found.model_dump(mode="json"))

    @web.authenticated
    @authorized
    async def put(self, alias: str) -> None:
        req = self.parse(AliasRequest)
        updated = self.services.data.update_user_alias(unquote(alias), Alias(**req.model_dump()))
        self.send_json(updated.model_dump(mode="json"))

    @web.authenticated
    @authorized
    async def delete(self, alias: str) -> None:
        self.services.data.delete_user_alias(unquote(alias))
        self.set_status(204)
        self.finish()
