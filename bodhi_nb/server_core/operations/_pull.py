"""Pull operations: GGUF files from the Hugging Face Hub into its cache, for every surface.

One `HubService` per process holds the job table, so a job started over HTTP is read and
cancelled through the same object. Resolving a reference lists the repo (network), so it
runs in a worker thread; the download runs in a child process of the hub service.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...services.hub import CancelFlag, HubService, ProgressFn
from ...services.local_models import LocalModels
from ..contract import PullJobResponse, PullRequest, parse

__all__ = ["CancelFlag", "PullOps"]


class PullOps:
    """Start, follow and cancel pulls (HTTP jobs), or pull in the caller's thread (facade, CLI)."""

    def __init__(self, data: LocalModels) -> None:
        self._hub = HubService.for_data(data)

    async def start(self, req: PullRequest | dict[str, Any]) -> PullJobResponse:
        """Check the reference against the repo listing (a bad quant is a 4xx naming the
        choices), then download on a thread of its own; returns the job."""
        if isinstance(req, dict):
            req = parse(PullRequest, req)
        pref, filename = await asyncio.to_thread(self._hub.resolve, req.model, req.revision)
        return PullJobResponse.model_validate(self._hub.start(pref, filename, req.revision).public())

    async def job(self, id: str) -> PullJobResponse:
        return PullJobResponse.model_validate(self._hub.job(id).public())

    async def cancel(self, id: str) -> PullJobResponse:
        """Stop a running pull; its partial file is kept, so the next pull resumes it."""
        job = self._hub.job(id)
        job.cancel()
        return PullJobResponse.model_validate(job.public())

    def pull(self, ref: str, revision: str = "main", *, progress: ProgressFn | None = None, show: bool = False,
             cancel: CancelFlag | None = None) -> dict[str, Any]:
        """Resolve and download, blocking the calling thread (which may draw a progress bar):
        `{"model", "repo", "filename", "path"}`. For a notebook's or a shell's own thread only."""
        return self._hub.pull(ref, revision, progress=progress, show=show, cancel=cancel)
