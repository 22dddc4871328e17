"""The SQLite files under BODHI_HOME: one way to open, read and write them.

The usage ledger, the stored Responses and (later) batch jobs are SQLite files shared by the
Jupyter server and every kernel. WAL mode lets readers run while one process writes;
`busy_timeout` makes a writer wait for another's short transaction instead of failing.
Connections are opened per use and always closed (none outlives its thread, none is left
for the garbage collector to warn about). Files are created owner-only (0600): they may hold
prompts.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = ["BUSY_TIMEOUT_S", "connect", "create_database", "read_tx", "write_tx"]

BUSY_TIMEOUT_S = 10.0


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


def create_database(path: Path, schema: Iterable[str], version: int) -> None:
    """Create the file (0600) if needed, switch it to WAL once, and apply `schema` (idempotent
    statements) and `PRAGMA user_version` in one transaction."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass  # another process created it first
    with closing(connect(path)) as conn:
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
    with write_tx(path) as conn:
        for stmt in schema:
            conn.execute(stmt)
        if conn.execute("PRAGMA user_version").fetchone()[0] < version:
            conn.execute(f"PRAGMA user_version = {version}")
