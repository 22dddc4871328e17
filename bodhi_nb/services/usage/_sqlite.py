"""Private: the usage database file: connections, pragmas, schema.

One SQLite file (`$BODHI_HOME/usage.sqlite`) is shared by the Jupyter server and every
kernel. WAL mode lets readers run while one process writes; `busy_timeout` makes a
writer wait for another's short transaction instead of failing. Connections are opened
per use and always closed (no connection outlives its thread, none is left for the
garbage collector to warn about).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = ["ROW_FIELDS", "SCHEMA_VERSION", "connect", "initialise", "iso_utc", "read_tx", "write_tx"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0

# The ledger's row fields, in order (also the HTTP and DataFrame column names).
ROW_FIELDS = (
    "time", "surface", "model", "provider", "upstream_model", "target", "status", "error_code",
    "prompt_tokens", "completion_tokens", "total_tokens", "cached", "latency_ms", "ttft_ms", "cost_usd",
    "kernel_id", "notebook",
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS usage (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,              -- UTC, 2026-01-31T12:00:00.123Z (sorts as text)
        surface TEXT NOT NULL,           -- http | python | widget | map | magic
        model TEXT NOT NULL,             -- as asked
        provider TEXT,                   -- API model id, or 'local'
        upstream_model TEXT,
        target TEXT,                     -- the router-alias target that answered
        status INTEGER NOT NULL,
        error_code TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        total_tokens INTEGER,
        cached INTEGER NOT NULL DEFAULT 0,
        latency_ms REAL,
        ttft_ms REAL,
        cost_usd REAL,
        kernel_id TEXT,
        notebook TEXT,
        content TEXT                     -- prompt and reply, only with log_content
    )""",
    "CREATE INDEX IF NOT EXISTS usage_time ON usage (time)",
    """CREATE TABLE IF NOT EXISTS prices (
        scope TEXT NOT NULL CHECK (scope IN ('model', 'provider')),
        name TEXT NOT NULL,
        input_usd_per_mtok REAL NOT NULL,
        output_usd_per_mtok REAL NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (scope, name)
    )""",
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def iso_utc(ts: float) -> str:
    """Epoch seconds as fixed-width UTC text, so text order is time order."""
    ms = round(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), waiting on locks."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
    return conn


@contextmanager
def write_tx(path: Path) -> Iterator[sqlite3.Connection]:
    """One short write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
    with closing(connect(path)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


@contextmanager
def read_tx(path: Path) -> Iterator[sqlite3.Connection]:
    """A consistent snapshot for several SELECTs (WAL readers never block the writer)."""
    with closing(connect(path)) as conn:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")


def initialise(path: Path) -> None:
    """Create the file (owner-only: it may hold prompts), WAL mode and the tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass  # another process created it first
    with closing(connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    with write_tx(path) as conn:
        for stmt in _SCHEMA:
            conn.execute(stmt)
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
