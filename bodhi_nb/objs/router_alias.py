"""RouterAlias: one name served by an ordered list of other models, with fallback.

BodhiApp's `ModelRouterAlias` (fallback strategy). A long job against rate-limited
providers survives when a request that meets a 429, a 5xx or a dead host moves on to
the next target, and the target that failed is left alone for a while (its Retry-After
when it gave one, else `cooldown_seconds`). The object is pure data and rules; the
cooldown state lives in the process that forwards (docs/ARCHITECTURE.md, "Router aliases").
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from .alias import ALIAS_NAME_PATTERN
from .api_model_alias import MAX_MODEL_NAME_LENGTH, utc_now

__all__ = ["ROUTER_ALIAS_PATTERN", "MAX_TARGETS", "MAX_COOLDOWN_SECONDS", "RouterAliasSpec", "RouterAlias",
           "check_router_alias_name"]

ROUTER_ALIAS_PATTERN = ALIAS_NAME_PATTERN  # the same characters as a user alias
_NAME_RE = re.compile(ROUTER_ALIAS_PATTERN)
MAX_TARGETS = 32
MAX_COOLDOWN_SECONDS = 86_400.0


def check_router_alias_name(v: str) -> str:
    """The one name rule, shared by the domain object and the request objects."""
    if not isinstance(v, str) or not _NAME_RE.fullmatch(v):
        raise ValueError("alias must start with a letter or digit and use only letters, digits, "
                         "'_', '.', ':', '/' or '-' (at most 128 characters)")
    return v


class RouterAliasSpec(BaseModel):
    """What a user chooses: the name, the targets in order, and how failures cool down."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(description="The name clients send as `model`, e.g. 'chat-fast'.",
                       json_schema_extra={"pattern": ROUTER_ALIAS_PATTERN})
    targets: list[str] = Field(min_length=1, max_length=MAX_TARGETS,
                               description="Model names tried in this order (API models or local aliases).")
    cooldown_seconds: float = Field(default=60.0, ge=0.0, le=MAX_COOLDOWN_SECONDS,
                                    description="How long a failed target is skipped when it gave no Retry-After.")
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_TARGETS,
                                     description="Targets tried per request at most (default: every target).")
    honor_retry_after: bool = Field(default=True, description="Cool a target down for the Retry-After it sent.")

    @field_validator("alias")
    @classmethod
    def _check_alias(cls, v: str) -> str:
        return check_router_alias_name(v)

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for t in v:
            if not t or not t.strip() or t != t.strip():
                raise ValueError("target names must not be empty or start or end with whitespace")
            if len(t) > MAX_MODEL_NAME_LENGTH or not t.isprintable():
                raise ValueError(f"target names must be printable text of at most {MAX_MODEL_NAME_LENGTH} characters")
            if t in seen:
                raise ValueError(f"'{t}' is listed twice; each target is tried once per request")
            seen.add(t)
        return v

    @model_validator(mode="after")
    def _check_whole(self) -> RouterAliasSpec:
        if self.alias in self.targets:
            raise ValueError(f"targets must not name the router alias itself ('{self.alias}')")
        if self.max_attempts is not None and self.max_attempts > len(self.targets):
            raise ValueError(f"max_attempts ({self.max_attempts}) must be at most the number of targets "
                             f"({len(self.targets)})")
        return self

    @property
    def attempts(self) -> int:
        """Targets tried per request at most."""
        return self.max_attempts if self.max_attempts is not None else len(self.targets)

    def cooldown_for(self, hinted: float | None) -> float:
        """Seconds a failed target is skipped: the upstream's own hint when given and honoured."""
        if hinted is not None and self.honor_retry_after:
            return min(max(hinted, 0.0), MAX_COOLDOWN_SECONDS)
        return self.cooldown_seconds


class RouterAlias(RouterAliasSpec):
    """A stored router alias."""

    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    @field_serializer("created_at", "updated_at")
    def _rfc3339(self, v: datetime) -> str:
        return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

