"""Private: the one event loop, on its own thread, that runs all bodhi I/O in a process.

A Jupyter kernel already runs an event loop, so `asyncio.run` is not allowed there and
nest_asyncio would patch the kernel's loop. Instead, sync calls submit coroutines to
this private loop and wait; async calls await the same future with `wrap_future`, so
the kernel's own loop is never blocked and no httpx client is shared between loops.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")


async def _aclose_when_idle(agen: Any) -> None:
    """Close an async generator once a cancelled step has finished unwinding."""
    # No event to wait on: yield to the loop until the cancelled step has unwound.
    while getattr(agen, "ag_running", False):  # noqa: ASYNC110
        await asyncio.sleep(0)
    aclose = getattr(agen, "aclose", None)
    if aclose is not None:
        await aclose()

__all__ = ["LoopThread"]

log = logging.getLogger(__name__)


class LoopThread:
    _instance: LoopThread | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bodhi_nb-io", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> LoopThread:
        with cls._guard:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
                atexit.register(cls._instance.stop)
            return cls._instance

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run on the private loop and wait (from any thread but the loop's own)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("bodhi_nb sync calls cannot be made from its own I/O thread; use the async twin.")
        return self.submit(coro).result(timeout)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await from any other loop (e.g. the kernel's) without blocking it."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator living on the private loop from sync code.

        A KeyboardInterrupt (Jupyter's interrupt) or an early `break` cancels the step in
        flight and then closes the iterator on its loop, which closes the upstream.
        """
        step: Future[T] | None = None
        try:
            while True:
                step = self.submit(agen.__anext__())  # type: ignore[arg-type]
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if step is not None and not step.done():
                step.cancel()
            self.run(_aclose_when_idle(agen))

    async def aiterate(self, agen: AsyncIterator[T]) -> AsyncIterator[T]:
        """Consume an async iterator living on the private loop from another loop.

        One pump task on the private loop drives the iterator and hands items over; the
        iterator is only ever touched by that task, so cancelling (Stop in a panel, a
        consumer breaking out) closes it cleanly on its own loop, upstream included.
        """
        caller = asyncio.get_running_loop()
        if caller is self.loop:
            async for item in agen:
                yield item
            return
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for item in agen:
                    caller.call_soon_threadsafe(queue.put_nowait, ("item", item))
                caller.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
                caller.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            finally:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()

        fut = self.submit(pump())
        try:
            while True:
                kind, value = await queue.get()
                if kind == "item":
                    yield value
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            fut.cancel()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel whatever still runs on the loop, let it unwind, then end the thread.

        Called at interpreter exit: a task left pending on a loop that merely stops is
        destroyed later by the garbage collector, which prints "Task was destroyed but it
        is pending!" as the process exits.
        """
        if not self.thread.is_alive() or threading.current_thread() is self.thread:
            return
        try:
            self.submit(_drain()).result(timeout)
        except (FutureTimeout, CancelledError, RuntimeError):  # a task that will not unwind must not hang the exit
            log.debug("bodhi_nb I/O loop: tasks still running at exit")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()


async def _drain() -> None:
    """Cancel every other task on this loop and wait for them, then close async generators."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()
