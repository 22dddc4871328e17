"""Under JupyterHub: the bodhi hub service's models, reached with this user's own hub token.

A user's server (and every kernel it starts) runs under JupyterHub with
JUPYTERHUB_API_TOKEN and JUPYTERHUB_API_URL in its environment. When the hub has the
bodhi service (`bodhi-nb hub-service`), the models it serves join this process's
router as one more API model, `jupyterhub`, whose base URL is the service and whose
"key" is the user's own hub token: chat, embeddings, the dialects, map and batches all
take the one forwarding path to it, and the provider keys stay in the service
(docs/ARCHITECTURE.md, "The JupyterHub service"). Local models stay local.

The service is found through the hub's API (GET services/<name>, which the server
token may read when the hub grants `read:services!service=<name>`), or named outright
with BODHI_NB_HUB_URL. BODHI_NB_HUB=off turns the link off.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..objs.api_model_alias import ApiModelAlias
from ..objs.errors import BodhiError
from ..services.upstream_client import ForwardTarget, UpstreamClient
from .origin import HUB_SERVER_HEADER

__all__ = ["HUB_SOURCE", "HubLink"]

log = logging.getLogger(__name__)

HUB_SOURCE = "jupyterhub"  # the API model id (and ledger provider) of the hub service's models
_GATEWAY_PATH = "bodhi/v1"


@dataclass
class HubLink:
    """The hub service as seen from one user's process; its model list is cached for `ttl` seconds."""

    api_url: str  # JUPYTERHUB_API_URL, e.g. http://127.0.0.1:8081/hub/api
    token: str = field(repr=False)
    service: str = "bodhi"
    server: str = ""  # this user's server name ("" for the default server)
    url: str | None = None  # the service's own URL, ending with "/" (found lazily unless given)
    ttl: float = 30.0
    upstream: UpstreamClient | None = field(default=None, repr=False)
    names: tuple[str, ...] = ()
    _fetched: float = field(default=0.0, repr=False)
    _absent: bool = field(default=False, repr=False)
    _linked: bool = field(default=False, repr=False)  # the service answered this user's model listing
    _alias: ApiModelAlias | None = field(default=None, repr=False)  # built once per listing, not per request

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubLink | None:
        """The link for this process, or None outside JupyterHub, inside a hub service (its own
        environment also has a hub token), or with BODHI_NB_HUB=off."""
        env = os.environ if env is None else env
        if env.get("BODHI_NB_HUB", "").lower() in ("off", "0", "false", "no"):
            return None
        token, api = env.get("JUPYTERHUB_API_TOKEN"), env.get("JUPYTERHUB_API_URL")
        if not token or not api or env.get("JUPYTERHUB_SERVICE_NAME"):
            return None
        url = env.get("BODHI_NB_HUB_URL") or None
        return cls(api.rstrip("/"), token, env.get("BODHI_NB_HUB_SERVICE") or "bodhi",
                   env.get("JUPYTERHUB_SERVER_NAME", ""), None if url is None else url.rstrip("/") + "/")

    # -- what the router asks (memory only) ------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.url or ''}{_GATEWAY_PATH}"

    def alias(self) -> ApiModelAlias | None:
        """The hub's models as one API model (None until they are known, or when it serves none)."""
        return self._alias

    def owns(self, alias: ApiModelAlias) -> bool:
        return alias.id == HUB_SOURCE and self.url is not None and alias.base_url == self.base_url

    def target(self, model: str) -> ForwardTarget:
        """Where a request to one of the hub's models goes: the service, with the user's hub token."""
        return ForwardTarget(self.base_url, model, self.token, "the JupyterHub gateway service", "openai",
                             headers={HUB_SERVER_HEADER: self.server} if self.server else {})

    def stale(self) -> bool:
        return time.monotonic() - self._fetched > self.ttl

    # -- asking the hub (async, on the caller's loop) --------------------------------------

    async def refresh(self) -> None:
        """Find the service (once) and read its model list. A hub without the service, or one that
        does not answer, leaves the list as it was: local models and the user's own keep working."""
        self._fetched = time.monotonic()
        if self.upstream is None or self._absent:
            return
        try:
            if self.url is None:
                self.url = await self._discover()
                if self.url is None:
                    return
            data = await self.upstream.get_json(self._service(), "models")
            self.names = tuple(m["id"] for m in _data(data) if isinstance(m.get("id"), str))
            self._alias = ApiModelAlias(id=HUB_SOURCE, base_url=self.base_url, models=list(self.names)) \
                if self.names else None
            self._linked = True
        except BodhiError as exc:
            log.warning("bodhi_nb: the JupyterHub gateway service did not list its models: %s", exc.message)

    async def ready(self) -> bool:
        """Whether the service is there and answers this user (asked again at most once per `ttl`): a
        service this user cannot use leaves usage, prices and budgets to this server's own ledger."""
        if not self._linked and not self._absent and self.stale():
            await self.refresh()
        return self._linked and self.upstream is not None

    async def get(self, path: str, params: Mapping[str, object]) -> Any:
        """GET one of the service's gateway routes as this user (e.g. their usage rows)."""
        assert self.upstream is not None
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return await self.upstream.get_json(self._service(), f"{path}?{query}" if query else path)

    def _service(self) -> ForwardTarget:
        """The service's gateway, for this user's own calls to it (listing models, reading usage)."""
        return ForwardTarget(self.base_url, "", self.token, "the JupyterHub gateway service")

    async def _discover(self) -> str | None:
        assert self.upstream is not None
        hub = ForwardTarget(self.api_url, "", self.token, "JupyterHub's API")
        try:
            model = await self.upstream.get_json(hub, f"services/{self.service}")
        except BodhiError as exc:
            if exc.status in (403, 404):
                self._absent = True  # no such service here, or this token may not see it: stay local
                log.info("bodhi_nb: no JupyterHub service '%s' visible to this server (%s); serving only its own "
                         "models", self.service, exc.status)
                return None
            raise
        url, prefix = (model.get("url") or ""), (model.get("prefix") or f"/services/{self.service}/")
        if not url:
            log.warning("bodhi_nb: JupyterHub service '%s' has no URL; set BODHI_NB_HUB_URL", self.service)
            self._absent = True
            return None
        return url.rstrip("/") + "/" + prefix.strip("/") + "/"


def _data(payload: Any) -> list[dict[str, Any]]:
    items = payload.get("data") if isinstance(payload, dict) else None
    return [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []
