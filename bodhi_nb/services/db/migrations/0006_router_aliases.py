"""Create `router_aliases`: fallback router aliases, keyed by their name.

They hold no secret, so nothing in them is encrypted; `RouterAliasStore` keeps an
in-memory map by name, rebuilt whenever the file changes, and enforces uniqueness
under the store lock.
"""

from typing import Any

TABLE = "router_aliases"


def up(db: dict[str, Any]) -> None:
    db.setdefault(TABLE, {})


def down(db: dict[str, Any]) -> None:
    db.pop(TABLE, None)
