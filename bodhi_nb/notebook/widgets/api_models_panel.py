"""ApiModelsPanel: list, create, edit, delete remote providers; fetch models; test prompt."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ...objs.errors import InvalidRequestError
from ..client import Bodhi
from ._confirm import ConfirmDelete
from ._tasks import TaskRunner, esc, html_table

__all__ = ["ApiModelsPanel"]

_LABELS = {"description_width": "110px"}  # wide enough for every label here: none is cut off, inputs align
_NEW = "+ new"  # plain text: an icon glyph shows as a box where the font lacks it
# Each wire format with its provider's usual base URL (the base URL field's placeholder).
_FORMATS = {"openai": "https://api.openai.com/v1", "openai_responses": "https://api.openai.com/v1",
            "anthropic": "https://api.anthropic.com/v1",
            "gemini": "https://generativelanguage.googleapis.com/v1beta"}


class ApiModelsPanel(W.VBox):
    """A table of API models and one form to create or edit them."""

    def __init__(self, bodhi: Bodhi) -> None:
        self.bodhi = bodhi
        self.table = W.HTML()
        self.selector = W.Dropdown(style=_LABELS, description="Edit", options=[_NEW])
        self.id = W.Text(style=_LABELS, description="ID", placeholder="openai")
        self.base_url = W.Text(style=_LABELS, description="Base URL", placeholder="https://api.openai.com/v1")
        # The provider's wire format; the placeholder follows it so the usual base URL is one glance away.
        self.api_format = W.Dropdown(style=_LABELS, description="Format", options=list(_FORMATS), value="openai")
        self.api_key = W.Password(style=_LABELS, description="API key", placeholder="sk-...")
        self.prefix = W.Text(style=_LABELS, description="Prefix", placeholder="optional, e.g. openai/")
        self.forward_all = W.Checkbox(style={"description_width": "initial"}, indent=False,
                                       description="Forward all names with the prefix")
        self.search = W.Text(style=_LABELS, description="Filter", placeholder="type to filter models")
        self.models = W.SelectMultiple(style=_LABELS, description="Models", options=[], rows=8)
        self.fetch_btn = W.Button(description="Fetch models", icon="download")
        self.select_all_btn = W.Button(description="Select all")
        self.clear_btn = W.Button(description="Clear")
        self.prompt = W.Text(style=_LABELS, description="Test prompt", value="Say hello")
        self.test_btn = W.Button(description="Test", icon="play")
        self.save_btn = W.Button(description="Create", button_style="primary", icon="save")
        self.result = W.HTML()
        self.status = W.HTML()
        self.runner = TaskRunner(self.status)
        self.deleter = ConfirmDelete(self.runner, lambda: self.selector.value, self._delete)
        self.delete_btn, self.confirm_btn = self.deleter.delete_btn, self.deleter.confirm_btn
        self._all_models: list[str] = []

        self.selector.observe(self._on_select, names="value")
        self.api_format.observe(self._on_format, names="value")
        self.search.observe(lambda _: self._filter(), names="value")
        self.fetch_btn.on_click(self._on_fetch)
        self.select_all_btn.on_click(lambda _: setattr(self.models, "value", tuple(self.models.options)))
        self.clear_btn.on_click(lambda _: setattr(self.models, "value", ()))
        self.test_btn.on_click(self._on_test)
        self.save_btn.on_click(self._on_save)
        super().__init__([
            W.HTML("<h3>API models</h3>"), self.table, self.selector, self.id, self.api_format, self.base_url,
            self.api_key,
            self.prefix, self.forward_all,
            W.HBox([self.fetch_btn, self.select_all_btn, self.clear_btn]), self.search, self.models,
            W.HBox([self.prompt, self.test_btn]), self.result,
            W.HBox([self.save_btn, self.deleter]), self.status,
        ])
        self.refresh()

    # -- view -----------------------------------------------------------------------------

    def refresh(self) -> None:
        rows = self.bodhi.api_models.list(page_size=1000)
        self.table.value = _table(rows)
        current = self.selector.value
        self.selector.options = [_NEW, *[r["id"] for r in rows]]
        self.selector.value = current if current in self.selector.options else _NEW

    def _filter(self) -> None:
        chosen = set(self.models.value)
        q = self.search.value.lower()
        opts = [m for m in self._all_models if q in m.lower() or m in chosen]
        self.models.options = opts
        self.models.value = tuple(m for m in opts if m in chosen)

    def _set_models(self, names: list[str], chosen: list[str]) -> None:
        self._all_models = list(dict.fromkeys([*chosen, *names]))
        self.models.options = self._all_models
        self.models.value = tuple(chosen)
        self._filter()

    def _on_select(self, _: Any = None) -> None:
        self.deleter.reset()
        self.api_key.value = ""
        self.result.value = ""
        if self.selector.value == _NEW:
            self.id.disabled = False
            self.api_format.value = "openai"
            for w in (self.id, self.base_url, self.prefix):
                w.value = ""
            self.forward_all.value = False
            self._set_models([], [])
            self.api_key.placeholder = "sk-..."
            self.save_btn.description = "Create"
            self.delete_btn.disabled = True
            return
        rec = self.bodhi.api_models.get(self.selector.value)
        self.id.value, self.id.disabled = rec["id"], True
        self.api_format.value = rec["api_format"]
        self.base_url.value = rec["base_url"]
        self.prefix.value = rec["prefix"] or ""
        self.forward_all.value = rec["forward_all_with_prefix"]
        self._set_models([], rec["models"])
        self.api_key.placeholder = ("stored key cannot be decrypted; enter a new one" if rec.get("error")
                                    else f"stored: {rec['api_key_masked']}; leave empty to keep" if rec["has_api_key"]
                                    else "no key stored; leave empty to keep none")
        self.save_btn.description = "Save"
        self.delete_btn.disabled = False

    def _on_format(self, change: dict[str, Any]) -> None:
        self.base_url.placeholder = _FORMATS[change["new"]]

    # -- actions --------------------------------------------------------------------------

    def _creds(self) -> dict[str, Any]:
        """Stored credentials when editing with an empty key field, else what is typed."""
        if self.selector.value != _NEW and not self.api_key.value:
            return {"id": self.selector.value}
        return {"base_url": self.base_url.value, "api_key": self.api_key.value or None,
                "api_format": self.api_format.value}

    def _on_fetch(self, _: Any = None) -> None:
        async def work() -> str:
            names = await self.bodhi.api_models.afetch_models(**self._creds())
            self._set_models(names, list(self.models.value))
            return f"{len(names)} models available."

        self.runner.start(work, busy="Fetching models…", buttons=(self.fetch_btn,))

    def _on_test(self, _: Any = None) -> None:
        async def work() -> str | None:
            model = (list(self.models.value) or list(self.models.options) or [""])[0]
            if not model:
                raise InvalidRequestError("Select a model to test (fetch models first).")
            res = await self.bodhi.api_models.atest(model, self.prompt.value, **self._creds())
            if res["success"]:
                self.result.value = f"<b>{esc(model)}</b>: {esc(res['response'])}"
                return "Test prompt succeeded."
            self.result.value = ""
            raise InvalidRequestError(f"Test failed: {res['error']}")

        self.runner.start(work, busy="Sending test prompt…", buttons=(self.test_btn,))

    def _on_save(self, _: Any = None) -> None:
        key = self.api_key.value or None
        fields = dict(models=list(self.models.value), prefix=self.prefix.value or None,
                      forward_all_with_prefix=self.forward_all.value, api_format=self.api_format.value)
        try:
            if self.selector.value == _NEW:
                rec = self.bodhi.api_models.create(self.id.value, self.base_url.value, api_key=key, **fields)
                verb = "Created"
            else:
                rec = self.bodhi.api_models.update(self.selector.value, api_key=key, base_url=self.base_url.value,
                                                   **fields)
                verb = "Saved"
        except Exception as exc:  # the typed key stays, so the user can fix the other fields
            self.runner.show("error", getattr(exc, "message", str(exc)))
            return
        self.api_key.value = ""  # stored: out of the widget state (and any saved notebook) now
        self.refresh()
        self.selector.value = rec["id"]
        self.runner.show("ok", f"{verb} {rec['id']}.")

    def _delete(self, id: str) -> None:
        self.bodhi.api_models.delete(id)
        self.selector.value = _NEW
        self.refresh()


def _table(rows: list[dict[str, Any]]) -> str:
    return html_table(
        ["ID", "Format", "Base URL", "Prefix", "Models", "Key", "Updated"],
        [[r["id"], r["api_format"], r["base_url"], r["prefix"] or "",
          ", ".join(r["models"]) or ("(all under prefix)" if r["forward_all_with_prefix"] else ""),
          r["api_key_masked"] or ("unreadable: set a new key" if r.get("error") else "none"),
          r["updated_at"][:19].replace("T", " ")] for r in rows],
        "No API models yet. Fill in the form below to add one.")
