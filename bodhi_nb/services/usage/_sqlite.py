"""Private: the usage database file's schema (`$BODHI_HOME/usage.sqlite`), opened and
written as every SQLite file here is (services/sqlite.py)."""

from __future__ import annotations

import time
from pathlib import Path

from ..sqlite import connect, create_database, read_tx, write_tx

__all__ = ["ROW_FIELDS", "SCHEMA_VERSION", "connect", "initialise", "iso_utc", "read_tx", "write_tx"]

SCHEMA_VERSION = 2  # 2: request_key, so a batch row re-sent after a crash is counted once

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


def initialise(path: Path) -> None:
    """Create the ledger's file (owner-only: it may hold prompts), WAL mode and the tables; a
    file of schema 1 gains `request_key` (unique where set: one row per batch row, however often
    it was sent)."""
    create_database(path, _SCHEMA, SCHEMA_VERSION)
    with write_tx(path) as conn:
        if "request_key" not in {r[1] for r in conn.execute("PRAGMA table_info(usage)")}:
            conn.execute("ALTER TABLE usage ADD COLUMN request_key TEXT")
        conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS usage_request_key ON usage (request_key) "
                     "WHERE request_key IS NOT NULL")
