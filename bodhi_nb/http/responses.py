"""OpenAI Responses: create (stream or not), retrieve, delete and input items.

Every model name works: the operations layer relays to `openai_responses` API models and
translates for every other target; stored responses live in BODHI_HOME. Errors are OpenAI's
envelope, as the Responses API answers; a failure mid-stream is an `error` event.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..objs.errors import BodhiError
from ..objs.sse import encode_event
from ..server_core.contract import ResponseDeleted, ResponseInputItemList, ResponseObject, ResponsesCreateRequest
from ..server_core.origin import set_http_origin
from ._base import BodhiHandler, Op
from ._relay import UpstreamRelayHandler

__all__ = ["ResponseHandler", "ResponseInputItemsHandler", "ResponsesHandler"]

_TAGS = ("openai",)


class ResponsesHandler(UpstreamRelayHandler):
    path = "responses"
    openapi = {"post": Op("OpenAI Responses for every model (stream: true answers with the Responses event "
                          "sequence); store and previous_response_id are kept in BODHI_HOME",
                          request=ResponsesCreateRequest, response=ResponseObject,
                          errors=(400, 403, 404, 429, 500, 502, 503, 504), tags=_TAGS, stream=True)}
    ends_with_done = False

    def stream_error_event(self, exc: BodhiError) -> bytes:
        err = exc.to_envelope()["error"]
        return encode_event({"type": "error", "code": err.get("code"), "message": err.get("message"),
                             "param": err.get("param"), "sequence_number": 0}, "error")

    @web.authenticated
    @authorized
    async def post(self) -> None:
        set_http_origin(self.request.headers)
        await self.relay(await self.ops.responses.create(self.json_body()), errors_as_is=True)


class ResponseInputItemsHandler(BodhiHandler):
    path = r"responses/(?P<id>[^/]+)/input_items"
    openapi = {"get": Op("A stored response's input items (newest first)", response=ResponseInputItemList,
                         errors=(403, 404), tags=_TAGS)}

    @web.authenticated
    @authorized
    async def get(self, id: str) -> None:
        self.send_json(await self.ops.responses.input_items(id))


class ResponseHandler(BodhiHandler):
    path = r"responses/(?P<id>[^/]+)"
    openapi = {"get": Op("A stored response", response=ResponseObject, errors=(403, 404), tags=_TAGS),
               "delete": Op("Forget a stored response", response=ResponseDeleted, errors=(403, 404), tags=_TAGS)}

    @web.authenticated
    @authorized
    async def get(self, id: str) -> None:
        self.send_json(await self.ops.responses.retrieve(id))

    @web.authenticated
    @authorized
    async def delete(self, id: str) -> None:
        self.send_json(await self.ops.responses.delete(id))
