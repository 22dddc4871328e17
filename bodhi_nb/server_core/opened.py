"""An opened upstream response with where it was routed: what the gateway hands every surface.

Its own module so the gateway and the metering hook both name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..services.upstream_client import UpstreamResponse
from .model_router import Destination

__all__ = ["OpenChat", "RoutedCompletion"]


@dataclass
class OpenChat:
    """An upstream chat response, open, with where it was routed."""

    response: UpstreamResponse
    destination: Destination
    stream: bool
    cached: bool = False  # answered from the response cache, no upstream request
    target: str | None = None  # the router-alias target that answered (None: not a router alias)


class RoutedCompletion(dict[str, Any]):
    """A completion dict that also says which router-alias target answered (`.target`)."""

    target: str | None = None
