"""A job's cost estimate (server_core/operations/_estimate.py, issue #21) on real services:
tokens by the target's tokenizer, the ledger's prices (batch discount included), the budget
refusal naming both numbers, router aliases and the bundled local model. Nothing is sent: the
upstream client and the local engine fail the test if they are touched."""

from __future__ import annotations

import asyncio

import pytest

from bodhi_nb.objs.errors import BudgetExceeded, InvalidRequestError, ModelNotFound
from bodhi_nb.server_core.operations._estimate import DEFAULT_OUTPUT_TOKENS, EstimateOps
from bodhi_nb.services import token_count as tc
from bodhi_nb.services.local_engine import local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from bodhi_nb.services.usage import UsageRecord
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET, optional_dependency

GGUF = LocalModels.builtin_path()
needs_gguf = optional_dependency(local_extra_available() and GGUF is not None,
                                 "the bundled model (the local extra) is not installed")


@pytest.fixture
def services(bodhi_home, monkeypatch):
    from bodhi_nb.server_core.app_services import AppServices

    svc = AppServices.create(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)

    def never(*a, **k):
        raise AssertionError("an estimate sent something")

    monkeypatch.setattr(svc.upstream, "forward", never)
    monkeypatch.setattr(svc.engine, "ensure", never)
    monkeypatch.setattr(svc.engine, "ensure_sync", never)

    async def setup():
        # 127.0.0.1:9 (discard) is never contacted: an estimate only reads the store
        await svc.ops.api_models.create({"id": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": TEST_KEY,
                                         "models": ["gpt-4o-mini", "gpt-4.1"]})
        await svc.ops.api_models.create({"id": "claude", "api_format": "anthropic", "base_url": "http://127.0.0.1:9/v1",
                                         "api_key": TEST_KEY, "models": ["claude-haiku"], "prefix": "anthropic/"})
        await svc.ops.router_aliases.create({"alias": "cheap", "targets": ["nowhere/missing", "gpt-4o-mini"]})
        await svc.ops.usage.set_price("gpt-4o-mini", 0.15, 0.60)
        await svc.ops.usage.set_price("claude", 1.0, 5.0, scope="provider")

    asyncio.run(setup())
    yield svc
    asyncio.run(svc.aclose())


def _ops(services) -> EstimateOps:
    return EstimateOps(services.router, services.ledger, services.data)


def run(coro):
    return asyncio.run(coro)


def test_an_openai_model_is_counted_with_its_encoding_and_priced(services):
    rows = [[{"role": "user", "content": "hello world"}]] * 1000
    est = run(_ops(services).estimate("gpt-4o-mini", rows, max_tokens=50))
    counter = tc.openai_counter("gpt-4o-mini")
    assert est.tokenizer == counter.name
    # o200k_base: "hello world" is 2 tokens; the approximation says ceil(11 / 4) = 3
    content = 2 if counter.name == "tiktoken:o200k_base" else 3
    assert counter.name in ("tiktoken:o200k_base", "approx:chars/4 (tiktoken encoding o200k_base not available offline)")
    assert est.rows == 1000 and est.prompt_tokens == 1000 * (3 + 1 + content + 3)
    assert est.max_output_tokens == 50_000 and est.output_tokens_per_row == 50 and not est.output_cap_assumed
    assert est.target == "api:openai/gpt-4o-mini" and est.price_source == "model:gpt-4o-mini"
    assert est.cost_usd == pytest.approx((est.prompt_tokens * 0.15 + 50_000 * 0.60) / 1e6)
    assert est.batch_discount == 1.0 and est.budget_remaining_usd is None
    batched = run(_ops(services).estimate("gpt-4o-mini", rows, max_tokens=50, batch=True))
    assert batched.batch_discount == 0.5 and batched.cost_usd == pytest.approx(est.cost_usd / 2)
    assert est.public()["total_tokens"] == est.prompt_tokens + 50_000 and est.public()["fits_budget"]


def test_other_formats_use_the_approximation_and_a_provider_price(services):
    rows = ({"role": "user", "content": "x" * 40} for _ in range(10))  # rows may be a generator (read once)
    est = run(_ops(services).estimate("anthropic/claude-haiku", ([m] for m in rows), max_tokens=100, batch=True))
    assert est.tokenizer == "approx:chars/4" and est.target == "api:claude/claude-haiku"
    assert est.prompt_tokens == 10 * (3 + 1 + 10 + 3)  # ceil(4/4) for "user", ceil(40/4) for the content
    assert est.price_source == "provider:claude" and est.batch_discount == 0.5
    assert est.cost_usd == pytest.approx((170 * 1.0 + 1000 * 5.0) / 1e6 * 0.5)


def test_no_max_tokens_assumes_the_default_cap_and_unpriced_is_none(services):
    est = run(_ops(services).estimate("gpt-4.1", ["one prompt", "another"], max_tokens=None))
    assert est.output_tokens_per_row == DEFAULT_OUTPUT_TOKENS and est.output_cap_assumed
    assert est.max_output_tokens == 2 * DEFAULT_OUTPUT_TOKENS
    assert est.cost_usd is None and est.price_source is None  # no price for gpt-4.1 or the provider
    run(services.ops.usage.set_budget(0.000001))
    _ops(services).check_budget(run(_ops(services).estimate("gpt-4.1", ["x"] * 100)))  # unpriced always passes


def test_a_job_above_the_remaining_budget_is_refused_with_both_numbers(services):
    ops = _ops(services)
    run(services.ops.usage.set_budget(0.01))
    rows = [[{"role": "system", "content": "Classify the sentiment."},
             {"role": "user", "content": f"Review {i}: it arrived late but works."}] for i in range(2000)]
    est = run(ops.estimate("gpt-4o-mini", rows, max_tokens=20))
    assert est.budget_daily_usd == 0.01 and est.budget_remaining_usd == pytest.approx(0.01)
    assert est.cost_usd > 0.01 and not est.fits_budget
    with pytest.raises(BudgetExceeded) as info:
        ops.check_budget(est)
    err = info.value
    assert err.status == 429 and err.code == "budget_exceeded"
    assert f"This job's estimate is ${est.cost_usd:.4f}" in err.message
    assert "more than the $0.0100 left of today's budget" in err.message and "Nothing was sent" in err.message
    assert "Retry-After" not in err.headers  # it would not fit a whole day either
    small = run(ops.estimate("gpt-4o-mini", rows[:10], max_tokens=20))
    assert small.fits_budget
    ops.check_budget(small)  # fits: no error
    run(services.ops.usage.set_budget(est.cost_usd * 1.5))
    assert run(ops.estimate("gpt-4o-mini", rows, max_tokens=20)).fits_budget
    double = run(ops.estimate("gpt-4o-mini", rows * 2, max_tokens=20))
    with pytest.raises(BudgetExceeded, match=r"more than the \$\d+\.\d{4} left") as info:
        ops.check_budget(double)
    assert info.value.headers == {}  # twice the job is above the whole daily budget too
    services.ledger.record(UsageRecord(model="gpt-4o-mini", cost_usd=est.cost_usd))  # today's spend so far
    after = run(ops.estimate("gpt-4o-mini", rows, max_tokens=20))
    assert after.budget_remaining_usd == pytest.approx(est.cost_usd * 0.5)
    with pytest.raises(BudgetExceeded, match="run it after 00:00 UTC") as info:
        ops.check_budget(after)
    assert f"more than the ${after.budget_remaining_usd:.4f} left" in info.value.message
    assert 0 < int(info.value.headers["Retry-After"]) <= 86400  # it fits a fresh day


def test_a_router_alias_is_estimated_with_its_first_served_target(services):
    est = run(_ops(services).estimate("cheap", ["hello world"], max_tokens=10))
    assert est.model == "cheap" and est.target == "api:openai/gpt-4o-mini"
    assert est.price_source == "model:gpt-4o-mini"  # the router alias has no price; its target's upstream does


def test_bad_input_is_refused_before_counting(services):
    ops = _ops(services)
    with pytest.raises(ModelNotFound):
        run(ops.estimate("no-such-model", ["x"]))
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        run(ops.estimate("gpt-4o-mini", ["x"], max_tokens=0))
    with pytest.raises(InvalidRequestError, match="Row 1"):
        run(ops.estimate("gpt-4o-mini", ["ok", 42]))


@needs_gguf
def test_a_local_model_is_counted_with_its_gguf(services):
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    rows = [[{"role": "user", "content": f"Summarise review {i}: great value, slow delivery."}] for i in range(500)]
    ops = _ops(services)
    est = run(ops.estimate(BUILTIN_ALIAS, rows, max_tokens=32, batch=True))
    assert est.tokenizer == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf" and est.target == f"local:{BUILTIN_ALIAS}"
    llama = Llama(model_path=str(GGUF), vocab_only=True, verbose=False)  # the engine's own rendering, as reference
    fmt = Jinja2ChatFormatter(llama.metadata["tokenizer.chat_template"],
                              eos_token=llama.detokenize([llama.token_eos()], special=True).decode(),
                              bos_token=llama.detokenize([llama.token_bos()], special=True).decode())
    want = sum(len(llama.tokenize(fmt(messages=r).prompt.encode(), add_bos=False, special=True)) for r in rows)
    assert est.prompt_tokens == want
    assert est.max_output_tokens == 500 * 32 and est.batch_discount == 1.0  # no batch discount locally
    assert est.cost_usd is None  # local models are unpriced until a price is set
    run(services.ops.usage.set_price("local", 0.0, 1.0, scope="provider"))
    priced = run(ops.estimate(BUILTIN_ALIAS, rows, max_tokens=32))
    assert priced.price_source == "provider:local" and priced.cost_usd == pytest.approx(500 * 32 / 1e6)


@needs_gguf
def test_a_user_alias_brings_its_own_max_tokens(services):
    run(services.ops.aliases.create({"alias": "terse", "repo": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                     "filename": "SmolLM2-135M-Instruct.Q4_1.gguf", "snapshot": "bundled",
                                     "request_params": {"max_tokens": 64}}))
    est = run(_ops(services).estimate("terse", ["hi"] * 3))
    assert est.output_tokens_per_row == 64 and not est.output_cap_assumed and est.tokenizer.startswith("gguf:")
    assert run(_ops(services).estimate("terse", ["hi"], max_tokens=8)).output_tokens_per_row == 8
