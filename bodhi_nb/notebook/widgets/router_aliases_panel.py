"""RouterAliasesPanel: router aliases (one name over ordered fallback targets) and their targets' state."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ..client import Bodhi
from ._confirm import ConfirmDelete
from ._tasks import TaskRunner, html_table

__all__ = ["RouterAliasesPanel"]

_LABELS = {"description_width": "130px"}  # wide enough for every label here: none is cut off, inputs align
_NEW = "+ new"


def _state(s: dict[str, Any]) -> str:
    if s["state"] == "cooling" and s.get("cooling_until"):
        return f"{s['target']} (cooling until {str(s['cooling_until'])[11:19]} UTC)"
    return f"{s['target']} ({s['state']})"


class RouterAliasesPanel(W.VBox):
    """A table of router aliases with each target's state, and one form to create or edit them."""

    def __init__(self, bodhi: Bodhi) -> None:
        self.bodhi = bodhi
        self.table = W.HTML()
        self.selector = W.Dropdown(style=_LABELS, description="Edit", options=[_NEW])
        self.alias = W.Text(style=_LABELS, description="Router alias", placeholder="chat-fallback")
        self.targets = W.TagsInput(allowed_tags=[], allow_duplicates=False, value=[])
        self.cooldown = W.BoundedFloatText(style=_LABELS, description="Cooldown (s)", value=60.0, min=0.0,
                                           max=86_400.0)
        self.max_attempts = W.BoundedIntText(style=_LABELS, description="Max attempts", value=0, min=0, max=32,
                                             tooltip="0: every target")
        self.honor = W.Checkbox(style={"description_width": "initial"}, indent=False, value=True,
                                description="Cool a failed target down for the Retry-After it sent")
        self.save_btn = W.Button(description="Create", button_style="primary", icon="save")
        self.refresh_btn = W.Button(description="Refresh", icon="refresh")
        self.status = W.HTML()
        self.runner = TaskRunner(self.status)
        self.deleter = ConfirmDelete(self.runner, lambda: self.selector.value, self._delete)
        self.delete_btn, self.confirm_btn = self.deleter.delete_btn, self.deleter.confirm_btn
        self.selector.observe(self._on_select, names="value")
        self.save_btn.on_click(self._on_save)
        self.refresh_btn.on_click(lambda _: self.refresh())
        super().__init__([
            W.HTML("<h3>Router aliases</h3><div>A request to a router alias tries its targets in order; a target "
                   "that answers 429, 5xx or cannot be reached is skipped until its cooldown ends.</div>"),
            self.table, self.refresh_btn, self.selector, self.alias,
            W.HBox([W.Label("Targets (in order)", layout=W.Layout(width="134px")), self.targets]),
            self.cooldown, self.max_attempts, self.honor, W.HBox([self.save_btn, self.deleter]), self.status,
        ])
        self.refresh()

    def refresh(self) -> None:
        routers = self.bodhi.router_aliases.list()
        self.table.value = html_table(
            ["Alias", "Targets (state)", "Cooldown s", "Max attempts", "Honour Retry-After"],
            [[r["alias"], ", ".join(_state(s) for s in r["state"]), f"{r['cooldown_seconds']:g}", r["max_attempts"],
              "yes" if r["honor_retry_after"] else "no"] for r in routers],
            "No router aliases yet.")
        self.targets.allowed_tags = [e.id for e in self.bodhi.model_entries() if e.source != "router"]
        current = self.selector.value
        self.selector.options = [_NEW, *[r["alias"] for r in routers]]
        self.selector.value = current if current in self.selector.options else _NEW

    def _on_select(self, _: Any = None) -> None:
        self.deleter.reset()
        if self.selector.value == _NEW:
            self.alias.value, self.alias.disabled, self.targets.value = "", False, []
            self.cooldown.value, self.max_attempts.value, self.honor.value = 60.0, 0, True
            self.save_btn.description, self.delete_btn.disabled = "Create", True
            return
        r = self.bodhi.router_aliases.get(self.selector.value)
        self.alias.value, self.alias.disabled = r["alias"], True
        self.targets.allowed_tags = sorted({*self.targets.allowed_tags, *r["targets"]})  # unknown ones stay editable
        self.targets.value = list(r["targets"])
        self.cooldown.value, self.honor.value = r["cooldown_seconds"], r["honor_retry_after"]
        self.max_attempts.value = 0 if r["max_attempts"] == len(r["targets"]) else r["max_attempts"]
        self.save_btn.description, self.delete_btn.disabled = "Save", False

    def _on_save(self, _: Any = None) -> None:
        fields: dict[str, Any] = dict(targets=list(self.targets.value), cooldown_seconds=self.cooldown.value,
                                      max_attempts=self.max_attempts.value or None,
                                      honor_retry_after=self.honor.value)
        try:
            if self.selector.value == _NEW:
                r = self.bodhi.router_aliases.create(self.alias.value, **fields)
            else:
                r = self.bodhi.router_aliases.update(self.selector.value, **fields)
        except Exception as exc:  # shown in the panel: the same one-line message every surface gives
            self.runner.show("error", getattr(exc, "message", str(exc)))
            return
        self.refresh()
        self.selector.value = r["alias"]
        self.runner.show("ok", f"Saved {r['alias']}.")

    def _delete(self, name: str) -> None:
        self.bodhi.router_aliases.delete(name)
        self.selector.value = _NEW
        self.refresh()
