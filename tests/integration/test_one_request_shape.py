"""Every Python surface sends one request shape (objs/openai.py): `chat` and `map` with the same
arguments put the same bytes on the wire, whitespace-only system prompts included."""

from __future__ import annotations

import pytest

from bodhi_nb.objs.errors import StructuredOutputError


@pytest.fixture
def fake_models():
    """The `bodhi` fixture (tests/integration/conftest.py) registers these upstream models."""
    return ["echo"]


@pytest.mark.parametrize("system", [" ", "\n\t", "", None, "Be brief."])
def test_chat_and_map_send_byte_identical_bodies(bodhi, upstream, system):
    assert bodhi.chat("fake/echo", "hello", system=system, temperature=0.5) == "echo: hello"
    from_chat = upstream.last()["raw"]
    [row] = bodhi.map("fake/echo", ["hello"], system=system, temperature=0.5, cache=False, progress=False)
    assert row.error is None and row.text == "echo: hello"
    from_map = upstream.last()["raw"]
    assert from_map == from_chat
    roles = [m["role"] for m in upstream.last()["body"]["messages"]]
    assert roles == (["system", "user"] if system and system.strip() else ["user"])


def test_structured_chat_and_map_send_byte_identical_bodies(bodhi, upstream):
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    with pytest.raises(StructuredOutputError):  # echo's reply is not JSON: the parse fails after the request
        bodhi.chat("fake/echo", "hello", system=" ", response_format=schema)
    from_chat = upstream.last()["raw"]
    [row] = bodhi.map("fake/echo", ["hello"], system=" ", response_format=schema, cache=False, progress=False)
    assert row.error is not None  # the same parse failure, per row
    assert upstream.last()["raw"] == from_chat
