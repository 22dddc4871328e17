"""The encrypted, multi-process store (docs/ARCHITECTURE.md, "Encryption and rotation")."""

from .master_key import (
    MasterSecret,
    load_master_secret,
    persist_master_secret,
)
from .service import DB_FILENAME, ApiModelRecord, DbService, RotationResult
from .storage import LockedJSONStorage

__all__ = [
    "DB_FILENAME",
    "ApiModelRecord",
    "DbService",
    "LockedJSONStorage",
    "MasterSecret",
    "RotationResult",
    "load_master_secret",
    "persist_master_secret",
]
