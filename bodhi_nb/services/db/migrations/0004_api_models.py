"""Create `api_model_aliases` and declare its unique indexes (id, prefix).

TinyDB has no indexes of its own: DbService keeps in-memory maps for the declared
ones, rebuilt whenever the file changes, and enforces uniqueness under the lock.
"""

from typing import Any

TABLE = "api_model_aliases"
UNIQUE = ["id", "prefix"]


def up(db: dict[str, Any]) -> None:
    db.setdefault(TABLE, {})
    db["_meta"]["1"].setdefault("unique_indexes", {})[TABLE] = list(UNIQUE)


def down(db: dict[str, Any]) -> None:
    db.pop(TABLE, None)
    db["_meta"]["1"].get("unique_indexes", {}).pop(TABLE, None)
