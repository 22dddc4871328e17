"""`Bodhi()` made again and again (re-run cells, `panel()`, `%%bodhi`) shares one set of
services per home: writer threads and exit hooks do not pile up."""

from __future__ import annotations

import threading

from bodhi_nb.notebook.client import Bodhi
from tests.conftest import FAST_KDF, TEST_SECRET


def _writer_threads() -> int:
    return sum(t.name in ("bodhi_nb-ledger", "bodhi_nb-cache-writer") for t in threading.enumerate())


def test_repeated_bodhi_shares_services_and_threads(bodhi_home, monkeypatch):
    first = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    first.models()
    before = _writer_threads()
    again = [Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF) for _ in range(5)]
    for b in again:
        b.models()
    assert all(b.services is first.services for b in again)
    assert _writer_threads() == before
    # Other options, or another master secret in the environment, are another store opening.
    other = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, engine_idle_timeout=5)
    assert other.services is not first.services
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", TEST_SECRET + "-env")
    assert Bodhi(bodhi_home / "env").services is not Bodhi(bodhi_home / "env2").services
