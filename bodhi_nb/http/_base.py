"""Private: the base of every bodhi_nb HTTP handler.

Handlers authenticate and authorise through jupyter_server, parse, call a service and
serialise. Every error leaves as the OpenAI envelope; error messages never hold keys
(services only ever name ids), and unexpected exceptions are reported generically.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from jupyter_server.base.handlers import APIHandler
from pydantic import BaseModel
from tornado import web

from ..objs.errors import BodhiError, InvalidRequestError
from ..server_core.app_services import AppServices
from ..server_core.contract import parse
from ..server_core.operations import Operations
from ..server_core.origin import HUB_SERVER_HEADER, HubUser, set_hub_user

__all__ = ["BodhiHandler", "MANAGE_RESOURCE", "Op", "SERVICES_KEY", "ROUTES_KEY", "USE_RESOURCE"]

log = logging.getLogger("bodhi_nb.http")

SERVICES_KEY = "bodhi_nb.services"
ROUTES_KEY = "bodhi_nb.routes"  # the route table, for the OpenAPI document
M = TypeVar("M", bound=BaseModel)
# What jupyter_server's authorizer is asked about (docs/ARCHITECTURE.md, "The JupyterHub service"): using the
# gateway (models, chat, embeddings, the dialects, usage, files, batches), or managing it (API models, aliases,
# router aliases, pulls, prices, budgets). A single-user server allows both; the hub service allows the
# second only to its admin group.
USE_RESOURCE = "bodhi_nb"
MANAGE_RESOURCE = "bodhi_nb.manage"

_STATUS_TYPES = {401: ("authentication_error", "unauthorized"), 403: ("permission_error", "forbidden"),
                 404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed")}


@dataclass(frozen=True)
class Op:
    """OpenAPI description of one handler method (read by http/openapi.py)."""

    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)
    errors: tuple[int, ...] = (400, 403)
    tags: tuple[str, ...] = ()
    stream: bool = False
    error: type[BaseModel] | None = None  # the error envelope, when not OpenAI's (another dialect's route)
    body: str = "json"  # what the request body is: "json", "multipart" for an upload, "none" when it is not read


class BodhiHandler(APIHandler):
    """Base handler: services from settings, JSON in/out, OpenAI error envelopes."""

    auth_resource = USE_RESOURCE
    path: str = ""  # route pattern under bodhi/v1/, set by subclasses
    openapi: dict[str, Op] = {}

    _t0: float = 0.0

    async def prepare(self) -> None:  # type: ignore[override]
        self._t0 = time.perf_counter()
        await super().prepare()
        # jupyter_server checks XSRF only on unsafe methods; these routes are API-only, so a
        # cookie-authenticated GET must carry the XSRF token too (tokens need none).
        if self.request.method in ("GET", "HEAD") and self.current_user and not self.token_authenticated:
            web.RequestHandler.check_xsrf_cookie(self)
        # Under JupyterHub the user is the hub's (name and groups as the hub said): this request's
        # ledger row and budgets are theirs; the server name is the forwarding server's label.
        hub = getattr(self.current_user, "hub_user", None)
        if isinstance(hub, dict) and isinstance(hub.get("name"), str):
            server = (self.request.headers.get(HUB_SERVER_HEADER) or "")[:200] or None
            set_hub_user(HubUser(hub["name"], tuple(str(g) for g in hub.get("groups") or ()), server))

    def may_manage(self) -> bool:
        """Whether this request's user may manage the gateway (everyone on a single-user server)."""
        return bool(self.authorizer.is_authorized(self, self.current_user, "read", MANAGE_RESOURCE))

    @property
    def services(self) -> AppServices:
        return self.settings[SERVICES_KEY]

    @property
    def ops(self) -> Operations:
        """The operations layer: handlers parse, call one of these, and serialise."""
        return self.services.ops

    # -- input ----------------------------------------------------------------------------

    MAX_JSON_DEPTH = 128  # far above any real OpenAI body (tool schemas included)

    def json_body(self) -> Any:
        """The body as JSON. Nesting is capped so no later step (validation, json.dumps to the
        upstream, the store) can recurse out of stack on hostile input: a 400, never a 500."""
        too_deep = InvalidRequestError(f"The request body is nested more than {self.MAX_JSON_DEPTH} levels deep.")
        try:
            data = json.loads(self.request.body or b"null")
        except RecursionError:
            raise too_deep from None
        except ValueError:
            raise InvalidRequestError("The request body is not valid JSON.") from None
        stack: list[tuple[Any, int]] = [(data, 1)]
        while stack:  # iterative, so the check itself cannot recurse
            value, depth = stack.pop()
            children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
            for child in children:
                if isinstance(child, (dict, list)):
                    if depth >= self.MAX_JSON_DEPTH:
                        raise too_deep
                    stack.append((child, depth + 1))
        return data

    def parse(self, model: type[M]) -> M:
        """The body parsed by a contract object (its status on failure is the model's own)."""
        return parse(model, self.json_body())

    def int_arg(self, name: str, default: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise InvalidRequestError(f"'{name}' must be an integer.", param=name) from None

    # -- output ---------------------------------------------------------------------------

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if isinstance(data, BaseModel):
            self.finish(data.model_dump_json(exclude_unset=False))
        else:
            self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        headers: dict[str, str] = {}
        if isinstance(exc, BodhiError):
            status, body, headers = exc.status, exc.to_envelope(), exc.headers
        else:
            if isinstance(exc, web.HTTPError):
                status = exc.status_code
                message = exc.log_message or exc.reason or self._reason
            else:
                status, message = status_code, self._reason
            if status >= 500 and not isinstance(exc, web.HTTPError):
                message = "Internal error in bodhi_nb; see the Jupyter server log."
            etype, code = _STATUS_TYPES.get(status, ("invalid_request_error" if status < 500 else "api_error",
                                                     None))
            body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        body = self.error_envelope(status, body)
        self.set_status(status)
        for k, v in headers.items():
            self.set_header(k, v)
        if self._t0:
            self.set_header("x-bodhi-overhead-ms", f"{(time.perf_counter() - self._t0) * 1000:.3f}")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def error_envelope(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        """An error in this route's envelope: OpenAI's here; the other dialects' handlers override it."""
        return body

    def log_exception(self, typ, value, tb):  # type: ignore[no-untyped-def]
        if isinstance(value, BodhiError):
            # Expected failures: one line, no traceback (messages hold no secrets).
            level = logging.WARNING if value.status >= 500 else logging.INFO
            log.log(level, "%s %s -> %d %s", self.request.method, self.request.path, value.status, value.message)
            return
        super().log_exception(typ, value, tb)
