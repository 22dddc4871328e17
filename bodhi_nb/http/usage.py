"""GET usage (rows or groups, paginated like api-models), prices and the daily budget.

Handlers parse the query or body, call the usage operations and serialise through the
contract's usage objects, which also put these routes in the OpenAPI document.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..server_core.contract import (
    BudgetRequest,
    BudgetResponse,
    BudgetsResponse,
    PaginatedUsageResponse,
    PriceListResponse,
    PriceRequest,
    PriceResponse,
    UsageGroup,
    UsageRow,
)
from ._base import MANAGE_RESOURCE, BodhiHandler, Op

__all__ = ["BudgetHandler", "BudgetsHandler", "NamedBudgetHandler", "PriceHandler", "PricesHandler", "UsageHandler"]

_TAGS = ("usage",)
_FILTERS = (
    ("since", "string", "from this time (ISO 8601 or a date, UTC) or a span back from now: 24h, 7d"),
    ("until", "string", "before this time (same forms as since)"),
    ("by", "string", "group by model, provider, surface, day, notebook or user (comma-separated for several)"),
    ("model", "string", "only this model name"), ("provider", "string", "only this provider (API model id or local)"),
    ("surface", "string", "only this surface: http, python, widget, map, magic"),
    ("notebook", "string", "only this notebook path"),
    ("user", "string", "only this JupyterHub user (the hub service; a non-admin always sees only their own rows)"),
    ("page", "integer", "1-based page"), ("page_size", "integer", "1..1000, default 100"),
)


def _budget(state: object) -> BudgetResponse:
    return BudgetResponse.model_validate(state.public())  # type: ignore[attr-defined]


class UsageHandler(BodhiHandler):
    path = "usage"
    openapi = {"get": Op("The usage ledger: rows newest first, or sums per group with `by`",
                         response=PaginatedUsageResponse, errors=(400, 403), tags=_TAGS, query=_FILTERS)}

    @web.authenticated
    @authorized
    async def get(self) -> None:
        arg = self.get_query_argument
        by = arg("by", None)
        # In the hub service a user who may not manage it reads only their own rows, whatever they ask.
        user = arg("user", None) if self.may_manage() else self.current_user.username
        page = await self.ops.usage.query(
            arg("since", None), arg("until", None), by, page=self.int_arg("page", 1),
            page_size=self.int_arg("page_size", 100), model=arg("model", None), provider=arg("provider", None),
            surface=arg("surface", None), notebook=arg("notebook", None), hub_user=user)
        data: list[UsageRow] | list[UsageGroup] = (
            [UsageGroup.model_validate(d) for d in page.data] if by else [UsageRow.model_validate(d) for d in page.data])
        out = PaginatedUsageResponse(data=data, total=page.total, page=page.page, page_size=page.page_size)
        self.send_json(out.model_dump(mode="json", exclude_unset=bool(by)))  # groups show only their own keys


class PricesHandler(BodhiHandler):
    path = "usage/prices"
    openapi = {
        "get": Op("Prices per model name or provider (USD per million tokens)", response=PriceListResponse,
                  errors=(403,), tags=_TAGS),
        "put": Op("Set a price (replaces the same scope and name); costs are computed from it as rows are written",
                  request=PriceRequest, response=PriceResponse, errors=(400, 403), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        prices = await self.ops.usage.prices()
        self.send_json(PriceListResponse(data=[PriceResponse.model_validate(p, from_attributes=True)
                                               for p in prices]))

    @web.authenticated
    @authorized(resource=MANAGE_RESOURCE)
    async def put(self) -> None:
        req = self.parse(PriceRequest)
        p = await self.ops.usage.set_price(req.name, req.input_usd_per_mtok, req.output_usd_per_mtok,
                                           scope=req.scope)
        self.send_json(PriceResponse.model_validate(p, from_attributes=True))


class PriceHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = r"usage/prices/(?P<scope>[^/]+)/(?P<name>.+)"
    openapi = {"delete": Op("Remove a price", status=204, errors=(403, 404), tags=_TAGS)}

    @web.authenticated
    @authorized
    async def delete(self, scope: str, name: str) -> None:
        await self.ops.usage.delete_price(name, scope=scope)  # type: ignore[arg-type]  # the ledger checks it
        self.set_status(204)
        self.finish()


class BudgetHandler(BodhiHandler):
    path = "usage/budget"
    openapi = {
        "get": Op("The daily budget and today's spend (UTC)", response=BudgetResponse, errors=(403,), tags=_TAGS),
        "put": Op("Set the daily budget in USD (null removes it); above it priced models answer 429 "
                  "budget_exceeded", request=BudgetRequest, response=BudgetResponse, errors=(400, 403), tags=_TAGS),
    }

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json(_budget(await self.ops.usage.budget()))

    @web.authenticated
    @authorized(resource=MANAGE_RESOURCE)
    async def put(self) -> None:
        req = self.parse(BudgetRequest)
        self.send_json(_budget(await self.ops.usage.set_budget(req.daily_usd)))


class BudgetsHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = "usage/budgets"
    openapi = {"get": Op("Every per-user and per-group daily budget with today's spend (the JupyterHub service)",
                         response=BudgetsResponse, errors=(403,), tags=_TAGS)}

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json(BudgetsResponse.model_validate(await self.ops.usage.budgets()))


class NamedBudgetHandler(BodhiHandler):
    auth_resource = MANAGE_RESOURCE
    path = r"usage/budgets/(?P<kind>[^/]+)/(?P<name>[^/]+)"
    openapi = {"put": Op("Set one JupyterHub user's or group's daily budget in USD (null removes it); checked "
                         "before each priced request, 429 budget_exceeded naming it", request=BudgetRequest,
                         response=BudgetsResponse, errors=(400, 403), tags=_TAGS)}

    @web.authenticated
    @authorized
    async def put(self, kind: str, name: str) -> None:
        req = self.parse(BudgetRequest)
        budgets = await self.ops.usage.set_named_budget(kind, name, req.daily_usd)
        self.send_json(BudgetsResponse.model_validate(budgets))
