"""Fixtures shared by the service tests."""

from __future__ import annotations

from typing import ClassVar

import pytest


@pytest.fixture
def memory_keyring(monkeypatch):
    """An in-memory keyring backend installed as the keyring, BODHI_NO_KEYRING lifted: no OS
    keyring runs here, so it stands in for the OS edge. `store` holds what was saved (this
    test's own, empty at the start); `locked = True` makes saving fail as a locked OS keyring
    does. The previous backend is put back afterwards."""
    import keyring
    from keyring.backend import KeyringBackend
    from keyring.errors import KeyringLocked

    class MemoryKeyring(KeyringBackend):
        priority = 1
        store: ClassVar[dict] = {}
        locked = False

        def get_password(self, service, username):
            return self.store.get((service, username))

        def set_password(self, service, username, password):
            if self.locked:
                raise KeyringLocked("locked")
            self.store[(service, username)] = password

        def delete_password(self, service, username):
            self.store.pop((service, username), None)

    previous = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    monkeypatch.delenv("BODHI_NO_KEYRING", raising=False)
    try:
        yield kr
    finally:
        keyring.set_keyring(previous)
