"""Private: run a panel's slow work as a task on the kernel's loop, never blocking it.

Button callbacks are synchronous; they hand a coroutine to `TaskRunner.start`, which
schedules it on the running loop, keeps a reference (so it is not garbage collected),
disables the button meanwhile and shows loading, success or the error in the panel.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import ipywidgets as W

from ...objs.errors import BodhiError
from ...server_core.origin import set_surface

__all__ = ["TaskRunner", "status_html", "esc", "html_table"]

log = logging.getLogger(__name__)


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def html_table(head: list[str], rows: list[list[Any]], empty: str) -> str:
    """An escaped HTML table, or `empty` in italics when there are no rows."""
    if not rows:
        return f"<i>{esc(empty)}</i>"
    # Inline cell padding and rules: the notebook's CSS gives a widget's table none, and columns ran together.
    cell = 'style="padding:3px 12px 3px 0;text-align:left;vertical-align:top;border-bottom:1px solid #d0d7de"'
    h = "".join(f"<th {cell}>{esc(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td {cell}>{esc(v)}</td>" for v in r) + "</tr>" for r in rows)
    return (f'<table class="bodhi-table" style="border-collapse:collapse;margin:4px 0">'
            f"<thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>")


def status_html(kind: str, text: str) -> str:
    colour = {"loading": "#555", "ok": "#1a7f37", "error": "#cf222e", "info": "#555"}.get(kind, "#555")
    icon = {"loading": "⏳", "ok": "✔", "error": "✖", "info": ""}.get(kind, "")
    return f'<span class="bodhi-status bodhi-{kind}" style="color:{colour}">{icon} {esc(text)}</span>'


class TaskRunner:
    """Schedules coroutines for one panel and reports their outcome in `status`."""

    def __init__(self, status: W.HTML) -> None:
        self.status = status
        self.tasks: set[asyncio.Task[Any]] = set()

    def show(self, kind: str, text: str) -> None:
        self.status.value = status_html(kind, text)

    def start(self, work: Callable[[], Awaitable[str | None]], *, busy: str, buttons: tuple[W.Button, ...] = ()) -> asyncio.Task[Any]:
        loop = asyncio.get_event_loop()
        for b in buttons:
            b.disabled = True
        self.show("loading", busy)
        task = loop.create_task(self._guard(work, buttons))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _guard(self, work: Callable[[], Awaitable[str | None]], buttons: tuple[W.Button, ...]) -> None:
        set_surface("widget")  # this task's context: the usage ledger records panel requests as "widget"
        try:
            done = await work()
            if done:
                self.show("ok", done)
        except asyncio.CancelledError:
            self.show("info", "Stopped.")
        except BodhiError as exc:
            self.show("error", exc.message)
        except Exception as exc:  # shown in the panel rather than lost in the kernel log
            log.exception("bodhi_nb panel task failed")
            self.show("error", f"{type(exc).__name__}: {exc}")
        finally:
            for b in buttons:
                b.disabled = False

    async def wait(self) -> None:
        """Await every task started so far (tests, and callers that need the result)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
