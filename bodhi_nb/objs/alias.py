"""The user alias: a named local model with its own request and server parameters.

Same fields as BodhiApp's alias YAML files, so an alias file reads the same in both.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["AliasSource", "Alias", "RequestParams", "ContextParams", "ALIAS_NAME_PATTERN"]

ALIAS_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
_ALIAS_RE = re.compile(ALIAS_NAME_PATTERN)


class AliasSource(str, Enum):
    """Where a servable model name comes from."""

    USER = "user"
    MODEL = "model"
    API = "api"

    def __str__(self) -> str:  # serialise as the bare string, as BodhiApp does
        return self.value


class RequestParams(BaseModel):
    """Defaults applied to a chat request only where the request leaves the field unset."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    user: str | None = None

    def defaults_for(self, body: dict[str, Any]) -> dict[str, Any]:
        """The subset of these params that `body` does not set itself."""
        return {
            k: v for k, v in self.model_dump(exclude_none=True).items() if body.get(k) is None
        }


class ContextParams(BaseModel):
    """llama.cpp server arguments; a change restarts the engine for this alias."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: int | None = Field(default=None, ge=16)
    n_threads: int | None = Field(default=None, ge=1)
    n_batch: int | None = Field(default=None, ge=1)
    n_gpu_layers: int | None = None
    chat_format: str | None = None
    seed: int | None = None


class Alias(BaseModel):
    """A user alias (source `user`): a name for a GGUF file plus parameters."""

    model_config = ConfigDict(extra="forbid")

    alias: str
    repo: str
    filename: str
    snapshot: str = "main"
    request_params: RequestParams = Field(default_factory=RequestParams)
    context_params: ContextParams = Field(default_factory=ContextParams)

    @field_validator("alias")
    @classmethod
    def _check_alias(cls, v: str) -> str:
        if not _ALIAS_RE.match(v):
            raise ValueError(
                "alias must start with a letter or digit and use only letters, digits, "
                "'_', '.', ':', '/' or '-' (at most 128 characters)"
            )
        return v

    @field_validator("filename")
    @classmethod
    def _check_filename(cls, v: str) -> str:
        if not v.endswith(".gguf"):
            raise ValueError("filename must name a .gguf file")
        return v

    @field_validator("repo")
    @classmethod
    def _check_repo(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("repo must not be empty")
        return v
