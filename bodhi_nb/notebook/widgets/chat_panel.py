"""ChatPanel: pick any model, chat with a streamed reply rendered as Markdown, stop, clear, insert code.

Replies are untrusted: they are shown through the sanitising Markdown renderer
(widgets/_markdown.py), never as raw HTML. The conversation is kept per panel and
`panel.history` gives it back as OpenAI messages, so a chat can continue in code.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ipywidgets as W

from ...objs.errors import InvalidRequestError
from ...objs.openai import build_messages, delta_text
from ..client import Bodhi
from ._tasks import TaskRunner, esc
from .markdown import MARKDOWN_CSS, code_blocks, render_markdown

__all__ = ["ChatPanel"]

_ROLE_STYLE = {"user": "background:#eef5ff", "assistant": "background:#f6f8fa", "system": "background:#fff8e1"}
_GROUPS = {"api": "API", "user": "Local", "model": "Local", "router": "Router", "hub": "JupyterHub"}
_GROUP_ORDER = ("API", "Local", "JupyterHub", "Router")
_LABELS = {"description_width": "initial"}  # labels are never cut off


def _frontend() -> Any:
    """ipylab's handle on the JupyterLab front end (None where ipylab is not installed)."""
    try:
        from ipylab import JupyterFrontEnd
    except ImportError:
        return None
    return JupyterFrontEnd()


class ChatPanel(W.VBox):
    def __init__(self, bodhi: Bodhi) -> None:
        self.bodhi = bodhi
        self.model = W.Dropdown(description="Model", style=_LABELS, layout=W.Layout(width="460px"))
        self.refresh_btn = W.Button(description="Reload", tooltip="Reload the model list",
                                    layout=W.Layout(width="80px"))
        self.system = W.Textarea(description="System prompt", placeholder="optional", style=_LABELS,
                                 layout=W.Layout(width="100%"))
        self.temperature = W.FloatSlider(description="Temperature", value=0.7, min=0.0, max=2.0, step=0.05,
                                         style=_LABELS, layout=W.Layout(width="340px"))
        self.max_tokens = W.BoundedIntText(description="Max tokens", value=256, min=1, max=32768, style=_LABELS,
                                           layout=W.Layout(width="200px"))
        self.transcript = W.HTML()
        self.input = W.Textarea(placeholder="Type a message…", layout=W.Layout(width="100%"))
        self.send_btn = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_btn = W.Button(description="Stop", icon="stop", disabled=True)
        self.clear_btn = W.Button(description="Clear", icon="eraser")
        self.insert_btn = W.Button(description="Insert code as cell", tooltip="Put the last reply's code block "
                                   "into a new cell below", layout=W.Layout(width="auto"))
        self.code = W.Textarea(layout=W.Layout(width="100%", display="none"))  # fallback: copy from here
        self.stats = W.Label()
        self.status = W.HTML()
        self.runner = TaskRunner(self.status)
        self.messages: list[dict[str, str]] = []
        self.reply = ""
        self._task: asyncio.Task[Any] | None = None
        self._chunk = asyncio.Event()
        self._lab = _frontend()
        self.send_btn.on_click(self._on_send)
        self.stop_btn.on_click(self._on_stop)
        self.clear_btn.on_click(self._on_clear)
        self.insert_btn.on_click(self._on_insert)
        self.refresh_btn.on_click(lambda _: self.refresh())
        super().__init__([
            W.HTML("<h3>Chat</h3>"), W.HBox([self.model, self.refresh_btn]), self.system,
            W.HBox([self.temperature, self.max_tokens]), self.transcript, self.input,
            W.HBox([self.send_btn, self.stop_btn, self.clear_btn, self.insert_btn, self.stats]), self.code,
            self.status,
        ])
        self.refresh()

    @property
    def history(self) -> list[dict[str, str]]:
        """The conversation as OpenAI messages (system prompt first when set); a copy."""
        return build_messages([dict(m) for m in self.messages], self.system.value.strip())

    def refresh(self) -> None:
        """Every name /v1/models lists, grouped API / Local / Router by where it is served."""
        entries = self.bodhi.model_entries()
        current = self.model.value
        labelled = [(_GROUPS.get(e.source, str(e.source).title()), e.id) for e in entries]
        labelled.sort(key=lambda g: _GROUP_ORDER.index(g[0]) if g[0] in _GROUP_ORDER else len(_GROUP_ORDER))
        self.model.options = [(f"{group} · {name}", name) for group, name in labelled]
        ids = [name for _, name in labelled]
        # Keep the user's pick; otherwise preselect the first model so Send works at once.
        self.model.value = current if current in ids else (ids[0] if ids else None)

    def _render(self) -> None:
        shown = [*self.messages, *([{"role": "assistant", "content": self.reply}] if self._streaming else [])]
        self.transcript.value = (MARKDOWN_CSS if shown else "") + "".join(_message_html(m) for m in shown)

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
        msgs = self.history

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
        self.transcript.value = ""
        self.code.layout.display = "none"
        self.runner.show("info", "Cleared.")

    def last_code(self) -> str:
        """The first code block of the last reply (an error when there is none)."""
        last = next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), None)
        blocks = code_blocks(last or "")
        if not blocks:
            raise InvalidRequestError("The last reply has no code block to insert.")
        return blocks[0].rstrip("\n")

    def _on_insert(self, _: Any = None) -> None:
        try:
            code = self.last_code()
        except InvalidRequestError as exc:
            self.runner.show("error", exc.message)
            return
        if self._lab is not None:
            # JupyterLab's own commands: a new cell below the active one, then its text.
            self._lab.commands.execute("notebook:insert-cell-below")
            self._lab.commands.execute("notebook:replace-selection", {"text": code})
            self.runner.show("ok", "Inserted the code as a new cell below.")
            return
        self.code.value, self.code.layout.display = code, None
        self.runner.show("info", "Copy the code from the box above (ipylab is not installed).")


def _message_html(m: dict[str, str]) -> str:
    role = m["role"]
    body = (f'<div class="bodhi-md">{render_markdown(m["content"])}</div>' if role == "assistant"
            else f'<div style="white-space:pre-wrap">{esc(m["content"])}</div>')
    return (f'<div class="bodhi-msg bodhi-{esc(role)}" style="{_ROLE_STYLE.get(role, "")};padding:4px 8px;'
            f'margin:2px 0"><b>{esc(role)}</b>{body}</div>')
