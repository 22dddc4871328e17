"""Private: daily budgets per JupyterHub user and per group, beside the ledger's global one.

In JupyterHub mode one gateway serves a whole team, so one person (or one course's group)
can be capped without stopping the others. The limits live in the ledger file's `settings`
table (`budget:user:<name>`, `budget:group:<name>`), so every process enforces the same ones.
The writer thread reads them, with today's spend, into a `HubBudgets` snapshot; the request
path only compares numbers in memory (`HubBudgets.exceeded`).

A group's spend is today's cost of the rows whose `hub_groups` (",a,b,", the user's groups
when the request was made) holds the group: leaving a group does not refund what was spent
while in it, and joining one does not charge the new member for the others' spend.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from ...objs.errors import InvalidRequestError
from ._sqlite import write_setting
from .pricing import BudgetKind, HubBudget, usd_amount, utc_today

__all__ = ["HubBudgets", "budget_name", "encode_groups", "exceeded_message", "read_hub_budgets", "store_budget"]

_PREFIX = "budget:"  # every per-user and per-group key starts so (the global one does not)
_KINDS: tuple[BudgetKind, ...] = ("user", "group")


@dataclass(frozen=True)
class HubBudgets:
    """The per-user and per-group limits and today's spend, as read at `checked_at`."""

    users: Mapping[str, HubBudget] = field(default_factory=dict)
    groups: Mapping[str, HubBudget] = field(default_factory=dict)
    day: str = ""  # YYYY-MM-DD, UTC: the spend is that day's
    checked_at: float = 0.0

    @property
    def any(self) -> bool:
        """Whether any user or group budget is set (then each write refreshes the spend)."""
        return bool(self.users or self.groups)

    def exceeded(self, user: str | None, groups: Iterable[str]) -> HubBudget | None:
        """The first spent budget that applies (the user's own, then each group's), or None.
        A snapshot of an earlier UTC day counts for nothing: the new day starts from zero."""
        if not (self.users or self.groups) or self.day != utc_today():
            return None
        if user is not None:
            own = self.users.get(user)
            if own is not None and own.exceeded:
                return own
        for g in (groups,) if isinstance(groups, str) else groups:  # one name passed alone is one group
            b = self.groups.get(g)
            if b is not None and b.exceeded:
                return b
        return None

    def public(self) -> dict[str, dict[str, dict[str, float]]]:
        return {"users": {n: b.public() for n, b in sorted(self.users.items())},
                "groups": {n: b.public() for n, b in sorted(self.groups.items())}}


def budget_name(value: object, kind: BudgetKind) -> str:
    """A user or group name from input (400 otherwise). A group name cannot hold a comma: the
    groups of a row are stored comma-separated, so such a group could not be told apart."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"A {kind} budget needs the {kind}'s name.", param=kind)
    name = value.strip()
    if kind == "group" and "," in name:
        raise InvalidRequestError("A group name for a budget cannot contain a comma.", param=kind)
    return name


def store_budget(conn: sqlite3.Connection, kind: BudgetKind, name: str, daily_usd: float | None) -> None:
    """Set (or with None remove) one user's or group's daily budget, validated first."""
    value = None if daily_usd is None else usd_amount(daily_usd, "daily_usd")
    write_setting(conn, f"{_PREFIX}{kind}:{budget_name(name, kind)}", value)


def encode_groups(groups: Iterable[str]) -> str | None:
    """The `hub_groups` column: ",a,b," (sorted, each once), so `instr(hub_groups, ',a,')` finds
    the members; None for no group. A name with a comma is left out (it can have no budget)."""
    if isinstance(groups, str):
        groups = (groups,)
    names = sorted({g for g in groups if isinstance(g, str) and g and "," not in g})
    return "," + ",".join(names) + "," if names else None


def read_hub_budgets(conn: sqlite3.Connection, day: str) -> HubBudgets:
    """The limits and `day`'s spend: one GROUP BY for the users, one SUM per group with a
    budget (nothing when no budget is set, the usual case outside JupyterHub)."""
    limits: dict[BudgetKind, dict[str, float]] = {"user": {}, "group": {}}
    for key, value in conn.execute("SELECT key, value FROM settings WHERE key GLOB ?", (_PREFIX + "*",)):
        kind, _, name = key[len(_PREFIX):].partition(":")
        if kind in _KINDS and name:
            limits[kind][name] = float(value)  # type: ignore[index]
    since = day + "T00:00:00.000Z"
    users: dict[str, HubBudget] = {}
    if limits["user"]:
        spent = dict(conn.execute("SELECT hub_user, COALESCE(SUM(cost_usd), 0) FROM usage "
                                  "WHERE time >= ? AND hub_user IS NOT NULL GROUP BY hub_user", (since,)))
        users = {n: HubBudget("user", n, limit, float(spent.get(n, 0.0))) for n, limit in limits["user"].items()}
    groups: dict[str, HubBudget] = {}
    for n, limit in limits["group"].items():
        (g_spent,) = conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE time >= ? "
                                  "AND instr(hub_groups, ?) > 0", (since, f",{n},")).fetchone()
        groups[n] = HubBudget("group", n, limit, float(g_spent))
    return HubBudgets(users, groups, day, time.time())


def exceeded_message(b: HubBudget) -> str:
    """What a refused request is told: whose budget, how much, who can change it, and when it
    resets. Only the name and the amounts: nothing else about the request or the server."""
    who = "User" if b.kind == "user" else "Group"
    route = f"bodhi/v1/usage/budgets/{b.kind}s/{quote(b.name, safe='')}"
    return (f"{who} {b.name}'s daily budget of ${b.daily_usd:.2f} is spent (${b.spent_today_usd:.4f} used since "
            f"00:00 UTC). An admin can raise it (PUT {route}), or wait until 00:00 UTC.")
