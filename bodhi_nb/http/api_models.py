"""Handlers for api-model CRUD, test prompt and fetch-models: parse, call, serialise.

Every rule (validation, update semantics, limits) is in the operations layer
(server_core/operations/_api_models.py).
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import (
    ApiModelCreateRequest,
    ApiModelResponse,
    ApiModelUpdateRequest,
    FetchModelsRequest,
    FetchModelsResponse,
    PaginatedApiModelResponse,
    TestPromptRequest,
    TestPromptResponse,
)
from ._base import MANAGE_RESOURCE, BodhiHandler, Op

__all__ = ["ApiModelsHandler", "ApiModelHandler", "TestPromptHandler", "FetchModelsHandler"]

_TAGS = ("api-models",)


class ApiModelsHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = "api-models"
    openapi = {
        "get": Op("List API models, newest first", response=PaginatedApiModelResponse, tags=_TAGS,
                  query=(("page", "integer", "1-based page"), ("page_size", "integer", "1..1000, default 30"))),
        "post": Op("Create an API model", request=ApiModelCreateRequest, response=ApiModelResponse, status=201,
                   errors=(400, 403, 409, 422), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json(await self.ops.api_models.list(self.int_arg("page", 1), self.int_arg("page_size", 30)))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_json(await self.ops.api_models.create(self.parse(ApiModelCreateRequest)), 201)


class ApiModelHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = r"api-models/(?P<id>[^/]+)"
    openapi = {
        "get": Op("Get one API model", response=ApiModelResponse, errors=(403, 404), tags=_TAGS),
        "put": Op("Update an API model (absent api_key keeps the stored key)", request=ApiModelUpdateRequest,
                  response=ApiModelResponse, errors=(400, 403, 404, 409, 422), tags=_TAGS),
        "delete": Op("Delete an API model", status=204, errors=(403, 404), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self, id: str) -> None:
        self.send_json(await self.ops.api_models.get(id))

    @web.authenticated
    @authorized
    async def put(self, id: str) -> None:
        self.send_json(await self.ops.api_models.update(id, self.parse(ApiModelUpdateRequest)))

    @web.authenticated
    @authorized
    async def delete(self, id: str) -> None:
        await self.ops.api_models.delete(id)
        self.set_status(204)
        self.finish()


class TestPromptHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = "api-models/test"
    openapi = {"post": Op("Send a test prompt (at most 30 characters) with a raw key or a stored id",
                          request=TestPromptRequest, response=TestPromptResponse, errors=(400, 403, 404, 422),
                          tags=_TAGS)}

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_json(await self.ops.api_models.test(self.parse(TestPromptRequest)))


class FetchModelsHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = "api-models/fetch-models"
    openapi = {"post": Op("List the upstream's models with a raw key or a stored id", request=FetchModelsRequest,
                          response=FetchModelsResponse, errors=(400, 401, 403, 404, 422, 429, 502, 504),
                          tags=_TAGS)}

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_json(await self.ops.api_models.fetch_models(self.parse(FetchModelsRequest)))
