"""AliasesPanel: local user aliases (create, edit, delete) and discovered GGUF models."""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as W

from ...objs.errors import InvalidRequestError
from ..client import Bodhi
from ._confirm import ConfirmDelete
from ._pull_box import PullBox
from ._tasks import TaskRunner, esc, html_table

__all__ = ["AliasesPanel"]

_LABELS = {"description_width": "110px"}  # wide enough for every label here: none is cut off, inputs align
_NEW = "+ new"  # plain text: an icon glyph shows as a box where the font lacks it


class AliasesPanel(W.VBox):
    def __init__(self, bodhi: Bodhi) -> None:
        self.bodhi = bodhi
        self.user_table = W.HTML()
        self.models_table = W.HTML()
        self.selector = W.Dropdown(style=_LABELS, description="Edit", options=[_NEW])
        self.alias = W.Text(style=_LABELS, description="Alias", placeholder="my-model:chat")
        self.repo = W.Text(style=_LABELS, description="Repo", placeholder="owner/repo")
        self.filename = W.Text(style=_LABELS, description="File", placeholder="model.Q4_K_M.gguf")
        self.snapshot = W.Text(style=_LABELS, description="Snapshot", value="main")
        self.request_params = W.Textarea(style=_LABELS, description="Request", placeholder='{"temperature": 0.7, "max_tokens": 512}')
        self.context_params = W.Textarea(style=_LABELS, description="Context", placeholder='{"n_ctx": 2048}')
        self.pull_box = PullBox(bodhi, lambda _name: self.refresh())
        self.from_model = W.Dropdown(style=_LABELS, description="From model", options=[""])
        self.save_btn = W.Button(description="Create", button_style="primary", icon="save")
        self.status = W.HTML()
        self.runner = TaskRunner(self.status)
        self.deleter = ConfirmDelete(self.runner, lambda: self.selector.value, self._delete)
        self.delete_btn, self.confirm_btn = self.deleter.delete_btn, self.deleter.confirm_btn
        self.selector.observe(self._on_select, names="value")
        self.from_model.observe(self._on_from_model, names="value")
        self.save_btn.on_click(self._on_save)
        super().__init__([
            W.HTML("<h3>User aliases</h3>"), self.user_table, W.HTML("<h3>Local models</h3>"), self.models_table,
            self.pull_box,
            self.selector, self.from_model, self.alias, self.repo, self.filename, self.snapshot,
            self.request_params, self.context_params,
            W.HBox([self.save_btn, self.deleter]), self.status,
        ])
        self.refresh()

    def refresh(self) -> None:
        users, errors = self.bodhi.aliases.list(), self.bodhi.aliases.unreadable()
        models = self.bodhi.aliases.models()
        self.user_table.value = html_table(
            ["Alias", "Repo", "File", "Request params", "Context params"],
            [[a["alias"], a["repo"], a["filename"], json.dumps(_set(a["request_params"])),
              json.dumps(_set(a["context_params"]))] for a in users],
            "No user aliases yet.") + "".join(
            f'<div style="color:#cf222e">{esc(e["file"])}: {esc(e["error"])}</div>' for e in errors)
        self.models_table.value = html_table(["Name", "Repo", "File", "Snapshot"],
                                        [[m["alias"], m["repo"], m["filename"], m["snapshot"]] for m in models],
                                        "No GGUF files found in the Hugging Face cache.")
        self.from_model.options = ["", *[m["alias"] for m in models]]
        current = self.selector.value
        self.selector.options = [_NEW, *[a["alias"] for a in users]]
        self.selector.value = current if current in self.selector.options else _NEW

    def _on_from_model(self, _: Any = None) -> None:
        m = next((x for x in self.bodhi.aliases.models() if x["alias"] == self.from_model.value), None)
        if m is not None:
            self.repo.value, self.filename.value, self.snapshot.value = m["repo"], m["filename"], m["snapshot"]

    def _on_select(self, _: Any = None) -> None:
        self.deleter.reset()
        if self.selector.value == _NEW:
            self.alias.disabled = False
            for w in (self.alias, self.repo, self.filename, self.request_params, self.context_params):
                w.value = ""
            self.snapshot.value = "main"
            self.save_btn.description, self.delete_btn.disabled = "Create", True
            return
        a = self.bodhi.aliases.get(self.selector.value)
        self.alias.value, self.alias.disabled = a["alias"], True
        self.repo.value, self.filename.value, self.snapshot.value = a["repo"], a["filename"], a["snapshot"]
        self.request_params.value = json.dumps(_set(a["request_params"]))
        self.context_params.value = json.dumps(_set(a["context_params"]))
        self.save_btn.description, self.delete_btn.disabled = "Save", False

    def _params(self, w: W.Textarea, name: str) -> dict[str, Any]:
        if not w.value.strip():
            return {}
        try:
            data = json.loads(w.value)
        except ValueError:
            raise InvalidRequestError(f"{name} must be a JSON object, e.g. {w.placeholder}") from None
        if not isinstance(data, dict):
            raise InvalidRequestError(f"{name} must be a JSON object.")
        return data

    def _on_save(self, _: Any = None) -> None:
        try:
            fields = dict(repo=self.repo.value, filename=self.filename.value, snapshot=self.snapshot.value or "main",
                          request_params=self._params(self.request_params, "request_params"),
                          context_params=self._params(self.context_params, "context_params"))
            if self.selector.value == _NEW:
                a = self.bodhi.aliases.create(self.alias.value, **fields)
            else:
                a = self.bodhi.aliases.update(self.selector.value, **fields)
        except Exception as exc:
            self.runner.show("error", getattr(exc, "message", str(exc)))
            return
        self.refresh()
        self.selector.value = a["alias"]
        self.runner.show("ok", f"Saved {a['alias']}.")

    def _delete(self, name: str) -> None:
        self.bodhi.aliases.delete(name)
        self.selector.value = _NEW
        self.refresh()


def _set(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a user set (the unset ones are None)."""
    return {k: v for k, v in params.items() if v is not None}
