"""The map job: one request body over many rows, the way long jobs need (docs/ARCHITECTURE.md).

A fixed pool of `concurrency` worker tasks pulls row numbers from one shared iterator, so
at most `concurrency` requests are in flight and memory does not grow with queued rows.
Each request goes through the gateway (the one forwarding path) with the response cache on
by default, so a re-run answers every finished row from the cache: an interrupted job
resumes. A 429 closes a shared gate for its Retry-After (or backoff), which pauses every
worker, not only the row that hit it. A failed row never stops the others.

`Bodhi.map` (notebook/batch.py) turns lists, Series and DataFrames into rows and draws the
progress bar; the rules of the job itself live here, once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ...objs.errors import BodhiError, InvalidRequestError, StructuredOutputError
from ...objs.openai import completion_text
from ...services.retry import RateGate, hinted_delay, retry_delay, retryable
from ..gateway import Gateway
from ..origin import set_surface
from ._chat import structured_format

__all__ = ["CANCELLED", "MapJob", "MapOps", "MapResult", "OnRow", "RowBodies", "RowMessages"]

CANCELLED = "Cancelled before this row finished; run map again to resume (finished rows come from the cache)."

RowMessages = Callable[[int], list[dict[str, Any]]]
"""Row number -> that row's messages (may raise BodhiError, KeyError, IndexError, ValueError)."""
RowBodies = Callable[[int], tuple[dict[str, Any], "str | None"]]
"""Row number -> that row's whole request body and its ledger key (a batch file's line)."""
OnRow = Callable[[int, "MapResult", Any, "BodhiError | None"], Awaitable[None]]
"""Awaited with each finished row: its number, result, raw answer (None on failure) and error."""


@dataclass
class MapResult:
    """One row's outcome. `error` is None on success, else the OpenAI error message."""

    text: str | None = None
    parsed: Any = None
    error: str | None = None
    usage: dict[str, Any] | None = None
    latency_s: float = 0.0
    attempts: int = 0
    cached: bool = False
    target: str | None = None  # the router-alias target that answered (None: not a router alias)


class MapJob:
    """Runs on the private loop; the caller's thread reads its counters for the progress bar."""

    def __init__(self, gateway: Gateway, n: int, messages: RowMessages, body: dict[str, Any], *, concurrency: int,
                 max_retries: int, cache: bool, parse: Callable[[str], Any] | None,
                 tail: dict[str, Any] | None = None, rows: Iterable[int] | None = None,
                 bodies: RowBodies | None = None, on_row: OnRow | None = None, keep: bool = True,
                 surface: str = "map", endpoint: str = "chat/completions",
                 take: Callable[[], Awaitable[int | None]] | None = None) -> None:
        """`rows` (default: all of 0..n-1) are the row numbers to send, in order, or `take` awaits
        each next one (None: no more; a batch file read as it is sent, whose `n` is 0: not known); `bodies` gives a
        row's whole request body and ledger key instead of `body` + `messages` (a batch file's
        lines); `on_row` sees each finished row with its raw answer or error (awaited on the
        job's loop), and `keep=False` keeps no per-row results in memory (a 100,000-row batch)."""
        self.gateway, self.n, self.messages, self.body, self.parse = gateway, n, messages, body, parse
        self.tail = tail or {}  # fields after the messages (response_format), where Bodhi.chat puts them
        self.concurrency, self.max_retries, self.cache = concurrency, max_retries, cache
        self.bodies, self.on_row, self.keep, self.surface = bodies, on_row, keep, surface
        self.endpoint = endpoint  # chat/completions, or embeddings (a batch's lines)
        self.results: list[MapResult | None] = [None] * n if keep else []
        self.done = self.failed = self.tokens = self.from_cache = 0
        self.gate = RateGate()
        self.rng = random.Random()
        self._next = iter(range(n) if rows is None else rows)
        self._take = take
        self._workers: list[asyncio.Task[None]] = []
        self._stopped = False

    def stop(self) -> None:
        """Cancel in-flight requests (call on the job's loop); `run` then returns what finished."""
        self._stopped = True
        for w in self._workers:
            w.cancel()

    async def run(self) -> list[MapResult]:
        set_surface(self.surface)  # this task and its workers: the usage ledger records rows as "map"
        if not self._stopped:
            workers = self.concurrency if self._take is not None else min(self.concurrency, self.n)
            self._workers = [asyncio.ensure_future(self._worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*self._workers, return_exceptions=True)
        except asyncio.CancelledError:
            self.stop()
            await asyncio.gather(*self._workers, return_exceptions=True)
        return [r if r is not None else MapResult(error=CANCELLED) for r in self.results]

    async def _worker(self) -> None:
        while True:
            i = next(self._next, None) if self._take is None else await self._take()
            if i is None:
                return
            result, data, exc = await self._row(i)
            if self.keep:
                self.results[i] = result
            self.done += 1
            self.failed += result.error is not None
            self.from_cache += result.cached
            self.tokens += int((result.usage or {}).get("total_tokens") or 0)
            if self.on_row is not None:
                await self.on_row(i, result, data, exc)

    async def _row(self, i: int) -> tuple[MapResult, Any, BodhiError | None]:
        t0 = time.perf_counter()
        key = None
        try:
            if self.bodies is not None:
                body, key = self.bodies(i)
            else:
                # The shape Bodhi.chat sends (objs/openai.chat_body, then Gateway.completion), key for key.
                body = {**self.body, "messages": self.messages(i), **self.tail, "stream": False}
        except BodhiError as exc:
            return MapResult(error=exc.message), None, exc
        except (KeyError, IndexError, ValueError) as exc:
            return MapResult(error=f"The template could not be filled for this row: {exc!r}"), None, None
        attempt = 0
        while True:
            await self.gate.wait()
            attempt += 1
            try:
                opened = await self.gateway.open_chat(body, cache=self.cache, request_key=key, endpoint=self.endpoint)
                try:
                    if not opened.response.ok:
                        raise await opened.response.error()
                    data = (await opened.response.aread_json())[1]
                finally:
                    await opened.response.aclose()
            except BodhiError as exc:
                if attempt > self.max_retries or not retryable(exc):
                    return (MapResult(error=exc.message, latency_s=time.perf_counter() - t0, attempts=attempt),
                            None, exc)
                delay = retry_delay(exc, attempt, self.rng)
                if exc.status == 429 or hinted_delay(exc.headers) is not None:
                    self.gate.hold(delay)  # the whole batch slows down, not only this row
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # noqa: BLE001 - a row's failure never aborts the batch
                return (MapResult(error=f"{type(exc).__name__}: {exc}", latency_s=time.perf_counter() - t0,
                                  attempts=attempt), None, None)
            out = self._result(data, opened.cached, attempt, time.perf_counter() - t0)
            out.target = opened.target
            return out, data, None

    def _result(self, data: Any, cached: bool, attempts: int, latency: float) -> MapResult:
        if self.endpoint != "chat/completions":  # embeddings: the vectors are in `data`
            return MapResult(usage=data.get("usage") if isinstance(data, dict) else None, latency_s=latency,
                             attempts=attempts, cached=cached)
        text = completion_text(data)
        if text is None:
            return MapResult(error="The upstream answered with something that is not a chat completion.",
                             latency_s=latency, attempts=attempts, cached=cached)
        out = MapResult(text=text, usage=data.get("usage"), latency_s=latency, attempts=attempts, cached=cached)
        if self.parse is not None:
            try:
                out.parsed = self.parse(text)
            except StructuredOutputError as exc:
                out.error = exc.message
            except Exception as exc:  # noqa: BLE001 - any parser error is this row's error
                out.error = f"The reply does not match response_format: {str(exc).splitlines()[0][:300]}"
        return out


class MapOps:
    """Map jobs over the gateway; every surface that runs one (`Bodhi.map`, `amap`) gets it here."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def job(self, model: str, n: int, messages: RowMessages, *, concurrency: int = 8, max_retries: int = 4,
            cache: bool = True, response_format: Any = None, **params: Any) -> MapJob:
        """A job of `n` rows, not started (`await job.run()` on the loop that owns the gateway).
        `response_format` is the one structured-output rule `Bodhi.chat` uses too."""
        if not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidRequestError("concurrency must be a positive integer.", param="concurrency")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidRequestError("max_retries must be zero or a positive integer.", param="max_retries")
        payload, parse = structured_format(response_format)
        body = {**params, "model": model}
        body.pop("stream", None)
        body.pop("messages", None)
        return MapJob(self._gateway, n, messages, body, concurrency=concurrency, max_retries=max_retries,
                      cache=cache, parse=parse, tail={"response_format": payload} if payload is not None else None)
