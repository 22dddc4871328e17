"""Private: the master key of one process, kept in step with the store's key generation.

`KeyState` opens the store (key check, finishing an interrupted rotation), hands out the
cipher of a snapshot's key generation, and runs a rotation (steps in `_rotation`).
A process whose key is older than the store's reloads its secret from where it came
from (env, keyring, key file); when that does not open the store it refuses with
`MasterKeyRotatedError` and never writes under the stale key.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...objs.errors import (
    InvalidRequestError,
    MasterKeyRotatedError,
    StoreError,
    WrongMasterKeyError,
)
from . import _rotation, migrations
from ._encryption import PBKDF2_ITERATIONS, RecordCipher, derive_kek, new_salt
from ._rotation import KeyMeta, RotationResult
from .master_key import (
    MIN_LENGTH,
    RELOADABLE_ORIGINS,
    MasterSecret,
    load_master_secret,
    random_secret,
    read_persisted_secret,
)
from .storage import LockedJSONStorage

__all__ = ["KeyState"]

log = logging.getLogger(__name__)


class KeyState:
    """Secret, cipher and key generation of this process for one store."""

    def __init__(self, home: Path, storage: LockedJSONStorage, secret: MasterSecret, *, reloadable: bool,
                 iterations: int | None) -> None:
        self.home = home
        self._storage = storage
        self.secret = secret
        self._reloadable = reloadable and secret.origin in RELOADABLE_ORIGINS
        self.iterations = iterations
        self._lock = threading.RLock()
        self._ciphers: dict[int, RecordCipher] = {}  # key generation -> cipher (the last two)
        self.generation = -1

    def __repr__(self) -> str:
        return f"KeyState(origin={self.secret.origin!r}, generation={self.generation})"

    # -- open ---------------------------------------------------------------------------

    def open(self) -> None:
        """Check the secret against the store; create the key check on first use; finish a
        rotation that died after its new secret became durable (when that is our secret)."""
        with self._storage.transaction():
            db = self._storage.snapshot()
            m = migrations.meta(db)
            stored = m.get("kdf_iterations")
            iterations = self.iterations or stored or PBKDF2_ITERATIONS
            if self._reloadable:  # a rotation may have finished while we waited for the lock
                self.secret = load_master_secret(self.home, create=False)
            km = KeyMeta.of(m)
            if km.key_check is None:
                cipher = RecordCipher(derive_kek(self.secret.value, km.kdf_salt, iterations))
                m["key_check"] = _rotation.make_check(cipher)
                m["kdf_iterations"] = self.iterations = iterations
                self._storage.write(db)
                self._install(cipher, km.generation)
                return
            if (stored or PBKDF2_ITERATIONS) != iterations:
                raise WrongMasterKeyError(
                    f"This store was created with {stored or PBKDF2_ITERATIONS} KDF iterations, not {iterations}.")
            self.iterations = iterations
            cipher = RecordCipher(derive_kek(self.secret.value, km.kdf_salt, iterations))
            if _rotation.passes_check(cipher, km.key_check):
                if km.pending is not None:
                    log.info("%s: an interrupted key rotation is pending; opening it with the new secret "
                             "finishes it", self._storage.path)
                self._install(cipher, km.generation)
                return
            if km.pending is not None and self._finish_interrupted(db, km):
                return
        raise WrongMasterKeyError(
            f"The master secret (from {self.secret.where(self.home)}) does not open {self._storage.path}: it was "
            "created with a different BODHI_ENCRYPTION_KEY / keyring entry / key file.")

    def _finish_interrupted(self, db: dict[str, Any], km: KeyMeta) -> bool:
        """Our secret is the pending one: unwrap the old key and commit the rotation."""
        assert km.pending is not None and self.iterations is not None
        new = RecordCipher(derive_kek(self.secret.value, base64.b64decode(km.pending["kdf_salt"]), self.iterations))
        if not _rotation.passes_check(new, km.pending.get("key_check")):
            return False
        try:
            old = RecordCipher(_rotation.previous_kek(new, km.pending))
        except (StoreError, ValueError, KeyError):
            return False
        if not _rotation.passes_check(old, km.key_check):
            return False
        try:
            _rotation.commit(self._storage, db, old, new)
        except StoreError as exc:
            # Keep working under the old key (still what the records use); the next open
            # with this secret tries the commit again.
            log.warning("could not finish the interrupted key rotation (%s); using the previous key for now",
                        exc.message)
            self._install(old, km.generation)
            return True
        log.info("finished an interrupted key rotation of %s", self._storage.path)
        self._install(new, km.generation + 1)
        return True

    def _install(self, cipher: RecordCipher, generation: int) -> None:
        with self._lock:
            self._ciphers = {g: c for g, c in self._ciphers.items() if g == self.generation}
            self._ciphers[generation] = cipher
            self.generation = generation

    # -- per access ---------------------------------------------------------------------

    def is_ready(self, km: KeyMeta) -> bool:
        """Whether `cipher_for(km)` is a dictionary lookup (no secret reload, no key derivation)."""
        return km.generation in self._ciphers

    def cipher_for(self, km: KeyMeta) -> RecordCipher:
        """The cipher for a snapshot at key generation `km.generation`.

        Called before every read or write of an encrypted field. When another process has
        rotated the key, reload the secret from its source; if that does not open the
        store, refuse (503) rather than read garbage or write under a stale key.
        """
        cipher = self._ciphers.get(km.generation)
        if cipher is not None:
            return cipher
        with self._lock:
            cipher = self._ciphers.get(km.generation)
            if cipher is not None:
                return cipher
            if self._reloadable and km.generation > self.generation:
                try:
                    secret = load_master_secret(self.home, create=False)
                except StoreError:
                    secret = None
                if secret is not None:
                    assert self.iterations is not None
                    cipher = RecordCipher(derive_kek(secret.value, km.kdf_salt, self.iterations))
                    if _rotation.passes_check(cipher, km.key_check):
                        log.info("master key rotated by another process; reloaded it from %s",
                                 secret.where(self.home))
                        self.secret = secret
                        self._install(cipher, km.generation)
                        return cipher
            raise MasterKeyRotatedError(self._rotated_message())

    def _rotated_message(self) -> str:
        if self.secret.origin == "env":
            return ("The master key was rotated by another process; restart with the new BODHI_ENCRYPTION_KEY.")
        if self.secret.origin in ("file", "keyring"):
            return (f"The master key was rotated by another process, and {self.secret.where(self.home)} does not "
                    "hold a secret that opens the store; restore the new secret there and restart.")
        return "The master key was rotated by another process; open the store again with the new master secret."

    # -- rotation -----------------------------------------------------------------------

    def rotate(self, new_value: str | None, announce: Callable[[str], None] | None) -> RotationResult:
        """Rotate to `new_value` (generated when None), durable secret first; see `_rotation`."""
        origin = self.secret.origin
        if new_value is None:
            if origin in ("file", "keyring") or (origin == "env" and announce is not None):
                new_value = random_secret()
            elif origin == "env":
                raise InvalidRequestError(
                    "The master secret comes from BODHI_ENCRYPTION_KEY: give the new value in "
                    "BODHI_NEW_ENCRYPTION_KEY (or let `bodhi-nb rotate-key` generate and print one).")
            else:
                raise InvalidRequestError("Give the new master secret to rotate to.")
        if len(new_value) < MIN_LENGTH or any(c.isspace() for c in new_value):
            raise InvalidRequestError(
                f"The new master secret must be at least {MIN_LENGTH} characters long, without whitespace.")
        if new_value == self.secret.value:
            raise InvalidRequestError("The new master secret must differ from the current one.")
        assert self.iterations is not None
        salt = new_salt()
        new = RecordCipher(derive_kek(new_value, salt, self.iterations))  # slow: before taking the lock
        where = MasterSecret(new_value, origin).where(self.home)
        with self._storage.transaction():
            db = self._storage.snapshot()
            km = KeyMeta.of(migrations.meta(db))
            old = self.cipher_for(km)
            _rotation.write_pending(self._storage, db, old, new, salt)
            try:
                _rotation.persist(self.home, origin, new_value, announce)
            except BaseException as exc:  # noqa: BLE001 - looked at, then re-raised or reported
                self._after_failed_persist(db, origin, new_value, exc)
            try:
                done, skipped = _rotation.commit(self._storage, db, old, new)
            except StoreError as exc:
                saved = ("was handed over (set BODHI_ENCRYPTION_KEY to it)" if origin == "env"
                         else f"is saved ({where})")
                raise StoreError(
                    f"The new master secret {saved} but re-encrypting the store failed ({exc.message}); the "
                    "rotation finishes the next time the store is opened with the new secret.") from None
            self.secret = MasterSecret(new_value, origin)
            self._install(new, km.generation + 1)
        log.info("master key rotated for %s (generation %d)", self._storage.path, self.generation)
        return RotationResult(self.secret, self.generation, done, skipped, where)

    def _after_failed_persist(self, db: dict[str, Any], origin: str, value: str, exc: BaseException) -> None:
        """The secret may or may not have been saved: look, then go on or undo step 1."""
        held = read_persisted_secret(self.home, origin) if origin in ("file", "keyring") else None
        if held == value:
            log.warning("saving the new master secret reported an error after it was saved; continuing")
            return
        reason = exc.message if isinstance(exc, StoreError) else (
            f"{type(exc).__name__}: {exc.strerror}" if isinstance(exc, OSError) else type(exc).__name__)
        if origin in ("file", "keyring") and held is None:
            raise StoreError(
                f"Key rotation stopped: {reason}. The store still opens with whichever secret "
                f"{MasterSecret(value, origin).where(self.home)} holds; run `bodhi-nb rotate-key` again.") from None
        try:
            _rotation.drop_pending(self._storage, db)
        except StoreError:
            pass  # a leftover slot is harmless: the old secret still passes the current check
        if not isinstance(exc, Exception):
            raise exc
        raise StoreError(f"Key rotation stopped before anything changed: {reason}. Fix that and run "
                         "`bodhi-nb rotate-key` again.") from None
