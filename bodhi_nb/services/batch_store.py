"""Files and batch jobs under BODHI_HOME: state that outlives the process that made it.

Uploaded files are written to `$BODHI_HOME/files/` as they arrive (never whole in memory) and
listed in `$BODHI_HOME/batches.sqlite` with every batch job: its status and counts, where it
runs (`local`, or a provider's own batch API), and one row per finished request. A result row
is keyed by (batch, custom_id), so a request answered twice (sent again after a crash) is kept
once; the output file is written from those rows, ordered by custom_id, when the job ends. A
job running in this process holds a lease (its pid and the pid's start time); any process that
finds the lease holder gone may take the job over and go on where it stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..objs.errors import NotFoundError
from .sqlite import create_database, read_tx, write_tx

__all__ = ["BatchRecord", "BatchStore", "FileRecord", "process_identity"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (
        id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, state TEXT NOT NULL)  -- state: the Batch object as JSON""",
    """CREATE TABLE IF NOT EXISTS results (
        batch_id TEXT NOT NULL, custom_id TEXT NOT NULL, ok INTEGER NOT NULL, line TEXT NOT NULL,
        PRIMARY KEY (batch_id, custom_id))""",
    """CREATE TABLE IF NOT EXISTS leases (
        batch_id TEXT PRIMARY KEY, owner TEXT NOT NULL, since REAL NOT NULL)""",
)


def _boot_id(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/pid/stat), so a reused pid is not taken
    for the process that held a lease; None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_identity(pid: int | None = None) -> str:
    """`pid:start-time` of this (or that) process: who holds a batch's lease."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_boot_id(pid)}"


def _alive(owner: str) -> bool:
    pid, _, boot = owner.partition(":")
    try:
        return _boot_id(int(pid)) == boot
    except ValueError:
        return False


@dataclass(frozen=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    owner: str | None = None  # the JupyterHub user who made it (the hub service); never shown

    def public(self) -> dict[str, Any]:
        """The OpenAI FileObject."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "status_details": None,
                "expires_at": None}


@dataclass
class BatchRecord:
    """A batch job: `public` is the OpenAI Batch object; `private` what only the gateway knows
    (where it runs, the provider's id, the target model)."""

    public: dict[str, Any]
    private: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.public["id"])

    @property
    def status(self) -> str:
        return str(self.public["status"])


class BatchStore:
    """`$BODHI_HOME/batches.sqlite` and `$BODHI_HOME/files/`."""

    def __init__(self, home: Path) -> None:
        self.path = home / "batches.sqlite"
        self.dir = home / "files"
        self._ready = False

    def _open(self) -> None:
        if not self._ready:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            create_database(self.path, _SCHEMA, 1)
            with write_tx(self.path) as conn:  # a file made before owners existed gains the column
                if "owner" not in {r[1] for r in conn.execute("PRAGMA table_info(files)")}:
                    conn.execute("ALTER TABLE files ADD COLUMN owner TEXT")
            self._ready = True

    # -- files ------------------------------------------------------------------------------

    def file_path(self, id: str) -> Path:
        return self.dir / f"{id}.jsonl"

    def new_file_id(self) -> str:
        return f"file-{secrets.token_hex(12)}"

    def add_file(self, id: str, filename: str, purpose: str, source: Path | None = None,
                 owner: str | None = None) -> FileRecord:
        """List a file whose bytes are at `source` (moved into place) or already at `file_path(id)`."""
        self._open()
        dest = self.file_path(id)
        if source is not None:
            os.replace(source, dest)
        os.chmod(dest, 0o600)
        rec = FileRecord(id, filename, purpose, dest.stat().st_size, int(time.time()), owner)
        with write_tx(self.path) as conn:
            conn.execute("INSERT INTO files (id, filename, purpose, bytes, created_at, owner) VALUES (?, ?, ?, ?, ?, ?)",
                         (rec.id, rec.filename, rec.purpose, rec.bytes, rec.created_at, rec.owner))
        return rec

    def file(self, id: str, owner: str | None = None, *, scoped: bool = False) -> FileRecord:
        """One file; `scoped`: only if `owner` made it (anyone else's is as unknown as a missing one)."""
        self._open()
        with read_tx(self.path) as conn:
            row = conn.execute("SELECT id, filename, purpose, bytes, created_at, owner FROM files WHERE id = ? "
                               "AND (NOT ? OR owner IS ?)", (id, scoped, owner)).fetchone()
        if row is None:
            raise NotFoundError(f"No file with id '{id}'.", param="file_id", code="file_not_found")
        return FileRecord(*row)

    def files(self, purpose: str | None = None, owner: str | None = None, *, scoped: bool = False
              ) -> list[FileRecord]:
        self._open()
        with read_tx(self.path) as conn:
            rows = conn.execute("SELECT id, filename, purpose, bytes, created_at, owner FROM files "
                                "WHERE (? IS NULL OR purpose = ?) AND (NOT ? OR owner IS ?) "
                                "ORDER BY created_at DESC, id", (purpose, purpose, scoped, owner)).fetchall()
        return [FileRecord(*r) for r in rows]

    def delete_file(self, id: str, owner: str | None = None, *, scoped: bool = False) -> None:
        self.file(id, owner, scoped=scoped)
        with write_tx(self.path) as conn:
            conn.execute("DELETE FROM files WHERE id = ?", (id,))
        self.file_path(id).unlink(missing_ok=True)

    def lines(self, id: str) -> Iterator[tuple[int, bytes]]:
        """A file's lines (1-based number, bytes without the newline), read as they are needed."""
        with self.file_path(self.file(id).id).open("rb") as f:
            for n, line in enumerate(f, 1):
                yield n, line.rstrip(b"\r\n")

    # -- batches ----------------------------------------------------------------------------

    def put_batch(self, rec: BatchRecord) -> None:
        self._open()
        with write_tx(self.path) as conn:
            conn.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)",
                         (rec.id, int(rec.public["created_at"]),
                          json.dumps({"public": rec.public, "private": rec.private})))

    def batch(self, id: str) -> BatchRecord:
        self._open()
        with read_tx(self.path) as conn:
            row = conn.execute("SELECT state FROM batches WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise NotFoundError(f"No batch with id '{id}'.", param="batch_id", code="batch_not_found")
        state = json.loads(row[0])
        return BatchRecord(state["public"], state["private"])

    def batches(self) -> list[BatchRecord]:
        """Every batch, newest first."""
        self._open()
        with read_tx(self.path) as conn:
            rows = conn.execute("SELECT state FROM batches ORDER BY created_at DESC, id DESC").fetchall()
        return [BatchRecord(s["public"], s["private"]) for s in (json.loads(r[0]) for r in rows)]

    # -- results ----------------------------------------------------------------------------

    def add_results(self, batch_id: str, rows: list[tuple[str, bool, dict[str, Any]]]) -> tuple[int, int]:
        """Keep finished requests (custom_id, ok, output line); one already kept stays as it was.
        Returns how many were new, (succeeded, failed): a running job keeps its counts from these
        instead of counting every kept row again twice a second."""
        if not rows:
            return 0, 0
        with write_tx(self.path) as conn:
            added = {ok: conn.executemany("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)",
                                          [(batch_id, cid, int(ok), json.dumps(line, separators=(",", ":")))
                                           for cid, is_ok, line in rows if is_ok is ok]).rowcount
                     for ok in (True, False)}
        return added[True], added[False]

    def done_ids(self, batch_id: str) -> set[str]:
        self._open()
        with read_tx(self.path) as conn:
            return {r[0] for r in conn.execute("SELECT custom_id FROM results WHERE batch_id = ?", (batch_id,))}

    def counts(self, batch_id: str) -> tuple[int, int]:
        """(succeeded, failed) results so far."""
        with read_tx(self.path) as conn:
            ok, bad = conn.execute("SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(1 - ok), 0) FROM results "
                                   "WHERE batch_id = ?", (batch_id,)).fetchone()
        return int(ok), int(bad)

    def write_results(self, batch_id: str, ok: bool, owner: str | None = None) -> FileRecord | None:
        """The output (or error) file of a finished batch, ordered by custom_id, line by line;
        None when there is no such line."""
        id = self.new_file_id()
        tmp = self.dir / f".{id}.partial"
        n = 0
        with read_tx(self.path) as conn, tmp.open("wb") as out:
            for (line,) in conn.execute("SELECT line FROM results WHERE batch_id = ? AND ok = ? ORDER BY custom_id",
                                        (batch_id, int(ok))):
                out.write(line.encode() + b"\n")
                n += 1
            out.flush()
            os.fsync(out.fileno())
        if n == 0:
            tmp.unlink()
            return None
        return self.add_file(id, f"{batch_id}_{'output' if ok else 'error'}.jsonl",
                             "batch_output", tmp, owner)

    # -- leases -----------------------------------------------------------------------------

    def claim(self, batch_id: str) -> bool:
        """Hold the batch's lease for this process, unless another live process holds it."""
        me = process_identity()
        with write_tx(self.path) as conn:
            row = conn.execute("SELECT owner FROM leases WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is not None and row[0] != me and _alive(row[0]):
                return False
            conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (batch_id, me, time.time()))
        return True

    def release(self, batch_id: str) -> None:
        with write_tx(self.path) as conn:
            conn.execute("DELETE FROM leases WHERE batch_id = ? AND owner = ?", (batch_id, process_identity()))
