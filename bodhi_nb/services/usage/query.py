"""Reading the ledger: filters, grouping with sums and error rate, raw rows by page.

Every surface (HTTP, `Bodhi.usage`, the Usage tab, `bodhi-nb usage`) reads through
these two functions, so a total means the same thing everywhere.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from ...objs.errors import InvalidRequestError
from ...objs.paging import MAX_PAGE_SIZE, page_window
from ._sqlite import ROW_FIELDS, iso_utc, read_tx

__all__ = ["GROUP_KEYS", "SUM_FIELDS", "UsageFilter", "parse_by", "parse_when", "select_groups", "select_rows"]

# Grouping keys and the SQL that computes each (day: the UTC date of `time`; user: the
# JupyterHub user, so a team's shared gateway can say who spent what).
GROUP_KEYS: dict[str, str] = {
    "model": "model", "provider": "provider", "surface": "surface", "day": "substr(time, 1, 10)",
    "notebook": "notebook", "user": "hub_user",
}
_EQ_FIELDS = ("model", "provider", "surface", "notebook", "hub_user")  # equality filters, named as columns
SUM_FIELDS = ("requests", "errors", "error_rate", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd")

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class UsageFilter:
    """Which rows: a time window (UTC text bounds, `until` exclusive) and equality filters."""

    since: str | None = None
    until: str | None = None
    model: str | None = None
    provider: str | None = None
    surface: str | None = None
    notebook: str | None = None
    hub_user: str | None = None  # JupyterHub mode: one user's rows

    @classmethod
    def of(cls, since: object = None, until: object = None, **eq: str | None) -> UsageFilter:
        return cls(parse_when(since, "since"), parse_when(until, "until"), **eq)

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.since:
            clauses.append("time >= ?")
            params.append(self.since)
        if self.until:
            clauses.append("time < ?")
            params.append(self.until)
        for name in _EQ_FIELDS:
            value = getattr(self, name)
            if value is not None:
                clauses.append(f"{name} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def parse_when(value: object, param: str = "since") -> str | None:
    """A time bound as the ledger's UTC text.

    Accepts None, a datetime (naive means UTC), a date (its midnight UTC), an ISO 8601
    string, a date string, or a span back from now such as "30m", "24h", "7d", "2w".
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return iso_utc(dt.timestamp())
    if isinstance(value, date):
        return iso_utc(datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp())
    if isinstance(value, str):
        m = _RELATIVE.match(value)
        if m:
            return iso_utc(time.time() - float(m.group(1)) * _UNIT_S[m.group(2)])
        try:
            return parse_when(datetime.fromisoformat(value.strip().replace("Z", "+00:00")), param)
        except ValueError:
            pass
    raise InvalidRequestError(
        f"'{param}' must be an ISO 8601 time or date (e.g. 2026-01-31 or 2026-01-31T12:00:00Z) "
        "or a span back from now such as 24h or 7d.", param=param)


def parse_by(by: str | Sequence[str] | None) -> tuple[str, ...]:
    """Grouping keys from "model", "day,model" or ["day", "model"]; () for raw rows."""
    if by is None or by == "" or by == []:
        return ()
    keys = tuple(k.strip() for k in (by.split(",") if isinstance(by, str) else by))
    bad = [k for k in keys if k not in GROUP_KEYS]
    if bad or len(set(keys)) != len(keys):
        raise InvalidRequestError(f"'by' must be one or more of {', '.join(GROUP_KEYS)} (got {', '.join(keys)}).",
                                  param="by")
    return keys


def select_rows(path: Path, f: UsageFilter, page: int = 1, page_size: int = 100) -> tuple[list[dict[str, Any]], int]:
    """Raw rows, newest first, and how many match."""
    limit, offset = page_window(page, page_size)
    where, params = f.where()
    cols = ", ".join(ROW_FIELDS)
    with read_tx(path) as conn:
        total = conn.execute(f"SELECT COUNT(*) FROM usage{where}", params).fetchone()[0]
        cur = conn.execute(f"SELECT id, {cols}, content FROM usage{where} ORDER BY time DESC, id DESC "
                           "LIMIT ? OFFSET ?", [*params, limit, offset])
        rows = [_row(cur, r) for r in cur.fetchall()]
    return rows, int(total)


def _row(cur: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip([d[0] for d in cur.description], values, strict=True))
    row["cached"] = bool(row["cached"])
    return row


def select_groups(path: Path, f: UsageFilter, by: tuple[str, ...], page: int = 1,
                  page_size: int = MAX_PAGE_SIZE) -> tuple[list[dict[str, Any]], int]:
    """Sums per group: requests, errors and error rate, tokens, cost.

    Days sort newest first; other groups by total tokens, then requests. `cost_usd` is
    the sum over rows with a known price (None when no row in the group had one). With
    no keys, one group: the totals of every matching row.
    """
    limit, offset = page_window(page, page_size)
    where, params = f.where()
    keys = "".join(f"{GROUP_KEYS[k]} AS {k}, " for k in by)
    group = ", ".join(GROUP_KEYS[k] for k in by) or "NULL"
    order = ("day DESC, " if "day" in by else "") + "SUM(COALESCE(total_tokens, 0)) DESC, COUNT(*) DESC"
    sql = (f"SELECT {keys}COUNT(*) AS requests, "
           "SUM(CASE WHEN status >= 400 OR error_code IS NOT NULL THEN 1 ELSE 0 END) AS errors, "
           "SUM(COALESCE(prompt_tokens, 0)) AS prompt_tokens, SUM(COALESCE(completion_tokens, 0)) AS completion_tokens, "
           "SUM(COALESCE(total_tokens, 0)) AS total_tokens, SUM(cost_usd) AS cost_usd "
           f"FROM usage{where} GROUP BY {group} ORDER BY {order} LIMIT ? OFFSET ?")
    with read_tx(path) as conn:
        total = conn.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM usage{where} GROUP BY {group})",
                             params).fetchone()[0]
        cur = conn.execute(sql, [*params, limit, offset])
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            g = dict(zip(names, values, strict=True))
            g["error_rate"] = round(g["errors"] / g["requests"], 6) if g["requests"] else 0.0
            if g["cost_usd"] is not None and not math.isfinite(g["cost_usd"]):
                g["cost_usd"] = None
            out.append(g)
    return out, int(total)
