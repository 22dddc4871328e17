"""Give the store its random PBKDF2 salt (one per store, so equal secrets differ)."""

import base64
import os
from typing import Any


def up(db: dict[str, Any]) -> None:
    m = db["_meta"]["1"]
    m.setdefault("kdf_salt", base64.b64encode(os.urandom(32)).decode())
    m.setdefault("kdf", "pbkdf2-sha256")


def down(db: dict[str, Any]) -> None:
    m = db["_meta"]["1"]
    m.pop("kdf_salt", None)
    m.pop("kdf", None)
