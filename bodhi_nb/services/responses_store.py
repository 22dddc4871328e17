"""Stored Responses: what `store: true` keeps, so `previous_response_id` works on every target.

`POST bodhi/v1/responses` with `store` (the Responses API's default) keeps the response
object and the input items of that turn in `$BODHI_HOME/responses.sqlite`; a later request
naming it as `previous_response_id` is sent with the whole conversation (every earlier turn's
input and output items, oldest first), so a local model or a chat-completions provider
continues it exactly as OpenAI would. Shared by the server and every kernel (services/sqlite.py).
No key is ever stored; the text is the user's own conversation, in an owner-only file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..objs.errors import NotFoundError
from .sqlite import create_database, read_tx, write_tx

__all__ = ["MAX_CHAIN", "ResponsesStore"]

MAX_CHAIN = 1000  # turns followed back through previous_response_id (a loop or a runaway chain stops here)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS responses (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        model TEXT,
        previous_response_id TEXT,
        input_items TEXT NOT NULL,   -- JSON list: this turn's input items
        output_items TEXT NOT NULL,  -- JSON list: this turn's output items
        response TEXT NOT NULL       -- JSON: the response object as the client got it
    )""",
)


class ResponsesStore:
    """`$BODHI_HOME/responses.sqlite` (created on first write)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "responses.sqlite"
        self._ready = False

    def _open(self) -> None:
        if not self._ready:
            create_database(self.path, _SCHEMA, 1)
            with write_tx(self.path) as conn:  # a file made before owners existed gains the column
                if "owner" not in {r[1] for r in conn.execute("PRAGMA table_info(responses)")}:
                    conn.execute("ALTER TABLE responses ADD COLUMN owner TEXT")
            self._ready = True

    # `owner` is the JupyterHub user who stored a response (the hub service); with `scoped`, anyone
    # else's response is as unknown as a missing one.

    def put(self, response: dict[str, Any], input_items: list[dict[str, Any]], owner: str | None = None) -> None:
        """Keep one response (its `output` as this turn's output items) and the turn's input."""
        self._open()
        with write_tx(self.path) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses (id, created_at, model, previous_response_id, input_items, "
                "output_items, response, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (response["id"], time.time(), response.get("model"), response.get("previous_response_id"),
                 json.dumps(input_items), json.dumps(response.get("output") or []), json.dumps(response), owner))

    def get(self, id: str, owner: str | None = None, *, scoped: bool = False) -> dict[str, Any]:
        """The stored response object; 404 when there is none."""
        return json.loads(self._row(id, "response", owner, scoped))  # type: ignore[no-any-return]

    def input_items(self, id: str, owner: str | None = None, *, scoped: bool = False) -> list[dict[str, Any]]:
        """The input items of that turn only (what `GET responses/{id}/input_items` lists)."""
        return json.loads(self._row(id, "input_items", owner, scoped))  # type: ignore[no-any-return]

    def history(self, id: str, owner: str | None = None, *, scoped: bool = False) -> list[dict[str, Any]]:
        """Every turn up to and including `id`, oldest first: each turn's input items, then its
        output items. 404 when `id`, or a turn it continues, is not stored."""
        if not self.path.exists():
            raise self._missing(id)
        self._open()  # (an older file gains the owner column)
        turns: list[list[dict[str, Any]]] = []
        seen: set[str] = set()
        with read_tx(self.path) as conn:
            cur: str | None = id
            while cur is not None:
                if cur in seen or len(seen) >= MAX_CHAIN:
                    break
                seen.add(cur)
                row = conn.execute("SELECT previous_response_id, input_items, output_items FROM responses "
                                   "WHERE id = ? AND (NOT ? OR owner IS ?)", (cur, scoped, owner)).fetchone()
                if row is None:
                    raise self._missing(cur)
                turns.append(json.loads(row[1]) + json.loads(row[2]))
                cur = row[0]
        return [item for turn in reversed(turns) for item in turn]

    def delete(self, id: str, owner: str | None = None, *, scoped: bool = False) -> None:
        """Forget one response (a later turn that continues it then answers 404); 404 when unknown."""
        self._open()
        with write_tx(self.path) as conn:
            if conn.execute("DELETE FROM responses WHERE id = ? AND (NOT ? OR owner IS ?)",
                            (id, scoped, owner)).rowcount == 0:
                raise self._missing(id)

    def _row(self, id: str, column: str, owner: str | None, scoped: bool) -> str:
        if not self.path.exists():
            raise self._missing(id)
        self._open()
        with read_tx(self.path) as conn:
            row = conn.execute(f"SELECT {column} FROM responses WHERE id = ? AND (NOT ? OR owner IS ?)",
                               (id, scoped, owner)).fetchone()
        if row is None:
            raise self._missing(id)
        return str(row[0])

    @staticmethod
    def _missing(id: str) -> NotFoundError:
        return NotFoundError(f"No stored response with id '{id}' (only responses created with store=true "
                             "are kept).", param="previous_response_id", code="response_not_found")
