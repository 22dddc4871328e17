"""Private: Hub failures as bodhi errors, and the error line the pull child sends its parent.

Shared by both sides of a pull: `hub.py` (the parent: listing a repo, reading the child's
lines) and `_hub_worker.py` (the child: the transfer). Both import this module and neither
imports the other for it, so the parent depends on the child's module one way only. It is
small and imports no third-party code at load time: the child starts with it.

The error line is `{"error": <the OpenAI envelope's error>, "status", "kind": <class name>}`;
`error_from` turns it back into the same `BodhiError` the child raised.
"""

from __future__ import annotations

import os
from typing import Any

from ..objs.errors import BodhiError, InvalidRequestError, NotFoundError, PullCancelled, UpstreamError

__all__ = ["error_from", "error_line", "hub_error"]

_ERRORS: dict[str, type[BodhiError]] = {c.__name__: c for c in (BodhiError, InvalidRequestError, NotFoundError,
                                                                UpstreamError, PullCancelled)}


def hub_error(exc: Exception, repo: str, filename: str | None = None) -> BodhiError:
    """huggingface_hub's exceptions as bodhi errors with one line that says what to do."""
    from huggingface_hub import errors as e

    what = f"{repo}/{filename}" if filename else repo
    if isinstance(exc, e.GatedRepoError):
        return BodhiError(f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN.", param="model",
                          code="gated_repo", status=403)
    if isinstance(exc, e.RepositoryNotFoundError):
        return NotFoundError(f"Repo {repo} was not found on the Hub (private repos need HF_TOKEN).",
                             param="model", code="repo_not_found")
    if isinstance(exc, e.RevisionNotFoundError):
        return NotFoundError(f"{repo} has no such revision.", param="revision", code="revision_not_found")
    if isinstance(exc, e.EntryNotFoundError):
        return NotFoundError(f"{what} was not found on the Hub.", param="model", code="file_not_found")
    if isinstance(exc, e.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 502
        return UpstreamError(f"The Hub answered {status} for {what}.")
    endpoint = os.environ.get("HF_ENDPOINT") or None
    return UpstreamError(f"Could not download {what} from {endpoint or 'the Hub'}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))


def error_line(err: BodhiError) -> dict[str, Any]:
    """The child's error line for `err` (the fields of one JSON line)."""
    return {"error": err.to_envelope()["error"], "status": err.status, "kind": type(err).__name__}


def error_from(msg: dict[str, Any]) -> BodhiError:
    """The child's error line as the same BodhiError it raised (class, status, code, param, message)."""
    err = msg.get("error") or {}
    cls = _ERRORS.get(str(msg.get("kind")), BodhiError)
    return cls(str(err.get("message") or "The pull failed."), param=err.get("param"), code=err.get("code"),
               status=int(msg.get("status") or cls.status))
