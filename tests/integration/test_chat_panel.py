"""The chat panel as a reader sees it: Markdown replies (tables, highlighted code) rendered and
sanitised, history as OpenAI messages, grouped model picker, code inserted as a cell."""

from __future__ import annotations

import asyncio

import pytest

from bodhi_nb.notebook.widgets import AliasesPanel, ApiModelsPanel, ChatPanel
from bodhi_nb.notebook.widgets.markdown import render_markdown

MARKDOWN = ("Here:\n```python\nprint('hi')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "<img src=x onerror=alert(1)> [x](javascript:alert(2)) <script>alert(3)</script>")


def _send(c: ChatPanel, text: str) -> None:
    async def go():
        c.input.value = text
        c.send_btn.click()
        await c.runner.wait()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_reply_renders_as_sanitised_markdown(bodhi):
    c = ChatPanel(bodhi)
    _send(c, MARKDOWN)
    html = c.transcript.value
    assert "<table>" in html and "<th>a</th>" in html and "<td>2</td>" in html
    assert '<pre><code class="language-python">' in html and 'style="color:' in html  # highlighted
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown as text, inert
    tags = _elements(html)
    assert not [t for t, _ in tags if t in ("img", "script")]
    assert not [a for _, attrs in tags for a, v in attrs if a.startswith("on") or "javascript" in (v or "")]


@pytest.mark.parametrize("text", [
    '<img src=x onerror="alert(1)">', "<a href='javascript:alert(1)'>x</a>", "[x](javascript:alert(1))",
    "<svg onload=alert(1)>", '<iframe src="https://example.com"></iframe>', "![i](javascript:alert(1))",
])
def test_renderer_never_emits_active_content(text):
    html = render_markdown(text)
    for tag, attrs in _elements(html):
        assert tag not in ("script", "svg", "iframe", "object", "embed", "style"), html
        for name, value in attrs:
            assert not name.startswith("on"), html
            assert not (value or "").strip().lower().startswith("javascript:"), html


def _elements(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every element the browser would build from `html` (tag, attributes)."""
    from html.parser import HTMLParser

    found = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    P().feed(html)
    return found


def test_history_is_openai_messages_and_insert_code(bodhi):
    c = ChatPanel(bodhi)
    c.system.value = "Be brief."
    _send(c, "first")
    _send(c, "Code:\n```python\nx = 1\n```")
    assert c.history == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": "Code:\n```python\nx = 1\n```"},
        {"role": "assistant", "content": "echo: Code:\n```python\nx = 1\n```"},
    ]
    assert bodhi.chat("fake/echo", c.history[1:]) == "echo: Code:\n```python\nx = 1\n```"  # continues in code
    c.history.append({"role": "user", "content": "not kept"})  # a copy: the panel's own stays intact
    assert len(c.history) == 5

    executed = []

    class Commands:
        def execute(self, command, args=None):
            executed.append((command, args))

    class Lab:
        commands = Commands()

    c._lab = Lab()  # the JupyterLab front end (ipylab); the real one is driven in the browser test
    c.insert_btn.click()
    assert executed == [("notebook:insert-cell-below", None), ("notebook:replace-selection", {"text": "x = 1"})]
    c._lab = None
    c.insert_btn.click()
    assert c.code.value == "x = 1" and c.code.layout.display is None
    _send(c, "no code here")
    c.insert_btn.click()
    assert "no code block" in c.status.value


def test_picker_groups_and_labels_fit(bodhi):
    c = ChatPanel(bodhi)
    labels = [label for label, _ in c.model.options]
    groups = [label.split(" · ")[0] for label in labels]
    assert groups == sorted(groups, key=("API", "Local", "Router").index)
    assert "API · fake/echo" in labels
    for panel in (c, ApiModelsPanel(bodhi), AliasesPanel(bodhi)):
        for w in _walk(panel):
            if getattr(w, "description", "") and hasattr(w, "style") and hasattr(w.style, "description_width"):
                width = w.style.description_width
                assert width == "initial" or (width.endswith("px") and int(width[:-2]) >= 8 * len(w.description)), (
                    type(panel).__name__, w.description, width)
            for opt in getattr(w, "options", ()) or ():
                label = opt[0] if isinstance(opt, tuple) else opt
                assert all(ord(ch) < 0x2000 or ch in "·…" for ch in str(label)), label  # no icon glyphs


def _walk(w):
    yield w
    for child in getattr(w, "children", ()):
        yield from _walk(child)
