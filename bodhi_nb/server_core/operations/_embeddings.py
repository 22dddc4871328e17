"""Embeddings operations for every surface (the HTTP route, `Bodhi.embed`, and what comes next).

A request goes through the gateway exactly as chat does: the same router, the one
forwarding path, the usage ledger; API models get the body as sent, the local engine
gets it adapted (`server_core/_local_adapter.py`). `embed` is the notebook-sized rule on
top: any number of texts, sent `batch_size` at a time with a few requests in flight, and
one float vector per text back in input order, whatever order a provider lists them in
and whichever encoding it answers with.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ...objs.errors import InvalidRequestError, UpstreamError
from ..gateway import Gateway, OpenChat

__all__ = ["DEFAULT_BATCH_SIZE", "EmbeddingOps", "as_texts"]

DEFAULT_BATCH_SIZE = 64
Vector = list[float]


def as_texts(texts: Any) -> list[str]:
    """A str, a list (or tuple) of str, or a pandas Series (or numpy array) of str, as a list of str."""
    if isinstance(texts, str):
        return [texts]
    pd = sys.modules.get("pandas")
    if (pd is not None and isinstance(texts, (pd.Series, pd.Index))) or type(texts).__name__ == "ndarray":
        texts = texts.tolist()
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Sequence):
        raise InvalidRequestError("texts must be a string, a list of strings or a pandas Series of strings.",
                                  param="texts")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidRequestError(f"texts[{i}] is a {type(t).__name__}, not a string"
                                      f"{' (a missing value?)' if _missing(t) else ''}.", param=f"texts[{i}]")
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or type(value).__name__ == "NAType"


def _vector(value: Any, label: str) -> Vector:
    if isinstance(value, list):
        return [float(x) for x in value]
    if isinstance(value, str):  # base64 float32 little-endian, as OpenAI encodes it
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    raise UpstreamError(f"The {label} answered with an embedding that is neither a list nor base64.")


class EmbeddingOps:
    """`open` for relaying a response as it is; `create` for a parsed one; `embed` for many texts."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def open(self, body: object) -> OpenChat:
        """Validate, route and open the upstream response (for relaying)."""
        return await self._gateway.open_embeddings(body)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI embeddings response as a dict; an upstream error status raises."""
        oc = await self.open(body)
        if not oc.response.ok:
            raise await oc.response.error()
        data = (await oc.response.aread_json())[1]
        if not isinstance(data, dict):
            raise UpstreamError(f"The {oc.response.label} answered with something that is not an embeddings list.")
        return data

    async def vectors(self, model: str, texts: list[str], **params: Any) -> list[Vector]:
        """One request: one float vector per text, in the order of `texts`."""
        data = await self.create({**params, "model": model, "input": texts})
        items = data.get("data")
        label = f"model '{model}'"
        if not isinstance(items, list) or len(items) != len(texts):
            raise UpstreamError(f"The {label} answered with {len(items) if isinstance(items, list) else 'no'} "
                                f"embeddings for {len(texts)} texts.")
        try:
            ordered = sorted(items, key=lambda d: int(d["index"]))
            return [_vector(d["embedding"], label) for d in ordered]
        except (KeyError, TypeError, ValueError, struct.error):
            raise UpstreamError(f"The {label} answered with something that is not an embeddings list.") from None

    async def embed(self, model: str, texts: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 4,
                    on_batch: Callable[[int], None] | None = None, **params: Any) -> list[Vector]:
        """Vectors for any number of texts: `batch_size` per request, at most `concurrency`
        requests in flight; `on_batch(n)` is called with each finished batch's size."""
        items = as_texts(texts)
        if not isinstance(batch_size, int) or not 1 <= batch_size <= 2048:
            raise InvalidRequestError("batch_size must be an integer from 1 to 2048.", param="batch_size")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidRequestError("concurrency must be a positive integer.", param="concurrency")
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        results: list[list[Vector]] = [[] for _ in batches]
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                results[i] = await self.vectors(model, batches[i], **params)
            if on_batch is not None:
                on_batch(len(batches[i]))

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(batches))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [v for batch in results for v in batch]
