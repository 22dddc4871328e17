"""Token counts for estimates (services/token_count.py): the approximation's rule, the chat
overhead, the GGUF counter against llama.cpp's own tokenizer (and the engine's chat template),
and tiktoken's encodings read offline only."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest

from bodhi_nb.services import token_count as tc
from bodhi_nb.services.local_engine import local_extra_available
from bodhi_nb.services.local_models import LocalModels
from tests.conftest import optional_dependency

GGUF = LocalModels.builtin_path()
needs_gguf = optional_dependency(local_extra_available() and GGUF is not None,
                                 "the bundled model (the local extra) is not installed")
SENTENCE = "Hello world, how are you?"  # SmolLM2: [19556, 905, 28, 638, 359, 346, 47]


@pytest.fixture(scope="module")
def llama():
    """llama-cpp-python's own tokenizer for the bundled GGUF: the reference."""
    from llama_cpp import Llama

    return Llama(model_path=str(GGUF), vocab_only=True, verbose=False)


def _reference_prompt(llama, messages) -> int:
    """The prompt tokens as llama-cpp-python's server makes them: the GGUF's chat template
    rendered by its Jinja2ChatFormatter, tokenized with special tokens and no added BOS."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos = llama.detokenize([llama.token_eos()], special=True).decode()
    bos = llama.detokenize([llama.token_bos()], special=True).decode()
    fmt = Jinja2ChatFormatter(llama.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos)
    return len(llama.tokenize(fmt(messages=messages).prompt.encode(), add_bos=False, special=True))


def _samples(n: int, seed: int = 7) -> list[str]:
    """Texts with awkward spacing, digits, punctuation, accents, CJK and a special token's text."""
    rng = random.Random(seed)
    words = ["the", "Quick", "brown,", "fox!", "12", "3.14159", "$100", "café", "naïve", "東京", "I'm", "you're",
             "über-cool", "<|im_end|>", "\n", "\t", "", "e\u0301", "(x)", "--", "2024-01-05"]
    seps = [" ", " ", " ", "  ", "\n", ", ", "", " \n "]
    return ["".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(0, 30))) for _ in range(n)]


# -- the approximation and the chat overhead -------------------------------------------------

def test_the_approximation_is_characters_over_four_rounded_up():
    c = tc.ApproxCounter()
    assert c.name == "approx:chars/4"
    assert c.count(["", "a", "abcd", "abcde", "x" * 400]) == [0, 1, 1, 2, 100]
    assert tc.ApproxCounter("why").name == "approx:chars/4 (why)"


def test_the_chat_overhead_is_openais_cookbook_rule():
    c = tc.ApproxCounter()
    # per message: 3 + the role's tokens + the content's; a name adds 1 and its tokens; 3 prime the reply
    assert tc.count_chat(c, [{"role": "user", "content": "abcd"}]) == 3 + 1 + 1 + 3
    assert tc.count_chat(c, [{"role": "system", "content": "x" * 8}, {"role": "user", "content": "abcd"}]) == (
        (3 + 2 + 2) + (3 + 1 + 1) + 3)
    assert tc.count_chat(c, [{"role": "user", "content": "abcd", "name": "bob"}]) == 3 + 1 + 1 + (1 + 1) + 3
    assert tc.count_chat(c, [{"role": "user", "content": [{"type": "text", "text": "abcd"},
                                                          {"type": "image_url", "image_url": {"url": "x"}}]}]) == 8
    assert tc.count_chat(c, []) == tc.REPLY_PRIMING
    assert tc.count_chats(c, [[{"role": "user", "content": "ab"}]] * 3) == [8, 8, 8]


def test_counts_are_positive_and_grow_with_length():
    counters: list[tc.TokenCounter] = [tc.ApproxCounter()]
    if local_extra_available() and GGUF is not None:
        counters.append(tc.gguf_counter(GGUF))
    if tc._bpe_ranks("o200k_base") is not None:
        counters.append(tc.openai_counter("gpt-4o-mini"))
    texts = ["a review of the product " * k for k in range(1, 40)]
    for c in counters:
        got = c.count(texts)
        assert all(n > 0 for n in got), c.name
        assert got == sorted(got) and got[0] < got[-1], c.name


# -- GGUF ------------------------------------------------------------------------------------

@needs_gguf
def test_the_gguf_counter_matches_llama_cpp_for_a_known_sentence(llama):
    c = tc.gguf_counter(GGUF)
    assert c.name == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert c.count([SENTENCE]) == [len(llama.tokenize(SENTENCE.encode(), add_bos=False, special=True))] == [7]


@needs_gguf
def test_the_gguf_counter_matches_llama_cpp_on_awkward_texts(llama):
    """Counting by pieces (a cut at each space between two non-space characters, digits read as
    0) gives llama.cpp's own whole-text count."""
    texts = _samples(400)
    want = [len(llama.tokenize(t.encode(), add_bos=False, special=True)) for t in texts]
    assert tc.GgufCounter(GGUF).count(texts) == want
    assert tc.gguf_counter(GGUF).count(texts) == want  # the shared one, its caches warm or not


@needs_gguf
def test_a_disagreement_stops_counting_by_pieces(llama):
    c = tc.GgufCounter(GGUF)
    c._rest["world,"] = 99  # a wrong cached piece: the self-check must catch it
    assert c.count([SENTENCE]) == [7]
    assert c._cut is False and c.count(["Hello world, again"]) == [
        len(llama.tokenize(b"Hello world, again", add_bos=False, special=True))]


@needs_gguf
def test_the_gguf_chat_overhead_is_its_own_template(llama):
    """SmolLM2's template adds its default system prompt when none is given; the count is the
    engine's (template rendered, then tokenized)."""
    c = tc.gguf_counter(GGUF)
    for messages in ([{"role": "user", "content": SENTENCE}],
                     [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Why 42?"}],
                     [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c d e"}]):
        assert tc.count_chat(c, messages) == _reference_prompt(llama, messages)
    assert c.chat_overhead((("user", False),)) > 20  # the default system prompt counts


@needs_gguf
def test_one_gguf_counter_per_file_even_from_many_threads():
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(tc.gguf_counter(GGUF))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in got}) == 1 and got[0] is tc.gguf_counter(str(GGUF))


def test_a_missing_gguf_falls_back_to_the_approximation(tmp_path: Path):
    c = tc.gguf_counter(tmp_path / "gone.gguf")
    assert c.name == "approx:chars/4 (gone.gguf not found)" and c.count(["abcd"]) == [1]


# -- tiktoken, offline -----------------------------------------------------------------------

@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o-mini", "o200k_base"), ("gpt-4o", "o200k_base"), ("openai/gpt-4o", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"), ("gpt-5-mini", "o200k_base"), ("o1", "o200k_base"), ("o3-mini", "o200k_base"),
    ("o4-mini", "o200k_base"), ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"), ("llama-3.1-70b-versatile", None), ("claude-3-5-haiku", None),
])
def test_openai_model_names_map_to_their_encodings(model, encoding):
    assert tc.tiktoken_encoding_name(model) == encoding


def test_the_encodings_are_tiktokens_own(monkeypatch):
    """pat_str, special tokens, URL and hash are what tiktoken's constructors use."""
    public = pytest.importorskip("tiktoken_ext.openai_public")
    calls = []
    monkeypatch.setattr(public, "load_tiktoken_bpe", lambda url, expected_hash: calls.append((url, expected_hash)) or {})
    for name, (url, sha256, pat_str, special) in tc._ENCODINGS.items():
        built = public.ENCODING_CONSTRUCTORS[name]()
        assert (built["pat_str"], built["special_tokens"], calls[-1]) == (pat_str, special, (url, sha256))


def _no_packages(monkeypatch):
    real = tc.importlib.util.find_spec
    monkeypatch.setattr(tc.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("bpe_openai", "tiktoken_ext") else real(name, *a))
    monkeypatch.setattr(tc, "_TIKTOKEN", {})


def test_without_an_offline_copy_the_openai_counter_says_so(monkeypatch, tmp_path):
    pytest.importorskip("tiktoken")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: nothing cached
    _no_packages(monkeypatch)
    c = tc.openai_counter("gpt-4o-mini")
    assert c.name == "approx:chars/4 (tiktoken encoding o200k_base not available offline)"
    assert c.count(["abcdefgh"]) == [2]
    assert tc.openai_counter("llama-3-8b").name == "approx:chars/4 (no tiktoken encoding for 'llama-3-8b')"


def test_an_encoding_is_read_from_tiktokens_cache_and_checked(monkeypatch, tmp_path):
    """A tiny encoding of the 256 bytes, placed where tiktoken caches its URL: used when its
    SHA-256 is the pinned one, refused (approximation) when the file was altered."""
    pytest.importorskip("tiktoken")
    import base64

    data = b"".join(base64.b64encode(bytes([i])) + b" %d\n" % i for i in range(256))
    url = "https://example.invalid/tiny.tiktoken"
    monkeypatch.setitem(tc._ENCODINGS, "tiny_base", (url, hashlib.sha256(data).hexdigest(), r"\S+|\s+", {}))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    _no_packages(monkeypatch)
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    c = tc._load_tiktoken("tiny_base")
    assert c.name == "tiktoken:tiny_base" and c.count(["ab c", "é"]) == [4, 2]  # one token per byte
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data + b"x")
    assert tc._load_tiktoken("tiny_base").name.startswith("approx:chars/4 (")


@pytest.mark.skipif(tc._bpe_ranks("o200k_base") is None,
                    reason="no offline copy of tiktoken's o200k_base (pip install bpe-openai)")
def test_the_openai_counter_is_tiktoken_when_an_offline_copy_exists():
    c = tc.openai_counter("gpt-4o-mini")
    assert c.name == "tiktoken:o200k_base"
    assert c.count(["hello world", "Hello, how are you?"]) == [2, 6]  # o200k: [24912, 2375]; [13225, 11, ...]
    assert tc.count_chat(c, [{"role": "user", "content": "hello world"}]) == 3 + 1 + 2 + 3
