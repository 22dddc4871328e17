from __future__ import annotations

import base64

import pytest

from bodhi_nb.objs import DecryptionError
from bodhi_nb.services.db import _encryption as enc

KEK = enc.derive_kek("a-master-secret-of-enough-length", b"s" * 32, 1000)


def test_round_trip():
    c = enc.RecordCipher(KEK)
    token = c.encrypt("sk-live-123", "openai", "api_key")
    assert token.startswith("v1:")
    assert c.decrypt(token, "openai", "api_key") == "sk-live-123"


def test_same_plaintext_twice_differs_in_salt_nonce_and_ciphertext():
    c = enc.RecordCipher(KEK)
    a = base64.b64decode(c.encrypt("same", "r", "api_key")[3:])
    b = base64.b64decode(c.encrypt("same", "r", "api_key")[3:])
    assert a[:32] != b[:32]
    assert a[32:44] != b[32:44]
    assert a[44:] != b[44:]


def test_flipped_byte_fails_cleanly():
    c = enc.RecordCipher(KEK)
    raw = bytearray(base64.b64decode(c.encrypt("secret", "r", "api_key")[3:]))
    raw[-1] ^= 0x01
    with pytest.raises(DecryptionError, match="failed authentication"):
        c.decrypt("v1:" + base64.b64encode(bytes(raw)).decode(), "r", "api_key")


def test_ciphertext_copied_to_another_record_or_field_fails():
    c = enc.RecordCipher(KEK)
    token = c.encrypt("secret", "alpha", "api_key")
    with pytest.raises(DecryptionError):
        c.decrypt(token, "beta", "api_key")
    with pytest.raises(DecryptionError):
        c.decrypt(token, "alpha", "other_field")


def test_other_kek_fails():
    token = enc.RecordCipher(KEK).encrypt("secret", "r", "api_key")
    other = enc.RecordCipher(enc.derive_kek("another-master-secret-xx", b"s" * 32, 1000))
    with pytest.raises(DecryptionError):
        other.decrypt(token, "r", "api_key")


@pytest.mark.parametrize("token", ["v2:abcd", "v1:!!notbase64!!", "v1:" + base64.b64encode(b"short").decode()])
def test_malformed_tokens(token):
    with pytest.raises(DecryptionError):
        enc.RecordCipher(KEK).decrypt(token, "r", "api_key")


def test_kek_is_derived_once_per_process(monkeypatch):
    calls = []
    real = enc.hashlib.pbkdf2_hmac

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(enc.hashlib, "pbkdf2_hmac", counting)
    salt = enc.new_salt()
    k1 = enc.derive_kek("cache-me-secret-123456", salt, 1000)
    k2 = enc.derive_kek("cache-me-secret-123456", salt, 1000)
    assert k1 == k2 and len(k1) == 32 and len(calls) == 1


def test_default_iterations_are_600k():
    assert enc.PBKDF2_ITERATIONS == 600_000


def test_cipher_repr_hides_key():
    assert KEK.hex() not in repr(enc.RecordCipher(KEK))
