"""The usage ledger (SQLite, standard library): rows, prices, budgets, and reading them back.

See docs/ARCHITECTURE.md ("Usage ledger") for how the request path feeds it.
"""

from __future__ import annotations

from ._sqlite import ROW_FIELDS
from .ledger import (
    DEFAULT_RETENTION_DAYS,
    BudgetState,
    Ledger,
    Price,
    UsageRecord,
    cost_usd,
)
from .pricing import BudgetKind, HubBudget
from .query import GROUP_KEYS, SUM_FIELDS, UsageFilter, parse_by, parse_when
from .tokens import (
    StreamTap,
    TokenUsage,
    usage_from_body,
    wants_usage,
    with_include_usage,
)

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "GROUP_KEYS",
    "ROW_FIELDS",
    "SUM_FIELDS",
    "BudgetKind",
    "BudgetState",
    "HubBudget",
    "Ledger",
    "Price",
    "StreamTap",
    "TokenUsage",
    "UsageFilter",
    "UsageRecord",
    "cost_usd",
    "parse_by",
    "parse_when",
    "usage_from_body",
    "wants_usage",
    "with_include_usage",
]
