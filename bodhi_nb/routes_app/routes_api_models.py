"""Handlers for api-model CRUD, test prompt and fetch-models (seed 4.1)."""

from __future__ import annotations

from dataclasses import asdict

from jupyter_server.auth.decorator import authorized
from pydantic import ValidationError
from tornado import web

from .._handlers import BodhiHandler, Op
from ..objs.api_model_alias import ApiModelAlias
from ..objs.errors import InvalidRequestError
from ..services.ai_api_service import Credentials, credentials
from ..services.data_service import validation_message
from .objs import (
    ApiModelCreateRequest,
    ApiModelResponse,
    ApiModelUpdateRequest,
    FetchModelsRequest,
    FetchModelsResponse,
    PaginatedApiModelResponse,
    TestPromptRequest,
    TestPromptResponse,
)

__all__ = ["ApiModelsHandler", "ApiModelHandler", "TestPromptHandler", "FetchModelsHandler"]

_TAGS = ("api-models",)


def _secret(s) -> str | None:  # type: ignore[no-untyped-def]
    return None if s is None else s.get_secret_value()


def _creds(req: TestPromptRequest | FetchModelsRequest) -> Credentials:
    return credentials(req.id, req.base_url, _secret(req.api_key))


def _invalid(exc: ValidationError) -> InvalidRequestError:
    msg, param = validation_message(exc)
    return InvalidRequestError(msg, param=param, status=422, code="validation_error")


class ApiModelsHandler(BodhiHandler):
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
        page, size = self.int_arg("page", 1), self.int_arg("page_size", 30)
        items, total = self.services.db.list(page, size)
        self.send_json({"data": [r.public() for r in items], "total": total, "page": page, "page_size": size})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        req = self.parse(ApiModelCreateRequest)
        try:
            alias = ApiModelAlias(**req.model_dump(exclude={"api_key"}))
        except ValidationError as exc:
            raise _invalid(exc) from None
        rec = self.services.db.create(alias, _secret(req.api_key))
        self.send_json(rec.public(), 201)


class ApiModelHandler(BodhiHandler):
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
        self.send_json(self.services.db.record(id).public())

    @web.authenticated
    @authorized
    async def put(self, id: str) -> None:
        req = self.parse(ApiModelUpdateRequest)
        changes = req.model_dump(exclude={"api_key"}, exclude_unset=True)
        changes = {k: v for k, v in changes.items() if v is not None or k == "prefix"}
        try:
            rec = self.services.db.update(id, changes, api_key=_secret(req.api_key))
        except ValidationError as exc:
            raise _invalid(exc) from None
        self.send_json(rec.public())

    @web.authenticated
    @authorized
    async def delete(self, id: str) -> None:
        self.services.db.delete(id)
        self.set_status(204)
        self.finish()


class TestPromptHandler(BodhiHandler):
    path = "api-models/test"
    openapi = {"post": Op("Send a test prompt (at most 30 characters) with a raw key or a stored id",
                          request=TestPromptRequest, response=TestPromptResponse, errors=(400, 403, 404, 422),
                          tags=_TAGS)}

    @web.authenticated
    @authorized
    async def post(self) -> None:
        req = self.parse(TestPromptRequest)
        res = await self.services.ai_api.test_prompt(_creds(req), req.model, req.prompt)
        self.send_json(asdict(res))


class FetchModelsHandler(BodhiHandler):
    path = "api-models/fetch-models"
    openapi = {"post": Op("List the upstream's models with a raw key or a stored id", request=FetchModelsRequest,
                          response=FetchModelsResponse, errors=(400, 401, 403, 404, 422, 429, 502, 504),
                          tags=_TAGS)}

    @web.authenticated
    @authorized
    async def post(self) -> None:
        req = self.parse(FetchModelsRequest)
        self.send_json({"models": await self.services.ai_api.fetch_models(_creds(req))})


