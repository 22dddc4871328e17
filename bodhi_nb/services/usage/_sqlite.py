"""Private: the usage database file's schema (`$BODHI_HOME/usage.sqlite`), opened and
written as every SQLite file here is (services/sqlite.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ..sqlite import connect, create_database, read_tx, write_tx

__all__ = ["ROW_FIELDS", "SCHEMA_VERSION", "connect", "initialise", "iso_utc", "read_setting", "read_tx",
           "write_setting", "write_tx"]

# 2: request_key, so a batch row re-sent after a crash is counted once.
# 3: hub_user, hub_server, hub_groups: in JupyterHub mode one gateway serves a team, so each
#    row says whose request it was (and the user's groups then, for group budgets).
# create_database only ever raises user_version, so an older file still opens; `initialise`
# adds the missing columns to it (its rows keep NULL there).
SCHEMA_VERSION = 3

# The ledger's row fields, in order (also the HTTP and DataFrame column names).
ROW_FIELDS = (
    "time", "surface", "model", "provider", "upstream_model", "target", "status", "error_code",
    "prompt_tokens", "completion_tokens", "total_tokens", "cached", "latency_ms", "ttft_ms", "cost_usd",
    "kernel_id", "notebook", "hub_user", "hub_server",
)

# Columns added after schema 1, by ALTER TABLE on a file that lacks them (new files too: one
# path for both). `hub_groups` is ",a,b," (the user's groups at request time; NULL outside
# JupyterHub mode): stored for group budgets, not a row field.
_ADDED_COLUMNS = ("request_key", "hub_user", "hub_server", "hub_groups")

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
    """Create the ledger's file (owner-only: it may hold prompts), WAL mode and the tables; an
    older file gains the columns it lacks and keeps its rows: `request_key` (unique where set:
    one row per batch row, however often it was sent) and the hub columns (indexed by user and
    time, which a user's spend today and `?hub_user=` read)."""
    create_database(path, _SCHEMA, SCHEMA_VERSION)
    with write_tx(path) as conn:  # the write lock: two processes opening an old file alter it once
        have = {r[1] for r in conn.execute("PRAGMA table_info(usage)")}
        for column in _ADDED_COLUMNS:
            if column not in have:
                conn.execute(f"ALTER TABLE usage ADD COLUMN {column} TEXT")
        conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS usage_request_key ON usage (request_key) "
                     "WHERE request_key IS NOT NULL")
        conn.execute("CREATE INDEX IF NOT EXISTS usage_hub_user ON usage (hub_user, time)")


def read_setting(conn: sqlite3.Connection, key: str) -> float | None:
    """A number stored in the `settings` table (budgets, retention), or None when unset."""
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return None if row is None else float(row[0])


def write_setting(conn: sqlite3.Connection, key: str, value: float | None) -> None:
    """Store a number in the `settings` table; None removes the key."""
    if value is None:
        conn.execute("DELETE FROM settings WHERE key = ?", (key,))
    else:
        conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, repr(value)))
