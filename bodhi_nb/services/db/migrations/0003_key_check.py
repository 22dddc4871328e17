"""Reserve the key-check slot; ConfigStore fills it with the first secret that opens the store."""

from typing import Any


def up(db: dict[str, Any]) -> None:
    db["_meta"]["1"].setdefault("key_check", None)


def down(db: dict[str, Any]) -> None:
    db["_meta"]["1"].pop("key_check", None)
