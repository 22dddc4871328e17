"""GET models and models/{id}: every local and API name the router serves."""

from __future__ import annotations

from urllib.parse import unquote

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import OpenAIModel, OpenAIModelList
from ._base import BodhiHandler, Op

__all__ = ["ModelsHandler", "ModelHandler"]


class ModelsHandler(BodhiHandler):
    path = "models"
    openapi = {"get": Op("List every model name the gateway serves", response=OpenAIModelList, tags=("openai",))}

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json(await self.ops.models.list())


class ModelHandler(BodhiHandler):
    path = r"models/(?P<model_id>.+)"
    openapi = {"get": Op("Get one model", response=OpenAIModel, errors=(403, 404), tags=("openai",))}

    @web.authenticated
    @authorized
    async def get(self, model_id: str) -> None:
        self.send_json(await self.ops.models.get(unquote(model_id)))
