"""ChatPanel: pick any model, chat with a streamed reply, stop, clear, see tokens/s."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ipywidgets as W

from ..client import Bodhi
from ..server_core.operations import build_messages, delta_text
from ._tasks import TaskRunner, esc

__all__ = ["ChatPanel"]

_ROLE_STYLE = {"user": "background:#eef5ff", "assistant": "background:#f6f8fa", "system": "background:#fff8e1"}


class ChatPanel(W.VBox):
    def __init__(self, bodhi: Bodhi) -> None:
        self.bodhi = bodhi
        self.model = W.Dropdown(description="Model")
        self.refresh_btn = W.Button(description="", icon="refresh", tooltip="Reload model list",
                                    layout=W.Layout(width="40px"))
        self.system = W.Textarea(description="System", placeholder="optional system prompt")
        self.temperature = W.FloatSlider(description="Temperature", value=0.7, min=0.0, max=2.0, step=0.05)
        self.max_tokens = W.BoundedIntText(description="Max tokens", value=256, min=1, max=32768)
        self.history = W.HTML()
        self.input = W.Textarea(placeholder="Type a message…", layout=W.Layout(width="100%"))
        self.send_btn = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_btn = W.Button(description="Stop", icon="stop", disabled=True)
        self.clear_btn = W.Button(description="Clear", icon="eraser")
        self.stats = W.Label()
        self.status = W.HTML()
        self.runner = TaskRunner(self.status)
        self.messages: list[dict[str, str]] = []
        self.reply = ""
        self._task: asyncio.Task[Any] | None = None
        self._chunk = asyncio.Event()
        self.send_btn.on_click(self._on_send)
        self.stop_btn.on_click(self._on_stop)
        self.clear_btn.on_click(self._on_clear)
        self.refresh_btn.on_click(lambda _: self.refresh())
        super().__init__([
            W.HTML("<h3>Chat</h3>"), W.HBox([self.model, self.refresh_btn]), self.system,
            W.HBox([self.temperature, self.max_tokens]), self.history, self.input,
            W.HBox([self.send_btn, self.stop_btn, self.clear_btn, self.stats]), self.status,
        ])
        self.refresh()

    def refresh(self) -> None:
        """Every name /v1/models lists, labelled by where it is served."""
        groups = {"api": "API", "user": "Local", "model": "Local"}
        entries = self.bodhi.model_entries()
        current = self.model.value
        self.model.options = [(f"{groups[e.source]} · {e.id}", e.id) for e in entries]
        ids = [e.id for e in entries]
        # Keep the user's pick; otherwise preselect the first model so Send works at once.
        self.model.value = current if current in ids else (ids[0] if ids else None)

    def _render(self) -> None:
        shown = [*self.messages, *([{"role": "assistant", "content": self.reply}] if self._streaming else [])]
        self.history.value = "".join(
            f'<div class="bodhi-msg bodhi-{esc(m["role"])}" style="{_ROLE_STYLE.get(m["role"], "")};'
            f'padding:4px 8px;margin:2px 0;white-space:pre-wrap"><b>{esc(m["role"])}</b>: {esc(m["content"])}</div>'
            for m in shown)

    @property
    def _streaming(self) -> bool:
        return self._task is not None and not self._task.done()

    async def chunk_arrived(self) -> None:
        """Resolves at the next streamed chunk (lets tests and callers follow the stream)."""
        self._chunk.clear()
        await self._chunk.wait()

    def _on_send(self, _: Any = None) -> None:
        text = self.input.value.strip()
        if not text or self._streaming:
            return
        if not self.model.value:
            self.runner.show("error", "Pick a model first.")
            return
        self.messages.append({"role": "user", "content": text})
        self.input.value = ""
        self.reply = ""
        model = self.model.value
        msgs = build_messages(self.messages, self.system.value)

        async def work() -> str:
            t0 = time.perf_counter()
            first: float | None = None
            n = 0
            usage = None
            try:
                async for chunk in self.bodhi.astream(model, msgs, temperature=self.temperature.value,
                                                      max_tokens=self.max_tokens.value):
                    usage = chunk.get("usage") or usage
                    delta = delta_text(chunk)
                    if delta:
                        first = first or time.perf_counter()
                        n += 1
                        self.reply += delta
                        self._render()
                    self._chunk.set()
            finally:
                if self.reply:
                    self.messages.append({"role": "assistant", "content": self.reply})
                self._streaming_done()
            tokens = (usage or {}).get("completion_tokens") or n
            dt = time.perf_counter() - (first or t0)
            self.stats.value = f"{tokens} tokens · {tokens / dt:.1f} tok/s" if dt > 0 else f"{tokens} tokens"
            return "Done."

        self.stop_btn.disabled = False
        self._task = self.runner.start(work, busy=f"{model} is answering…", buttons=(self.send_btn,))
        self._render()

    def _streaming_done(self) -> None:
        self.stop_btn.disabled = True
        self._task = None
        self._render()

    def _on_stop(self, _: Any = None) -> None:
        if self._task is not None:
            self._task.cancel()  # closes the stream, and with it the upstream request

    def _on_clear(self, _: Any = None) -> None:
        self._on_stop()
        self.messages.clear()
        self.reply = ""
        self.stats.value = ""
        self.history.value = ""
        self.runner.show("info", "Cleared.")
