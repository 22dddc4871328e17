"""The usage ledger: one row per chat or embeddings request, in `$BODHI_HOME/usage.sqlite`.

`record` only appends the row to an in-memory buffer: the request path never waits for a
file, and it wakes the writer at most once per batch (a thread woken per request would
compete with the event loop for the GIL on every request). One background thread per
process writes the buffer in batches (short transactions, so the server and several
kernels share the file), prices each row when a price is known, and keeps a cached view
of today's spend so the budget check is a comparison in memory.

In JupyterHub mode one gateway serves a team: each row carries the hub user, their server
and their groups, and budgets can be set per user and per group (_budgets.py) beside the
global one; all are checked from the same cached state.

The retention period and the server's budget option are settings of the data, stored in
the file's `settings` table: the Jupyter server writes its options there when it starts,
and every process (a kernel's `Bodhi()`, the CLI) prunes and checks against what is
stored, so one given no options never applies defaults of its own to shared rows.
"""

from __future__ import annotations

import atexit
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...objs.errors import BudgetExceeded, InvalidRequestError, NotFoundError
from ._budgets import HubBudgets, encode_groups, exceeded_message, read_hub_budgets, store_budget
from ._sqlite import ROW_FIELDS, initialise, iso_utc, read_tx, write_tx
from ._sqlite import read_setting as _setting
from ._sqlite import write_setting as _store
from .pricing import BudgetState, Price, Scope, cost_usd, price_for, usd_amount, utc_today
from .query import UsageFilter, parse_by, select_groups, select_rows

__all__ = ["DEFAULT_RETENTION_DAYS", "BudgetState", "Ledger", "Price", "UsageRecord", "cost_usd"]

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 90
_BUDGET_KEY = "daily_budget_usd"  # set by the user: Bodhi.budget(), PUT usage/budget
_OPTION_BUDGET_KEY = "server_daily_budget_usd"  # the server's daily_budget_usd option
_RETENTION_KEY = "retention_days"
_PRUNE_EVERY_S = 3600.0


@dataclass(slots=True)
class UsageRecord:
    """One request as the ledger stores it (`ts`: epoch seconds, written as UTC text)."""

    model: str
    surface: str = "python"
    provider: str | None = None
    upstream_model: str | None = None
    target: str | None = None
    status: int = 200
    error_code: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached: bool = False
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: float | None = None
    kernel_id: str | None = None
    notebook: str | None = None
    content: str | None = None  # prompt and reply as JSON; kept only with log_content
    ts: float = field(default_factory=time.time)
    request_key: str | None = None  # unique when set (a batch row): a second row with it is not written
    hub_user: str | None = None  # JupyterHub mode: whose request (None outside it)
    hub_server: str | None = None  # the user's server name ("" is their default server)
    hub_groups: tuple[str, ...] = ()  # the user's groups at request time (for group budgets)


def _days(value: object, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidRequestError(f"'{param}' must be a number of days, 0 or more (0 keeps every row).", param=param)
    return float(value)


class Ledger:
    """Usage rows, prices and the daily budget of one BODHI_HOME, safe across processes.

    `retention_days` given here is stored in the file and followed by every process
    (None: keep what is stored; 90 days when nothing is). `daily_budget_usd` is the
    server's option when `server` is true: stored, and enforced by every process (the
    stricter of it and the user's budget); `server=True` with None removes a stored
    one. In any other process it only tightens that process's own limit.
    """

    def __init__(self, path: str | Path, *, log_content: bool = False, retention_days: float | None = None,
                 daily_budget_usd: float | None = None, server: bool = False, flush_interval: float = 0.25,
                 batch_size: int = 256, budget_refresh: float = 2.0) -> None:
        self.path = Path(path)
        self.log_content = log_content
        self.retention_days = None if retention_days is None else _days(retention_days, "usage_retention_days")
        option = None if daily_budget_usd is None else usd_amount(daily_budget_usd, "daily_budget_usd")
        self.option_budget = None if server else option  # this process's own extra limit
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.budget_refresh = budget_refresh
        initialise(self.path)
        if server or self.retention_days is not None:
            with write_tx(self.path) as conn:
                if self.retention_days is not None:
                    _store(conn, _RETENTION_KEY, self.retention_days)
                if server:
                    _store(conn, _OPTION_BUDGET_KEY, option)
        self._last_prune = 0.0
        self.prune()
        self._prices: dict[tuple[str, str], Price] = {}
        self._budget, self._hub = self._read_budget()
        self._refresh_pending = False
        self._buf: deque[UsageRecord] = deque()
        self._flushers: deque[threading.Event] = deque()
        self._wake = threading.Event()  # there is work: rows, a flush, a refresh, or stopping
        self._urgent = threading.Event()  # end the batching window now
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bodhi_nb-ledger", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @classmethod
    def open(cls, home: str | Path, **options: Any) -> Ledger:
        return cls(Path(home) / "usage.sqlite", **options)

    @classmethod
    def try_open(cls, home: str | Path, **options: Any) -> Ledger | None:
        """`open`, or None with a warning when the file cannot be used (unwritable, not a
        database): requests then go unrecorded rather than fail."""
        try:
            return cls.open(home, **options)
        except (sqlite3.Error, OSError) as exc:
            log.warning("bodhi_nb usage ledger: %s cannot be used (%s); requests are not recorded.",
                        Path(home) / "usage.sqlite", exc)
            return None

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # -- writing ---------------------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        """Buffer one row; returns at once (the writer stores it within `flush_interval`)."""
        if not self.log_content:
            rec.content = None
        if self._closed:  # after shutdown (atexit): write it here rather than lose it
            self._write([rec])
            return
        buf = self._buf
        buf.append(rec)
        if not self._wake.is_set():
            self._wake.set()
        if len(buf) >= self.batch_size:
            self._urgent.set()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every row recorded so far by this process is in the file."""
        if self._closed or not self._thread.is_alive():
            return
        done = threading.Event()
        self._flushers.append(done)
        self._urgent.set()
        self._wake.set()
        done.wait(timeout)

    def close(self) -> None:
        """Write what is buffered and stop the writer (idempotent; also runs at exit)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._stopping = True
        self._urgent.set()
        self._wake.set()
        self._thread.join(30)

    def retention(self) -> float:
        """The retention period in days stored for this file (0: rows are kept forever)."""
        with read_tx(self.path) as conn:
            stored = _setting(conn, _RETENTION_KEY)
        return DEFAULT_RETENTION_DAYS if stored is None else stored

    def prune(self) -> int:
        """Delete rows older than the stored retention period; returns how many went."""
        self._last_prune = time.monotonic()
        with write_tx(self.path) as conn:
            days = _setting(conn, _RETENTION_KEY)
            days = DEFAULT_RETENTION_DAYS if days is None else days
            if days <= 0:
                return 0
            cutoff = iso_utc(time.time() - days * 86400)
            return conn.execute("DELETE FROM usage WHERE time < ?", (cutoff,)).rowcount

    def _run(self) -> None:
        buf = self._buf
        while True:
            self._wake.wait()
            self._wake.clear()
            if buf and not self._flushers and not self._stopping:
                self._urgent.wait(self.flush_interval)  # let a batch gather
            self._urgent.clear()
            waiters = [self._flushers.popleft() for _ in range(len(self._flushers))]
            rows = [buf.popleft() for _ in range(len(buf))]  # every row recorded before these waiters
            ok = not rows or self._write(rows)
            if not ok and not self._stopping:
                buf.extendleft(reversed(rows))  # the file stayed locked: keep the rows, retry soon
                self._wake.set()
                self._urgent.wait(1.0)
            for w in waiters:
                w.set()
            if self._refresh_pending:
                self._refresh_budget()
            if self._stopping:
                rest = ([] if ok else rows) + [buf.popleft() for _ in range(len(buf))]
                for _ in range(3):
                    if not rest or self._write(rest):
                        return
                log.warning("bodhi_nb usage ledger: %d rows could not be written to %s", len(rest), self.path)
                return

    def _write(self, batch: Sequence[UsageRecord]) -> bool:
        try:
            with write_tx(self.path) as conn:
                prices = {(p[0], p[1]): Price(*p) for p in conn.execute("SELECT * FROM prices")}
                rows = []
                for r in batch:
                    cost = r.cost_usd if r.cost_usd is not None else cost_usd(
                        r, price_for(prices, r.model, r.upstream_model, r.provider))
                    rows.append((iso_utc(r.ts), r.surface, r.model, r.provider, r.upstream_model, r.target,
                                 r.status, r.error_code, r.prompt_tokens, r.completion_tokens, r.total_tokens,
                                 int(r.cached), r.latency_ms, r.ttft_ms, cost, r.kernel_id, r.notebook,
                                 r.hub_user, r.hub_server, r.content if self.log_content else None,
                                 r.request_key, encode_groups(r.hub_groups)))
                conn.executemany(f"INSERT OR IGNORE INTO usage ({', '.join(ROW_FIELDS)}, content, request_key, "
                                 f"hub_groups) VALUES ({', '.join('?' * (len(ROW_FIELDS) + 3))})", rows)
        except Exception as exc:  # noqa: BLE001 - a ledger failure must never break a request
            log.warning("bodhi_nb usage ledger: writing %d rows failed: %s", len(batch), exc)
            return False
        if self._budget.daily_usd is not None or self._hub.any:
            self._refresh_budget()
        if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
            try:
                self.prune()
            except Exception as exc:  # noqa: BLE001
                log.warning("bodhi_nb usage ledger: pruning failed: %s", exc)
        return True

    # -- prices ----------------------------------------------------------------------------

    def set_price(self, name: str, input_usd_per_mtok: float, output_usd_per_mtok: float, *,
                  scope: Scope = "model") -> Price:
        """Set (or replace) the price of a model name or a provider, in USD per million tokens."""
        if scope not in ("model", "provider"):
            raise InvalidRequestError("'scope' must be 'model' or 'provider'.", param="scope")
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequestError("A price needs the model or provider name.", param="name")
        price = Price(scope, name.strip(), usd_amount(input_usd_per_mtok, "input_usd_per_mtok"),
                      usd_amount(output_usd_per_mtok, "output_usd_per_mtok"), iso_utc(time.time()))
        with write_tx(self.path) as conn:
            conn.execute("INSERT OR REPLACE INTO prices VALUES (?, ?, ?, ?, ?)",
                         (price.scope, price.name, price.input_usd_per_mtok, price.output_usd_per_mtok,
                          price.updated_at))
        self._refresh_budget()
        return price

    def prices(self) -> list[Price]:
        with read_tx(self.path) as conn:
            return [Price(*p) for p in conn.execute("SELECT * FROM prices ORDER BY scope, name")]

    def delete_price(self, name: str, *, scope: Scope = "model") -> None:
        if scope not in ("model", "provider"):
            raise InvalidRequestError("'scope' must be 'model' or 'provider'.", param="scope")
        with write_tx(self.path) as conn:
            gone = conn.execute("DELETE FROM prices WHERE scope = ? AND name = ?", (scope, name)).rowcount
        if not gone:
            raise NotFoundError(f"No {scope} price is set for '{name}'.", param="name")
        self._refresh_budget()

    # -- budget ----------------------------------------------------------------------------

    def set_budget(self, daily_usd: float | None) -> BudgetState:
        """Set the daily budget shared by every process of this BODHI_HOME (None removes it)."""
        value = None if daily_usd is None else usd_amount(daily_usd, "daily_usd")
        with write_tx(self.path) as conn:
            _store(conn, _BUDGET_KEY, value)
        return self.budget()

    def budget(self) -> BudgetState:
        """The budget and today's spend, read now (rows queued in this process included)."""
        self.flush()
        return self._refresh_budget()

    def set_user_budget(self, user: str, daily_usd: float | None) -> None:
        """Set one JupyterHub user's daily budget, shared by every process (None removes it)."""
        with write_tx(self.path) as conn:
            store_budget(conn, "user", user, daily_usd)
        self.budget()  # this process's check sees it at once

    def set_group_budget(self, group: str, daily_usd: float | None) -> None:
        """Set one JupyterHub group's daily budget: what its members spend together (None removes it)."""
        with write_tx(self.path) as conn:
            store_budget(conn, "group", group, daily_usd)
        self.budget()

    def budgets(self) -> dict[str, dict[str, dict[str, float]]]:
        """Every user and group budget with today's spend, read now:
        {"users": {name: {"daily_usd", "spent_today_usd"}}, "groups": {...}}."""
        self.budget()
        return self._hub.public()

    def check_budget(self, model: str, upstream_model: str | None = None, provider: str | None = None, *,
                     user: str | None = None, groups: Sequence[str] = ()) -> None:
        """Raise `BudgetExceeded` (429) when a budget that applies is spent and this request is priced:
        today's global budget, `user`'s own, or the budget of any of `groups` (the user's hub groups).

        Called on every request, so it only compares cached numbers; the writer thread
        refreshes them at most every `budget_refresh` seconds. Unpriced requests (local
        models, say) cost nothing and always pass.
        """
        st = self._budget
        if time.time() - st.checked_at > self.budget_refresh and not self._refresh_pending and not self._closed:
            self._refresh_pending = True
            self._wake.set()
        spent = st.exceeded and st.day == utc_today()
        hub = None if spent else self._hub.exceeded(user, groups)
        if not spent and hub is None:
            return
        if price_for(self._prices, model, upstream_model, provider) is None:
            return
        secs = 86400 - int(time.time()) % 86400
        if hub is not None:
            raise BudgetExceeded(exceeded_message(hub), headers={"Retry-After": str(secs)})
        assert st.daily_usd is not None
        where = ("Raise or remove it with Bodhi().budget(daily_usd=...) or PUT bodhi/v1/usage/budget"
                 if st.daily_usd == st.stored_usd else
                 "It is the server's daily_budget_usd option: change it where the Jupyter server is configured")
        raise BudgetExceeded(
            f"Today's usage budget of ${st.daily_usd:.2f} is spent (${st.spent_today_usd:.4f} used since 00:00 UTC). "
            f"{where}, or wait until 00:00 UTC.", headers={"Retry-After": str(secs)})

    def _read_budget(self) -> tuple[BudgetState, HubBudgets]:
        day = utc_today()
        with read_tx(self.path) as conn:
            stored = _setting(conn, _BUDGET_KEY)
            options = [x for x in (_setting(conn, _OPTION_BUDGET_KEY), self.option_budget) if x is not None]
            spent = conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE time >= ?",
                                 (day + "T00:00:00.000Z",)).fetchone()[0]
            self._prices = {(p[0], p[1]): Price(*p) for p in conn.execute("SELECT * FROM prices")}
            hub = read_hub_budgets(conn, day)
        option = min(options) if options else None
        limits = [x for x in (stored, option) if x is not None]
        return BudgetState(min(limits) if limits else None, stored, option, float(spent), day, time.time()), hub

    def _refresh_budget(self) -> BudgetState:
        try:
            self._budget, self._hub = self._read_budget()
        except Exception as exc:  # noqa: BLE001 - keep the last known state
            log.warning("bodhi_nb usage ledger: reading the budget failed: %s", exc)
        finally:
            self._refresh_pending = False
        return self._budget

    # -- reading ---------------------------------------------------------------------------

    def query(self, since: object = None, until: object = None, by: str | Sequence[str] | None = None, *,
              page: int = 1, page_size: int = 100, **eq: str | None) -> tuple[list[dict[str, Any]], int]:
        """Raw rows (newest first) or, with `by`, sums per group; and the total count.
        `eq`: equality filters (model, provider, surface, notebook, hub_user)."""
        keys = parse_by(by)
        f = UsageFilter.of(since, until, **eq)
        self.flush()
        if keys:
            return select_groups(self.path, f, keys, page, page_size)
        return select_rows(self.path, f, page, page_size)

    def totals(self, since: object = None, until: object = None, **eq: str | None) -> dict[str, Any]:
        """Requests, errors, error rate, tokens and cost summed over every matching row."""
        f = UsageFilter.of(since, until, **eq)
        self.flush()
        groups, _ = select_groups(self.path, f, ())
        empty = {"requests": 0, "errors": 0, "error_rate": 0.0, "prompt_tokens": 0, "completion_tokens": 0,
                 "total_tokens": 0, "cost_usd": None}
        return groups[0] if groups else empty
