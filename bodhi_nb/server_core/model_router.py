"""ModelRouter: which provider answers a model name.

Order (docs/ARCHITECTURE.md, "Routing"; API models first, then local):
1. API models listing the name (prefix + upstream id); most recently updated wins a tie.
2. API models with `forward_all_with_prefix` whose prefix starts the name.
3. User aliases (exact), then discovered model aliases (exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..objs.api_model_alias import ApiModelAlias
from ..objs.errors import ModelNotFound
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias
from ..services.data_service import DataService
from ..services.db import DbService

__all__ = ["ModelRouter", "Remote", "Local", "Destination", "Candidate", "ModelEntry"]


@dataclass(frozen=True)
class Remote:
    """Forward to an API model, with the prefix stripped from the model name."""

    api_alias: ApiModelAlias
    upstream_model: str


@dataclass(frozen=True)
class Local:
    """Serve with the local llama.cpp engine."""

    alias: UserModelAlias | DiscoveredModelAlias


Destination = Remote | Local


@dataclass(frozen=True)
class Candidate:
    """One provider that could serve a name, whether it won, and why."""

    source: Literal["api", "user", "model"]
    name: str  # api model id or alias name
    rule: str  # "exact", "prefix", "forward_all", "alias"
    won: bool
    reason: str
    upstream_model: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A name `/v1/models` lists, with who serves it."""

    id: str
    source: Literal["api", "user", "model"]
    owned_by: str
    created: int


class ModelRouter:
    """Resolves names against the store and the local aliases."""

    def __init__(self, db: DbService, data: DataService) -> None:
        self.db = db
        self.data = data

    def resolve_api(self, model: str) -> Remote | None:
        """The API model serving `model`, from the store's in-memory index (no disk scan)."""
        exact = self.db.find_by_served_name(model)
        if exact:
            a = exact[0]
            return Remote(a, a.upstream_model_for(model) or model)
        for a in self.db.forward_all_aliases():
            upstream = a.upstream_model_for(model)
            if upstream is not None:
                return Remote(a, upstream)
        return None

    def resolve(self, model: str) -> Destination:
        remote = self.resolve_api(model)
        if remote is not None:
            return remote
        user = self.data.get_user_alias(model)
        if user is not None:
            return Local(user)
        found = self.data.get_model_alias(model)
        if found is not None:
            return Local(found)
        raise ModelNotFound(model)

    def explain(self, model: str) -> list[Candidate]:
        """Every candidate for `model` in routing order; the first one is the one `resolve` picks."""
        # (source, name, rule, why it would win, why it loses to an earlier one, upstream id)
        found: list[tuple[Any, str, str, str, str, str | None]] = []
        exact = self.db.find_by_served_name(model)
        for i, a in enumerate(exact):
            up = a.upstream_model_for(model)
            found.append(("api", a.id, "prefix" if a.prefix else "exact",
                          f"lists '{up}'" + (f" under prefix '{a.prefix}'" if a.prefix else "")
                          + (" and is the most recently updated of the matches" if len(exact) > 1 else ""),
                          "an API model listing this name was updated more recently", up))
        listed = {a.id for a in exact}
        for a in self.db.forward_all_aliases():
            up = a.upstream_model_for(model)
            if up is not None and a.id not in listed:
                found.append(("api", a.id, "forward_all", f"forwards every name under prefix '{a.prefix}'",
                              "an earlier rule (listed API model or a more recent forward-all) already matched", up))
        user = self.data.get_user_alias(model)
        if user is not None:
            found.append(("user", user.alias, "alias", "user alias with this exact name",
                          "API models are routed before local aliases", None))
        disc = self.data.get_model_alias(model)
        if disc is not None:
            found.append(("model", disc.alias, "alias", "GGUF model found locally with this exact name",
                          "API models and user aliases are routed before discovered models", None))
        return [Candidate(src, name, rule, i == 0, win if i == 0 else lose, up)
                for i, (src, name, rule, win, lose, up) in enumerate(found)]

    def list_models(self) -> list[ModelEntry]:
        """Every name that resolves, once, in routing order (API, user, discovered)."""
        seen: set[str] = set()
        out: list[ModelEntry] = []

        def push(e: ModelEntry) -> None:
            if e.id not in seen:
                seen.add(e.id)
                out.append(e)

        for a in self.db.all():
            for name in a.served_names():
                push(ModelEntry(name, "api", a.id, int(a.created_at.timestamp())))
        for u in self.data.list_user_aliases()[0]:
            push(ModelEntry(u.alias, "user", "local", 0))
        for m in self.data.list_model_aliases():
            push(ModelEntry(m.alias, "model", "local", 0))
        return out
