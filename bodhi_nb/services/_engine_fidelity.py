"""Private, engine process only: the two answers llama_cpp.server gives differently from OpenAI.

1. Embeddings are unit length, as OpenAI's are (so a dot product is the cosine similarity);
   llama-cpp-python returns the raw mean-pooled vector.
2. A streamed chat completion ends with an OpenAI usage chunk.

llama_cpp.server never reports usage in a stream, so a streamed local request would have
no token counts (`stream_options.include_usage` asks for them). The counts here are the
engine's own, taken where llama-cpp-python takes them for a non-streamed `usage`:
`Llama._create_completion` hands its prompt tokens to `Llama.generate` and keeps every
generated token up to (not including) the end-of-generation token, stopping early at
`max_tokens` or a stop string; so prompt_tokens is the length of the token list
`generate` is given and completion_tokens is the number of tokens it yields that are not
end-of-generation. Nothing is estimated or re-tokenised.

The chunk (`choices: []`, `usage: {...}`, OpenAI's shape) is always sent after the last
content chunk; the gateway passes it on only when the caller asked for it
(docs/ARCHITECTURE.md, "Embeddings and local fidelity"). The engine serves one request
at a time (llama_cpp.server holds its model lock for a whole stream), so one counter per
model instance is enough.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["install"]


@dataclass
class _Counts:
    prompt: int = 0
    completion: int = 0


def install() -> None:
    """Wrap `Llama.embed`, `Llama.generate` and `Llama.create_chat_completion` (idempotent)."""
    import llama_cpp
    from llama_cpp import Llama

    if getattr(Llama, "_bodhi_stream_usage", False):
        return
    embed, generate, chat = Llama.embed, Llama.generate, Llama.create_chat_completion

    def normalized(self: Any, input: Any, normalize: bool = True, truncate: bool = True,
                   return_count: bool = False) -> Any:
        return embed(self, input, normalize=normalize, truncate=truncate, return_count=return_count)

    def counted(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        counts: _Counts | None = getattr(self, "_bodhi_counts", None)
        inner = generate(self, tokens, *args, **kwargs)
        if counts is None:
            return inner
        counts.prompt += len(tokens)
        return _count(inner, counts, lambda t: bool(llama_cpp.llama_vocab_is_eog(self._model.vocab, t)))

    def chat_with_usage(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("stream"):
            return chat(self, *args, **kwargs)
        counts = _Counts()
        self._bodhi_counts = counts
        try:
            chunks: Any = chat(self, *args, **kwargs)
        except BaseException:
            self._bodhi_counts = None
            raise
        return _then_usage(self, chunks, counts)

    Llama.embed = normalized  # type: ignore[method-assign]
    Llama.generate = counted  # type: ignore[method-assign]
    Llama.create_chat_completion = chat_with_usage  # type: ignore[method-assign]
    Llama._bodhi_stream_usage = True  # type: ignore[attr-defined]


def _count(inner: Iterator[int], counts: _Counts, is_eog: Any) -> Iterator[int]:
    for token in inner:
        if not is_eog(token):
            counts.completion += 1
        yield token


def _then_usage(llama: Any, chunks: Iterator[dict[str, Any]], counts: _Counts) -> Iterator[dict[str, Any]]:
    last: dict[str, Any] | None = None
    try:
        for chunk in chunks:
            last = chunk
            yield chunk
    finally:
        llama._bodhi_counts = None
    yield {"id": (last or {}).get("id", "chatcmpl-local"), "object": "chat.completion.chunk",
           "created": (last or {}).get("created", 0), "model": (last or {}).get("model", ""), "choices": [],
           "usage": {"prompt_tokens": counts.prompt, "completion_tokens": counts.completion,
                     "total_tokens": counts.prompt + counts.completion}}
