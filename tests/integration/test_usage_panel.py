"""The Usage tab driven like a user: totals, the PNG chart, top models, prices and the
budget, against real services and the loopback upstream."""

from __future__ import annotations

import asyncio
import re

import pytest

from bodhi_nb.notebook.widgets import UsagePanel, panel
from bodhi_nb.notebook.widgets.usage_panel import render_usage_chart

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fake_models():
    """The `bodhi` fixture (tests/integration/conftest.py) registers these upstream models."""
    return ["echo", "echo-2"]


def cells(html: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", html)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_empty_ledger_shows_an_empty_chart_and_hints(bodhi):
    p = UsagePanel(bodhi)
    assert bytes(p.chart.value).startswith(PNG) and "No requests in this period" in p.top.value
    assert "No daily budget" in p.budget_state.value and "No prices set" in p.prices_table.value


def test_totals_chart_top_models_prices_and_budget(bodhi):
    for _ in range(3):
        bodhi.completion("fake/echo", "hi there")  # 6 tokens each
    bodhi.completion("fake/echo-2", "hi")  # 3 + 2

    async def scenario():
        p = UsagePanel(bodhi)
        assert p.view is not None and bytes(p.chart.value).startswith(PNG)
        assert [t["total_tokens"] for _, t in p.view.totals] == [23, 23, 23]
        assert cells(p.totals.value)[:5] == ["Today", "4", "23", "-", "0"]
        assert p.top.value.index("fake/echo") < p.top.value.index("fake/echo-2")  # most tokens first
        assert {(r["model"], r["total_tokens"]) for r in p.view.per_day} == {("fake/echo", 18), ("fake/echo-2", 5)}

        p.price_name.value, p.price_scope.value = "fake", "provider"
        p.price_in.value, p.price_out.value = 1_000_000, 0
        p.price_set_btn.click()
        await p.runner.wait()
        assert "Price for provider fake set" in p.status.value and cells(p.prices_table.value)[:2] == ["provider", "fake"]
        bodhi.completion("fake/echo", "hi there")  # now priced: $3
        p.budget_usd.value = 2
        p.budget_set_btn.click()
        await p.runner.wait()
        assert "exceeded" in p.budget_state.value and "$3.00 of $2.00" in p.budget_state.value
        assert "$3.00" in p.totals.value and p.view.budget["exceeded"]
        p.budget_clear_btn.click()
        await p.runner.wait()
        assert "No daily budget" in p.budget_state.value
        p.price_delete_btn.click()
        await p.runner.wait()
        assert "No prices set" in p.prices_table.value
        p.price_name.value = ""
        p.price_set_btn.click()
        await p.runner.wait()
        assert "bodhi-error" in p.status.value and "Type the model name" in p.status.value
        bodhi.completion("fake/echo-2", "hi")
        p.days.value = 7  # changing the period refreshes
        await p.runner.wait()
        assert p.view.totals[2][1]["requests"] == 6 and "Updated at" in p.status.value

    run(scenario())


def test_chart_has_a_cost_row_only_with_prices_and_the_usage_tab_is_in_the_panel(bodhi):
    rows = [{"day": "2026-01-30", "model": f"m{i}", "total_tokens": 10 * i, "cost_usd": None} for i in range(12)]
    no_cost = render_usage_chart(rows, 7, today="2026-01-31")
    rows[0]["cost_usd"] = 1.5
    with_cost = render_usage_chart(rows, 7, today="2026-01-31")
    assert no_cost.startswith(PNG) and with_cost.startswith(PNG)
    assert int.from_bytes(with_cost[20:24], "big") > int.from_bytes(no_cost[20:24], "big")  # PNG IHDR height

    async def build():
        return panel(bodhi)

    tab = run(build())
    assert tab.get_title(3) == "Usage" and isinstance(tab.children[3], UsagePanel)
