"""Structured outputs from the notebook: `Bodhi.chat(..., response_format=PydanticModel)` returns a
validated instance on an API model (the loopback fake upstream) and on the bundled local model,
a reply that does not match raises StructuredOutputError holding the raw text, and a dict is
sent exactly as given. Also `Bodhi.embed` and `aembed` against the fake provider."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Literal

import pandas as pd
import pytest
from pydantic import BaseModel

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.objs.errors import BodhiError, InvalidRequestError, StructuredOutputError
from bodhi_nb.services.local_engine import local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET


class Address(BaseModel):
    city: str
    zip_code: int | None = None


class Person(BaseModel):
    name: str
    age: int
    role: Literal["admin", "user"]
    address: Address


@pytest.fixture
def bodhi(bodhi_home, upstream):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, n_threads=2)
    b.api_models.create("fake", upstream.base_url, api_key=TEST_KEY, models=["structured", "echo", "embed-1"],
                        prefix="fake/")
    yield b
    b.services.engine.stop()
    b.close()


def test_pydantic_response_format_on_an_api_model(bodhi, upstream):
    person = bodhi.chat("fake/structured", "Who is the admin?", response_format=Person)
    assert isinstance(person, Person) and isinstance(person.address, Address) and person.role == "admin"
    sent = upstream.last()["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Person"
    assert sent["json_schema"]["strict"] is True
    schema = sent["json_schema"]["schema"]  # OpenAI's strict rules: every field required, nothing else allowed
    assert schema["required"] == ["name", "age", "role", "address"] and schema["additionalProperties"] is False
    assert schema["$defs"]["Address"]["required"] == ["city", "zip_code"]
    assert asyncio.run(bodhi.achat("fake/structured", "again", response_format=Person)) == person


def test_a_reply_that_does_not_match_raises_with_the_raw_text(bodhi):
    with pytest.raises(StructuredOutputError) as ei:
        bodhi.chat("fake/echo", "no JSON here", response_format=Person)
    err = ei.value
    assert isinstance(err, BodhiError) and err.raw == "echo: no JSON here"
    assert err.message.startswith("The reply does not match response_format (Person)")
    assert err.to_envelope()["error"]["code"] == "structured_output_invalid"


def test_a_dict_response_format_is_sent_as_given(bodhi, upstream):
    rf = {"type": "json_schema", "json_schema": {"name": "n", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
    assert bodhi.chat("fake/structured", "a number", response_format=rf) == {"n": 1}
    assert upstream.last()["body"]["response_format"] == rf
    assert bodhi.chat("fake/echo", "plain", response_format={"type": "text"}) == "echo: plain"
    with pytest.raises(InvalidRequestError):
        bodhi.chat("fake/echo", "x", response_format="json")


def test_embed_shows_a_progress_bar_when_there_is_more_than_one_request(bodhi, capsys):
    bodhi.embed([f"t{i}" for i in range(5)], "fake/embed-1", batch_size=2)
    err = capsys.readouterr().err
    assert "embed fake/embed-1" in err and "5/5" in err
    bodhi.embed(["one", "two"], "fake/embed-1", batch_size=2)  # one request: no bar
    assert "embed fake/embed-1" not in capsys.readouterr().err


def test_embed_on_an_api_model_batches_in_order(bodhi, upstream):
    texts = [f"text number {i}" for i in range(10)]
    vecs = bodhi.embed(texts, "fake/embed-1", batch_size=3, progress=False)  # 4 requests, answers out of order
    assert bodhi.embed(texts, "fake/embed-1", batch_size=3, concurrency=1, progress=False) == vecs
    expected = [[round((b - 127.5) / 127.5, 4) for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts]
    assert len(vecs) == 10
    assert all(all(abs(p - q) < 1e-6 for p, q in zip(v, e, strict=True)) for v, e in zip(vecs, expected, strict=True))
    assert upstream.last()["body"]["input"] == texts[9:]  # one request at a time: the last batch went last
    assert asyncio.run(bodhi.aembed(pd.Series(texts[:2]), "fake/embed-1")) == vecs[:2]
    assert bodhi.embed([], "fake/embed-1") == []
    rows = bodhi.usage(model="fake/embed-1")  # recorded in the usage ledger like chat
    assert len(rows) == 4 + 4 + 1 and set(rows["status"]) == {200} and rows["prompt_tokens"].sum() > 0
    with pytest.raises(InvalidRequestError):
        bodhi.embed([1, 2], "fake/embed-1")


class Capital(BaseModel):
    city: Literal["Paris", "London", "Rome", "Berlin"]
    is_capital: bool


@pytest.mark.local_model
@pytest.mark.skipif(not local_extra_available() or LocalModels.builtin_path() is None, reason="needs the local extra")
def test_pydantic_response_format_on_the_local_model(bodhi):
    got = bodhi.chat(BUILTIN_ALIAS, "What is the capital of France? Reply in JSON.", response_format=Capital,
                     max_tokens=40, temperature=0)
    assert isinstance(got, Capital) and got.city in ("Paris", "London", "Rome", "Berlin")
