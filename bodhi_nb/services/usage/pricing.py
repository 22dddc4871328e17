"""Prices and the daily budget's state: what a request cost, and whether today's spend is over.

No price list is built in or downloaded: prices are what the user set, per model name (as
asked, or upstream) or per provider (API model id), in USD per million tokens.

This module depends on nothing else in the ledger: `cost_usd` takes anything with token
counts (a `UsageRecord`, a `TokenUsage`), so ledger.py imports pricing and never the reverse.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from ...objs.errors import InvalidRequestError

__all__ = ["BudgetKind", "BudgetState", "HubBudget", "Price", "Scope", "TokenCounts", "cost_usd", "price_for",
           "usd_amount", "utc_today"]

Scope = Literal["model", "provider"]
BudgetKind = Literal["user", "group"]


class TokenCounts(Protocol):
    """What a cost is computed from: the tokens in and out (None where unknown)."""

    @property
    def prompt_tokens(self) -> int | None: ...

    @property
    def completion_tokens(self) -> int | None: ...


@dataclass(frozen=True)
class Price:
    """USD per million tokens for a model name (as asked, or upstream) or a provider (API model id)."""

    scope: Scope
    name: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    updated_at: str = ""


@dataclass(frozen=True)
class BudgetState:
    """The daily budget (UTC day) and what has been spent against it."""

    daily_usd: float | None  # the limit in force: the stricter of the two below
    stored_usd: float | None  # set by the user (Bodhi.budget, REST), shared by every process
    option_usd: float | None  # the server's daily_budget_usd option (or this process's own, if stricter)
    spent_today_usd: float
    day: str  # YYYY-MM-DD, UTC
    checked_at: float = 0.0

    @property
    def exceeded(self) -> bool:
        return self.daily_usd is not None and self.spent_today_usd >= self.daily_usd

    @property
    def remaining_usd(self) -> float | None:
        return None if self.daily_usd is None else max(self.daily_usd - self.spent_today_usd, 0.0)

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("checked_at")
        return {**out, "remaining_usd": self.remaining_usd, "exceeded": self.exceeded}


@dataclass(frozen=True)
class HubBudget:
    """One JupyterHub user's or group's daily budget (UTC day) and what it has spent today.

    A team shares one gateway, so a budget per user or group caps one person (or one course)
    without stopping the others; the global budget above still caps the whole file.
    """

    kind: BudgetKind
    name: str
    daily_usd: float
    spent_today_usd: float

    @property
    def exceeded(self) -> bool:
        return self.spent_today_usd >= self.daily_usd

    @property
    def remaining_usd(self) -> float:
        return max(self.daily_usd - self.spent_today_usd, 0.0)

    def public(self) -> dict[str, float]:
        return {"daily_usd": self.daily_usd, "spent_today_usd": self.spent_today_usd}


def cost_usd(rec: TokenCounts, price: Price | None) -> float | None:
    """Input tokens at the input price plus output tokens at the output price."""
    if price is None or (rec.prompt_tokens is None and rec.completion_tokens is None):
        return None
    return ((rec.prompt_tokens or 0) * price.input_usd_per_mtok
            + (rec.completion_tokens or 0) * price.output_usd_per_mtok) / 1_000_000


def price_for(prices: dict[tuple[str, str], Price], model: str, upstream: str | None,
               provider: str | None) -> Price | None:
    """A model price (the name asked, then the upstream name) wins over a provider price."""
    return (prices.get(("model", model)) or (prices.get(("model", upstream)) if upstream else None)
            or (prices.get(("provider", provider)) if provider else None))


def utc_today() -> str:
    """Today's date in UTC (YYYY-MM-DD), the budget's day."""
    return time.strftime("%Y-%m-%d", time.gmtime())


def usd_amount(value: object, param: str) -> float:
    """A price or budget from user input: a finite number of US dollars, 0 or more (400 otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidRequestError(f"'{param}' must be a number of US dollars, 0 or more.", param=param)
    return float(value)
