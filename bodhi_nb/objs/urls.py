"""Where the gateway lives under a Jupyter server's base URL, spelled once."""

from __future__ import annotations

__all__ = ["ANTHROPIC_PREFIX", "API_PREFIX", "anthropic_base_url", "gateway_url"]

API_PREFIX = "bodhi/v1/"
"""Every bodhi_nb route is `{base_url}bodhi/v1/...` (docs/ARCHITECTURE.md)."""
ANTHROPIC_PREFIX = "bodhi/anthropic/v1/"
"""Anthropic Messages again, for the Anthropic SDK, which appends /v1/messages to its base_url."""


def gateway_url(server_url: str) -> str:
    """The OpenAI base URL of the gateway of the Jupyter server at `server_url` (no trailing slash)."""
    return server_url.rstrip("/") + "/" + API_PREFIX.rstrip("/")


def anthropic_base_url(server_url: str) -> str:
    """The Anthropic SDK's `base_url` for the gateway of the Jupyter server at `server_url`."""
    return server_url.rstrip("/") + "/" + ANTHROPIC_PREFIX.removesuffix("v1/").rstrip("/")
