"""Usage objects: ledger rows and groups, prices and the daily budget."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ['UsageRow', 'UsageGroup', 'PaginatedUsageResponse', 'PriceRequest', 'PriceResponse', 'PriceListResponse', 'BudgetRequest', 'BudgetResponse', 'BudgetsResponse', 'NamedBudget']


class UsageRow(BaseModel):
    """One request, with the ledger's own field names."""

    id: int
    time: str = Field(description="UTC, e.g. 2026-01-31T12:00:00.123Z")
    surface: str
    model: str
    provider: str | None
    upstream_model: str | None
    target: str | None
    status: int
    error_code: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached: bool
    latency_ms: float | None
    ttft_ms: float | None
    cost_usd: float | None
    kernel_id: str | None
    notebook: str | None
    hub_user: str | None = Field(None, description="The JupyterHub user (the hub service's rows).")
    hub_server: str | None = Field(None, description="That user's server name, as the server said.")
    content: str | None = Field(description="Prompt and reply as JSON; only with the log_content option.")


class UsageGroup(BaseModel):
    """Sums for one group; the grouping keys asked for (`by`) are set, the others absent."""

    model: str | None = None
    provider: str | None = None
    surface: str | None = None
    day: str | None = None
    notebook: str | None = None
    user: str | None = None
    requests: int
    errors: int
    error_rate: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None


class PaginatedUsageResponse(BaseModel):
    data: list[UsageRow] | list[UsageGroup]
    total: int
    page: int
    page_size: int


class PriceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="A model name (as asked, or the upstream name) or a provider id.")
    scope: Literal["model", "provider"] = "model"
    input_usd_per_mtok: float = Field(ge=0, allow_inf_nan=False, description="USD per million input tokens")
    output_usd_per_mtok: float = Field(ge=0, allow_inf_nan=False, description="USD per million output tokens")


class PriceResponse(BaseModel):
    scope: Literal["model", "provider"]
    name: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    updated_at: str


class PriceListResponse(BaseModel):
    data: list[PriceResponse]


class BudgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily_usd: float | None = Field(ge=0, allow_inf_nan=False,
                                    description="Daily limit in USD (UTC day); null removes it.")


class BudgetResponse(BaseModel):
    daily_usd: float | None = Field(description="The limit in force: the stricter of the stored one and "
                                                "the server's daily_budget_usd option.")
    stored_usd: float | None = Field(description="Set with PUT usage/budget or Bodhi().budget().")
    option_usd: float | None = Field(description="The server's daily_budget_usd option (stored in BODHI_HOME, so "
                                                 "every kernel enforces it too).")
    spent_today_usd: float
    remaining_usd: float | None
    exceeded: bool
    day: str


class NamedBudget(BaseModel):
    """One user's or group's daily budget in the JupyterHub service, and today's spend against it."""

    daily_usd: float
    spent_today_usd: float


class BudgetsResponse(BaseModel):
    """Every per-user and per-group daily budget (the JupyterHub service; admins only)."""

    users: dict[str, NamedBudget]
    groups: dict[str, NamedBudget]
