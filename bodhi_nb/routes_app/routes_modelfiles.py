"""Handlers that pull GGUF files into the Hugging Face cache: start a job, read its progress, cancel it.

`POST modelfiles/pull` checks the reference against the repo listing before it answers
(a bad quant is a 4xx naming the choices), then downloads on a thread of its own;
`GET modelfiles/pull/{id}` reports bytes done. The listing call runs in a thread too:
the server's event loop never waits on the network or the disk here.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from jupyter_server.auth.decorator import authorized
from pydantic import BaseModel, ConfigDict, Field
from tornado import web

from .._handlers import BodhiHandler, Op
from ..services.hub import HubService

__all__ = ["ModelfilesPullHandler", "ModelfilesPullJobHandler", "PullJobResponse", "PullRequest"]

_TAGS = ("modelfiles",)
_HUB_KEY = "bodhi_nb.hub"


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=3, max_length=400,
                       description="owner/repo, owner/repo:QUANT (e.g. Q4_K_M) or owner/repo/path/file.gguf")
    revision: str = Field(default="main", min_length=1, max_length=200, description="branch, tag or commit")


class PullError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class PullJobResponse(BaseModel):
    id: str
    ref: str
    repo: str
    filename: str
    model: str = Field(description="The name the file is served under once the pull is done")
    status: Literal["running", "done", "error", "cancelled"]
    downloaded_bytes: int
    total_bytes: int | None
    progress: float = Field(description="0.0 to 1.0")
    error: PullError | None = None
    started_at: float
    finished_at: float | None = None


def _hub(handler: BodhiHandler) -> HubService:
    """One HubService per server (its job table), made at first use."""
    hub: HubService | None = handler.settings.get(_HUB_KEY)
    if hub is None:
        hub = handler.settings[_HUB_KEY] = HubService.for_data(handler.services.data)
    return hub


def _job(data: dict[str, Any]) -> PullJobResponse:
    return PullJobResponse.model_validate(data)


class ModelfilesPullHandler(BodhiHandler):
    path = "modelfiles/pull"
    openapi = {
        "post": Op("Pull a GGUF file from the Hugging Face Hub into its cache (returns a job)", request=PullRequest,
                   response=PullJobResponse, status=202, errors=(400, 403, 404, 422, 502), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def post(self) -> None:
        req = self.parse(PullRequest)
        hub = _hub(self)
        pref, filename = await asyncio.to_thread(hub.resolve, req.model, req.revision)
        job = hub.start(pref, filename, req.revision)
        self.send_json(_job(job.public()), 202)


class ModelfilesPullJobHandler(BodhiHandler):
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
        self.send_json(_job(_hub(self).job(id).public()))

    @web.authenticated
    @authorized
    async def delete(self, id: str) -> None:
        job = _hub(self).job(id)
        job.cancel()
        self.send_json(_job(job.public()))
