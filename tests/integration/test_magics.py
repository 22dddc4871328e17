"""`%%bodhi` in a real IPython shell, over the real facade and a fake upstream on 127.0.0.1."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bodhi_nb.notebook.magics import interpolate
from tests.conftest import TEST_KEY


@pytest.fixture
def fake_models():
    """The `bodhi` fixture (tests/integration/conftest.py) registers these upstream models."""
    return ["echo", "status-400"]


@pytest.fixture
def shell(bodhi, monkeypatch):
    """The process's InteractiveShell with `%load_ext bodhi_nb`, recording every display publish."""
    ip = InteractiveShell.instance()
    published: list[dict] = []

    def publish(data, metadata=None, source=None, *, transient=None, update=False, **kw):
        published.append({"data": data, "transient": transient or {}, "update": update})

    monkeypatch.setattr(ip.display_pub, "publish", publish)
    ip.run_line_magic("load_ext", "bodhi_nb")
    ip.magics_manager.registry["BodhiMagics"].bodhi = bodhi  # the test's store, fast KDF
    ip.published = published
    yield ip
    for name in ("_bodhi", "answer", "topic"):
        ip.user_ns.pop(name, None)


def _markdown(p: dict) -> str:
    return p["data"].get("text/markdown", "")


def test_cell_interpolates_streams_and_stores(shell, upstream):
    shell.user_ns["topic"] = "cats"
    shell.run_cell("%%bodhi fake/echo -o answer --max-tokens 50 --temperature 0.1\n"
                   "Tell me {topic} and {{braces}} in four words")
    reply = "echo: Tell me cats and {braces} in four words"
    assert shell.user_ns["_bodhi"] == reply and shell.user_ns["answer"] == reply
    sent = upstream.last()["body"]
    assert sent["messages"][-1]["content"] == "Tell me cats and {braces} in four words"
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.1 and sent["stream"] is True
    # streamed: the first display shows a prefix only, later updates of the same handle complete it
    md = [p for p in shell.published if _markdown(p)]
    assert len(md) >= 2, md
    assert not md[0]["update"] and md[0]["transient"].get("display_id")
    assert all(p["update"] and p["transient"]["display_id"] == md[0]["transient"]["display_id"] for p in md[1:])
    assert reply.startswith(_markdown(md[0])) and _markdown(md[0]) != reply
    assert _markdown(md[-1]) == reply


def test_system_prompt_no_stream_and_text_format(shell, upstream):
    shell.run_cell('%%bodhi fake/echo -s "Be terse." --no-stream --format text\nhello')
    body = upstream.last()["body"]
    assert body["messages"][0] == {"role": "system", "content": "Be terse."} and not body.get("stream")
    assert shell.user_ns["_bodhi"] == "echo: hello"
    assert [p["data"] for p in shell.published] == [{"text/plain": "echo: hello"}]


def test_cache_answers_a_repeat_without_the_upstream(shell, bodhi, upstream):
    before = bodhi.cache.stats()["hits"]
    shell.run_cell("%%bodhi fake/echo --cache\nremember me")
    first = upstream.last()["body"]
    shell.run_cell("%%bodhi fake/status-400 --no-stream\nsomething else")  # moves the upstream's last request on
    shell.run_cell("%%bodhi fake/echo --cache\nremember me")
    assert shell.user_ns["_bodhi"] == "echo: remember me" and not first.get("stream")
    assert bodhi.cache.stats()["hits"] == before + 1
    assert upstream.last()["body"]["model"] == "status-400"  # the repeat never reached the upstream


def test_json_format_renders_json(shell):
    shell.run_cell('%%bodhi fake/echo --format json --no-stream\n{{"a": 1}}')
    # the echo reply is not JSON ("echo: {...}"), so it falls back to text with a one-line note
    assert shell.user_ns["_bodhi"] == 'echo: {"a": 1}'
    assert shell.published[-1]["data"] == {"text/plain": 'echo: {"a": 1}'}


def test_code_format_puts_the_code_into_the_next_cell(shell):
    shell.rl_next_input = None
    shell.run_cell("%%bodhi fake/echo --format code --no-stream\nSee:\n```python\nx = 41 + 1\n```")
    assert shell.rl_next_input == "x = 41 + 1"  # the terminal's next input; a kernel makes it the next cell
    assert shell.published[-1]["data"] == {"text/plain": "x = 41 + 1"}


def test_errors_are_one_line(shell, capsys):
    shell.run_cell("%%bodhi no-such-model\nhi")
    err = capsys.readouterr().err
    assert err.startswith("bodhi: The model 'no-such-model' does not exist") and err.count("\n") == 1
    assert "Traceback" not in err
    shell.run_cell("%%bodhi fake/echo\nHello {undefined_name}")
    err = capsys.readouterr().err
    assert "'{undefined_name}' in the prompt names no variable" in err and "Traceback" not in err
    shell.run_cell("%%bodhi fake/status-400\nhi")
    err = capsys.readouterr().err
    assert err.startswith("bodhi: ") and err.count("\n") == 1 and TEST_KEY not in err
    shell.run_cell("%%bodhi fake/echo --format yaml\nhi")
    out = capsys.readouterr()
    assert "invalid choice: 'yaml'" in out.err + out.out and "Traceback" not in out.err + out.out


def test_line_magics(shell, capsys):
    shell.run_line_magic("bodhi", "models")
    listing = _markdown(shell.published[-1])
    assert "`fake/echo`" in listing and "`fake/status-400`" in listing
    shell.run_line_magic("bodhi", "explain fake/echo")
    why = _markdown(shell.published[-1])
    assert "`fake/echo`" in why and "| **→** | api:`fake` | prefix (upstream `echo`)" in why
    shell.run_line_magic("bodhi", "explain nothing-serves-this")
    assert "no API model, user alias or local model serves this name" in capsys.readouterr().err
    result = shell.run_line_magic("bodhi", "usage")
    assert isinstance(result, pd.DataFrame) and "surface" in result.columns


def test_interpolate_rules():
    assert interpolate("{a} {{b}} {c[0]}", {"a": 1, "c": ["x"]}) == "1 {b} x"
    with pytest.raises(Exception, match="literal braces"):
        interpolate('{"json": 1}', {})
