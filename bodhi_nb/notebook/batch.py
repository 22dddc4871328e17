"""`Bodhi.map` / `amap`: one prompt over a list, Series or DataFrame, done the way long jobs need.

Why a module of its own: a real notebook workload is one prompt over thousands of rows,
and the loop around it (a concurrency cap, retries that respect rate limits, per-row
errors, progress, resume after a crash) is where hand-written code goes wrong.

The job itself (worker pool, retries, gate, cache resume) is `ops.map` in
server_core/operations/_map.py; this module turns a caller's inputs into rows, draws the
progress bar in the caller's thread (so it appears where the cell runs, and an interrupt
there stops the job at once), and shapes the output.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import string
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..objs.errors import InvalidRequestError
from ..objs.openai import build_messages
from ..server_core.operations import CANCELLED, MapJob, MapResult
from ._batches import BatchJob, submit

if TYPE_CHECKING:
    from ..server_core.operations import Operations
    from ._loop_thread import LoopThread

__all__ = ["CANCELLED", "MapResult", "arun_map", "estimate_rows", "run_map", "submit_batch"]


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

    def user(text: str) -> list[dict[str, Any]]:
        return build_messages(text, system)  # the one system-prompt rule, as Bodhi.chat

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
            return build_messages(x, system)
        raise InvalidRequestError(f"inputs[{i}] is a {type(x).__name__}; give a string or a list of messages.",
                                  param=f"inputs[{i}]")

    return _Rows(len(items), row)


def _fill(template: str | None, value: Any) -> str:
    return str(value) if not template else template.format(value, input=value)


# -- progress and the two entry points -----------------------------------------------------------


class _Progress:
    """tqdm's notebook-aware bar (ipywidgets in JupyterLab, text in a terminal), drawn by the caller."""

    def __init__(self, job: MapJob, enabled: bool, desc: str) -> None:
        self.job = job
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=job.n, desc=desc, unit="row", dynamic_ncols=True)

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


def _prepare(ops: Operations, model: str, inputs: Any, template: str | None, system: str | None, concurrency: int,
             max_retries: int, cache: bool, response_format: Any, params: dict[str, Any]) -> tuple[MapJob, _Rows]:
    rows = _rows(inputs, template, system)
    job = ops.map.job(model, rows.n, rows.messages, concurrency=concurrency, max_retries=max_retries, cache=cache,
                        response_format=response_format, **params)
    return job, rows


def estimate_rows(ops: Operations, loop: LoopThread, model: str, inputs: Any, *, template: str | None = None,
                  system: str | None = None, batch: bool = False, max_tokens: int | None = None,
                  **params: Any) -> dict[str, Any]:
    """See `Bodhi.estimate`: rows, tokens and cost, nothing sent."""
    rows = _rows(inputs, template, system)
    cap = max_tokens if max_tokens is not None else params.get("max_completion_tokens")
    est = loop.run(ops.estimate.estimate(model, (rows.messages(i) for i in range(rows.n)), max_tokens=cap,
                                         batch=batch))
    return dict(est.public())


def _refuse_over_budget(ops: Operations, loop: LoopThread, model: str, rows: _Rows, params: dict[str, Any],
                        batch: bool) -> None:
    """With a daily budget in force, a job whose estimate is above what is left of it is refused
    before it starts, naming both numbers (operations/_estimate.py)."""
    if loop.run(ops.usage.budget()).daily_usd is None:
        return
    cap = params.get("max_tokens", params.get("max_completion_tokens"))
    est = loop.run(ops.estimate.estimate(model, (rows.messages(i) for i in range(rows.n)),
                                         max_tokens=cap if isinstance(cap, int) else None, batch=batch))
    ops.estimate.check_budget(est)


def submit_batch(ops: Operations, loop: LoopThread, model: str, inputs: Any, *, template: str | None = None,
                 system: str | None = None, response_format: Any = None, **params: Any) -> BatchJob:
    """See `Bodhi.map(via="batch")`: the same rows as `map`, one batch job."""
    rows = _rows(inputs, template, system)
    loop.run(ops.models.resolve(model))  # a name nothing serves fails here, before a file is written
    _refuse_over_budget(ops, loop, model, rows, params, batch=True)
    return submit(ops, loop, model, rows, response_format=response_format, output=_output, **params)


def run_map(ops: Operations, loop: LoopThread, model: str, inputs: Any, *, template: str | None = None, system: str | None = None,
            concurrency: int = 8, max_retries: int = 4, cache: bool = True, response_format: Any = None,
            progress: bool = True, **params: Any) -> Any:
    """See `Bodhi.map`. An interrupt (Ctrl-C, the notebook's stop button) returns what finished."""
    if threading.current_thread() is loop.thread:
        raise RuntimeError("Bodhi.map cannot be called from bodhi_nb's own I/O thread; use `await b.amap(...)`.")
    job, rows = _prepare(ops, model, inputs, template, system, concurrency, max_retries, cache, response_format, params)
    loop.run(ops.models.resolve(model))  # a name nothing serves fails once, here, not once per row
    _refuse_over_budget(ops, loop, model, rows, params, batch=False)
    bar = _Progress(job, progress, model)
    fut = loop.submit(job.run())
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
        loop.loop.call_soon_threadsafe(job.stop)
        results = fut.result()
    finally:
        bar.close(interrupted)
    return _output(results, rows, response_format)


async def arun_map(ops: Operations, loop: LoopThread, model: str, inputs: Any, *, template: str | None = None, system: str | None = None,
                   concurrency: int = 8, max_retries: int = 4, cache: bool = True, response_format: Any = None,
                   progress: bool = True, **params: Any) -> Any:
    """See `Bodhi.amap`. Cancelling the awaiting task stops in-flight requests and returns what finished."""
    job, rows = _prepare(ops, model, inputs, template, system, concurrency, max_retries, cache, response_format, params)
    await loop.arun(ops.models.resolve(model))  # a name nothing serves fails once, not once per row
    bar = _Progress(job, progress, model)
    fut = loop.submit(job.run())
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
        loop.loop.call_soon_threadsafe(job.stop)
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
