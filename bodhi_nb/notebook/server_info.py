"""Find the running Jupyter server's gateway from any kernel.

Order: `BODHI_GATEWAY_URL`/`BODHI_GATEWAY_TOKEN`; `JUPYTER_SERVER_URL`/`JUPYTER_TOKEN`
(set by JupyterHub and some launchers); else the runtime files of running servers,
preferring the server that started this kernel (our parent process), then the newest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..objs.urls import API_PREFIX, anthropic_base_url, gateway_url

__all__ = ["ServerInfo", "find_server", "openai_client"]


@dataclass(frozen=True)
class ServerInfo:
    url: str  # ends with "/"
    token: str = field(repr=False)

    @property
    def gateway_url(self) -> str:
        """The OpenAI SDK's `base_url` (also serves the Responses API)."""
        return gateway_url(self.url)

    @property
    def anthropic_base_url(self) -> str:
        """The Anthropic SDK's `base_url` (it appends /v1/messages)."""
        return anthropic_base_url(self.url)


def _norm(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def find_server() -> ServerInfo:
    if os.environ.get("BODHI_GATEWAY_URL"):
        url = os.environ["BODHI_GATEWAY_URL"].rstrip("/")
        suffix = API_PREFIX.rstrip("/")
        url = url[: -len(suffix)] if url.endswith(suffix) else url + "/"
        return ServerInfo(_norm(url), os.environ.get("BODHI_GATEWAY_TOKEN", ""))
    if os.environ.get("JUPYTER_SERVER_URL"):
        return ServerInfo(_norm(os.environ["JUPYTER_SERVER_URL"]), os.environ.get("JUPYTER_TOKEN", ""))
    from jupyter_server.serverapp import list_running_servers

    servers: list[dict[str, Any]] = list(list_running_servers())
    if not servers:
        raise RuntimeError("No running Jupyter server found; start one with `bodhi-nb serve` or `jupyter lab`, "
                           "or set BODHI_GATEWAY_URL and BODHI_GATEWAY_TOKEN.")
    parent = os.getppid()
    servers.sort(key=lambda s: (s.get("pid") == parent, s.get("pid", 0)), reverse=True)
    s = servers[0]
    return ServerInfo(_norm(s["url"]), s.get("token", ""))


def openai_client(server: ServerInfo | None = None, **kwargs: Any) -> Any:
    """`openai.OpenAI` pointed at the gateway, authenticated with the Jupyter token."""
    import openai

    from ..server_core.origin import origin_headers

    info = server or find_server()
    # The kernel and notebook ride along as labels, so the usage ledger can say where requests came from.
    headers = {**origin_headers(), **kwargs.pop("default_headers", {})}
    return openai.OpenAI(base_url=info.gateway_url, api_key=info.token or "none", default_headers=headers or None,
                         **kwargs)
