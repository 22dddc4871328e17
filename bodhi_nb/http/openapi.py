"""The OpenAPI 3.1 document, built from the route table and the pydantic objects.

Paths come from each handler's `path` and `openapi` ops, schemas from the pydantic
models they name: a route or field added in code appears here without a second edit.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

from jupyter_server.auth.decorator import authorized
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from tornado import web

from ..objs.urls import API_PREFIX
from ..server_core.contract import OpenAIErrorEnvelope
from ._base import ROUTES_KEY, BodhiHandler, Op

__all__ = ["build_openapi", "OpenApiHandler"]

_REF = "#/components/schemas/{model}"
_PARAM_RE = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def _path(pattern: str) -> tuple[str, list[str]]:
    names = _PARAM_RE.findall(pattern)
    return "/" + _PARAM_RE.sub(lambda m: "{" + m.group(1) + "}", pattern), names


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def build_openapi(handlers: list[type[BodhiHandler]], server_url: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {OpenAIErrorEnvelope}
    for h in handlers:
        for op in h.openapi.values():
            models.update(m for m in (op.request, op.response, op.error) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in ordered], ref_template=_REF)
    schemas = defs.get("$defs", {})
    paths: dict[str, Any] = {}
    for h in handlers:
        path, params = _path(h.path)
        item = paths.setdefault(path, {})
        for method, op in h.openapi.items():
            envelope = op.error or OpenAIErrorEnvelope  # another dialect's route answers in its own
            error = {"description": "Error", "content": {"application/json": {"schema": _ref(envelope)}}}
            item[method] = _operation(h, method, op, params, error)
    return {
        "openapi": "3.1.0",
        "info": {"title": "bodhi_nb gateway", "version": version("bodhi_nb"),
                 "description": "OpenAI-compatible endpoints and model management served by the Jupyter server. "
                                "Authenticate with the Jupyter token: `Authorization: Bearer <token>`."},
        "servers": [{"url": server_url}],
        "security": [{"jupyterToken": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"jupyterToken": {"type": "http", "scheme": "bearer",
                                                 "description": "The Jupyter server token."}},
        },
    }


def _operation(h: type[BodhiHandler], method: str, op: Op, params: list[str], error: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "operationId": f"{method}_{h.__name__}",
                           "tags": list(op.tags) or ["bodhi"]}
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    parameters += [{"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d}
                   for n, t, d in op.query]
    if parameters:
        out["parameters"] = parameters
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.request)}}}
    elif op.body == "multipart":
        out["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["purpose", "file"],
            "properties": {"purpose": {"type": "string", "enum": ["batch", "user_data"]},
                           "file": {"type": "string", "format": "binary"}}}}}}
    ok: dict[str, Any] = {"description": "OK" if op.status != 201 else "Created"}
    if op.status == 204:
        ok = {"description": "No Content"}
    elif op.stream:
        body = _ref(op.response) if op.response is not None else {"type": "object"}
        ok["content"] = {"application/json": {"schema": body}, "text/event-stream": {"schema": {"type": "string"}}}
    elif op.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(op.response)}}
    out["responses"] = {str(op.status): ok, **{str(s): error for s in sorted(_errors(op, params))}}
    return out


def _errors(op: Op, params: list[str]) -> set[int]:
    """The op's own error statuses plus those every handler can give by construction: a body
    that is not JSON (400) or fails its model (the model's validation status), and a path
    parameter that cannot name anything (400)."""
    out = set(op.errors)
    if op.request is not None:
        out |= {400, getattr(op.request, "validation_status", 422)}
    if params:
        out.add(400)
    return out


class OpenApiHandler(BodhiHandler):
    path = "openapi.json"
    openapi = {"get": Op("This OpenAPI document", tags=("meta",), errors=(403,))}

    @web.authenticated
    @authorized
    async def get(self) -> None:
        # The route table comes from settings (put there by the extension), so this module
        # does not import the extension that imports it.
        base = self.settings.get("base_url", "/")
        self.send_json(build_openapi(self.settings[ROUTES_KEY], base + API_PREFIX.rstrip("/")))
