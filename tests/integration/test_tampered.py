"""One API model whose stored key cannot be decrypted never breaks the others.

The live Jupyter server, the in-kernel Bodhi facade and the panel all list it (with an
error and no mask); chat to it names it; the others keep working; delete and
update-with-a-new-key repair it.
"""

from __future__ import annotations

import json

import pytest

import bodhi_nb
from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.objs import BodhiError
from bodhi_nb.services.db import LockedJSONStorage
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET

OTHER_KEY = "sk-tamper-other-key-0123456789"


def _corrupt(home, id: str) -> None:
    """Flip bytes inside one record's ciphertext, as an edit or a disk fault would."""
    path = home / "bodhi_nb.db.json"
    data = json.loads(path.read_text())
    token = data["api_model_aliases"][id]["api_key"]
    data["api_model_aliases"][id]["api_key"] = token[:20] + ("Q" if token[20] != "Q" else "R") + token[21:]
    LockedJSONStorage(path).write(data)


async def _seed(api, upstream) -> None:
    for id, key, prefix in (("good", TEST_KEY, "g/"), ("bad", TEST_KEY, "b/"), ("other", OTHER_KEY, "o/")):
        code, data, _ = await api("POST", "api-models", {"id": id, "base_url": upstream.base_url, "api_key": key,
                                                         "models": ["echo"], "prefix": prefix})
        assert code == 201, data


async def _chat(api, model: str):
    return await api("POST", "chat/completions", {"model": model, "messages": [{"role": "user", "content": "t"}]})


async def test_tampered_record_over_http(api, upstream, bodhi_home):
    await _seed(api, upstream)
    _corrupt(bodhi_home, "bad")
    code, page, _ = await api("GET", "api-models")
    assert code == 200 and page["total"] == 3
    rows = {r["id"]: r for r in page["data"]}
    assert rows["bad"]["api_key_masked"] is None and rows["bad"]["has_api_key"]
    assert "cannot be decrypted" in rows["bad"]["error"] and "'bad'" in rows["bad"]["error"]
    assert rows["good"]["error"] is None and rows["good"]["api_key_masked"] == TEST_KEY[:3] + "..." + TEST_KEY[-4:]
    code, one, _ = await api("GET", "api-models/bad")
    assert code == 200 and one["error"] == rows["bad"]["error"]

    code, data, _ = await _chat(api, "b/echo")
    assert code >= 500 and "API model 'bad'" in data["error"]["message"] and "delete it" in data["error"]["message"]
    code, data, _ = await _chat(api, "g/echo")
    assert code == 200 and data["choices"][0]["message"]["content"] == "echo: t"

    code, data, _ = await api("PUT", "api-models/bad", {"api_key": TEST_KEY})  # repair with a new key
    assert code == 200 and data["error"] is None and data["api_key_masked"]
    code, data, _ = await _chat(api, "b/echo")
    assert code == 200

    _corrupt(bodhi_home, "other")
    code, _, _ = await api("DELETE", "api-models/other")  # delete repairs too
    assert code == 204
    code, page, _ = await api("GET", "api-models")
    assert code == 200 and [r["error"] for r in page["data"]] == [None, None]


def test_tampered_record_in_bodhi_and_the_panel(bodhi_home, upstream):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    try:
        b.api_models.create("good", upstream.base_url, api_key=TEST_KEY, models=["echo"], prefix="g/")
        b.api_models.create("bad", upstream.base_url, api_key=OTHER_KEY, models=["echo"], prefix="b/")
        _corrupt(bodhi_home, "bad")
        rows = {r["id"]: r for r in b.api_models.list()}
        assert set(rows) == {"good", "bad"}
        assert rows["bad"]["api_key_masked"] is None and "cannot be decrypted" in rows["bad"]["error"]
        assert rows["good"]["error"] is None
        assert b.api_models.test("echo", "hi", id="good")["success"]
        with pytest.raises(BodhiError, match="API model 'bad'.*delete it"):
            b.chat("b/echo", "hi")

        tab = bodhi_nb.panel(b)  # builds, and the table says what is wrong with that row
        api_panel = tab.children[1]
        assert "unreadable: set a new key" in api_panel.table.value and "good" in api_panel.table.value

        b.api_models.update("bad", api_key=TEST_KEY)
        assert b.api_models.get("bad")["error"] is None and b.api_models.test("echo", "hi", id="bad")["success"]
    finally:
        b.close()
