"""Create the `_meta` table that records the schema level."""

from typing import Any


def up(db: dict[str, Any]) -> None:
    db.setdefault("_meta", {}).setdefault("1", {"schema_version": 0})


def down(db: dict[str, Any]) -> None:
    db.pop("_meta", None)
