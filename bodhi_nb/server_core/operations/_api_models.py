"""API-model operations: the one set of rules for every surface (docs/ARCHITECTURE.md).

Validation, update semantics, not-found handling and the test-prompt limit live here;
HTTP handlers, `Bodhi`, widgets and the CLI parse their input into the contract's
request objects and call these. Store work (file lock, fsync) runs in a worker thread,
so the Jupyter server's event loop never waits on it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr, ValidationError

from ...objs.api_model_alias import ApiModelAlias, normalize_base_url
from ...objs.errors import InvalidRequestError
from ...services.db import ConfigStore
from ...services.upstream_client import Credentials, UpstreamClient, credentials
from ..contract import (
    ApiModelCreateRequest,
    ApiModelResponse,
    ApiModelUpdateRequest,
    FetchModelsRequest,
    FetchModelsResponse,
    PaginatedApiModelResponse,
    TestPromptRequest,
    TestPromptResponse,
    parse,
)

__all__ = ["ApiModelOps"]


def _secret(s: SecretStr | None) -> str | None:
    return None if s is None else s.get_secret_value()


def _creds(req: TestPromptRequest | FetchModelsRequest) -> Credentials:
    return credentials(req.id, req.base_url, _secret(req.api_key), req.api_format.value)


class ApiModelOps:
    """Create, read, update, delete, test and fetch-models for remote providers."""

    def __init__(self, db: ConfigStore, upstream: UpstreamClient) -> None:
        self._db = db
        self._ai = upstream

    async def list(self, page: int = 1, page_size: int = 30) -> PaginatedApiModelResponse:
        items, total = await asyncio.to_thread(self._db.list, page, page_size)
        return PaginatedApiModelResponse(data=[ApiModelResponse.model_validate(r.public()) for r in items],
                                         total=total, page=page, page_size=page_size)

    async def get(self, id: str) -> ApiModelResponse:
        rec = await asyncio.to_thread(self._db.record, id)
        return ApiModelResponse.model_validate(rec.public())

    async def create(self, req: ApiModelCreateRequest | dict[str, Any]) -> ApiModelResponse:
        if isinstance(req, dict):
            req = parse(ApiModelCreateRequest, req)
        try:
            alias = ApiModelAlias(**req.model_dump(exclude={"api_key"}))
        except ValidationError as exc:
            raise InvalidRequestError.from_validation(exc) from None
        await self._check_address(alias.base_url)
        rec = await asyncio.to_thread(self._db.create, alias, _secret(req.api_key))
        return ApiModelResponse.model_validate(rec.public())

    async def update(self, id: str, req: ApiModelUpdateRequest | dict[str, Any]) -> ApiModelResponse:
        """Change the fields given. A null or absent field keeps its value, except `prefix`,
        where an explicit null clears it; an absent `api_key` keeps the stored key."""
        if isinstance(req, dict):
            req = parse(ApiModelUpdateRequest, req)
        changes = req.model_dump(exclude={"api_key"}, exclude_unset=True)
        changes = {k: v for k, v in changes.items() if v is not None or k == "prefix"}
        if isinstance(changes.get("base_url"), str):
            await self._check_address(changes["base_url"])
        try:
            rec = await asyncio.to_thread(self._db.update, id, changes, _secret(req.api_key))
        except ValidationError as exc:
            raise InvalidRequestError.from_validation(exc) from None
        return ApiModelResponse.model_validate(rec.public())

    async def _check_address(self, base_url: str) -> None:
        """The hub service's address rule, when a base URL is stored: a clear 400 now rather than a
        refusal on every request later (the rule is checked again on each connection)."""
        guard = self._ai.address_guard
        if guard is None:
            return
        try:
            url = normalize_base_url(base_url)
        except ValueError:
            return  # not a URL at all: the store's own validation says so
        try:
            await guard.check_url(url)
        except OSError as exc:
            raise InvalidRequestError(f"base_url's host could not be resolved ({exc.strerror or exc}).",
                                      param="base_url") from None

    async def delete(self, id: str) -> None:
        await asyncio.to_thread(self._db.delete, id)

    async def test(self, req: TestPromptRequest | dict[str, Any]) -> TestPromptResponse:
        """A short prompt; upstream failures come back as `success=False`, never raised."""
        if isinstance(req, dict):
            req = parse(TestPromptRequest, req)
        res = await self._ai.test_prompt(_creds(req), req.model, req.prompt)
        return TestPromptResponse(success=res.success, response=res.response, error=res.error)

    async def fetch_models(self, req: FetchModelsRequest | dict[str, Any]) -> FetchModelsResponse:
        if isinstance(req, dict):
            req = parse(FetchModelsRequest, req)
        return FetchModelsResponse(models=await self._ai.fetch_models(_creds(req)))
