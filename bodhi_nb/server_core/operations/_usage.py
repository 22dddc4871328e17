"""Usage operations: reading the ledger, prices and the daily budget, for every surface.

SQLite work runs in a worker thread, so neither the server's loop nor bodhi_nb's private
loop waits on the file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...objs.errors import BodhiError, InvalidRequestError
from ...services.usage import ROW_FIELDS, SUM_FIELDS, BudgetState, Ledger, Price, parse_by
from ...services.usage.pricing import Scope
from ..hub_link import HubLink

__all__ = ["UsageOps", "UsagePage", "USAGE_ROW_FIELDS", "USAGE_SUM_FIELDS", "parse_usage_by"]

USAGE_ROW_FIELDS = ROW_FIELDS  # a ledger row's columns, in order (the facade's DataFrame)
USAGE_SUM_FIELDS = SUM_FIELDS  # a group's sums, after its keys
parse_usage_by = parse_by  # "model,day" or a list -> the group keys (400 for an unknown one)


@dataclass(frozen=True)
class UsagePage:
    """One page of rows (newest first) or of groups, paginated like api-models."""

    data: list[dict[str, Any]]
    total: int
    page: int
    page_size: int


class UsageOps:
    """The ledger of this BODHI_HOME; under JupyterHub with the bodhi service, usage is the service's
    (its rows of this user, budgets included), asked with the user's own hub token."""

    def __init__(self, ledger: Ledger | None, hub: HubLink | None = None) -> None:
        self._ledger = ledger
        self._hub = hub

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise BodhiError("The usage ledger is not available in this process: it is turned off "
                             "(usage_ledger=False) or $BODHI_HOME/usage.sqlite could not be opened (see the log).",
                             status=503, code="usage_ledger_off")
        return self._ledger

    async def query(self, since: object = None, until: object = None, by: str | Sequence[str] | None = None, *,
                    page: int = 1, page_size: int = 100, model: str | None = None, provider: str | None = None,
                    surface: str | None = None, notebook: str | None = None, hub_user: str | None = None
                    ) -> UsagePage:
        """Raw rows, or with `by` (model, provider, surface, day, notebook, user; several allowed) sums per group."""
        if self._hub is not None and await self._hub.ready():
            keys = ",".join(parse_by(by))
            got = await self._hub.get("usage", {"since": since, "until": until, "by": keys or None, "page": page,
                                                "page_size": page_size, "model": model, "provider": provider,
                                                "surface": surface, "notebook": notebook, "user": hub_user})
            return UsagePage(list(got.get("data") or []), int(got.get("total") or 0), page, page_size)
        data, total = await asyncio.to_thread(self.ledger.query, since, until, by, page=page, page_size=page_size,
                                              model=model, provider=provider, surface=surface, notebook=notebook,
                                              hub_user=hub_user)
        return UsagePage(data, total, page, page_size)

    async def _from_hub(self) -> bool:
        return self._hub is not None and await self._hub.ready()

    async def _hub_managed(self) -> None:
        if await self._from_hub():
            raise BodhiError("Under JupyterHub, prices and budgets are the hub service's: a member of its admin group "
                             "sets them there (bodhi/v1/usage/prices, usage/budget, usage/budgets of the service).",
                             status=409, code="managed_by_hub")

    async def totals(self, since: object = None, until: object = None) -> dict[str, Any]:
        if await self._from_hub():
            return _summed((await self.query(since, until, "model", page_size=1000)).data)
        return await asyncio.to_thread(self.ledger.totals, since, until)

    async def prices(self) -> list[Price]:
        if await self._from_hub():
            assert self._hub is not None
            return [Price(**p) for p in (await self._hub.get("usage/prices", {})).get("data") or []]
        return await asyncio.to_thread(self.ledger.prices)

    async def set_price(self, name: str, input_usd_per_mtok: float, output_usd_per_mtok: float, *,
                        scope: Scope = "model") -> Price:
        await self._hub_managed()
        return await asyncio.to_thread(self.ledger.set_price, name, input_usd_per_mtok, output_usd_per_mtok,
                                       scope=scope)

    async def delete_price(self, name: str, *, scope: Scope = "model") -> None:
        await self._hub_managed()
        await asyncio.to_thread(self.ledger.delete_price, name, scope=scope)

    async def budget(self) -> BudgetState:
        if await self._from_hub():
            assert self._hub is not None
            d = await self._hub.get("usage/budget", {})
            return BudgetState(d.get("daily_usd"), d.get("stored_usd"), d.get("option_usd"),
                               float(d.get("spent_today_usd") or 0.0), str(d.get("day") or ""), time.time())
        return await asyncio.to_thread(self.ledger.budget)

    async def set_budget(self, daily_usd: float | None) -> BudgetState:
        await self._hub_managed()
        return await asyncio.to_thread(self.ledger.set_budget, daily_usd)

    async def budgets(self) -> dict[str, Any]:
        """Every per-user and per-group budget (the JupyterHub service), with today's spend."""
        await self._hub_managed()
        return await asyncio.to_thread(self.ledger.budgets)

    async def set_named_budget(self, kind: str, name: str, daily_usd: float | None) -> dict[str, Any]:
        """Set (None: remove) one JupyterHub user's (`kind` "users") or group's ("groups") daily budget;
        returns them all."""
        await self._hub_managed()
        if kind not in ("users", "groups"):
            raise InvalidRequestError("A named budget is a user's (usage/budgets/users/<name>) or a group's "
                                      "(usage/budgets/groups/<name>).", param="kind")
        setter = self.ledger.set_user_budget if kind == "users" else self.ledger.set_group_budget
        await asyncio.to_thread(setter, name, daily_usd)
        return await self.budgets()


def _summed(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over groups, as the ledger's own totals (the hub service answers groups, not totals)."""
    out: dict[str, Any] = {k: sum(int(g.get(k) or 0) for g in groups)
                           for k in ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")}
    costs = [g["cost_usd"] for g in groups if g.get("cost_usd") is not None]
    out["cost_usd"] = sum(costs) if costs else None
    out["error_rate"] = out["errors"] / out["requests"] if out["requests"] else 0.0
    return out
