"""GET models and models/{id}: every local and API name (seed 5.2).

The listing reads the store and the local aliases only; no provider is contacted, so
a dead provider never blocks it.
"""

from __future__ import annotations

from urllib.parse import unquote

from jupyter_server.auth.decorator import authorized
from tornado import web

from .._handlers import BodhiHandler, Op
from ..objs.errors import ModelNotFound
from ..routes_app.objs import OpenAIModel, OpenAIModelList

__all__ = ["ModelsHandler", "ModelHandler"]


def _obj(e) -> dict:  # type: ignore[no-untyped-def]
    return {"id": e.id, "object": "model", "created": e.created, "owned_by": e.owned_by}


class ModelsHandler(BodhiHandler):
    path = "models"
    openapi = {"get": Op("List every model name the gateway serves", response=OpenAIModelList, tags=("openai",))}

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json({"object": "list", "data": [_obj(e) for e in self.services.router.list_models()]})


class ModelHandler(BodhiHandler):
    path = r"models/(?P<model_id>.+)"
    openapi = {"get": Op("Get one model", response=OpenAIModel, errors=(403, 404), tags=("openai",))}

    @web.authenticated
    @authorized
    async def get(self, model_id: str) -> None:
        name = unquote(model_id)
        for e in self.services.router.list_models():
            if e.id == name:
                self.send_json(_obj(e))
                return
        raise ModelNotFound(name)
