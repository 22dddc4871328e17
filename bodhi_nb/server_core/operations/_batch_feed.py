"""Private: a local batch's input lines still to send, read from the stored file as the job
sends them (operations/_batch_run.py runs the job)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
from collections.abc import Iterator
from typing import Any

from ...services.batch_store import BatchRecord, BatchStore

__all__ = ["CHUNK_ROWS", "Feed", "sendable"]

CHUNK_ROWS = 4000  # input lines read ahead at a time (memory stays flat whatever the file's size)


class Feed:
    """The input file's lines not answered yet, handed to the job's workers one row number at a
    time. Lines are read CHUNK_ROWS at a time in a worker thread, the next chunk while half of
    the current one is still to send, so memory stays flat whatever the file's size and no worker
    waits on the file. Each chunk read also asks the store whether the job is being cancelled
    (by another process: one here stops the job itself)."""

    def __init__(self, store: BatchStore, rec: BatchRecord, done: set[str]) -> None:
        self._store, self._id = store, rec.id
        self._lines = sendable(store, rec.public["input_file_id"], done)
        self._rows: dict[int, tuple[str, dict[str, Any]]] = {}  # row number -> (custom_id, body), until answered
        self._ready: collections.deque[int] = collections.deque()
        self._count = 0
        self._reading: asyncio.Future[None] | None = None
        self._ended = False
        self.error: BaseException | None = None  # a failed read: the job stops taking rows and raises it

    def _read(self) -> list[tuple[str, dict[str, Any]]]:
        if self._store.batch(self._id).status == "cancelling":
            return []
        return list(itertools.islice(self._lines, CHUNK_ROWS))

    def _start(self) -> asyncio.Future[None]:
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._more())
        return self._reading

    async def _more(self) -> None:
        try:
            lines = await asyncio.to_thread(self._read)
        except Exception as exc:  # noqa: BLE001 - kept for `check`, after the rows already read are sent
            self.error, lines = exc, []
        finally:
            self._reading = None
        for line in lines:
            self._rows[self._count] = line
            self._ready.append(self._count)
            self._count += 1
        self._ended = self._ended or not lines

    async def take(self) -> int | None:
        """The next row to send, or None once every line has been handed out (or a read failed)."""
        while not self._ready:
            if self._ended:
                return None
            await asyncio.shield(self._start())  # a cancelled worker leaves the read to the others
        if len(self._ready) <= CHUNK_ROWS // 2 and not self._ended:
            self._start()
        return self._ready.popleft()

    def check(self) -> None:
        """Raise what stopped the reading, if anything did (the job then fails, as it would have)."""
        if self.error is not None:
            raise self.error

    def body(self, i: int) -> dict[str, Any]:
        return self._rows[i][1]

    def cid(self, i: int) -> str:
        return self._rows[i][0]

    def done(self, i: int) -> str:
        """Row i is answered (or failed for good): its custom_id, and the line is let go."""
        return self._rows.pop(i)[0]


def sendable(store: BatchStore, file_id: str, skip: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(custom_id, body) of each input line still to send, read as needed: bad lines (already in
    the error file) and custom_ids in `skip` are passed over, and each one sent joins `skip` (a
    duplicate custom_id is sent once, as its first line)."""
    for _, raw in store.lines(file_id):
        try:
            line = json.loads(raw)
            cid, body = line["custom_id"], line["body"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(cid, str) and cid not in skip and isinstance(body, dict):
            skip.add(cid)
            yield cid, body
