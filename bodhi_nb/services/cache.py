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

Size is bounded: when the stored bytes pass `max_bytes`, the least recently used
entries are evicted down to 90 % of it. A running total is kept by triggers, so the
bound costs one small read per write, from any process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["ResponseCache", "DEFAULT_MAX_BYTES", "cache_key"]

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
_IGNORED = frozenset({"model", "stream", "stream_options"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key      TEXT PRIMARY KEY,
    value    BLOB NOT NULL,
    size     INTEGER NOT NULL,
    created  REAL NOT NULL,
    accessed REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_accessed ON entries(accessed);
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


class ResponseCache:
    """Completions stored under `path` (created on first use), shared across processes.

    Sync methods do a little file I/O; code running on an event loop uses the `a*`
    twins, which run them in a worker thread.
    """

    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ResponseCache(path={str(self.path)!r}, max_bytes={self.max_bytes})"

    # -- connection -----------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- entries --------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The stored completion bytes, marking the entry as recently used; None on a miss."""
        with self._lock:
            db = self._db()
            row = db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            db.execute("UPDATE entries SET accessed = ? WHERE key = ?", (time.time(), key))
            self.hits += 1
            return bytes(row[0])

    def put(self, key: str, value: bytes) -> None:
        """Store (or replace) one completion, then evict least recently used entries if over the bound."""
        size = len(key) + len(value)
        if size > self.max_bytes:
            return  # larger than the whole cache: never worth evicting everything for
        now = time.time()
        with self._lock:
            db = self._db()
            db.execute("INSERT INTO entries(key, value, size, created, accessed) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value, size = excluded.size, "
                       "accessed = excluded.accessed", (key, value, size, now, now))
            total = db.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0]
            if total > self.max_bytes:
                self._evict(db, int(self.max_bytes * 0.9))

    @staticmethod
    def _evict(db: sqlite3.Connection, target: int) -> None:
        db.execute("BEGIN IMMEDIATE")  # one writer evicts at a time, across processes
        try:
            excess = db.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0] - target
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

    def stats(self) -> dict[str, Any]:
        """Entries and bytes stored (all processes), the bound, and this process's hits/misses."""
        with self._lock:
            nbytes, entries = self._db().execute("SELECT bytes, entries FROM totals WHERE id = 0").fetchone()
        return {"path": str(self.path), "entries": int(entries), "bytes": int(nbytes),
                "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        with self._lock:
            db = self._db()
            n = db.execute("SELECT entries FROM totals WHERE id = 0").fetchone()[0]
            db.execute("DELETE FROM entries")
            self.hits = self.misses = 0
        return int(n)

    # -- on an event loop -----------------------------------------------------------------

    async def aget(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self.get, key)

    async def aput(self, key: str, value: bytes) -> None:
        await asyncio.to_thread(self.put, key, value)
