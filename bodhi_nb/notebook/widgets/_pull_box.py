"""Private: the Local tab's Pull box: a GGUF reference in, a progress bar while it downloads.

The download is a blocking call, so it runs on a worker thread; progress is handed
back to the kernel's loop (`call_soon_threadsafe`) before it touches a widget. Stop
ends the transfer at once and keeps the partial file: Pull again resumes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ...server_core.operations import CancelFlag
from ..client import Bodhi
from ._tasks import TaskRunner

__all__ = ["PullBox"]


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:,.1f} MB"


class PullBox(W.VBox):
    def __init__(self, bodhi: Bodhi, on_pulled: Callable[[str], None]) -> None:
        self.bodhi = bodhi
        self.on_pulled = on_pulled
        self.ref = W.Text(description="Pull GGUF", placeholder="owner/repo:Q4_K_M or owner/repo/file.gguf",
                          style={"description_width": "110px"}, layout=W.Layout(width="520px"))
        self.pull_btn = W.Button(description="Pull", icon="download", button_style="primary")
        self.stop_btn = W.Button(description="Stop", icon="stop", disabled=True)
        self.bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="520px", visibility="hidden"))
        self.info = W.Label()
        self.status = W.HTML()
        self.runner = TaskRunner(self.status)
        self._cancel = CancelFlag()
        self.pull_btn.on_click(self._on_pull)
        self.stop_btn.on_click(lambda _: self._cancel.set())
        super().__init__([W.HBox([self.ref, self.pull_btn, self.stop_btn]), W.HBox([self.bar, self.info]),
                          self.status])

    def show_progress(self, done: int, total: int | None) -> None:
        self.bar.layout.visibility = "visible"
        self.bar.value = min(done / total, 1.0) if total else 0.0
        self.info.value = f"{_mb(done)} of {_mb(total)}"

    def _on_pull(self, _: Any = None) -> None:
        ref = self.ref.value.strip()
        if not ref:
            self.runner.show("error", "Type a Hugging Face repo, e.g. owner/repo:Q4_K_M.")
            return
        self._cancel = cancel = CancelFlag()  # one per pull: Stop ends this one only

        async def work() -> str:
            loop = asyncio.get_running_loop()

            def progress(done: int, total: int | None) -> None:  # on the download thread
                loop.call_soon_threadsafe(self.show_progress, done, total)

            self.stop_btn.disabled = False
            try:
                res = await asyncio.to_thread(self.bodhi.aliases.pull, ref, progress=progress, show=False,
                                              cancel=cancel)
            finally:
                self.stop_btn.disabled = True
            self.bar.value = 1.0
            self.on_pulled(res["model"])
            return f"Pulled {res['filename']}: chat with it as {res['model']}."

        self.runner.start(work, busy=f"Pulling {ref}…", buttons=(self.pull_btn,))
