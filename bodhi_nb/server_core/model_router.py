"""ModelRouter: which provider answers a model name.

Order (docs/ARCHITECTURE.md, "The path of one request"; router aliases, then API models, then local):
0. Router aliases (a name made on purpose): `Router`, whose targets resolve by 1-3.
1. API models listing the name (prefix + upstream id); most recently updated wins a tie.
2. API models with `forward_all_with_prefix` whose prefix starts the name.
3. User aliases (exact), then discovered model aliases (exact).
4. Under JupyterHub, the hub service's models (server_core/hub_link.py): after local ones, so
   local models stay local.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from ..objs.api_model_alias import ApiModelAlias
from ..objs.errors import ModelNotFound
from ..objs.model_alias import DiscoveredModelAlias, UserModelAlias
from ..objs.router_alias import RouterAlias
from ..services.db import ConfigStore
from ..services.db.router_aliases import RouterAliasStore
from ..services.local_models import LocalModels
from ._cooldowns import Cooldowns
from .hub_link import HUB_SOURCE, HubLink

__all__ = ["ModelRouter", "Remote", "Local", "Router", "Destination", "Resolved", "Candidate", "ModelEntry",
           "TargetState"]


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
class Router:
    """A router alias: its targets are tried in order by the gateway, skipping cooling ones."""

    router_alias: RouterAlias


Resolved = Router | Remote | Local
"""What a name resolves to; a router alias's targets are each a `Destination`."""


@dataclass(frozen=True)
class TargetState:
    """One router-alias target as `explain` shows it: ready, cooling down, or not served."""

    name: str
    state: Literal["ready", "cooling", "unknown"]
    cooling_until: datetime | None = None  # UTC, while cooling
    served_by: str | None = None  # e.g. "api:openai" or "user:my-model"


@dataclass(frozen=True)
class Candidate:
    """One provider that could serve a name, whether it won, and why."""

    source: Literal["router", "api", "user", "model", "hub"]
    name: str  # api model id or alias name
    rule: str  # "router", "exact", "prefix", "forward_all", "alias"
    won: bool
    reason: str
    upstream_model: str | None = None
    targets: tuple[TargetState, ...] = ()  # a router alias's targets, in order


@dataclass(frozen=True)
class ModelEntry:
    """A name `/v1/models` lists, with who serves it."""

    id: str
    source: Literal["router", "api", "user", "model", "hub"]
    owned_by: str
    created: int


class ModelRouter:
    """Resolves names against the store and the local aliases."""

    def __init__(self, db: ConfigStore, data: LocalModels, cooldowns: Cooldowns | None = None,
                 hub: HubLink | None = None) -> None:
        self.db = db
        self.data = data
        self.hub = hub  # the JupyterHub service's models, when this process runs under a hub that has it
        self.router_aliases = RouterAliasStore(db.storage)
        # Which router-alias targets are cooling down (this process's memory; the gateway writes it).
        self.cooldowns = cooldowns or Cooldowns()

    def index_is_current(self) -> bool:
        """Whether routing by name is pure memory now (no store file changed since it was read)."""
        return self.db.index_is_current() and self.router_aliases.index_is_current()

    def refresh_index(self) -> None:
        """Read a changed store file and re-index it (blocking: call from a worker thread)."""
        self.db.refresh_index()
        self.router_aliases.refresh_index()

    async def hub_fresh(self) -> None:
        """Re-read the hub service's model list when it is older than its TTL (HTTP, on this loop)."""
        if self.hub is not None and self.hub.stale():
            await self.hub.refresh()

    def _hub_remote(self, model: str) -> Remote | None:
        alias = self.hub.alias() if self.hub is not None else None
        return Remote(alias, model) if alias is not None and model in alias.models else None

    def router_alias(self, model: str) -> RouterAlias | None:
        """The router alias of this name, from the store's in-memory map (no disk scan)."""
        return self.router_aliases.find(model)

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

    def resolve(self, model: str) -> Resolved:
        """Router aliases first, then `resolve_target`'s rules."""
        ra = self.router_alias(model)
        if ra is not None:
            return Router(ra)
        return self.resolve_target(model)

    def resolve_target(self, model: str) -> Destination:
        """A served model (API, then user alias, then discovered): what a router alias's targets name."""
        remote = self.resolve_api(model)
        if remote is not None:
            return remote
        user = self.data.get_user_alias(model)
        if user is not None:
            return Local(user)
        found = self.data.get_model_alias(model)
        if found is not None:
            return Local(found)
        hub = self._hub_remote(model)
        if hub is not None:
            return hub
        raise ModelNotFound(model)

    def explain(self, model: str) -> list[Candidate]:
        """Every candidate for `model` in routing order; the first one is the one `resolve` picks.
        A router alias comes first, with the state of each of its targets."""
        cands = self._explain_target(model)
        ra = self.router_alias(model)
        if ra is None:
            return cands
        states = tuple(self.target_state(t) for t in ra.targets)
        summary = ", ".join(f"{s.name}: " + (f"cooling down until {s.cooling_until:%H:%M:%S} UTC"
                                                if s.state == "cooling" and s.cooling_until else s.state)
                            for s in states)
        first = Candidate("router", ra.alias, "router", True,
                          f"router alias; targets tried in order ({summary}), at most {ra.attempts} per request",
                          targets=states)
        return [first, *(replace(c, won=False, reason="a router alias with this name is routed first")
                         for c in cands)]

    def target_state(self, target: str) -> TargetState:
        """Whether a router-alias target is ready, cooling down (until when), or served by nothing."""
        try:
            dest = self.resolve_target(target)
        except ModelNotFound:
            return TargetState(target, "unknown")
        by = f"api:{dest.api_alias.id}" if isinstance(dest, Remote) else f"{dest.alias.source}:{dest.alias.alias}"
        until = self.cooldowns.ready_at(target)
        return TargetState(target, "ready" if until is None else "cooling", until, by)

    def _explain_target(self, model: str) -> list[Candidate]:
        # (source, name, rule, why it would win, why it loses to an earlier one, upstream id)
        found: list[tuple[Any, str, str, str, str, str | None]] = []
        exact = self.db.find_by_served_name(model)
        for a in exact:
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
        if self._hub_remote(model) is not None:
            found.append(("hub", HUB_SOURCE, "exact", "served by the JupyterHub gateway service",
                          "this server's own models are routed before the hub's", model))
        return [Candidate(src, name, rule, i == 0, win if i == 0 else lose, up)
                for i, (src, name, rule, win, lose, up) in enumerate(found)]

    def list_models(self) -> list[ModelEntry]:
        """Every name that resolves, once, in routing order (router, API, user, discovered)."""
        seen: set[str] = set()
        out: list[ModelEntry] = []

        def push(e: ModelEntry) -> None:
            if e.id not in seen:
                seen.add(e.id)
                out.append(e)

        for r in self.router_aliases.list():
            push(ModelEntry(r.alias, "router", "router", int(r.created_at.timestamp())))
        for a in self.db.all():
            for name in a.served_names():
                push(ModelEntry(name, "api", a.id, int(a.created_at.timestamp())))
        for u in self.data.list_user_aliases()[0]:
            push(ModelEntry(u.alias, "user", "local", 0))
        for m in self.data.list_model_aliases():
            push(ModelEntry(m.alias, "model", "local", 0))
        hub = self.hub.alias() if self.hub is not None else None
        for name in hub.models if hub is not None else ():
            push(ModelEntry(name, "hub", HUB_SOURCE, 0))
        return out
