"""`%%bodhi MODEL` and `%bodhi models|explain NAME|usage`: the gateway from a notebook cell.

Loaded with `%load_ext bodhi_nb`. The cell body is the prompt, with `{name}` filled in
from the user namespace (`{{` for a literal brace). The reply streams into the cell's
output through one display handle, rendered as Markdown unless `--format` says
otherwise, and lands in `_bodhi` (and `-o VAR`). A failure prints one line: what went
wrong and, where there is one, what to do. The magic is a thin adapter over the
public `Bodhi` facade, one per shell, created at first use.
"""

from __future__ import annotations

import json
import shlex
import string
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import JSON, Markdown, display

from ..objs.errors import BodhiError, PromptError
from ..server_core.origin import using_surface

__all__ = ["BodhiMagics", "interpolate", "load_ipython_extension"]

FORMATS = ("markdown", "text", "json", "code")
_UPDATE_EVERY = 0.05  # seconds between display updates while streaming (the frontend's pace, not ours)


class _Namespace(Mapping[str, Any]):
    """The user namespace as `str.format_map` sees it, with a readable error for a missing name."""

    def __init__(self, ns: Mapping[str, Any]) -> None:
        self._ns = ns

    def __getitem__(self, key: str) -> Any:
        if key not in self._ns:
            raise PromptError(f"'{{{key}}}' in the prompt names no variable; define {key} first, "
                              "or write '{{' and '}}' for literal braces.")
        return self._ns[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ns)

    def __len__(self) -> int:
        return len(self._ns)


def interpolate(template: str, namespace: Mapping[str, Any]) -> str:
    """`template` with `{name}` taken from `namespace`; `{{`/`}}` stay literal braces."""
    try:
        return string.Formatter().vformat(template, (), _Namespace(namespace))
    except PromptError:
        raise
    except (ValueError, IndexError, AttributeError, KeyError, TypeError) as exc:
        raise PromptError(f"The prompt's braces could not be read ({exc}); write '{{{{' and '}}}}' "
                          "for literal braces.") from None


@magic_arguments()
@argument("model", help="any name the gateway serves (see %%bodhi models)")
@argument("-o", "--output", dest="var", help="also store the reply in this variable")
@argument("-s", "--system", help="system prompt")
@argument("--max-tokens", type=int, dest="max_tokens")
@argument("--temperature", type=float)
@argument("--format", choices=FORMATS, default="markdown", help="how to show the reply (default: markdown)")
@argument("--no-stream", action="store_true", dest="no_stream", help="wait for the whole reply")
@argument("--cache", action="store_true",
          help="answer from the response cache when it holds this request (the reply then arrives whole)")
def _cell_args(line: str, cell: str) -> None:
    """%%bodhi MODEL: send the cell as the prompt."""


@magic_arguments()
@argument("command", choices=("models", "explain", "usage"))
@argument("name", nargs="?", help="the model name for explain")
def _line_args(line: str) -> None:
    """%bodhi models | explain NAME | usage."""


@magics_class
class BodhiMagics(Magics):
    """`%%bodhi` and `%bodhi`; `bodhi` is the shell's one `Bodhi` (settable, e.g. in tests)."""

    def __init__(self, shell: Any = None, bodhi: Any = None) -> None:
        super().__init__(shell)
        self._bodhi = bodhi

    @property
    def bodhi(self) -> Any:
        if self._bodhi is None:
            from .client import Bodhi

            self._bodhi = Bodhi()
        return self._bodhi

    @bodhi.setter
    def bodhi(self, value: Any) -> None:
        self._bodhi = value

    @line_cell_magic("bodhi")  # type: ignore[arg-type]  # IPython types the decorator loosely
    def bodhi_magic(self, line: str, cell: str | None = None) -> Any:
        try:
            if cell is None:
                return self._line(_parse(_line_args, line))
            with using_surface("magic"):  # the usage ledger records these requests as "magic"
                self._cell(_parse(_cell_args, line), cell)
        except BodhiError as exc:
            print(f"bodhi: {exc.message}", file=sys.stderr)
        return None

    # -- %%bodhi ----------------------------------------------------------------------------

    def _cell(self, args: Any, cell: str) -> None:
        ns = self.shell.user_ns if self.shell is not None else {}
        prompt = interpolate(cell.strip(), ns)
        if not prompt:
            raise PromptError("The cell is empty: write the prompt below the %%bodhi line.")
        params: dict[str, Any] = {}
        if args.max_tokens is not None:
            params["max_tokens"] = args.max_tokens
        if args.temperature is not None:
            params["temperature"] = args.temperature
        if args.cache:
            params["cache"] = True  # the cache keeps whole replies, so a cached request is not streamed
        show = _Shower(args.format)
        text = ""
        try:
            if args.no_stream or args.cache:
                text = self.bodhi.chat(args.model, prompt, system=args.system, **params)
            else:
                for delta in self.bodhi.chat(args.model, prompt, stream=True, system=args.system, **params):
                    text += delta
                    show.partial(text)
        except KeyboardInterrupt:
            print("bodhi: stopped; the partial reply is kept.", file=sys.stderr)
        finally:
            # Whatever arrived is kept, even when the stream failed part way.
            ns["_bodhi"] = text
            if args.var:
                ns[args.var] = text
        show.final(text, self.shell)

    # -- %bodhi -----------------------------------------------------------------------------

    def _line(self, args: Any) -> Any:
        if args.command == "models":
            names = self.bodhi.models()
            display(Markdown("\n".join(f"- `{n}`" for n in names) or "_No models: add an API model or a GGUF._"))
            return None
        if args.command == "explain":
            if not args.name:
                raise PromptError("Usage: %bodhi explain NAME")
            return self._explain(args.name)
        return self.bodhi.usage()

    def _explain(self, name: str) -> None:
        cands = self.bodhi.explain(name)
        if not cands:
            print(f"bodhi: '{name}': no API model, user alias or local model serves this name.", file=sys.stderr)
            return
        rows = []
        for c in cands:
            up = f" (upstream `{c.upstream_model}`)" if getattr(c, "upstream_model", None) else ""
            mark = "**→**" if c.won else ""
            rows.append(f"| {mark} | {c.source}:`{c.name}` | {c.rule}{up} | {c.reason} |")
        display(Markdown(f"Who serves `{name}`:\n\n| | candidate | rule | why |\n|---|---|---|---|\n"
                         + "\n".join(rows)))


class _Shower:
    """One display handle, updated as deltas arrive (at the frontend's pace) and once at the end."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.handle: Any = None
        self.shown = ""
        self._last = 0.0

    def _obj(self, text: str) -> Any:
        if self.fmt == "markdown":
            return Markdown(text)
        return _Plain(text)

    def partial(self, text: str) -> None:
        now = time.monotonic()
        if self.handle is None:
            self.handle = display(self._obj(text), display_id=True)
        elif now - self._last >= _UPDATE_EVERY:
            self.handle.update(self._obj(text))
        else:
            return
        self.shown, self._last = text, now

    def final(self, text: str, shell: Any) -> None:
        obj: Any = self._obj(text)
        if self.fmt == "json":
            try:
                obj = JSON(json.loads(_strip_fence(text)))
            except ValueError:
                print("bodhi: the reply is not valid JSON; shown as text.", file=sys.stderr)
        elif self.fmt == "code":
            code = _strip_fence(text)
            if shell is not None:
                shell.set_next_input(code, replace=False)
            obj = _Plain(code)
        if self.handle is None:
            self.handle = display(obj, display_id=True)
        elif text != self.shown or self.fmt in ("json", "code"):
            self.handle.update(obj)


class _Plain:
    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text}


def _strip_fence(text: str) -> str:
    """The first fenced code block's content, else the text itself."""
    from .widgets.markdown import code_blocks

    blocks = code_blocks(text)
    return (blocks[0] if blocks else text).strip()


def _parse(fn: Any, line: str) -> Any:
    """Shell-style words (quotes removed, as in a terminal), then the magic's argparse parser."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise PromptError(f"The magic line could not be read: {exc}.") from None
    return fn.parser.parse_args(words)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext bodhi_nb`: register `%%bodhi` / `%bodhi` on this shell."""
    ipython.register_magics(BodhiMagics(ipython))


_DOC = ("Ask any model the gateway serves from a cell.\n\n"
        + (_cell_args.__doc__ or "") + "\n\n" + (_line_args.__doc__ or ""))
BodhiMagics.bodhi_magic.__doc__ = _DOC  # type: ignore[assignment]  # IPython types the magic as Never
