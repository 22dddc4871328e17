"""Schema migrations for the TinyDB store.

Each numbered module has `up(db)` and `down(db)`, where `db` is the whole TinyDB
document (table name -> {doc id -> document}). The runner applies them under the
store's lock and writes once, so a migration is all-or-nothing even across processes.
`_meta` (doc "1") records `schema_version`.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ....objs.errors import StoreError
from ..storage import LockedJSONStorage

__all__ = ["LATEST", "MIGRATIONS", "Migration", "meta", "migrate", "schema_version"]

log = logging.getLogger(__name__)

_MODULES = ["0001_meta", "0002_kdf_salt", "0003_key_check", "0004_api_models", "0005_key_generation",
            "0006_router_aliases"]
META_TABLE = "_meta"
META_DOC = "1"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    module: ModuleType

    def up(self, db: dict[str, Any]) -> None:
        self.module.up(db)

    def down(self, db: dict[str, Any]) -> None:
        self.module.down(db)


def _load() -> list[Migration]:
    out = []
    for name in _MODULES:
        mod = importlib.import_module(f"{__name__}.{name}")
        out.append(Migration(int(name[:4]), name, mod))
    return out


MIGRATIONS: list[Migration] = _load()
LATEST = MIGRATIONS[-1].version


def meta(db: dict[str, Any]) -> dict[str, Any]:
    """The `_meta` document (created empty when missing)."""
    doc: dict[str, Any] = db.setdefault(META_TABLE, {}).setdefault(META_DOC, {})
    return doc


def schema_version(db: dict[str, Any]) -> int:
    return int(db.get(META_TABLE, {}).get(META_DOC, {}).get("schema_version", 0))


def migrate(storage: LockedJSONStorage, target: int | None = None) -> int:
    """Bring the store to `target` (default: latest), up or down; returns the new level."""
    target = LATEST if target is None else target
    if not 0 <= target <= LATEST:
        raise StoreError(f"No schema level {target}; levels go from 0 to {LATEST}.")
    with storage.transaction():
        db = storage.snapshot()
        current = schema_version(db)
        if current > LATEST:
            raise StoreError(
                f"The store is at schema level {current}, newer than this bodhi_nb ({LATEST}); upgrade bodhi_nb."
            )
        if current == target:
            return current
        if current < target:
            for m in MIGRATIONS:
                if current < m.version <= target:
                    m.up(db)
                    meta(db)["schema_version"] = m.version
                    log.info("store migration %s applied", m.name)
        else:
            for m in reversed(MIGRATIONS):
                if target < m.version <= current:
                    m.down(db)
                    if m.version > 1:
                        meta(db)["schema_version"] = m.version - 1
                    log.info("store migration %s reverted", m.name)
        storage.write(db)
        return schema_version(db)
