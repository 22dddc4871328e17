"""Handlers that pull GGUF files into the Hugging Face cache: start a job, read its progress, cancel it.

`POST modelfiles/pull` checks the reference against the repo listing before it answers
(a bad quant is a 4xx naming the choices), then downloads on a thread of its own;
`GET modelfiles/pull/{id}` reports bytes done. The listing call runs in a thread too:
the server's event loop never waits on the network or the disk here.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import PullJobResponse, PullRequest
from ._base import MANAGE_RESOURCE, BodhiHandler, Op

__all__ = ["ModelfilesPullHandler", "ModelfilesPullJobHandler", "PullJobResponse", "PullRequest"]

_TAGS = ("modelfiles",)


class ModelfilesPullHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = "modelfiles/pull"
    openapi = {
        "post": Op("Pull a GGUF file from the Hugging Face Hub into its cache (returns a job)", request=PullRequest,
                   response=PullJobResponse, status=202, errors=(400, 403, 404, 422, 502), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.send_json(await self.ops.pull.start(self.parse(PullRequest)), 202)


class ModelfilesPullJobHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = r"modelfiles/pull/(?P<id>[A-Za-z0-9]+)"
    openapi = {
        "get": Op("Progress of a pull job", response=PullJobResponse, errors=(403, 404), tags=_TAGS),
        "delete": Op("Cancel a running pull (its partial file is kept: a new pull resumes it)",
                     response=PullJobResponse,
                     errors=(403, 404), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self, id: str) -> None:
        self.send_json(await self.ops.pull.job(id))

    @web.authenticated
    @authorized
    async def delete(self, id: str) -> None:
        self.send_json(await self.ops.pull.cancel(id))
