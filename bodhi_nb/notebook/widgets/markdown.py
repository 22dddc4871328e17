"""Model replies as safe HTML (Markdown with tables, highlighted code).

Replies are untrusted text. markdown-it-py renders them with raw HTML switched off (so
`<img onerror=...>` arrives as text), then nh3 (ammonia) sanitises the result anyway:
no scripts, no event-handler attributes, no `javascript:` URLs, whatever a later change
to the renderer lets through. Code blocks are highlighted by pygments with inline
styles, the only style attribute the sanitiser keeps.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

__all__ = ["MARKDOWN_CSS", "code_blocks", "render_markdown"]

_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "blockquote",
    "ul", "ol", "li", "pre", "code", "span", "a", "img", "table", "thead", "tbody", "tr", "th", "td", "div",
}
_ATTRS = {
    "a": {"href", "title"}, "img": {"src", "alt", "title"}, "span": {"style"},
    "th": {"style"}, "td": {"style"}, "code": {"class"}, "div": {"class"}, "ol": {"start"},
}
_STYLE_PROPS = {"color", "background-color", "font-weight", "font-style", "text-decoration", "text-align"}
_MAX_HIGHLIGHT = 20_000  # characters; longer blocks are shown plain (highlighting only where cheap)

# Scoped to the reply container, so it styles nothing else on the page.
MARKDOWN_CSS = (
    "<style>.bodhi-md table{border-collapse:collapse;margin:4px 0}"
    ".bodhi-md th,.bodhi-md td{border:1px solid #d0d7de;padding:2px 8px;text-align:left}"
    ".bodhi-md pre{background:#fff;border:1px solid #d0d7de;border-radius:4px;padding:6px 8px;"
    "overflow-x:auto;white-space:pre;line-height:1.4}"
    ".bodhi-md code{font-family:var(--jp-code-font-family,monospace)}"
    ".bodhi-md p{margin:2px 0}.bodhi-msg{line-height:1.45}</style>"
)


def _highlight(code: str, lang: str, _attrs: Any) -> str:
    if not lang or len(code) > _MAX_HIGHLIGHT:
        return ""  # markdown-it escapes and wraps it itself
    try:
        lexer = get_lexer_by_name(lang.split()[0])
    except ClassNotFound:
        return ""
    return highlight(code, lexer, _formatter())


@lru_cache(maxsize=1)
def _formatter() -> HtmlFormatter:  # type: ignore[type-arg]
    return HtmlFormatter(nowrap=True, noclasses=True, style="default")


@lru_cache(maxsize=1)
def _md() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight}).enable(
        ["table", "strikethrough"])


def render_markdown(text: str) -> str:
    """Sanitised HTML for `text` read as Markdown (tables and fenced code included)."""
    raw = _md().render(text or "")
    return nh3.clean(raw, tags=_TAGS, attributes=_ATTRS, url_schemes={"http", "https", "mailto"},
                     filter_style_properties=_STYLE_PROPS, link_rel="noopener noreferrer nofollow")


def code_blocks(text: str) -> list[str]:
    """The fenced code blocks of a Markdown reply, in order, without their fences."""
    return [t.content for t in _md().parse(text or "") if t.type == "fence"]
