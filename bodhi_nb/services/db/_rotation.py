"""Private: the steps of a crash-safe master-key rotation (see docs/ARCHITECTURE.md).

The rotating process holds the store's file lock from the first step to the last, so a
process that takes the lock and still finds a pending slot knows the rotation died.

1. `write_pending`: one atomic write adds `_meta.pending_key` = the new secret's KDF salt,
   its key check, and the old key-encryption key wrapped under the new one. Records
   stay encrypted under the old key; the old secret is where it always was.
2. `persist`: the new secret is made durable where the old one lives (key file, keyring)
   or handed to the user (an environment secret is theirs to set).
3. `commit`: one atomic write re-encrypts every key under the new key, moves the pending
   salt and key check into place, adds one to `key_generation` and drops the slot.

A kill at any point leaves one of: no slot (nothing happened, or all of it did), or a
slot next to records still under the old key. The old secret passes the current key
check and keeps working; the new secret passes the slot's key check, unwraps the old
key and finishes the commit (`previous_kek`). So whichever secret is persisted opens it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...objs.errors import DecryptionError
from . import migrations
from ._encryption import RecordCipher
from .master_key import MasterSecret, persist_master_secret
from .storage import LockedJSONStorage

__all__ = [
    "GENERATION",
    "PENDING",
    "KeyMeta",
    "RotationResult",
    "commit",
    "drop_pending",
    "make_check",
    "passes_check",
    "persist",
    "previous_kek",
    "write_pending",
]

log = logging.getLogger(__name__)

TABLE = "api_model_aliases"
KEY_FIELD = "api_key"
PENDING = "pending_key"
GENERATION = "key_generation"
_CHECK_PLAINTEXT = "bodhi_nb key check v1"
_CHECK_ID = "_meta"
_CHECK_FIELD = "key_check"
_WRAP_FIELD = "previous_kek"


@dataclass(frozen=True)
class KeyMeta:
    """The key facts of one snapshot of the store: generation, salt, key check, pending slot."""

    generation: int
    kdf_salt: bytes
    key_check: str | None
    pending: dict[str, Any] | None

    @classmethod
    def of(cls, meta: dict[str, Any]) -> KeyMeta:
        p = meta.get(PENDING)
        return cls(int(meta.get(GENERATION, 0)), base64.b64decode(meta["kdf_salt"]), meta.get("key_check"),
                   dict(p) if isinstance(p, dict) else None)


@dataclass(frozen=True)
class RotationResult:
    """What a rotation did, and the sentence to tell the user."""

    secret: MasterSecret
    generation: int
    reencrypted: int
    skipped: list[str] = field(default_factory=list)
    where: str = ""

    def message(self) -> str:
        n = self.reencrypted
        text = f"Re-encrypted {n} API key{'s' if n != 1 else ''} with the new master secret"
        if self.secret.origin == "env":
            text += "; now set BODHI_ENCRYPTION_KEY to the new secret and restart the Jupyter server and kernels."
        elif self.secret.origin == "file":
            text += f" (written to {self.where})."
        elif self.secret.origin == "keyring":
            text += " (stored in the OS keyring)."
        else:
            text += "."
        if self.skipped:
            text += (f" {len(self.skipped)} stored key(s) could not be decrypted and were left as they were: "
                     f"{', '.join(self.skipped)}; set a new key on them or delete them.")
        return text


def make_check(cipher: RecordCipher) -> str:
    return cipher.encrypt(_CHECK_PLAINTEXT, _CHECK_ID, _CHECK_FIELD)


def passes_check(cipher: RecordCipher, token: str | None) -> bool:
    if not token:
        return False
    try:
        return cipher.decrypt(token, _CHECK_ID, _CHECK_FIELD) == _CHECK_PLAINTEXT
    except DecryptionError:
        return False


def previous_kek(new_cipher: RecordCipher, pending: dict[str, Any]) -> bytes:
    """The old key-encryption key, unwrapped with the new secret's cipher."""
    return base64.b64decode(new_cipher.decrypt(pending[_WRAP_FIELD], _CHECK_ID, _WRAP_FIELD))


# -- the steps (module functions, so tests can make each one fail) ----------------------------


def write_pending(storage: LockedJSONStorage, db: dict[str, Any], old: RecordCipher, new: RecordCipher,
                  new_salt: bytes) -> None:
    """Step 1: record the new secret's salt and key check, and the old key wrapped under the new."""
    migrations.meta(db)[PENDING] = {
        "kdf_salt": base64.b64encode(new_salt).decode(),
        "key_check": make_check(new),
        _WRAP_FIELD: new.encrypt(base64.b64encode(old.kek).decode(), _CHECK_ID, _WRAP_FIELD),
    }
    storage.write(db)


def persist(home: Path, origin: str, value: str, announce: Callable[[str], None] | None) -> None:
    """Step 2: make the new secret durable (key file / keyring), or hand it to the user."""
    if origin in ("file", "keyring"):
        persist_master_secret(home, origin, value)
    elif announce is not None:
        announce(value)


def commit(storage: LockedJSONStorage, db: dict[str, Any], old: RecordCipher,
           new: RecordCipher) -> tuple[int, list[str]]:
    """Step 3: re-encrypt every key and switch to the pending slot, in one atomic write.

    A key that does not decrypt (tampered) is left as it is: it was unusable before and
    stays listed with an error; one bad record never blocks the rotation of the others.
    """
    m = migrations.meta(db)
    pending = m[PENDING]
    done, skipped = 0, []
    for id, doc in db.get(TABLE, {}).items():
        token = doc.get(KEY_FIELD)
        if token is None:
            continue
        try:
            plain = old.decrypt(token, id, KEY_FIELD)
        except DecryptionError:
            skipped.append(id)
            continue
        doc[KEY_FIELD] = new.encrypt(plain, id, KEY_FIELD)
        done += 1
    m["kdf_salt"] = pending["kdf_salt"]
    m["key_check"] = pending["key_check"]
    m[GENERATION] = int(m.get(GENERATION, 0)) + 1
    del m[PENDING]
    storage.write(db)
    if skipped:
        log.warning("key rotation left %d undecryptable key(s) as they were: %s", len(skipped), ", ".join(skipped))
    return done, skipped


def drop_pending(storage: LockedJSONStorage, db: dict[str, Any]) -> None:
    """Undo step 1 (the new secret never became durable)."""
    if migrations.meta(db).pop(PENDING, None) is not None:
        storage.write(db)
