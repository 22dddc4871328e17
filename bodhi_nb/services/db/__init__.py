"""The encrypted, multi-process store (docs/ARCHITECTURE.md, "Encryption and rotation")."""

from ._encryption import PBKDF2_ITERATIONS
from .master_key import (
    MasterSecret,
    load_master_secret,
    persist_master_secret,
)
from .storage import LockedJSONStorage
from .store import DB_FILENAME, ApiModelRecord, ConfigStore, KeyNotReady, RotationResult

__all__ = [
    "DB_FILENAME",
    "PBKDF2_ITERATIONS",
    "ApiModelRecord",
    "ConfigStore",
    "KeyNotReady",
    "LockedJSONStorage",
    "MasterSecret",
    "RotationResult",
    "load_master_secret",
    "persist_master_secret",
]
