"""Bodhi: the in-notebook facade over the operations layer the server extension uses.

Every call works in a running Jupyter kernel: sync methods wait on bodhi_nb's private
I/O loop, async twins (`achat`, `acompletion`, ...) await it without blocking the
kernel's loop (docs/ARCHITECTURE.md, "Threads and loops"). No nest_asyncio. The facade
only adapts arguments into the contract's request objects and results into dicts; every
rule lives in `server_core/operations`.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel

from ..objs.errors import InvalidRequestError
from ..objs.openai import Messages, chat_body, delta_text, reply_text
from ..server_core.app_services import AppServices
from ..server_core.model_router import Candidate, ModelEntry, Resolved
from ..server_core.operations import DEFAULT_BATCH_SIZE, Operations, as_texts, structured_format
from ._batches import Batches
from ._loop_thread import LoopThread
from ._sections import Aliases, ApiModels, Cache, RouterAliases
from ._usage import UNSET, Prices, budget, usage_frame

__all__ = ["Bodhi", "ApiModels", "Aliases", "Cache", "RouterAliases"]  # (the sections live in _sections.py)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Bodhi:
    """Every model by name from a notebook: `Bodhi().chat("smollm2:135m", "Hi")`."""

    def __init__(self, home: str | Path | None = None, *, services: AppServices | None = None,
                 **options: Any) -> None:
        self.services = services or AppServices.shared(home, options)
        self._loop = LoopThread.get()
        self.api_models = ApiModels(self.ops, self._loop)
        self.aliases = Aliases(self.ops, self._loop)
        self.router_aliases = RouterAliases(self.ops, self._loop)
        # The response cache shared with the server and other kernels: `stats()`, `clear()`.
        self.cache = Cache(self.ops, self._loop)
        # Prices per model or provider for the usage ledger's costs: `set`, `list`, `delete`.
        self.prices = Prices(self.ops, self._loop)
        # Batch jobs of this BODHI_HOME (any kernel's or the server's): `list()`, `get(id)`.
        self.batches = Batches(self.ops, self._loop)

    @property
    def ops(self) -> Operations:
        """The operations layer every surface calls (docs/ARCHITECTURE.md)."""
        return self.services.ops

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run an operation's coroutine on bodhi_nb's private I/O loop and wait for it (for the CLI
        and the magic; notebook code uses the methods above)."""
        return self._loop.run(coro)

    def __repr__(self) -> str:
        return f"Bodhi(home={str(self.services.home)!r})"

    # -- routing --------------------------------------------------------------------------

    def models(self) -> builtins.list[str]:
        """Every model name the gateway serves (API models first, then local)."""
        return [m.id for m in self._loop.run(self.ops.models.list()).data]

    def model_entries(self) -> builtins.list[ModelEntry]:
        """Every served name with its source (`api`, `user`, `model`), for grouped pickers."""
        return self._loop.run(self.ops.models.entries())

    def route(self, model: str) -> Resolved:
        return self._loop.run(self.ops.models.resolve(model))

    def explain(self, model: str) -> builtins.list[Candidate]:
        return self._loop.run(self.ops.models.explain(model))

    # -- chat -----------------------------------------------------------------------------

    def completion(self, model: str, messages: Messages, *, system: str | None = None, cache: bool = False,
                   **params: Any) -> dict[str, Any]:
        """The full OpenAI chat.completion response as a dict; `cache=True` answers a repeated
        request from the response cache (`b.cache`) and stores new ones."""
        body = chat_body(model, messages, system=system, **params)
        return self._loop.run(self.ops.chat.completion(body, cache=cache))

    async def acompletion(self, model: str, messages: Messages, *, system: str | None = None, cache: bool = False,
                          **params: Any) -> dict[str, Any]:
        body = chat_body(model, messages, system=system, **params)
        return await self._loop.arun(self.ops.chat.completion(body, cache=cache))

    def stream(self, model: str, messages: Messages, *, system: str | None = None,
               **params: Any) -> Iterator[dict[str, Any]]:
        """Raw `chat.completion.chunk` dicts as they arrive."""
        body = chat_body(model, messages, system=system, **params)
        return self._loop.iterate(self._on_loop_chunks(body))

    async def astream(self, model: str, messages: Messages, *, system: str | None = None,
                      **params: Any) -> AsyncIterator[dict[str, Any]]:
        body = chat_body(model, messages, system=system, **params)
        async for chunk in self._loop.aiterate(self._on_loop_chunks(body)):
            yield chunk

    @overload
    def chat(self, model: str, messages: Messages, stream: Literal[False] = False, *, system: str | None = None,
             cache: bool = False, response_format: type[M], **params: Any) -> M: ...

    @overload
    def chat(self, model: str, messages: Messages, stream: Literal[False] = False, *, system: str | None = None,
             cache: bool = False, **params: Any) -> str: ...

    @overload
    def chat(self, model: str, messages: Messages, stream: Literal[True], *, system: str | None = None,
             cache: bool = False, **params: Any) -> Iterator[str]: ...

    def chat(self, model: str, messages: Messages, stream: bool = False, *, system: str | None = None,
             cache: bool = False, response_format: Any = None, **params: Any) -> Any:
        """The reply text, or with `stream=True` an iterator of text deltas (streams are never cached).

        `response_format=SomePydanticModel` returns a validated instance: the model's JSON schema
        is sent as a strict `json_schema` (local models get it as grammar-constrained JSON), and
        a reply that does not match raises `StructuredOutputError` with the reply in `.raw`. A
        dict is sent as given and the reply's JSON value is returned (text for `{"type": "text"}`).
        """
        if stream:
            return _texts(self.stream(model, messages, system=system, **_format(params, response_format)))
        if response_format is not None:
            body = chat_body(model, messages, system=system, **params)
            return self._loop.run(self.ops.chat.structured(body, response_format, cache=cache))
        return reply_text(self.completion(model, messages, system=system, cache=cache, **params))

    @overload
    async def achat(self, model: str, messages: Messages, stream: Literal[False] = False, *,
                    system: str | None = None, cache: bool = False, response_format: type[M], **params: Any) -> M: ...

    @overload
    async def achat(self, model: str, messages: Messages, stream: Literal[False] = False, *,
                    system: str | None = None, cache: bool = False, **params: Any) -> str: ...

    @overload
    async def achat(self, model: str, messages: Messages, stream: Literal[True], *, system: str | None = None,
                    cache: bool = False, **params: Any) -> AsyncIterator[str]: ...

    async def achat(self, model: str, messages: Messages, stream: bool = False, *, system: str | None = None,
                    cache: bool = False, response_format: Any = None, **params: Any) -> Any:
        """`chat` for async code (`response_format` as there)."""
        if stream:
            return _atexts(self.astream(model, messages, system=system, **_format(params, response_format)))
        if response_format is not None:
            body = chat_body(model, messages, system=system, **params)
            return await self._loop.arun(self.ops.chat.structured(body, response_format, cache=cache))
        return reply_text(await self.acompletion(model, messages, system=system, cache=cache, **params))

    # -- embeddings -----------------------------------------------------------------------

    def embed(self, texts: Any, model: str, *, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 4,
              progress: bool = True, **params: Any) -> builtins.list[builtins.list[float]]:
        """One float vector per text, in input order: `texts` is a str, a list of str or a pandas
        Series. Sent `batch_size` texts per request (a progress bar when there is more than one
        request); every local and API model name works, as for chat."""
        items = as_texts(texts)
        with _EmbedBar(len(items), batch_size, progress, model) as bar:
            return self._loop.run(self.ops.embeddings.embed(model, items, batch_size=batch_size,
                                                            concurrency=concurrency, on_batch=bar.update, **params))

    async def aembed(self, texts: Any, model: str, *, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 4,
                     progress: bool = True, **params: Any) -> builtins.list[builtins.list[float]]:
        """`embed` for async code."""
        items = as_texts(texts)
        with _EmbedBar(len(items), batch_size, progress, model) as bar:
            return await self._loop.arun(self.ops.embeddings.embed(model, items, batch_size=batch_size,
                                                                   concurrency=concurrency, on_batch=bar.update,
                                                                   **params))

    # -- batch ----------------------------------------------------------------------------

    def map(self, model: str, inputs: Any, *, template: str | None = None, system: str | None = None,
            concurrency: int = 8, max_retries: int = 4, cache: bool = True, response_format: Any = None,
            progress: bool = True, via: str = "requests", estimate: bool = False, **params: Any) -> Any:
        """One prompt over many rows: a list of str or of message lists gives a list of
        `MapResult` in input order; a DataFrame (with `template`, a `str.format` over its
        columns) or a Series gives a new DataFrame with `reply`, `error` and parsed fields.
        At most `concurrency` requests in flight; 429/5xx/connection failures are retried
        honouring Retry-After; a failed row never stops the others; an interrupt returns
        what finished, and a re-run resumes from the response cache.

        `via="batch"` submits the rows as one batch job instead (half price at an OpenAI- or
        Anthropic-format provider, run by the gateway for every other model) and returns its
        handle at once: `.status`, `.wait()`, `.result()` (this same DataFrame) and `.cancel()`;
        the job survives a kernel restart (`b.batches.get(id)`)."""
        from .batch import estimate_rows, run_map, submit_batch

        if estimate:  # what it would cost, nothing sent
            return estimate_rows(self.ops, self._loop, model, inputs, template=template, system=system,
                                 batch=via == "batch", **params)
        if via == "batch":
            return submit_batch(self.ops, self._loop, model, inputs, template=template, system=system,
                                response_format=response_format, **params)
        if via != "requests":
            raise InvalidRequestError('via must be "requests" or "batch".', param="via")
        return run_map(self.ops, self._loop, model, inputs, template=template, system=system, concurrency=concurrency,
                       max_retries=max_retries, cache=cache, response_format=response_format, progress=progress,
                       **params)

    def estimate(self, model: str, inputs: Any, *, template: str | None = None, system: str | None = None,
                 max_tokens: int | None = None, batch: bool = False) -> dict[str, Any]:
        """What `map` over these rows would cost, without sending anything: `rows`, `prompt_tokens`
        (the target's own tokenizer where known: the GGUF's for local models, tiktoken for OpenAI
        models when its files are available offline, else characters / 4, named in `tokenizer`),
        `max_output_tokens` (rows x the cap), `cost_usd` from `b.prices` (None when unpriced; half
        with `batch=True` at an OpenAI- or Anthropic-format provider) and what is left of today's budget."""
        from .batch import estimate_rows

        return estimate_rows(self.ops, self._loop, model, inputs, template=template, system=system, batch=batch,
                             max_tokens=max_tokens)

    async def amap(self, model: str, inputs: Any, *, template: str | None = None, system: str | None = None,
                   concurrency: int = 8, max_retries: int = 4, cache: bool = True, response_format: Any = None,
                   progress: bool = True, **params: Any) -> Any:
        """`map` for async code; cancelling the awaiting task returns what finished."""
        from .batch import arun_map

        return await arun_map(self.ops, self._loop, model, inputs, template=template, system=system, concurrency=concurrency,
                              max_retries=max_retries, cache=cache, response_format=response_format,
                              progress=progress, **params)

    # -- usage ----------------------------------------------------------------------------

    def usage(self, since: Any = None, until: Any = None, by: str | builtins.list[str] | None = None, *,
              limit: int | None = None, **filters: str | None) -> Any:
        """The usage ledger as a pandas DataFrame: every request (newest first), or with `by`
        ("model", "provider", "surface", "day", "notebook", or several) the sums of tokens,
        cost and requests per group, with the error rate. `since`/`until`: a date, a
        datetime, ISO text or a span such as "24h" or "7d"; `limit`: at most this many rows;
        `filters`: model=, provider=, surface=, notebook=."""
        return usage_frame(self.ops, self._loop, since, until, by, limit, **filters)

    def budget(self, daily_usd: float | None = UNSET) -> dict[str, Any]:
        """The daily budget (USD, UTC day) and today's spend; `daily_usd=` sets it, None removes
        it. Above it, priced models answer 429 budget_exceeded on every surface."""
        return budget(self.ops, self._loop, daily_usd)

    async def _on_loop_chunks(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        # Created lazily on the private loop so the upstream client belongs to it.
        async for chunk in self.ops.chat.stream(body):
            yield chunk

    def close(self) -> None:
        self._loop.run(self.services.aclose(final=False))


def _format(params: dict[str, Any], response_format: Any) -> dict[str, Any]:
    """A stream's params with `response_format` as the request carries it (nothing to validate)."""
    return params if response_format is None else {**params, "response_format": structured_format(response_format)[0]}


class _EmbedBar:
    """tqdm's notebook-aware bar for `embed`, shown only when there is more than one request.
    Created in the caller's thread (so it is drawn in the running cell); `update` may be
    called from bodhi_nb's I/O thread (tqdm locks its own state)."""

    def __init__(self, total: int, batch_size: int, enabled: bool, model: str) -> None:
        self.bar: Any = None
        if enabled and total > batch_size:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"embed {model}", unit="text", dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> _EmbedBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _texts(chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
    for c in chunks:
        t = delta_text(c)
        if t:
            yield t


async def _atexts(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    async for c in chunks:
        t = delta_text(c)
        if t:
            yield t
