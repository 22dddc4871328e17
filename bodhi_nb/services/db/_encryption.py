"""Private: AES-256-GCM encryption of API keys. Import only from inside `services/db`.

Scheme (docs/ARCHITECTURE.md, "Encryption and rotation"): a key-encryption key (KEK) is derived once per process from the
master secret and the store's salt with PBKDF2-HMAC-SHA256 (600,000 iterations; slow on
purpose, so a stolen db file plus a guessed secret is expensive). Each record gets its
own key through HKDF-SHA256 over a 32-byte random salt, and a 12-byte random nonce per
write. The additional authenticated data binds a ciphertext to its record id and field,
so a ciphertext pasted into another record does not decrypt.

Wire form: ``v1:`` + base64(salt[32] || nonce[12] || ciphertext+tag).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ...objs.errors import DecryptionError

PBKDF2_ITERATIONS = 600_000
SALT_LEN = 32
NONCE_LEN = 12
VERSION_PREFIX = "v1:"
_HKDF_INFO = b"bodhi_nb record key v1"

_kek_cache: dict[tuple[bytes, bytes, int], bytes] = {}
_kek_lock = threading.Lock()


def new_salt() -> bytes:
    return os.urandom(SALT_LEN)


def derive_kek(secret: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """PBKDF2 once per (secret, salt, iterations) per process; later calls hit the cache."""
    # The cache key holds a digest, not the secret itself.
    key = (hashlib.sha256(secret.encode()).digest(), salt, iterations)
    with _kek_lock:
        kek = _kek_cache.get(key)
        if kek is None:
            kek = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations, dklen=32)
            _kek_cache[key] = kek
        return kek


def _aad(record_id: str, field: str) -> bytes:
    return f"bodhi_nb\x00{record_id}\x00{field}".encode()


def _record_key(kek: bytes, record_salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=record_salt, info=_HKDF_INFO).derive(kek)


class RecordCipher:
    """Encrypts and decrypts one field value bound to one record id."""

    def __init__(self, kek: bytes) -> None:
        self._kek = kek

    def __repr__(self) -> str:  # never show key material
        return "RecordCipher(<kek hidden>)"

    @property
    def kek(self) -> bytes:
        """The key-encryption key, for wrapping it during a rotation (never logged)."""
        return self._kek

    def encrypt(self, plaintext: str, record_id: str, field: str) -> str:
        salt = os.urandom(SALT_LEN)
        nonce = os.urandom(NONCE_LEN)
        ct = AESGCM(_record_key(self._kek, salt)).encrypt(nonce, plaintext.encode(), _aad(record_id, field))
        return VERSION_PREFIX + base64.b64encode(salt + nonce + ct).decode("ascii")

    def decrypt(self, token: str, record_id: str, field: str) -> str:
        if not token.startswith(VERSION_PREFIX):
            raise DecryptionError(f"The stored {field} of '{record_id}' has an unknown format.")
        try:
            blob = base64.b64decode(token[len(VERSION_PREFIX):], validate=True)
        except ValueError as exc:
            raise DecryptionError(f"The stored {field} of '{record_id}' is not valid base64.") from exc
        if len(blob) < SALT_LEN + NONCE_LEN + 16:
            raise DecryptionError(f"The stored {field} of '{record_id}' is truncated.")
        salt, nonce, ct = blob[:SALT_LEN], blob[SALT_LEN:SALT_LEN + NONCE_LEN], blob[SALT_LEN + NONCE_LEN:]
        try:
            pt = AESGCM(_record_key(self._kek, salt)).decrypt(nonce, ct, _aad(record_id, field))
        except InvalidTag:
            raise DecryptionError(
                f"The stored {field} of '{record_id}' failed authentication: it was altered, "
                "copied from another record, or encrypted with another master key."
            ) from None
        return pt.decode()
