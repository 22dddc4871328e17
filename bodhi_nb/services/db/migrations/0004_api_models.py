"""Create `api_model_aliases`.

TinyDB has no indexes of its own: ConfigStore keeps in-memory maps by id, prefix and
served name, rebuilt whenever the file changes, and enforces id and prefix uniqueness
under the store lock.
"""

from typing import Any

TABLE = "api_model_aliases"


def up(db: dict[str, Any]) -> None:
    db.setdefault(TABLE, {})


def down(db: dict[str, Any]) -> None:
    db.pop(TABLE, None)
    db["_meta"]["1"].pop("unique_indexes", None)  # written by earlier versions of this migration
