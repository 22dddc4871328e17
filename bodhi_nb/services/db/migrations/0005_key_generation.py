"""Start the key generation at 0; every committed master-key rotation adds one.

Each process remembers the generation its key belongs to and compares it before it
touches an encrypted field, so a rotation by another process is noticed at once.
"""

from typing import Any


def up(db: dict[str, Any]) -> None:
    db["_meta"]["1"].setdefault("key_generation", 0)


def down(db: dict[str, Any]) -> None:
    m = db["_meta"]["1"]
    m.pop("key_generation", None)
    m.pop("pending_key", None)
