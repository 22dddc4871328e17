"""The persistent response cache: completions by (resolved target, normalised body).

Why SQLite: the server and every kernel on the machine share one cache, so it must be
safe across processes (WAL mode, a busy timeout) and cheap per lookup (an indexed
primary key). It is append-heavy, unlike the human-readable TinyDB store.

The key is a SHA-256 over canonical JSON (sorted keys, no whitespace) of the resolved
target (e.g. an API model's id, base URL and upstream model, or a local alias and its
file) and the request body without `model`, `stream` and `stream_options`. Two names
that route to the same place share entries; a changed parameter is a different entry.
The value is the completion JSON exactly as the upstream sent it. Request bodies never
hold API keys (those travel only in the upstream `Authorization` header), and the body
itself is not stored, only its hash, so no key and no prompt can land in the file.

Size is bounded: when the stored bytes pass the bound, the least recently used
entries are evicted down to 90 % of it. A running total is kept by triggers, so the
bound costs one small read per write, from any process. The bound is stored in the file
(a `settings` table) by whoever was given one (the Jupyter server's
`response_cache_max_mb`), and every writer evicts by the stored value: a kernel that was
given none never trims the shared cache to a default of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MAX_BYTES", "ResponseCache", "cache_key"]

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
log = logging.getLogger(__name__)
_IGNORED = frozenset({"model", "stream", "stream_options"})
_BOUND_KEY = "max_bytes"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key      TEXT PRIMARY KEY,
    value    BLOB NOT NULL,
    size     INTEGER NOT NULL,
    created  REAL NOT NULL,
    accessed REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_accessed ON entries(accessed);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL,
                                   entries INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS entries_ins AFTER INSERT ON entries BEGIN
    UPDATE totals SET bytes = bytes + NEW.size, entries = entries + 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_del AFTER DELETE ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size, entries = entries - 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_upd AFTER UPDATE OF size ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
END;
"""


def cache_key(target: str, body: dict[str, Any]) -> str:
    """The hex SHA-256 of the target and the body's canonical JSON (without model/stream)."""
    normal = {k: v for k, v in body.items() if k not in _IGNORED}
    canon = json.dumps({"target": target, "body": normal}, sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


_JOURNAL_LOCK = threading.Lock()


class ResponseCache:
    """Completions stored under `path` (created on first use), shared across processes.

    Reads never wait on a lock (WAL readers do not block); code on an event loop still
    calls `aget`, which reads in a worker thread. Writes from the request path
    (`put_later`, and the recency of every hit) are queued and committed by a background
    writer thread in one transaction per batch, as the usage ledger does; this process
    sees its queued entries at once, other processes a few milliseconds later. `put` is
    the synchronous write; `flush` commits the queue now (also at exit).
    """

    IDLE_EXIT = 5.0  # seconds the writer thread waits for work before it ends

    def __init__(self, path: str | Path, max_bytes: int | None = None) -> None:
        """`max_bytes` given is stored in the file as the bound for every process; None
        follows the stored bound (`DEFAULT_MAX_BYTES` when none is stored)."""
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes <= 0):
            raise ValueError("max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)  # the last bound read
        self.hits = 0
        self.misses = 0
        self._read: sqlite3.Connection | None = None
        self._write: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._pending: dict[str, bytes] = {}  # queued entries, visible to get() before they commit
        self._touched: dict[str, float] = {}  # hits whose recency is not written yet
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._atexit = False
        if max_bytes is not None:
            try:
                self._store_bound(self.max_bytes)
            except sqlite3.Error as exc:  # an unusable file fails the requests that use it, not startup
                log.warning("The response cache %s cannot be used (%s); its bound is not stored.", self.path, exc)

    def __repr__(self) -> str:
        return f"ResponseCache(path={str(self.path)!r}, max_bytes={self.max_bytes})"

    # -- connections ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        # Switching the journal mode needs the file to itself and SQLite's busy wait does not cover
        # it, so a reader and the writer thread opening a new file together could see "database is
        # locked": the switch is made once per process under a lock, and never again once the file
        # is in WAL mode (the mode is stored in the file).
        with _JOURNAL_LOCK:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._read is None:
            self._read = self._connect()
        return self._read

    def _writer_db(self) -> sqlite3.Connection:
        if self._write is None:
            self._write = self._connect()
        return self._write

    def _store_bound(self, max_bytes: int) -> None:
        with self._write_lock:
            db = self._writer_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (_BOUND_KEY, str(max_bytes)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _read_bound(self, db: sqlite3.Connection) -> int:
        """The bound stored in the file (remembered in `max_bytes` for the next queued entry)."""
        row = db.execute("SELECT value FROM settings WHERE key = ?", (_BOUND_KEY,)).fetchone()
        self.max_bytes = DEFAULT_MAX_BYTES if row is None else int(row[0])
        return self.max_bytes

    def close(self) -> None:
        """Commit queued writes and close the connections (the cache reopens on next use)."""
        self.flush()
        with self._read_lock:
            if self._read is not None:
                self._read.close()
                self._read = None
        with self._write_lock:
            if self._write is not None:
                self._write.close()
                self._write = None

    # -- entries --------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The stored completion bytes (marking the entry as recently used); None on a miss."""
        with self._queue_lock:
            queued = self._pending.get(key)
            if queued is not None:
                self.hits += 1
                return queued
        with self._read_lock:
            row = self._reader().execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        with self._queue_lock:
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            self._touched[key] = time.time()
        self._kick()
        return bytes(row[0])

    def put(self, key: str, value: bytes) -> None:
        """Store (or replace) one completion now (with anything queued), evicting least recently
        used entries if over the bound."""
        self.put_later(key, value)
        self.flush()

    def put_later(self, key: str, value: bytes) -> None:
        """Queue one completion for the background writer; `get` sees it at once."""
        if len(key) + len(value) > self.max_bytes:
            return
        with self._queue_lock:
            self._pending[key] = value
        self._kick()

    def flush(self) -> None:
        """Commit every queued entry and recency mark now."""
        with self._write_lock:
            with self._queue_lock:
                items, touched = dict(self._pending), self._touched
                self._touched = {}
            if items or touched:
                self._commit(items, touched)
            with self._queue_lock:  # drop what was committed, unless replaced meanwhile
                for k, v in items.items():
                    if self._pending.get(k) is v:
                        del self._pending[k]

    def _commit(self, items: dict[str, bytes], touched: dict[str, float]) -> None:
        """One transaction: upserts, recency marks, then eviction down to 90 % if over the bound."""
        now = time.time()
        db = self._writer_db()
        db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
        try:
            bound = self._read_bound(db)
            rows = [(k, v, len(k) + len(v), now, now) for k, v in items.items() if len(k) + len(v) <= bound]
            db.executemany("INSERT INTO entries(key, value, size, created, accessed) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT(key) DO UPDATE SET value = excluded.value, size = excluded.size, "
                           "accessed = excluded.accessed", rows)
            db.executemany("UPDATE entries SET accessed = ? WHERE key = ?", [(t, k) for k, t in touched.items()])
            total = db.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0]
            if total > bound:
                excess = total - int(bound * 0.9)
                victims: list[tuple[str]] = []
                for key, size in db.execute("SELECT key, size FROM entries ORDER BY accessed"):
                    if excess <= 0:
                        break
                    victims.append((key,))
                    excess -= size
                db.executemany("DELETE FROM entries WHERE key = ?", victims)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- the background writer ------------------------------------------------------------

    def _kick(self) -> None:
        self._wake.set()
        with self._queue_lock:
            if self._writer is not None and self._writer.is_alive():
                return
            if not self._atexit:
                atexit.register(self._flush_at_exit)
                self._atexit = True
            self._writer = threading.Thread(target=self._write_forever, name="bodhi_nb-cache-writer", daemon=True)
            self._writer.start()

    def _flush_at_exit(self) -> None:
        try:
            self.flush()
        except sqlite3.Error:  # e.g. BODHI_HOME removed: nothing to keep the entries in
            log.debug("Queued response-cache entries dropped at exit.", exc_info=True)

    def _write_forever(self) -> None:
        while self._wake.wait(self.IDLE_EXIT):
            self._wake.clear()
            try:
                self.flush()
            except sqlite3.Error:
                log.warning("The response cache could not be written; entries stay queued.", exc_info=True)
        with self._queue_lock:  # idle: end; the next write starts a new writer
            self._writer = None
        if self._wake.is_set():
            self._kick()

    # -- management -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Entries and bytes stored (all processes), the bound, and this process's hits/misses."""
        self.flush()
        with self._read_lock:
            db = self._reader()
            nbytes, entries = db.execute("SELECT bytes, entries FROM totals WHERE id = 0").fetchone()
            self._read_bound(db)
        return {"path": str(self.path), "entries": int(entries), "bytes": int(nbytes),
                "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        self.flush()
        with self._write_lock:
            db = self._writer_db()
            db.execute("BEGIN IMMEDIATE")
            n = db.execute("SELECT entries FROM totals WHERE id = 0").fetchone()[0]
            db.execute("DELETE FROM entries")
            db.execute("COMMIT")
        self.hits = self.misses = 0
        return int(n)

    # -- on an event loop -----------------------------------------------------------------

    async def aget(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self.get, key)
