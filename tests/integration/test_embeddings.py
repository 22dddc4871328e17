"""POST bodhi/v1/embeddings and Bodhi.embed: the official openai SDK and langchain-openai against a
real Jupyter server, an API model on the loopback fake upstream, and the bundled SmolLM2 model
served by llama.cpp in embedding mode."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct

import httpx
import openai
import pandas as pd
import pytest

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.objs.errors import InvalidRequestError
from bodhi_nb.services.local_engine import local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET


def fake_vector(text: str) -> list[float]:
    """What tests/resources/fake_openai.py answers for `text`."""
    return [round((b - 127.5) / 127.5, 4) for b in hashlib.sha256(text.encode()).digest()[:8]]


def close(a: list[list[float]], b: list[list[float]], tol: float) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(abs(p - q) <= tol for p, q in zip(x, y, strict=True))
                                    for x, y in zip(a, b, strict=True))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


@pytest.fixture
def gateway(jp_serverapp, jp_http_port, jp_base_url, api, upstream):
    """Register the fake provider; returns (base_url, token) of the live gateway."""

    async def make() -> tuple[str, str]:
        code, _, _ = await api("POST", "api-models", {"id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY,
                                                      "models": ["embed-1", "echo-key", "status-429"],
                                                      "prefix": "fake/"})
        assert code == 201
        return f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1", jp_serverapp.identity_provider.token

    return make


async def test_sdk_embeddings_on_an_api_model_float_and_base64(gateway, upstream):
    url, token = await gateway()
    texts = ["the cat sat", "stock prices fell"]

    def calls():
        c = openai.OpenAI(base_url=url, api_key=token, http_client=httpx.Client(trust_env=False))
        default = c.embeddings.create(model="fake/embed-1", input=texts)  # the SDK asks for base64
        sent_default = upstream.last()["body"]
        floats = c.embeddings.create(model="fake/embed-1", input=texts, encoding_format="float")
        sent_float = upstream.last()["body"]
        raw = httpx.post(f"{url}/embeddings", headers={"Authorization": f"token {token}"}, trust_env=False,
                         json={"model": "fake/embed-1", "input": "one", "encoding_format": "base64", "x_extra": 7})
        return default, sent_default, floats, sent_float, raw, upstream.last()["body"]

    default, sent_default, floats, sent_float, raw, sent_raw = await asyncio.to_thread(calls)
    assert close([d.embedding for d in sorted(default.data, key=lambda d: d.index)], [fake_vector(t) for t in texts],
                 1e-6)
    assert sent_default["encoding_format"] == "base64" and sent_default["model"] == "embed-1"
    assert [d.embedding for d in sorted(floats.data, key=lambda d: d.index)] == [fake_vector(t) for t in texts]
    assert sent_float == {"input": texts, "model": "embed-1", "encoding_format": "float"}
    assert floats.usage.prompt_tokens == 6
    # Raw body: passed through as sent (unknown fields too), the answer relayed as the upstream gave it.
    assert raw.status_code == 200 and sent_raw == {"model": "embed-1", "input": "one", "encoding_format": "base64",
                                                   "x_extra": 7}
    blob = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert list(struct.unpack("<8f", blob)) == pytest.approx(fake_vector("one"), abs=1e-6)
    assert TEST_KEY not in raw.text


async def test_embedding_errors_come_in_the_envelope(gateway, api):
    await gateway()
    cases = [
        ({"model": "fake/embed-1"}, 400, "validation_error"),
        ({"model": "fake/embed-1", "input": []}, 400, "validation_error"),
        ({"model": "fake/embed-1", "input": ["ok", 3]}, 400, "validation_error"),
        ({"model": "fake/embed-1", "input": "x", "encoding_format": "hex"}, 400, "validation_error"),
        ({"model": "no-such-model", "input": "x"}, 404, "model_not_found"),
        ({"model": "fake/status-429", "input": "x"}, 429, None),
        ({"model": "fake/echo-key", "input": "x"}, 401, "invalid_api_key"),
    ]
    for body, status, code in cases:
        got, data, _ = await api("POST", "embeddings", body)
        assert got == status, (body, data)
        assert set(data["error"]) == {"message", "type", "param", "code"}, data
        if code:
            assert data["error"]["code"] == code, (body, data)
        assert TEST_KEY not in str(data)
    got, data, _ = await api("POST", "embeddings", raw="{not json")
    assert got == 400 and data["error"]["type"] == "invalid_request_error"
    got, data, _ = await api("POST", "embeddings", {"model": BUILTIN_ALIAS, "input": [[1, 2, 3]]})
    if local_extra_available():  # a local model embeds text: a clear 400 before any engine starts
        assert got == 400 and "embeds text" in data["error"]["message"], data


@pytest.mark.local_model
@pytest.mark.skipif(not local_extra_available() or LocalModels.builtin_path() is None, reason="needs the local extra")
async def test_sdk_and_langchain_embeddings_on_the_local_model(gateway):
    url, token = await gateway()
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today."]

    def calls():
        from langchain_openai import OpenAIEmbeddings

        c = openai.OpenAI(base_url=url, api_key=token, http_client=httpx.Client(trust_env=False, timeout=300))
        default = c.embeddings.create(model=BUILTIN_ALIAS, input=texts)  # base64, decoded by the SDK
        floats = c.embeddings.create(model=BUILTIN_ALIAS, input=texts, encoding_format="float")
        lc = OpenAIEmbeddings(model=BUILTIN_ALIAS, base_url=url, api_key=token, check_embedding_ctx_length=False,
                              http_client=httpx.Client(trust_env=False, timeout=300))
        return default, floats, lc.embed_documents(texts), lc.embed_query(texts[0])

    default, floats, lc_docs, lc_query = await asyncio.to_thread(calls)
    f = [d.embedding for d in sorted(floats.data, key=lambda d: d.index)]
    b = [d.embedding for d in sorted(default.data, key=lambda d: d.index)]
    assert len(f) == 2 and len(f[0]) == len(f[1]) == 576  # SmolLM2-135M's hidden size
    assert close(b, f, 1e-6)  # base64 float32 of the same vectors
    assert floats.model == BUILTIN_ALIAS and floats.usage.prompt_tokens > 0
    assert all(abs(math.hypot(*v) - 1) < 1e-4 for v in f)  # unit length, as OpenAI's are
    assert close(lc_docs, f, 1e-5)
    assert cosine(lc_query, f[0]) > 0.9999  # alone, not in a batch: the same vector up to float noise


SIMILAR = [  # (a, b): a pair that says nearly the same thing; pairs differ in topic
    ("The cat sat on the mat.", "A cat was sitting on the rug."),
    ("Stock markets fell sharply today.", "Share prices dropped steeply on the exchange."),
    ("How do I bake bread at home?", "A simple recipe for homemade bread."),
]


@pytest.mark.local_model
@pytest.mark.skipif(not local_extra_available() or LocalModels.builtin_path() is None, reason="needs the local extra")
def test_bodhi_embed_on_the_bundled_model(bodhi_home, capsys):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, n_threads=2)
    try:
        texts = [t for pair in SIMILAR for t in pair]
        vecs = b.embed(texts, BUILTIN_ALIAS)
        batched = b.embed(pd.Series(texts), BUILTIN_ALIAS, batch_size=4, progress=False)  # 2 requests
        one = b.embed(texts[3], BUILTIN_ALIAS)
        with pytest.raises(InvalidRequestError):
            b.embed(["fine", None], BUILTIN_ALIAS)
    finally:
        b.services.engine.stop()
        b.close()
    assert len(vecs) == len(texts) and len({len(v) for v in vecs}) == 1 and len(vecs[0]) == 576
    # Same order whatever the batching. llama.cpp's numbers for a text shift in the 5th digit with
    # its place in a batch (other matrix kernels), so vectors are compared by cosine.
    assert all(cosine(x, y) > 0.9999 for x, y in zip(batched, vecs, strict=True))
    assert cosine(one[0], vecs[3]) > 0.9999 and all(abs(math.hypot(*v) - 1) < 1e-4 for v in vecs)
    # Measured, not assumed: each text is closer to its pair than to any text of another pair.
    def sim(i: int, j: int) -> float:
        return cosine(vecs[i], vecs[j])

    with capsys.disabled():
        print("\ncosine similarity, SmolLM2-135M mean-pooled: pair vs closest text of another pair")
        for p, (a, c) in enumerate(SIMILAR):
            i, j = 2 * p, 2 * p + 1
            other = max(sim(x, k) for x in (i, j) for k in range(len(texts)) if k not in (i, j))
            print(f"  {a[:32]:<32} ~ {c[:44]:<44} {sim(i, j):.4f} vs {other:.4f}")
    for p in range(len(SIMILAR)):
        i, j = 2 * p, 2 * p + 1
        for x in (i, j):
            closest_other = max(sim(x, k) for k in range(len(texts)) if k not in (i, j))
            assert sim(i, j) > closest_other, (SIMILAR[p], sim(i, j), closest_other)


async def test_a_router_alias_routes_embeddings_like_chat(gateway, api, upstream):
    await gateway()
    code, data, _ = await api("POST", "router-aliases", {"alias": "emb", "targets": ["fake/status-429",
                                                                                     "fake/embed-1"]})
    assert code == 201, data
    code, data, headers = await api("POST", "embeddings", {"model": "emb", "input": ["fallback"]})
    assert code == 200, data
    assert headers["x-bodhi-target"] == "fake/embed-1"  # the 429 target was skipped
    assert data["data"][0]["embedding"] == fake_vector("fallback")
    assert upstream.last()["body"] == {"model": "embed-1", "input": ["fallback"]}
