"""RouterAliasStore: router aliases in the same TinyDB file as the API models.

It shares the store's `LockedJSONStorage`: every write is a read-modify-write of the
whole document under the cross-process file lock, written atomically, so it can never
lose a concurrent API-model write or key rotation (they take the same lock). Reads use
an in-memory map by name, rebuilt only when the file's generation changes, so the
gateway looks a name up without parsing the file (docs/ARCHITECTURE.md, "Router aliases").
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import ValidationError

from ...objs.api_model_alias import utc_now
from ...objs.errors import ConflictError, InvalidRequestError, NotFoundError
from ...objs.router_alias import RouterAlias, RouterAliasSpec
from .storage import LockedJSONStorage

__all__ = ["TABLE", "RouterAliasStore", "router_alias_not_found"]

TABLE = "router_aliases"
_List = list  # `RouterAliasStore.list` shadows the builtin inside the class body


def router_alias_not_found(alias: str) -> NotFoundError:
    return NotFoundError(f"Router alias '{alias}' not found.", param="alias")


class RouterAliasStore:
    """Create, read, update and delete router aliases under the store's lock."""

    def __init__(self, storage: LockedJSONStorage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._generation = -1
        self._by_name: dict[str, RouterAlias] = {}

    def __repr__(self) -> str:
        return f"RouterAliasStore(path={str(self._storage.path)!r})"

    # -- reads ----------------------------------------------------------------------------

    def index_is_current(self) -> bool:
        """True when `find` is pure memory: the file has not changed since the map was built."""
        return not self._storage.changed() and self._generation == self._storage.generation

    def refresh_index(self) -> None:
        """Reload a changed file now (from a worker thread, off the event loop)."""
        self._current()

    def _current(self) -> dict[str, RouterAlias]:
        with self._lock:
            gen = self._storage.refresh()
            if gen != self._generation:
                self._by_name = _index(self._storage.snapshot())
                self._generation = gen
            return self._by_name

    def find(self, alias: str) -> RouterAlias | None:
        """The router alias of this name, or None (the router's first lookup; no disk read
        while `index_is_current()`)."""
        return self._current().get(alias)

    def get(self, alias: str) -> RouterAlias:
        found = self.find(alias)
        if found is None:
            raise router_alias_not_found(alias)
        return found

    def list(self) -> _List[RouterAlias]:
        """Every router alias, by name."""
        return sorted(self._current().values(), key=lambda r: r.alias)

    # -- writes ---------------------------------------------------------------------------

    def create(self, spec: RouterAliasSpec) -> RouterAlias:
        with self._storage.transaction():
            db = self._storage.snapshot()
            table = _index(db)
            if spec.alias in table:
                raise ConflictError(f"A router alias named '{spec.alias}' already exists.", param="alias")
            _check_no_nesting(table, spec)
            now = utc_now()
            new = RouterAlias(**spec.model_dump(), created_at=now, updated_at=now)
            db.setdefault(TABLE, {})[new.alias] = new.model_dump(mode="json")
            self._storage.write(db)
            return new

    def update(self, alias: str, changes: dict[str, Any]) -> RouterAlias:
        """Apply `changes` (validated as a whole); the name and timestamps are not changed here."""
        changes = {k: v for k, v in changes.items() if k not in ("alias", "created_at", "updated_at")}
        with self._storage.transaction():
            db = self._storage.snapshot()
            table = _index(db)
            old = table.get(alias)
            if old is None:
                raise router_alias_not_found(alias)
            try:
                new = RouterAlias.model_validate({**old.model_dump(), **changes, "updated_at": utc_now()})
            except ValidationError as exc:
                raise InvalidRequestError.from_validation(exc) from None
            _check_no_nesting(table, new)
            db.setdefault(TABLE, {})[alias] = new.model_dump(mode="json")
            self._storage.write(db)
            return new

    def delete(self, alias: str) -> None:
        with self._storage.transaction():
            db = self._storage.snapshot()
            if alias not in db.get(TABLE, {}):
                raise router_alias_not_found(alias)
            del db[TABLE][alias]
            self._storage.write(db)


def _index(db: dict[str, Any]) -> dict[str, RouterAlias]:
    out: dict[str, RouterAlias] = {}
    for name, doc in db.get(TABLE, {}).items():
        try:
            out[name] = RouterAlias.model_validate(doc)
        except ValidationError:
            continue  # a hand-edited record that no longer validates is skipped, never fatal
    return out


def _check_no_nesting(table: dict[str, RouterAlias], spec: RouterAliasSpec) -> None:
    """A router alias's targets are served models, never other router aliases (no loops,
    and every request ends at a provider after at most `max_attempts` tries)."""
    nested = [t for t in spec.targets if t in table and t != spec.alias]
    if nested:
        raise InvalidRequestError(f"targets: '{nested[0]}' is a router alias; targets must be API models or "
                                  "local aliases.", param="targets", status=422, code="validation_error")
    users = [r.alias for r in table.values() if spec.alias in r.targets and r.alias != spec.alias]
    if users:
        raise ConflictError(f"'{spec.alias}' is a target of router alias '{users[0]}'; a router alias cannot be "
                            "another one's target.", param="alias")
