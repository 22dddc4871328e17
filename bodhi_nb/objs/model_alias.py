"""ModelAlias: every servable name, tagged by where it comes from (`source`).

`{"source": "user", ...}` | `{"source": "model", ...}` | `{"source": "api", ...}`:
the same JSON BodhiApp uses, so clients can switch on `source`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

from .alias import Alias, AliasSource
from .api_model_alias import ApiModelAlias

__all__ = ["UserModelAlias", "DiscoveredModelAlias", "ApiModelAliasEntry", "ModelAlias"]


class UserModelAlias(Alias):
    """A user alias as a ModelAlias variant."""

    source: Literal["user"] = "user"

    def can_serve(self, model: str) -> bool:
        return self.alias == model


class DiscoveredModelAlias(BaseModel):
    """A GGUF file found in the Hugging Face cache (or bundled), named owner/repo:QUANT."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["model"] = "model"
    alias: str
    repo: str
    filename: str
    snapshot: str = "main"

    def can_serve(self, model: str) -> bool:
        return self.alias == model


class ApiModelAliasEntry(ApiModelAlias):
    """An API model as a ModelAlias variant."""

    source: Literal["api"] = "api"


_Variant = Annotated[
    Union[UserModelAlias, DiscoveredModelAlias, ApiModelAliasEntry], Field(discriminator="source")
]


class ModelAlias(RootModel[_Variant]):
    """The tagged union; `.root` is the variant."""

    @property
    def source(self) -> AliasSource:
        return AliasSource(self.root.source)

    def can_serve(self, model: str) -> bool:
        return self.root.can_serve(model)

    @classmethod
    def user(cls, alias: Alias) -> "ModelAlias":
        return cls(UserModelAlias(**alias.model_dump()))

    @classmethod
    def api(cls, api: ApiModelAlias) -> "ModelAlias":
        return cls(ApiModelAliasEntry(**api.model_dump()))
