"""OpenAI Batches: create, retrieve, list, cancel; every model name works (see operations/_batches.py)."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import BatchCreateRequest, BatchList, BatchObject
from ._base import BodhiHandler, Op

__all__ = ["BatchCancelHandler", "BatchHandler", "BatchesHandler"]

_TAGS = ("batch",)


class BatchesHandler(BodhiHandler):
    path = "batches"
    openapi = {
        "get": Op("Batches, newest first", response=BatchList, errors=(400, 403), tags=_TAGS,
                  query=(("after", "string", "the last id of the previous page"),
                         ("limit", "integer", "1..100, default 20"))),
        "post": Op("Create a batch from an uploaded JSONL file: at the provider for an OpenAI- or Anthropic-format "
                   "API model, here for every other model", request=BatchCreateRequest, response=BatchObject,
                   errors=(400, 403, 404, 429), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json(await self.ops.batches.list(self.get_query_argument("after", None), self.int_arg("limit", 20)))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_json(await self.ops.batches.create(self.json_body()))


class BatchHandler(BodhiHandler):
    path = r"batches/(?P<id>[^/]+)"
    openapi = {"get": Op("A batch: status, counts, output and error file ids", response=BatchObject,
                         errors=(403, 404), tags=_TAGS)}

    @web.authenticated
    @authorized
    async def get(self, id: str) -> None:
        self.send_json(await self.ops.batches.retrieve(id))


class BatchCancelHandler(BodhiHandler):
    path = r"batches/(?P<id>[^/]+)/cancel"
    openapi = {"post": Op("Cancel a batch (finished requests are kept in its output file)", response=BatchObject,
                          errors=(403, 404), tags=_TAGS, body="none")}

    @web.authenticated
    @authorized
    async def post(self, id: str) -> None:
        self.send_json(await self.ops.batches.cancel(id))
