"""`Bodhi.map(..., via="batch")`: the rows as one batch job, its handle, and the same job read
from another process (a new kernel) by id."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from pydantic import BaseModel

from bodhi_nb.objs.errors import InvalidRequestError, ModelNotFound
from tests.conftest import FAST_KDF, TEST_SECRET


class Label(BaseModel):
    label: str


@pytest.fixture
def fake_models():
    return ["echo", "structured"]


def test_map_via_batch_is_a_job_whose_result_is_the_map_frame(bodhi, bodhi_home):
    df = pd.DataFrame({"text": ["a", "b", "c"]})
    job = bodhi.map("fake/echo", df, template="Say {text}", via="batch")
    assert job.id.startswith("batch_") and job.status in ("validating", "in_progress", "completed")
    final = job.wait(progress=False, timeout=120)
    assert final["status"] == "completed" and final["request_counts"]["completed"] == 3
    out = job.result()
    direct = bodhi.map("fake/echo", df, template="Say {text}", progress=False, cache=False)
    assert list(out["reply"]) == list(direct["reply"]) == ["echo: Say a", "echo: Say b", "echo: Say c"]
    assert list(out["text"]) == ["a", "b", "c"] and out["error"].isna().all()
    assert bodhi.batches.list()[0]["id"] == job.id
    # A new kernel finds the job by id and reads the same result.
    code = (f"import bodhi_nb; b = bodhi_nb.Bodhi({str(bodhi_home)!r}, master_secret={TEST_SECRET!r}, "
            f"kdf_iterations={FAST_KDF}); j = b.batches.get({job.id!r}); "
            "print(j.status, [r.text for r in j.result()])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "BODHI_HOME": str(bodhi_home)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "completed ['echo: Say a', 'echo: Say b', 'echo: Say c']"


def test_map_via_batch_parses_structured_output_and_refuses_bad_input(bodhi):
    job = bodhi.map("fake/structured", ["one", "two"], via="batch", response_format=Label)
    rows = job.result()
    assert [type(r.parsed) for r in rows] == [Label, Label] and all(r.error is None for r in rows)
    with pytest.raises(ModelNotFound):
        bodhi.map("nobody/here", ["x"], via="batch")
    with pytest.raises(InvalidRequestError):
        bodhi.map("fake/echo", ["x"], via="carrier-pigeon")


def test_the_batches_tab_lists_jobs_with_their_progress(bodhi):
    import bodhi_nb
    from bodhi_nb.notebook.widgets import BatchesPanel

    job = bodhi.map("fake/echo", ["x", "y"], via="batch")
    job.wait(progress=False, timeout=120)
    tab = bodhi_nb.panel(bodhi)
    assert tab.get_title(5) == "Batches" and isinstance(tab.children[5], BatchesPanel)
    panel = tab.children[5]
    panel.refresh()
    assert job.id in panel.table.value and "2/2 (100 %)" in panel.table.value and "completed" in panel.table.value
    assert panel.cancel_btn.disabled  # nothing left to cancel


def test_estimate_prices_rows_and_a_job_over_budget_is_refused_before_it_starts(bodhi, upstream):
    from bodhi_nb.objs.errors import BudgetExceeded

    df = pd.DataFrame({"text": ["a few words of text " * 4] * 10})
    est = bodhi.estimate("fake/echo", df, template="Say {text}", max_tokens=10)
    assert est["rows"] == 10 and est["prompt_tokens"] > 100 and est["max_output_tokens"] == 100
    assert est["cost_usd"] is None and est["tokenizer"].startswith(("tiktoken", "approx"))
    bodhi.prices.set("fake/echo", input=1000.0, output=1000.0)  # USD per million tokens
    est = bodhi.estimate("fake/echo", df, template="Say {text}", max_tokens=10)
    half = bodhi.estimate("fake/echo", df, template="Say {text}", max_tokens=10, batch=True)
    assert est["cost_usd"] == pytest.approx((est["prompt_tokens"] + 100) / 1000)
    assert half["cost_usd"] == pytest.approx(est["cost_usd"] / 2)  # an OpenAI-format provider's batch price
    assert bodhi.map("fake/echo", df, template="Say {text}", max_tokens=10, estimate=True)["rows"] == 10
    bodhi.budget(daily_usd=0.001)
    before = upstream.last()
    try:
        for via in ("requests", "batch"):
            with pytest.raises(BudgetExceeded) as ei:
                bodhi.map("fake/echo", df, template="Say {text}", max_tokens=10, via=via, progress=False)
            assert ei.value.status == 429 and "$0.0010" in ei.value.message, via
            assert (f"{est['cost_usd']:.4f}" if via == "requests" else f"{half['cost_usd']:.4f}") in ei.value.message
        assert upstream.last() == before and bodhi.batches.list() == []  # nothing was sent or started
    finally:
        bodhi.budget(daily_usd=None)
