"""The usage ledger from a notebook's side: the Bodhi facade, map, the chat panel, the
magic and the CLI each record their requests under their own surface, with the tokens
the loopback upstream reported; prices, the budget and the DataFrames."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.notebook.widgets import ChatPanel
from bodhi_nb.objs.errors import BodhiError, BudgetExceeded, InvalidRequestError
from bodhi_nb.services.usage import Ledger, UsageRecord
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET


@pytest.fixture
def fake_models():
    """The `bodhi` fixture (tests/integration/conftest.py) registers these upstream models."""
    return ["echo", "slow-stream"]


def test_completion_and_stream_are_rows_with_the_upstream_tokens(bodhi, upstream):
    bodhi.completion("fake/echo", "hi there")  # prompt 3, completion 3 ("echo: hi there")
    chunks = list(bodhi.stream("fake/slow-stream", "hi", max_tokens=4))
    assert upstream.last()["body"]["stream_options"] == {"include_usage": True}
    assert all(c["choices"] for c in chunks) and not any("usage" in c for c in chunks)  # none asked, none given
    asked = list(bodhi.stream("fake/slow-stream", "hi", max_tokens=2, stream_options={"include_usage": True}))
    assert asked[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    frame = bodhi.usage()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 3 and "content" not in frame
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]" or str(frame["time"].dtype).endswith(", UTC]")
    rows = frame.iloc[::-1].to_dict("records")  # oldest first
    assert [(r["model"], r["surface"], r["prompt_tokens"], r["completion_tokens"], r["total_tokens"])
            for r in rows] == [("fake/echo", "python", 3, 3, 6), ("fake/slow-stream", "python", 3, 4, 7),
                               ("fake/slow-stream", "python", 3, 2, 5)]
    assert pd.isna(rows[0]["ttft_ms"]) and rows[1]["ttft_ms"] > 0 and rows[1]["upstream_model"] == "slow-stream"
    by_model = bodhi.usage(by="model").set_index("model")
    assert by_model.loc["fake/slow-stream", "requests"] == 2 and by_model.loc["fake/slow-stream", "total_tokens"] == 12
    assert list(bodhi.usage(by=["day", "surface"]).columns[:2]) == ["day", "surface"]
    assert len(bodhi.usage(limit=2)) == 2 and len(bodhi.usage(since="2000-01-01", until="2000-01-02")) == 0
    with pytest.raises(InvalidRequestError):
        bodhi.usage(by="colour")


def test_a_router_alias_row_names_the_target_that_answered(bodhi):
    bodhi.router_aliases.create("smart", ["fake/missing-model", "fake/echo"])
    assert bodhi.chat("smart", "hi there") == "echo: hi there"
    row = bodhi.usage().iloc[0]
    assert (row["model"], row["target"], row["provider"], row["upstream_model"]) == (
        "smart", "fake/echo", "fake", "echo")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 3)


def test_prices_and_budget_from_python(bodhi):
    bodhi.prices.set(provider="fake", input=1_000_000, output=1_000_000)  # $1 a token
    bodhi.prices.set("fake/echo", input=2_000_000, output=0)
    assert [(p["scope"], p["name"]) for p in bodhi.prices.list()] == [("model", "fake/echo"), ("provider", "fake")]
    with pytest.raises(InvalidRequestError):
        bodhi.prices.set(input=1, output=1)
    with pytest.raises(InvalidRequestError):
        bodhi.prices.set("x", provider="y", input=1, output=1)
    bodhi.completion("fake/echo", "hi there")  # 3 prompt tokens x $2
    list(bodhi.stream("fake/slow-stream", "hi", max_tokens=2))  # 3 x $1 + 2 x $1
    costs = bodhi.usage().set_index("model")["cost_usd"]
    assert costs["fake/echo"] == pytest.approx(6.0) and costs["fake/slow-stream"] == pytest.approx(5.0)
    assert bodhi.usage(by="provider").set_index("provider").loc["fake", "cost_usd"] == pytest.approx(11.0)
    state = bodhi.budget(daily_usd=11)
    assert state["exceeded"] and state["spent_today_usd"] == pytest.approx(11.0)
    with pytest.raises(BudgetExceeded) as e:
        bodhi.completion("fake/echo", "hi there")
    assert e.value.status == 429 and e.value.code == "budget_exceeded"
    with pytest.raises(BudgetExceeded):
        list(bodhi.stream("fake/slow-stream", "hi", max_tokens=2))
    assert bodhi.usage(by="model").set_index("model").loc["fake/echo", "errors"] == 1
    bodhi.prices.delete(provider="fake")
    list(bodhi.stream("fake/slow-stream", "hi", max_tokens=2))  # unpriced now: not blocked
    assert bodhi.budget(daily_usd=None)["daily_usd"] is None
    assert bodhi.chat("fake/echo", "ok") == "echo: ok"


def test_map_panel_and_magic_record_their_own_surface(bodhi, upstream):
    bodhi.map("fake/echo", ["a b", "c d", "e f"], progress=False)
    bodhi.map("fake/echo", ["a b", "c d", "e f"], progress=False)  # answered from the response cache
    panel = ChatPanel(bodhi)

    async def send():
        panel.model.value = "fake/echo"
        panel.input.value = "from the panel"
        panel.send_btn.click()
        await panel.runner.wait()

    asyncio.run(asyncio.wait_for(send(), 60))
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "bodhi_nb")
    ip.magics_manager.registry["BodhiMagics"].bodhi = bodhi
    ip.run_cell("%%bodhi fake/echo --no-stream\nfrom the magic")
    ip.user_ns.pop("_bodhi", None)
    bodhi.chat("fake/echo", "plain python")
    rows = bodhi.usage()
    assert rows.groupby("surface").size().to_dict() == {"map": 6, "widget": 1, "magic": 1, "python": 1}
    maps = rows[rows.surface == "map"]
    assert maps.total_tokens.tolist() == [6] * 6  # prompt 3 + "echo: a b"
    assert sorted(maps.cached.tolist()) == [False] * 3 + [True] * 3
    assert (maps[maps.cached].cost_usd == 0).all()


def test_cli_prints_a_table(tmp_path):
    home = tmp_path / "cli_home"
    led = Ledger.open(home)
    led.record(UsageRecord(model="fake/echo", surface="python", provider="fake", prompt_tokens=3,
                           completion_tokens=3, total_tokens=6))
    led.close()
    env = {**os.environ, "BODHI_HOME": str(home), "BODHI_ENCRYPTION_KEY": TEST_SECRET}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bodhi_nb.cli", "usage", *args], env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    r = cli("--by", "model,surface")
    assert r.returncode == 0, r.stderr
    header, line = r.stdout.splitlines()[:2]
    assert header.split()[:4] == ["model", "surface", "requests", "errors"]
    assert line.split()[:3] == ["fake/echo", "python", "1"]
    r = cli("--rows", "5", "--since", "1h")
    assert r.returncode == 0 and "fake/echo" in r.stdout and r.stdout.split()[0] == "time"
    r = cli("--since", "2000-01-01", "--until", "2000-01-02")
    assert r.returncode == 0 and r.stdout.strip() == "No usage recorded in this period."
    r = cli("--by", "colour")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "'by' must be" in r.stderr


def test_a_broken_ledger_file_never_breaks_chat(bodhi_home, upstream):
    (bodhi_home / "usage.sqlite").write_bytes(b"garbage" * 1000)
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    try:
        b.api_models.create("fake", upstream.base_url, api_key=TEST_KEY, models=["echo"], prefix="fake/")
        assert b.chat("fake/echo", "still works") == "echo: still works"
        with pytest.raises(BodhiError) as e:
            b.usage()
        assert e.value.status == 503 and e.value.code == "usage_ledger_off" and "usage.sqlite" in e.value.message
    finally:
        b.close()
