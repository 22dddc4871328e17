"""Private: a Delete button with a confirm step, shared by the panels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ._tasks import TaskRunner

__all__ = ["ConfirmDelete"]


class ConfirmDelete(W.HBox):
    """Delete → "Confirm delete" / "Cancel"; `on_confirm(name)` runs only after the second click."""

    def __init__(self, runner: TaskRunner, target: Callable[[], str], on_confirm: Callable[[str], None]) -> None:
        self.runner = runner
        self.target = target
        self.on_confirm = on_confirm
        self.delete_btn = W.Button(description="Delete", button_style="danger", icon="trash", disabled=True)
        self.confirm_btn = W.Button(description="Confirm delete", button_style="danger",
                                    layout=W.Layout(display="none"))
        self.cancel_btn = W.Button(description="Cancel", layout=W.Layout(display="none"))
        self.delete_btn.on_click(self._ask)
        self.confirm_btn.on_click(self._confirm)
        self.cancel_btn.on_click(lambda _: self.reset())
        super().__init__([self.delete_btn, self.confirm_btn, self.cancel_btn])

    def reset(self) -> None:
        self._show(False)

    def _show(self, confirming: bool) -> None:
        self.confirm_btn.layout.display = None if confirming else "none"
        self.cancel_btn.layout.display = None if confirming else "none"
        self.delete_btn.layout.display = "none" if confirming else None

    def _ask(self, _: Any = None) -> None:
        self._show(True)
        self.runner.show("info", f"Delete {self.target()}? This cannot be undone.")

    def _confirm(self, _: Any = None) -> None:
        name = self.target()
        try:
            self.on_confirm(name)
        except Exception as exc:
            self.runner.show("error", getattr(exc, "message", str(exc)))
            return
        self.reset()
        self.runner.show("ok", f"Deleted {name}.")
