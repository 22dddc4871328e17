"""`Bodhi.map` / `amap`: one prompt over a list, Series or DataFrame, done the way long jobs need.

Why a module of its own: a real notebook workload is one prompt over thousands of rows,
and the loop around it (a concurrency cap, retries that respect rate limits, per-row
errors, progress, resume after a crash) is where hand-written code goes wrong.

How it runs: a fixed pool of `concurrency` worker tasks on bodhi_nb's private I/O loop
pulls row numbers from one shared iterator, so at most `concurrency` requests are in
flight and memory does not grow with queued rows. Each request goes through the
gateway (the one forwarding path) with the response cache on by default, so a re-run
answers every finished row from the cache: an interrupted job resumes. A 429 closes a
shared gate for its Retry-After (or backoff), which pauses every worker, not only the
row that hit it. The caller's thread owns the tqdm bar and polls the job's counters, so
the bar is drawn where the cell runs, and an interrupt there stops the job at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import string
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..objs.errors import BodhiError, InvalidRequestError, StructuredOutputError
from ..server_core.operations import structured_format
from ..services.retry import RateGate, hinted_delay, retry_delay, retryable
from ..services.usage import set_surface

if TYPE_CHECKING:
    from ..server_core.gateway import Gateway
    from .client import Bodhi

__all__ = ["CANCELLED", "MapResult", "arun_map", "run_map"]

CANCELLED = "Cancelled before this row finished; run map again to resume (finished rows come from the cache)."


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


# -- inputs and response formats --------------------------------------------------------------


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


@dataclass
class _Rows:
    n: int
    messages: Callable[[int], list[dict[str, Any]]]
    frame: Any = None  # the input DataFrame or Series (for the output frame)


def _rows(inputs: Any, template: str | None, system: str | None) -> _Rows:
    pd = sys.modules.get("pandas")
    sys_msg = [{"role": "system", "content": system}] if system else []

    def user(text: str) -> list[dict[str, Any]]:
        return [*sys_msg, {"role": "user", "content": text}]

    if pd is not None and isinstance(inputs, pd.DataFrame):
        if not template:
            raise InvalidRequestError("A DataFrame needs a template over its columns, e.g. "
                                      "template=\"Classify the sentiment of: {review}\".", param="template")
        missing = [f for f in _fields(template) if f and f not in inputs.columns]
        if missing or any(not f for f in _fields(template)):
            raise InvalidRequestError(f"The template names {missing or ['{}']} but the DataFrame's columns are "
                                      f"{list(inputs.columns)}.", param="template")
        cols = {f: inputs[f].tolist() for f in dict.fromkeys(_fields(template))}
        return _Rows(len(inputs), lambda i: user(template.format_map({f: c[i] for f, c in cols.items()})), inputs)
    if pd is not None and isinstance(inputs, pd.Series):
        values = inputs.tolist()
        return _Rows(len(values), lambda i: user(_fill(template, values[i])), inputs)
    if isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Sequence):
        raise InvalidRequestError("inputs must be a list of strings, a list of message lists, a pandas Series, "
                                  "or a DataFrame with a template.", param="inputs")
    items = list(inputs)

    def row(i: int) -> list[dict[str, Any]]:
        x = items[i]
        if isinstance(x, str):
            return user(_fill(template, x))
        if isinstance(x, list):
            return [*sys_msg, *x]
        raise InvalidRequestError(f"inputs[{i}] is a {type(x).__name__}; give a string or a list of messages.",
                                  param=f"inputs[{i}]")

    return _Rows(len(items), row)


def _fill(template: str | None, value: Any) -> str:
    return str(value) if not template else template.format(value, input=value)


def _response_format(rf: Any) -> tuple[dict[str, Any] | None, Callable[[str], Any] | None]:
    """The request's `response_format` and the parser that fills `MapResult.parsed` (the one
    rule `Bodhi.chat` uses too)."""
    return structured_format(rf)


# -- the job ----------------------------------------------------------------------------------


class _Job:
    """Runs on the private loop; the caller's thread reads its counters for the progress bar."""

    def __init__(self, gateway: Gateway, rows: _Rows, body: dict[str, Any], *, concurrency: int,
                 max_retries: int, cache: bool, parse: Callable[[str], Any] | None) -> None:
        self.gateway, self.rows, self.body, self.parse = gateway, rows, body, parse
        self.concurrency, self.max_retries, self.cache = concurrency, max_retries, cache
        self.results: list[MapResult | None] = [None] * rows.n
        self.done = self.failed = self.tokens = self.from_cache = 0
        self.gate = RateGate()
        self.rng = random.Random()
        self._next = iter(range(rows.n))
        self._workers: list[asyncio.Task[None]] = []
        self._stopped = False

    def stop(self) -> None:
        """Cancel in-flight requests (call on the job's loop); `run` then returns what finished."""
        self._stopped = True
        for w in self._workers:
            w.cancel()

    async def run(self) -> list[MapResult]:
        set_surface("map")  # this task and its workers: the usage ledger records rows as "map"
        if not self._stopped:
            self._workers = [asyncio.ensure_future(self._worker()) for _ in range(min(self.concurrency, self.rows.n))]
        try:
            await asyncio.gather(*self._workers, return_exceptions=True)
        except asyncio.CancelledError:
            self.stop()
            await asyncio.gather(*self._workers, return_exceptions=True)
        return [r if r is not None else MapResult(error=CANCELLED) for r in self.results]

    async def _worker(self) -> None:
        for i in self._next:
            result = await self._row(i)
            self.results[i] = result
            self.done += 1
            self.failed += result.error is not None
            self.from_cache += result.cached
            self.tokens += int((result.usage or {}).get("total_tokens") or 0)

    async def _row(self, i: int) -> MapResult:
        t0 = time.perf_counter()
        try:
            body = {**self.body, "messages": self.rows.messages(i)}
        except BodhiError as exc:
            return MapResult(error=exc.message)
        except (KeyError, IndexError, ValueError) as exc:
            return MapResult(error=f"The template could not be filled for this row: {exc!r}")
        attempt = 0
        while True:
            await self.gate.wait()
            attempt += 1
            try:
                opened = await self.gateway.open_chat(body, cache=self.cache)
                try:
                    if not opened.response.ok:
                        raise await opened.response.error()
                    data = (await opened.response.aread_json())[1]
                finally:
                    await opened.response.aclose()
            except BodhiError as exc:
                if attempt > self.max_retries or not retryable(exc):
                    return MapResult(error=exc.message, latency_s=time.perf_counter() - t0, attempts=attempt)
                delay = retry_delay(exc, attempt, self.rng)
                if exc.status == 429 or hinted_delay(exc.headers) is not None:
                    self.gate.hold(delay)  # the whole batch slows down, not only this row
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # noqa: BLE001 - a row's failure never aborts the batch
                return MapResult(error=f"{type(exc).__name__}: {exc}", latency_s=time.perf_counter() - t0,
                                 attempts=attempt)
            out = self._result(data, opened.cached, attempt, time.perf_counter() - t0)
            out.target = opened.target
            return out

    def _result(self, data: Any, cached: bool, attempts: int, latency: float) -> MapResult:
        try:
            text = data["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
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


# -- progress and the two entry points -----------------------------------------------------------


class _Progress:
    """tqdm's notebook-aware bar (ipywidgets in JupyterLab, text in a terminal), drawn by the caller."""

    def __init__(self, job: _Job, enabled: bool, desc: str) -> None:
        self.job = job
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=job.rows.n, desc=desc, unit="row", dynamic_ncols=True)

    def show(self) -> None:
        if self.bar is None:
            return
        j = self.job
        if j.done != self.bar.n:
            self.bar.set_postfix(failed=j.failed, cached=j.from_cache, tokens=j.tokens, refresh=False)
            self.bar.update(j.done - self.bar.n)

    def close(self, interrupted: bool) -> None:
        if self.bar is not None:
            self.show()
            if interrupted:
                self.bar.set_description(f"{self.bar.desc} (interrupted)", refresh=False)
            self.bar.close()


def _prepare(b: Bodhi, model: str, inputs: Any, template: str | None, system: str | None, concurrency: int,
             max_retries: int, cache: bool, response_format: Any, params: dict[str, Any]) -> tuple[_Job, _Rows]:
    if not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidRequestError("concurrency must be a positive integer.", param="concurrency")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidRequestError("max_retries must be zero or a positive integer.", param="max_retries")
    rows = _rows(inputs, template, system)
    payload, parse = _response_format(response_format)
    body = {**params, "model": model}
    body.pop("stream", None)
    if payload is not None:
        body["response_format"] = payload
    job = _Job(b.services.gateway, rows, body, concurrency=concurrency, max_retries=max_retries, cache=cache,
               parse=parse)
    return job, rows


def run_map(b: Bodhi, model: str, inputs: Any, *, template: str | None = None, system: str | None = None,
            concurrency: int = 8, max_retries: int = 4, cache: bool = True, response_format: Any = None,
            progress: bool = True, **params: Any) -> Any:
    """See `Bodhi.map`. An interrupt (Ctrl-C, the notebook's stop button) returns what finished."""
    if threading.current_thread() is b._loop.thread:
        raise RuntimeError("Bodhi.map cannot be called from bodhi_nb's own I/O thread; use `await b.amap(...)`.")
    job, rows = _prepare(b, model, inputs, template, system, concurrency, max_retries, cache, response_format, params)
    b.route(model)  # a name nothing serves fails once, here, not once per row
    bar = _Progress(job, progress, model)
    fut = b._loop.submit(job.run())
    interrupted = False
    try:
        while True:
            try:
                results = fut.result(timeout=0.1)
                break
            except concurrent.futures.TimeoutError:
                bar.show()
    except KeyboardInterrupt:
        interrupted = True
        b._loop.loop.call_soon_threadsafe(job.stop)
        results = fut.result()
    finally:
        bar.close(interrupted)
    return _output(results, rows, response_format)


async def arun_map(b: Bodhi, model: str, inputs: Any, *, template: str | None = None, system: str | None = None,
                   concurrency: int = 8, max_retries: int = 4, cache: bool = True, response_format: Any = None,
                   progress: bool = True, **params: Any) -> Any:
    """See `Bodhi.amap`. Cancelling the awaiting task stops in-flight requests and returns what finished."""
    job, rows = _prepare(b, model, inputs, template, system, concurrency, max_retries, cache, response_format, params)
    await b._loop.arun(b.ops.models.resolve(model))  # a name nothing serves fails once, not once per row
    bar = _Progress(job, progress, model)
    fut = b._loop.submit(job.run())
    waiter = asyncio.wrap_future(fut)
    interrupted = False
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=0.1)
            if done:
                results = waiter.result()
                break
            bar.show()
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        b._loop.loop.call_soon_threadsafe(job.stop)
        results = await asyncio.wrap_future(fut) if not fut.done() else fut.result()
    finally:
        bar.close(interrupted)
    return _output(results, rows, response_format)


def _output(results: list[MapResult], rows: _Rows, response_format: Any) -> Any:
    """A list for list inputs; a new DataFrame (input columns, reply, error, parsed fields) for pandas inputs."""
    if rows.frame is None:
        return results
    import pandas as pd

    frame = rows.frame.to_frame(name=rows.frame.name if rows.frame.name is not None else "input") \
        if isinstance(rows.frame, pd.Series) else rows.frame.copy()
    frame["reply"] = [r.text for r in results]
    frame["error"] = [r.error for r in results]
    if response_format is not None:
        extra = pd.DataFrame([_as_dict(r.parsed) for r in results], index=frame.index)
        extra.columns = [f"{c}_parsed" if c in frame.columns else c for c in extra.columns]
        frame = pd.concat([frame, extra], axis=1)
    return frame


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return dict(value.model_dump())
    return dict(value) if isinstance(value, dict) else {"parsed": value}
