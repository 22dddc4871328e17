"""OpenAI chat shapes and the pure rules every surface shares about them.

One home for what a chat request's messages are and how text is read out of an answer,
so `Bodhi.chat`, `map`, the panels, the magic, the CLI, the usage ledger and the test
prompt never disagree (a whitespace-only system prompt, for one, is no system message on
any surface). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Messages", "build_messages", "chat_body", "completion_text", "delta_text", "reply_text"]

Messages = str | list[dict[str, Any]]
"""What a caller may pass as a prompt: one user text, or OpenAI messages as they are."""


def build_messages(text_or_messages: Messages, system: str | None = None) -> list[dict[str, Any]]:
    """A user message from text (or the messages as given), after the system prompt when
    there is one: `None`, `""` and whitespace-only text add no system message."""
    msgs = ([{"role": "user", "content": text_or_messages}] if isinstance(text_or_messages, str)
            else list(text_or_messages))
    if system and system.strip():
        msgs = [{"role": "system", "content": system}, *msgs]
    return msgs


def chat_body(model: str, messages: Messages, *, system: str | None = None, **params: Any) -> dict[str, Any]:
    """The one shape of a chat request a Python surface sends: the caller's parameters, then
    `model` and `messages` (a later `response_format` and `stream` go after them)."""
    return {**params, "model": model, "messages": build_messages(messages, system)}


def completion_text(resp: object) -> str | None:
    """The first choice's message content of a chat completion ('' for a null content), or
    None when `resp` is not a chat completion at all."""
    try:
        message = resp["choices"][0]["message"]  # type: ignore[index]
        content = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if content is None:
        return ""
    return content if isinstance(content, str) else None


def reply_text(resp: object) -> str:
    """The first choice's message content ('' when there is none)."""
    return completion_text(resp) or ""


def delta_text(chunk: dict[str, Any]) -> str:
    """The text a `chat.completion.chunk` adds (every choice's delta content)."""
    out = []
    for choice in chunk.get("choices") or []:
        text = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
        if text:
            out.append(text)
    return "".join(out)
