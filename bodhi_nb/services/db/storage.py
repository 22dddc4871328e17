"""A TinyDB storage that several processes can share safely.

The Jupyter server and every kernel open the same file. TinyDB's own JSONStorage
rewrites the file in place with no lock, which corrupts it within seconds under two
writers. This storage:

- takes an exclusive file lock (filelock) for every read-modify-write, through
  `transaction()`; readers need no lock because a write is never seen half-done,
- writes through `services/files.py` (`atomic_write`: a temp file, fsynced, `os.replace`d
  over the old one, the directory fsynced), so a writer killed at any point leaves either
  the old file or the new one,
- re-reads the file only when its (inode, mtime, size) changed, and counts reloads
  in `generation` so callers can rebuild in-memory indexes exactly when needed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tinydb.storages import Storage

from ...objs.errors import StoreError
from ..files import atomic_write

__all__ = ["LockedJSONStorage"]

log = logging.getLogger(__name__)

_Sig = tuple[int, int, int]


class LockedJSONStorage(Storage):
    """JSON file storage with a cross-process lock and atomic replace."""

    def __init__(self, path: str | os.PathLike[str], lock_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # thread_local=False: one lock object per storage; threads are serialised by _writer.
        self._file_lock = FileLock(str(self.path) + ".lock", timeout=lock_timeout, thread_local=False)
        # Two locks, so a reader never waits on another process: `_writer` serialises this
        # process's writers around the (possibly long) file-lock wait; `_mutex` guards only
        # the in-memory copy and is held for microseconds (docs/ARCHITECTURE.md, "The store").
        self._writer = threading.RLock()
        self._mutex = threading.RLock()
        self._sig: _Sig | None = None
        self._raw: bytes | None = None
        self.generation = 0

    # -- locking ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the exclusive lock: reads inside see the latest file, writes are ours alone."""
        with self._writer:
            try:
                self._file_lock.acquire()
            except Timeout as exc:
                raise StoreError(
                    f"Timed out waiting for the lock on {self.path.name}; another process holds it."
                ) from exc
            except OSError as exc:  # read-only or vanished BODHI_HOME
                raise StoreError(f"Cannot lock {self.path}: {exc.strerror or exc}") from None
            try:
                yield
            finally:
                self._file_lock.release()

    # -- Storage API ----------------------------------------------------------------------

    def read(self) -> dict[str, dict[str, Any]] | None:
        self.refresh()
        with self._mutex:
            raw = self._raw
        if raw is None:
            return None
        # A fresh object every time: TinyDB mutates what it reads before writing it.
        data: dict[str, dict[str, Any]] = json.loads(raw)
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        with self.transaction():
            self._atomic_write(raw)

    def close(self) -> None:  # nothing held open between calls
        pass

    # -- helpers --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The current data (empty dict for a new file)."""
        return self.read() or {}

    def refresh(self) -> int:
        """Reload if the file changed on disk; returns the generation after the check.

        Never waits for another process: only a vanished file (restored from the last copy
        read) takes the file lock.
        """
        with self._mutex:
            vanished = self._refresh()
        if vanished:
            with self.transaction(), self._mutex:
                if self._stat() is None and self._raw is not None:
                    self._atomic_write(self._raw)
                else:
                    self._load()
        with self._mutex:
            return self.generation

    def changed(self) -> bool:
        """Whether the file on disk differs from the copy in memory: one stat, no read.

        Lets an event loop hand the reload (read, parse, re-index) to a thread first.
        """
        sig = self._stat()
        with self._mutex:
            return sig != self._sig

    def _stat(self) -> _Sig | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> bool:
        """Reload a changed file (call with `_mutex`); True when it vanished and must be restored."""
        sig = self._stat()
        if sig is not None and sig == self._sig:
            return False
        if sig is None:
            if self._raw is not None:
                # Someone deleted the file under us: put back what we last saw rather than
                # silently starting from an empty store.
                log.warning("%s disappeared; restoring it from the last copy read", self.path)
                return True
            return False
        self._load()
        return False

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        if raw.strip():
            try:
                json.loads(raw)
            except ValueError as exc:
                raise StoreError(f"{self.path} is not valid JSON: {exc}") from exc
        self._raw = raw if raw.strip() else None
        self._sig = self._stat()
        self.generation += 1

    def _atomic_write(self, raw: bytes) -> None:
        try:
            mode = self.path.stat().st_mode & 0o777  # keep a mode the user chose
        except FileNotFoundError:
            mode = 0o600
        except OSError as exc:
            raise StoreError(f"Could not write {self.path}: {exc.strerror or exc}") from None
        try:
            atomic_write(self.path, raw, mode=mode)
        except OSError as exc:
            raise StoreError(f"Could not write {self.path}: {exc.strerror or exc}") from exc
        with self._mutex:
            self._raw = raw
            self._sig = self._stat()
            self.generation += 1
