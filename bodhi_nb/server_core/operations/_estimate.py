"""The cost estimate of a job (issue #21): its rows, prompt tokens, output cap and price, sent nowhere.

`Bodhi.estimate(model, df, template=...)`, `map(..., estimate=True)` and a batch job ask
here before anything starts, so a job that would not fit today's budget is refused with both
numbers instead of failing row by row halfway through. The rules, once:

- **Which target**: the name resolves as the gateway resolves it. A router alias is estimated
  with its first target that is served (the one the gateway tries first); its fallbacks are
  not priced.
- **Which tokenizer** (`services/token_count.py`): a local model's own GGUF; tiktoken for an
  OpenAI model name behind an `openai` or `openai_responses` API model; otherwise
  ceil(characters / 4). `Estimate.tokenizer` names the one used (and why, for the approximation).
- **Output**: every row is assumed to write its whole cap: `max_tokens` when given, else the
  user alias's own `max_tokens`, else `DEFAULT_OUTPUT_TOKENS` (256), flagged by
  `output_cap_assumed` (llama.cpp and the providers would otherwise write until the context
  or their own limit, which no estimate can bound).
- **Price**: the ledger's prices, looked up as the ledger prices a row (the name asked, then
  the upstream model, then the provider; a local model's provider is "local"); unpriced means
  `cost_usd` None, never 0. With `batch=True`, `BATCH_DISCOUNT` applies for the formats whose
  providers discount batch jobs (OpenAI's Batch API and Anthropic's Message Batches: 50 %).
- **Budget**: `budget_remaining_usd` is today's (UTC) limit less today's spend, read fresh;
  `check_budget` refuses a priced job whose estimate is above it (429 `budget_exceeded`).

Tokenizing, reading the GGUF and the alias files, and SQLite all run in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ...objs.errors import BudgetExceeded, InvalidRequestError, ModelNotFound, NotFoundError
from ...objs.model_alias import UserModelAlias
from ...services.local_models import LocalModels
from ...services.token_count import ApproxCounter, TokenCounter, count_chats, gguf_counter, openai_counter
from ...services.usage import Ledger
from ...services.usage.pricing import Price, cost_usd, price_for
from ..model_router import Destination, Local, ModelRouter

__all__ = ["BATCH_DISCOUNT", "BATCH_FORMATS", "DEFAULT_OUTPUT_TOKENS", "Estimate", "EstimateOps"]

DEFAULT_OUTPUT_TOKENS = 256  # per row, when neither the call nor the user alias sets max_tokens
BATCH_DISCOUNT = 0.5
BATCH_FORMATS = frozenset({"openai", "openai_responses", "anthropic"})  # api_format values whose batch APIs discount
_TIKTOKEN_FORMATS = frozenset({"openai", "openai_responses"})


@dataclass(frozen=True)
class Estimate:
    """What a job would send and cost; nothing was sent to find out."""

    model: str  # the name asked
    target: str  # what it resolved to: "api:<id>/<upstream model>" or "local:<alias>"
    rows: int
    prompt_tokens: int  # every row's messages, with the per-message overhead
    max_output_tokens: int  # rows x output_tokens_per_row: each row writing its whole cap
    output_tokens_per_row: int
    output_cap_assumed: bool  # True: no max_tokens given, DEFAULT_OUTPUT_TOKENS (or the alias's) assumed
    cost_usd: float | None  # None: no price is set for this model or provider
    price_source: str | None  # "model:<name>" or "provider:<id>": the price used
    batch_discount: float  # the factor applied to the price (0.5 or 1.0)
    tokenizer: str  # the counter's name ("gguf:...", "tiktoken:o200k_base", "approx:chars/4 (...)")
    budget_remaining_usd: float | None  # today's budget less today's spend; None: no budget set
    budget_daily_usd: float | None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.max_output_tokens

    @property
    def fits_budget(self) -> bool:
        """False only for a priced job above what is left of today's budget."""
        return (self.cost_usd is None or self.budget_remaining_usd is None
                or self.cost_usd <= self.budget_remaining_usd)

    def public(self) -> dict[str, Any]:
        """The JSON form (the HTTP answer, `Bodhi.estimate`'s dict)."""
        return {**asdict(self), "total_tokens": self.total_tokens, "fits_budget": self.fits_budget}


@dataclass(frozen=True)
class _Counts:
    prompt_tokens: int | None
    completion_tokens: int | None


def _cap(max_tokens: object) -> int | None:
    if max_tokens is None:
        return None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequestError("'max_tokens' must be a positive integer.", param="max_tokens")
    return max_tokens


def _messages(rows: Iterable[Any]) -> Iterator[Sequence[Mapping[str, Any]]]:
    """Each row as chat messages: a list of message objects, or a plain string (one user message)."""
    for i, row in enumerate(rows):
        if isinstance(row, str):
            yield ({"role": "user", "content": row},)
        elif isinstance(row, Sequence) and all(isinstance(m, Mapping) for m in row):
            yield row
        else:
            raise InvalidRequestError(f"Row {i} is not a list of chat messages (or a string).", param="rows")


class EstimateOps:
    """Estimates and the budget check before a job starts; every surface that runs one asks here."""

    def __init__(self, router: ModelRouter, ledger: Ledger | None, local_models: LocalModels) -> None:
        self._router = router
        self._ledger = ledger
        self._local = local_models

    async def estimate(self, model: str, rows: Iterable[Any], *, max_tokens: int | None = None,
                       batch: bool = False) -> Estimate:
        """Count and price `rows` (each the messages of one request) for `model`, sending nothing.
        `rows` is read once, in a worker thread (a generator over a DataFrame is fine)."""
        if not isinstance(model, str) or not model:
            raise InvalidRequestError("'model' must be a model name.", param="model")
        cap = _cap(max_tokens)
        dest = await self._destination(model)
        return await asyncio.to_thread(self._estimate, model, dest, rows, cap, bool(batch))

    def check_budget(self, est: Estimate) -> None:
        """Refuse (429 budget_exceeded) a priced job whose estimate is above what is left of today's budget."""
        if est.fits_budget:
            return
        assert est.cost_usd is not None and est.budget_remaining_usd is not None
        daily = est.budget_daily_usd if est.budget_daily_usd is not None else est.budget_remaining_usd
        headers: dict[str, str] = {}
        if est.cost_usd <= daily:  # it would fit a fresh day: say when that is
            headers["Retry-After"] = str(86400 - int(time.time()) % 86400)
            when = "run it after 00:00 UTC, raise the budget with Bodhi().budget(daily_usd=...)"
        else:
            when = "raise the budget with Bodhi().budget(daily_usd=...)"
        raise BudgetExceeded(
            f"This job's estimate is ${est.cost_usd:.4f} ({est.rows} rows, {est.prompt_tokens} prompt tokens and up to "
            f"{est.max_output_tokens} output tokens on {est.model}), more than the ${est.budget_remaining_usd:.4f} left "
            f"of today's budget of ${daily:.2f} (UTC day). Nothing was sent: {when}, lower max_tokens, or run fewer rows.",
            headers=headers)

    # -- internals ---------------------------------------------------------------------------

    async def _destination(self, model: str) -> Destination:
        """As the gateway resolves: API names from memory, local ones in a thread; a router
        alias by its first served target."""
        router = self._router
        if not router.index_is_current():
            await asyncio.to_thread(router.refresh_index)
        ra = router.router_alias(model)
        for name in (ra.targets if ra is not None else [model]):
            dest: Destination | None = router.resolve_api(name)
            if dest is not None:
                return dest
            try:
                return await asyncio.to_thread(router.resolve_target, name)
            except ModelNotFound:
                if ra is None:
                    raise
        assert ra is not None
        raise NotFoundError(f"No target of router alias '{ra.alias}' is served by an API model or local alias "
                            f"({', '.join(ra.targets)}).", param="model", code="model_not_found")

    def _counter(self, dest: Destination) -> TokenCounter:
        if isinstance(dest, Local):
            return gguf_counter(self._local.gguf_path(dest.alias))
        if dest.api_alias.api_format.value in _TIKTOKEN_FORMATS:
            return openai_counter(dest.upstream_model)
        return ApproxCounter()

    def _estimate(self, model: str, dest: Destination, rows: Iterable[Any], cap: int | None, batch: bool) -> Estimate:
        counter = self._counter(dest)
        per_row = count_chats(counter, _messages(rows))
        n, prompt = len(per_row), sum(per_row)
        if isinstance(dest, Local):
            provider, upstream, target = "local", dest.alias.alias, f"local:{dest.alias.alias}"
            alias_cap = dest.alias.request_params.max_tokens if isinstance(dest.alias, UserModelAlias) else None
            discount = 1.0
        else:
            provider, upstream = dest.api_alias.id, dest.upstream_model
            target, alias_cap = f"api:{provider}/{upstream}", None
            discount = BATCH_DISCOUNT if batch and dest.api_alias.api_format.value in BATCH_FORMATS else 1.0
        per = cap or alias_cap or DEFAULT_OUTPUT_TOKENS
        price: Price | None = None
        remaining = daily = None
        if self._ledger is not None:
            prices: dict[tuple[str, str], Price] = {(p.scope, p.name): p for p in self._ledger.prices()}
            price = price_for(prices, model, upstream, provider)
            state = self._ledger.budget()
            remaining, daily = state.remaining_usd, state.daily_usd
        cost = cost_usd(_Counts(prompt, n * per), price)
        return Estimate(model=model, target=target, rows=n, prompt_tokens=prompt, max_output_tokens=n * per,
                        output_tokens_per_row=per, output_cap_assumed=cap is None and alias_cap is None,
                        cost_usd=None if cost is None else cost * discount,
                        price_source=None if price is None else f"{price.scope}:{price.name}",
                        batch_discount=discount, tokenizer=counter.name, budget_remaining_usd=remaining,
                        budget_daily_usd=daily)
