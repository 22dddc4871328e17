"""The local variants of a servable name, tagged by where they come from (`source`).

`{"source": "user", ...}` is a user alias (a YAML file), `{"source": "model", ...}` a GGUF
file found in the Hugging Face cache: the same JSON BodhiApp uses, so clients can switch
on `source`. The router resolves a local name to one of these (server_core/model_router.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from .alias import Alias

__all__ = ["UserModelAlias", "DiscoveredModelAlias", "LocalModelAlias"]


class UserModelAlias(Alias):
    """A user alias, tagged `source: user`."""

    source: Literal["user"] = "user"


class DiscoveredModelAlias(BaseModel):
    """A GGUF file found in the Hugging Face cache (or bundled), named owner/repo:QUANT."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["model"] = "model"
    alias: str
    repo: str
    filename: str
    snapshot: str = "main"


LocalModelAlias = UserModelAlias | DiscoveredModelAlias
