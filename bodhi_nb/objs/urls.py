"""Private: where the gateway lives under a Jupyter server's base URL, spelled once."""

from __future__ import annotations

__all__ = ["API_PREFIX", "gateway_url"]

API_PREFIX = "bodhi/v1/"
"""Every bodhi_nb route is `{base_url}bodhi/v1/...` (docs/ARCHITECTURE.md)."""


def gateway_url(server_url: str) -> str:
    """The OpenAI base URL of the gateway of the Jupyter server at `server_url` (no trailing slash)."""
    return server_url.rstrip("/") + "/" + API_PREFIX.rstrip("/")
