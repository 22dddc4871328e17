"""UsagePanel: what was spent, by day and by model; prices; the daily budget.

Totals for today, this week and all time; a PNG chart (matplotlib, drawn off the loop)
of tokens and cost per day stacked by model; the top models; the budget's state with a
field to change it; prices per model or provider. All reads go through the usage
operations on bodhi_nb's I/O loop, so the kernel's loop never waits on the file.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import ipywidgets as W

from ...objs.errors import BodhiError, InvalidRequestError
from ..client import Bodhi
from ._tasks import TaskRunner, esc, html_table

__all__ = ["UsagePanel", "render_usage_chart"]

_LABELS = {"description_width": "90px"}
_MAX_SERIES = 8  # models beyond the top ones are drawn as "other"


@dataclass
class _View:
    totals: list[tuple[str, dict[str, Any]]]
    per_day: list[dict[str, Any]]
    top: list[dict[str, Any]]
    budget: dict[str, Any]
    prices: list[dict[str, Any]]
    png: bytes = field(repr=False, default=b"")
    users: list[dict[str, Any]] = field(default_factory=list)  # spend per JupyterHub user (the hub service)


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def render_usage_chart(per_day: list[dict[str, Any]], days: int, today: str | None = None) -> bytes:
    """Tokens (and cost, when any row had a price) per UTC day, stacked by model, as PNG bytes.

    `per_day` holds rows grouped by day and model (the ledger's `by=day,model`). Uses the
    object-oriented matplotlib API with the Agg canvas, so it is safe off the main thread.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    end = datetime.strptime(today, "%Y-%m-%d") if today else datetime.now(timezone.utc).replace(tzinfo=None)
    labels = [(end - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(days - 1, -1, -1)]
    totals: dict[str, int] = {}
    for r in per_day:
        totals[r["model"]] = totals.get(r["model"], 0) + int(r["total_tokens"] or 0)
    top = sorted(totals, key=lambda m: -totals[m])[:_MAX_SERIES]
    series = [*top, *(["other"] if len(totals) > len(top) else [])]
    idx = {d: i for i, d in enumerate(labels)}
    tokens = {m: [0.0] * days for m in series}
    cost = {m: [0.0] * days for m in series}
    for r in per_day:
        i = idx.get(r["day"])
        if i is None:
            continue
        m = r["model"] if r["model"] in top else "other"
        tokens[m][i] += r["total_tokens"] or 0
        cost[m][i] += r["cost_usd"] or 0.0
    has_cost = any(any(v) for v in cost.values())
    fig = Figure(figsize=(8.5, 4.8 if has_cost else 2.8), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if has_cost else 1, 1, sharex=True, squeeze=False)[:, 0]
    x = list(range(days))
    for ax, data, title in zip(axes, (tokens, cost), ("Tokens per day (UTC)", "Cost per day (USD)"), strict=False):  # cost only when priced
        bottom = [0.0] * days
        for m in series:
            ax.bar(x, data[m], bottom=bottom, label=m, width=0.8)
            bottom = [b + v for b, v in zip(bottom, data[m], strict=True)]
        ax.set_title(title, fontsize=10, loc="left")
        ax.tick_params(labelsize=8)
    if not series:
        axes[0].text(0.5, 0.5, "No usage in this period", ha="center", va="center", transform=axes[0].transAxes)
    else:
        axes[0].legend(fontsize=7, loc="upper left", frameon=False)
    step = max(1, days // 10)
    axes[-1].set_xticks(x[::step], [d[5:] for d in labels[::step]])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class UsagePanel(W.VBox):
    """Totals, a chart, top models, prices and the budget; Refresh re-reads the ledger."""

    def __init__(self, bodhi: Bodhi) -> None:
        self.bodhi = bodhi
        self.days = W.Dropdown(description="Period", options=[("7 days", 7), ("30 days", 30), ("90 days", 90)],
                               value=30, style=_LABELS)
        self.refresh_btn = W.Button(description="Refresh", icon="refresh")
        self.totals = W.HTML()
        self.chart = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.top = W.HTML()
        self.users = W.HTML()  # per JupyterHub user (rows of the hub service only)
        self.budget_state = W.HTML()
        self.budget_usd = W.BoundedFloatText(description="Daily USD", min=0, max=1e9, step=1, value=0,
                                             style=_LABELS)
        self.budget_set_btn = W.Button(description="Set budget")
        self.budget_clear_btn = W.Button(description="Remove budget")
        self.prices_table = W.HTML()
        self.price_name = W.Text(description="Name", placeholder="model or provider id", style=_LABELS)
        self.price_scope = W.Dropdown(description="Scope", options=["model", "provider"], style=_LABELS)
        self.price_in = W.BoundedFloatText(description="In $/Mtok", min=0, max=1e9, step=0.01, style=_LABELS)
        self.price_out = W.BoundedFloatText(description="Out $/Mtok", min=0, max=1e9, step=0.01, style=_LABELS)
        self.price_set_btn = W.Button(description="Set price", button_style="primary")
        self.price_delete_btn = W.Button(description="Delete price")
        self.status = W.HTML()
        self.runner = TaskRunner(self.status)
        self.view: _View | None = None

        self.refresh_btn.on_click(self._on_refresh)
        self.days.observe(lambda _: self._on_refresh(), names="value")
        self.budget_set_btn.on_click(self._on_set_budget)
        self.budget_clear_btn.on_click(self._on_clear_budget)
        self.price_set_btn.on_click(self._on_set_price)
        self.price_delete_btn.on_click(self._on_delete_price)
        super().__init__([
            W.HTML("<h3>Usage</h3>"), W.HBox([self.days, self.refresh_btn]), self.totals, self.chart,
            W.HTML("<b>Top models</b>"), self.top, self.users,
            W.HTML("<b>Daily budget</b>"), self.budget_state,
            W.HBox([self.budget_usd, self.budget_set_btn, self.budget_clear_btn]),
            W.HTML("<b>Prices</b> (USD per million tokens; a model price wins over its provider's)"),
            self.prices_table, W.HBox([self.price_name, self.price_scope]), W.HBox([self.price_in, self.price_out]),
            W.HBox([self.price_set_btn, self.price_delete_btn]), self.status,
        ])
        self.add_class("bodhi-usage")
        try:  # first view at once, like the other panels; later refreshes run as tasks
            self._show(self.bodhi._loop.run(self._collect(self.days.value)))
        except BodhiError as exc:
            self.runner.show("error", exc.message)

    # -- reading --------------------------------------------------------------------------

    async def _collect(self, days: int) -> _View:
        """Runs on bodhi_nb's I/O loop: ledger reads in a worker thread, then the chart."""
        ops = self.bodhi.ops.usage
        now = datetime.now(timezone.utc)
        today = now.strftime("%Y-%m-%d")
        monday = (now - timedelta(days=now.weekday())).strftime("%Y-%m-%d")
        totals = [(label, await ops.totals(since)) for label, since in
                  (("Today", today), ("This week", monday), ("All time", None))]
        since = (now - timedelta(days=days - 1)).strftime("%Y-%m-%d")
        per_day = (await ops.query(since, None, "day,model", page_size=1000)).data
        top = (await ops.query(since, None, "model", page_size=10)).data
        # Rows of a JupyterHub service carry their user: an admin sees everyone's spend, a user their own.
        users = [g for g in (await ops.query(since, None, "user", page_size=100)).data if g.get("user")]
        budget = (await ops.budget()).public()
        prices = [vars(p) for p in await ops.prices()]
        png = await asyncio.to_thread(render_usage_chart, per_day, days, today)
        return _View(totals, per_day, top, budget, prices, png, users)

    def _show(self, v: _View) -> None:
        self.view = v
        self.totals.value = html_table(
            ["", "requests", "tokens", "cost", "errors"],
            [[label, t["requests"], f"{t['total_tokens']:,}", _money(t["cost_usd"]), t["errors"]]
             for label, t in v.totals], "No usage yet.")
        self.chart.value = v.png
        self.top.value = html_table(
            ["model", "requests", "prompt", "completion", "cost", "error rate"],
            [[g["model"], g["requests"], f"{g['prompt_tokens']:,}", f"{g['completion_tokens']:,}",
              _money(g["cost_usd"]), f"{g['error_rate']:.0%}"] for g in v.top], "No requests in this period.")
        self.users.value = html_table(
            ["JupyterHub user", "requests", "tokens", "cost"],
            [[g["user"], g["requests"], f"{g['total_tokens']:,}", _money(g["cost_usd"])] for g in v.users],
            "") if v.users else ""
        b = v.budget
        if b["daily_usd"] is None:
            self.budget_state.value = "<i>No daily budget.</i>"
        else:
            colour = "#cf222e" if b["exceeded"] else "#1a7f37"
            word = "exceeded: priced models answer 429 until 00:00 UTC" if b["exceeded"] else "within budget"
            self.budget_state.value = (
                f'<span class="bodhi-budget" style="color:{colour}">{esc(_money(b["spent_today_usd"]))} of '
                f'{esc(_money(b["daily_usd"]))} spent today (UTC), {esc(word)}</span>')
        self.prices_table.value = html_table(
            ["scope", "name", "input $/Mtok", "output $/Mtok"],
            [[p["scope"], p["name"], p["input_usd_per_mtok"], p["output_usd_per_mtok"]] for p in v.prices],
            "No prices set: costs are left empty.")

    async def _reload(self, done: str) -> str:
        self._show(await self.bodhi._loop.arun(self._collect(self.days.value)))
        return done

    # -- actions --------------------------------------------------------------------------

    def _on_refresh(self, _: Any = None) -> None:
        t = time.strftime("%H:%M:%S")
        self.runner.start(lambda: self._reload(f"Updated at {t}."), busy="Reading the ledger…",
                          buttons=(self.refresh_btn,))

    def _on_set_budget(self, _: Any = None) -> None:
        usd = float(self.budget_usd.value)

        async def work() -> str:
            await self.bodhi._loop.arun(self.bodhi.ops.usage.set_budget(usd))
            return await self._reload(f"Daily budget set to {_money(usd)}.")

        self.runner.start(work, busy="Saving the budget…", buttons=(self.budget_set_btn,))

    def _on_clear_budget(self, _: Any = None) -> None:
        async def work() -> str:
            await self.bodhi._loop.arun(self.bodhi.ops.usage.set_budget(None))
            return await self._reload("Daily budget removed.")

        self.runner.start(work, busy="Removing the budget…", buttons=(self.budget_clear_btn,))

    def _on_set_price(self, _: Any = None) -> None:
        name, scope = self.price_name.value.strip(), self.price_scope.value
        cost_in, cost_out = float(self.price_in.value), float(self.price_out.value)

        async def work() -> str:
            if not name:
                raise InvalidRequestError("Type the model name or provider id the price is for.", param="name")
            await self.bodhi._loop.arun(self.bodhi.ops.usage.set_price(name, cost_in, cost_out, scope=scope))
            return await self._reload(f"Price for {scope} {name} set.")

        self.runner.start(work, busy="Saving the price…", buttons=(self.price_set_btn,))

    def _on_delete_price(self, _: Any = None) -> None:
        name, scope = self.price_name.value.strip(), self.price_scope.value

        async def work() -> str:
            await self.bodhi._loop.arun(self.bodhi.ops.usage.delete_price(name, scope=scope))
            return await self._reload(f"Price for {scope} {name} deleted.")

        self.runner.start(work, busy="Deleting the price…", buttons=(self.price_delete_btn,))
