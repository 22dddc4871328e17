"""BatchesPanel: every batch job of this BODHI_HOME (any kernel's or the server's), with its progress."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import ipywidgets as W

from ..client import Bodhi
from ._tasks import TaskRunner, html_table

__all__ = ["BatchesPanel"]

_ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


def _when(ts: Any) -> str:
    return dt.datetime.fromtimestamp(int(ts), dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else ""


def _progress(b: dict[str, Any]) -> str:
    c = b["request_counts"]
    done = c["completed"] + c["failed"]
    pct = 100 * done / c["total"] if c["total"] else 0
    return f"{done:,}/{c['total']:,} ({pct:.0f} %)"


class BatchesPanel(W.VBox):
    """A table of batch jobs (status, progress, where they run), Refresh, and Cancel for one job."""

    def __init__(self, bodhi: Bodhi) -> None:
        self.bodhi = bodhi
        self.table = W.HTML()
        self.refresh_btn = W.Button(description="Refresh", icon="refresh")
        self.selector = W.Dropdown(description="Job", options=[], style={"description_width": "60px"})
        self.cancel_btn = W.Button(description="Cancel job", icon="stop", button_style="warning")
        self.status = W.HTML()
        self.runner = TaskRunner(self.status)
        self.refresh_btn.on_click(lambda _: self.refresh())
        self.cancel_btn.on_click(self._on_cancel)
        super().__init__([
            W.HTML("<h3>Batch jobs</h3><div>Jobs from <code>b.map(..., via=\"batch\")</code> and "
                   "<code>bodhi/v1/batches</code>: at the provider for OpenAI- and Anthropic-format API models, "
                   "here for every other model. They go on after a restart.</div>"),
            self.table, W.HBox([self.refresh_btn, self.selector, self.cancel_btn]), self.status,
        ])
        self.refresh()

    def refresh(self) -> None:
        jobs = self.bodhi.batches.list()
        self.table.value = html_table(
            ["id", "status", "progress", "failed", "created", "output file"],
            [[j["id"], j["status"], _progress(j), f"{j['request_counts']['failed']:,}", _when(j["created_at"]),
              j.get("output_file_id") or ""] for j in jobs], empty="No batch jobs yet.")
        self.selector.options = [j["id"] for j in jobs if j["status"] in _ACTIVE]
        self.cancel_btn.disabled = not self.selector.options

    def _on_cancel(self, _: Any = None) -> None:
        job_id = self.selector.value
        if not job_id:
            return

        async def work() -> str:
            # The facade's sync calls wait on bodhi_nb's own loop: off the kernel's loop.
            await asyncio.to_thread(lambda: self.bodhi.batches.get(job_id).cancel())
            await asyncio.to_thread(self.refresh)
            return f"Cancelling {job_id}; its finished rows are kept."

        self.runner.start(work, busy="Cancelling…", buttons=(self.cancel_btn,))
