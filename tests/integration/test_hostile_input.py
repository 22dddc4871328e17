"""Hostile input and key echo, against a real Jupyter server: every route answers malformed
input with a 4xx in the OpenAI envelope (never a 500), unknown paths are a 404 envelope,
and a provider that quotes the key it received cannot leak it to a client, a log or an
exception."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from bodhi_nb.http.extension import ROUTES
from bodhi_nb.objs import InvalidRequestError, UpstreamError, mask_api_key
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET

MARK = "SECRET-9f8e7d6c5b4a3210"  # the distinctive middle of TEST_KEY
MASK = mask_api_key(TEST_KEY)
MSG = [{"role": "user", "content": "x"}]


@pytest.fixture
def gw(jp_serverapp, http_server_client, jp_http_port, jp_base_url):
    """(url, headers) for raw httpx calls: paths are sent exactly as written (no re-escaping)."""
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1"
    return url, {"Authorization": f"Bearer {jp_serverapp.identity_provider.token}"}


def _envelope(r: httpx.Response, lo: int = 400, hi: int = 499) -> dict:
    """The error of a 4xx answer: OpenAI's envelope, or on the Anthropic Messages routes,
    Anthropic's (`{"type": "error", "error": {"type", "message"}}`)."""
    assert lo <= r.status_code <= hi, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    assert "Traceback" not in r.text
    body = r.json()
    err = body["error"]
    if "/messages" in r.request.url.path:
        assert body["type"] == "error" and {"type", "message"} <= set(err) and err["message"]
        return err
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


# -- deeply nested JSON on every route that takes a body ------------------------------------

_PARAM = re.compile(r"\(\?P<\w+>[^)]*\)")


def _body_routes() -> list[tuple[str, str]]:
    """(METHOD, path) of every handler method that reads a JSON body, from the route table (an
    upload reads multipart/form-data: tests/integration/test_batches.py covers it)."""
    out = []
    for h in ROUTES:
        for method, op in h.openapi.items():
            if op.body == "json" and (op.request is not None or method in ("post", "put", "patch")):
                out.append((method.upper(), _PARAM.sub("x", h.path)))
    return out


DEEP = {
    "20,000 unclosed": b"[" * 20_000,
    "20,000 closed": b"[" * 20_000 + b"]" * 20_000,
    "20,000 objects": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    "deep field in a good body": (b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], "x": '
                                  + b"[" * 900 + b"]" * 900 + b"}"),
}


def test_the_route_list_is_derived_and_complete():
    routes = _body_routes()
    for want in [("POST", "chat/completions"), ("POST", "api-models"), ("PUT", "api-models/x"),
                 ("POST", "api-models/test"), ("POST", "api-models/fetch-models"), ("POST", "aliases"),
                 ("PUT", "aliases/x")]:
        assert want in routes


@pytest.mark.parametrize("kind", list(DEEP))
async def test_deep_json_is_a_400_on_every_body_route(gw, kind):
    url, headers = gw
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        for method, path in _body_routes():
            r = await c.request(method, f"{url}/{path}", headers=headers, content=DEEP[kind])
            err = _envelope(r, 400, 400)
            assert err["type"] == "invalid_request_error" and "nested" in err["message"], (method, path, err)
        # the server is fine afterwards
        assert (await c.get(f"{url}/models", headers=headers)).status_code == 200


async def test_moderate_nesting_still_works(gw, upstream):
    url, headers = gw
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        r = await c.post(f"{url}/api-models", headers=headers, json={"id": "p", "base_url": upstream.base_url,
                                                                     "api_key": TEST_KEY, "models": ["echo"]})
        assert r.status_code == 201
        nested: list = []
        for _ in range(60):  # a deep tool schema is still well under the limit
            nested = [nested]
        r = await c.post(f"{url}/chat/completions", headers=headers,
                         json={"model": "echo", "messages": MSG, "x_vendor": nested})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: x"
        assert upstream.last()["body"]["x_vendor"] == nested


# -- base_url ----------------------------------------------------------------------------------

BAD_URLS = {
    "CR/LF": ("http://127.0.0.1:1/v1\r\nX-Injected: 1", "line breaks"),
    "NUL": ("http://127.0.0.1\x00.evil/v1", "NUL"),
    "port 70000": ("http://127.0.0.1:70000/v1", "port"),
    "70 KB": ("http://127.0.0.1:1/" + "a" * 70_000, "2,048"),
    "ftp": ("ftp://127.0.0.1/v1", "http:// or https://"),
    "no host": ("http:///v1", "with a host"),
    "user:password@": ("http://user:password@127.0.0.1:1/v1", "api_key field"),
}


@pytest.mark.parametrize("name", list(BAD_URLS))
async def test_bad_base_url_is_refused_on_every_route_and_nothing_is_stored(gw, upstream, name):
    bad, words = BAD_URLS[name]
    url, headers = gw
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        create = {"id": "p", "base_url": bad, "api_key": TEST_KEY, "models": ["echo"]}
        err = _envelope(await c.post(f"{url}/api-models", headers=headers, json=create))
        assert words in err["message"] and err["param"] == "base_url" and "password" not in err["message"][:20]
        assert bad not in err["message"] and "user:password" not in json.dumps(err)
        listing = (await c.get(f"{url}/api-models", headers=headers)).json()
        assert listing["total"] == 0

        good = {"id": "p", "base_url": upstream.base_url, "api_key": TEST_KEY, "models": ["echo"]}
        assert (await c.post(f"{url}/api-models", headers=headers, json=good)).status_code == 201
        err = _envelope(await c.put(f"{url}/api-models/p", headers=headers, json={"base_url": bad}))
        assert words in err["message"] and err["param"] == "base_url"
        rec = (await c.get(f"{url}/api-models/p", headers=headers)).json()
        assert rec["base_url"] == upstream.base_url and rec["has_api_key"]

        for path, body in [("api-models/test", {"base_url": bad, "api_key": TEST_KEY, "model": "echo",
                                                 "prompt": "hi"}),
                           ("api-models/fetch-models", {"base_url": bad, "api_key": TEST_KEY})]:
            err = _envelope(await c.post(f"{url}/{path}", headers=headers, json=body))
            assert words in err["message"] and err["param"] == "base_url", path
        # the stored record still works
        r = await c.post(f"{url}/chat/completions", headers=headers, json={"model": "echo", "messages": MSG})
        assert r.status_code == 200


@pytest.mark.parametrize("name", list(BAD_URLS))
def test_bad_base_url_is_an_invalid_request_error_from_python(bodhi_home, upstream, name):
    from bodhi_nb.notebook.client import Bodhi

    bad, words = BAD_URLS[name]
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    try:
        with pytest.raises(InvalidRequestError, match=re.escape(words)):
            b.api_models.create("p", bad, api_key=TEST_KEY, models=["echo"])
        assert b.api_models.list() == []
        b.api_models.create("p", upstream.base_url, api_key=TEST_KEY, models=["echo"])
        with pytest.raises(InvalidRequestError, match=re.escape(words)):
            b.api_models.update("p", base_url=bad)
        assert b.api_models.get("p")["base_url"] == upstream.base_url
        with pytest.raises(InvalidRequestError, match=re.escape(words)):
            b.api_models.test("echo", "hi", base_url=bad, api_key=TEST_KEY)
        with pytest.raises(InvalidRequestError, match=re.escape(words)):
            b.api_models.fetch_models(base_url=bad, api_key=TEST_KEY)
    finally:
        b.close()


# -- NUL and over-long values in bodies -----------------------------------------------------


async def test_nul_and_over_long_fields_are_4xx_and_nothing_is_stored(gw, upstream, bodhi_home):
    url, headers = gw
    good = {"id": "p", "base_url": upstream.base_url, "api_key": TEST_KEY, "models": ["echo"]}
    bad_models = [{**good, "id": "a\x00b"}, {**good, "id": "x" * 10_000}, {**good, "models": ["e\x00cho"]},
                  {**good, "models": ["m" * 10_000]}, {**good, "prefix": "p\x00/"}]
    alias = {"alias": "a", "repo": "o/r", "filename": "f.gguf"}
    bad_aliases = [{**alias, "alias": "a\x00b"}, {**alias, "alias": "a" * 10_000}, {**alias, "alias": "a\n"}]
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        for body in bad_models:
            err = _envelope(await c.post(f"{url}/api-models", headers=headers, json=body))
            assert "\x00" not in err["message"] and len(err["message"]) < 400
        for body in bad_aliases:
            err = _envelope(await c.post(f"{url}/aliases", headers=headers, json=body))
            assert "\x00" not in err["message"] and len(err["message"]) < 400
        raw = {"base_url": upstream.base_url, "api_key": "k\x00"}
        for path, body in [("api-models/test", {**raw, "model": "echo", "prompt": "hi"}),
                           ("api-models/fetch-models", raw)]:  # a raw key goes into a header
            err = _envelope(await c.post(f"{url}/{path}", headers=headers, json=body))
            assert err["param"] == "api_key" and "control characters" in err["message"]
        assert (await c.get(f"{url}/api-models", headers=headers)).json()["total"] == 0
        assert (await c.get(f"{url}/aliases", headers=headers)).json()["data"] == []
    assert not (bodhi_home / "aliases").exists() or not any((bodhi_home / "aliases").iterdir())


# -- path parameters -------------------------------------------------------------------------

HOSTILE_IDS = {"NUL": "a%00b", "10,000 characters": "a" * 10_000, "127 encoded slashes": "a" + "%2F" * 127,
               "encoded newline": "a%0A", "encoded dot-dot": "..%2F..%2Fetc%2Fpasswd"}


@pytest.mark.parametrize("name", list(HOSTILE_IDS))
async def test_hostile_path_parameters_are_4xx(gw, name):
    url, headers = gw
    bad = HOSTILE_IDS[name]
    alias = {"alias": "a", "repo": "o/r", "filename": "f.gguf"}
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        assert (await c.post(f"{url}/aliases", headers=headers, json=alias)).status_code == 201
        calls = [("GET", f"aliases/{bad}", None), ("DELETE", f"aliases/{bad}", None),
                 ("PUT", f"aliases/{bad}", {**alias, "alias": "a"}),
                 ("GET", f"api-models/{bad}", None), ("DELETE", f"api-models/{bad}", None),
                 ("PUT", f"api-models/{bad}", {"models": ["m"]}), ("GET", f"models/{bad}", None)]
        for method, path, body in calls:
            r = await c.request(method, f"{url}/{path}", headers=headers, json=body)
            err = _envelope(r)
            if path.startswith("aliases/"):  # an alias name is shown escaped and cut short
                assert len(err["message"]) < 400 and "\x00" not in err["message"], (method, name)
        # nothing was touched
        assert [a["alias"] for a in (await c.get(f"{url}/aliases", headers=headers)).json()["data"]] == ["a"]


async def test_team_slash_and_team_colon_are_two_aliases(gw, bodhi_home):
    url, headers = gw
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        for name, snap in [("team/model", "one"), ("team:model", "two")]:
            r = await c.post(f"{url}/aliases", headers=headers,
                             json={"alias": name, "repo": "o/r", "filename": "f.gguf", "snapshot": snap})
            assert r.status_code == 201, r.text
        for path, name, snap in [("team%2Fmodel", "team/model", "one"), ("team/model", "team/model", "one"),
                                 ("team:model", "team:model", "two"), ("team%3Amodel", "team:model", "two")]:
            r = await c.get(f"{url}/aliases/{path}", headers=headers)
            assert r.status_code == 200 and (r.json()["alias"], r.json()["snapshot"]) == (name, snap), path
        listing = (await c.get(f"{url}/aliases", headers=headers)).json()
        assert sorted(a["alias"] for a in listing["data"]) == ["team/model", "team:model"]
        assert listing["errors"] == []
    assert len(list((bodhi_home / "aliases").glob("*.yaml"))) == 2


async def test_an_alias_name_that_cannot_be_stored_is_a_400(gw, bodhi_home):
    url, headers = gw
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        r = await c.post(f"{url}/aliases", headers=headers,
                         json={"alias": "a" + "/" * 127, "repo": "o/r", "filename": "f.gguf"})
        err = _envelope(r, 400, 400)
        assert "too long" in err["message"] and err["param"] == "alias"
    assert not any((bodhi_home / "aliases").glob("*")) if (bodhi_home / "aliases").exists() else True


# -- paging query parameters -----------------------------------------------------------------


def _paged_routes() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation that documents `page` and `page_size`, from the route table."""
    return [(method.upper(), _PARAM.sub("x", h.path)) for h in ROUTES for method, op in h.openapi.items()
            if {"page", "page_size"} <= {q[0] for q in op.query}]


BAD_PAGING = [("page", str(10**30)), ("page_size", str(10**30)), ("page", str(2**63)), ("page", "-1"),
              ("page_size", "-1"), ("page", "0"), ("page_size", "0"), ("page", "1.5"), ("page_size", "abc"),
              ("page", "9" * 5000), ("page_size", "1e3")]


@pytest.mark.parametrize("by", ["", "model"])
async def test_huge_negative_and_non_integer_paging_is_a_400_on_every_paged_route(gw, by):
    url, headers = gw
    routes = _paged_routes()
    assert ("GET", "api-models") in routes and ("GET", "usage") in routes
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        for method, path in routes:
            for name, value in BAD_PAGING:
                params = {name: value, **({"by": by} if by and path == "usage" else {})}
                r = await c.request(method, f"{url}/{path}", headers=headers, params=params)
                if r.status_code == 200:  # a page past the end may be an empty page, never a 500
                    assert name == "page" and r.json()["data"] == [], (path, name, r.text[:200])
                    continue
                err = _envelope(r, 400, 400)
                assert err["type"] == "invalid_request_error" and name in err["message"], (path, name, err)
                assert err["param"] == name, (path, name, err)
            r = await c.request(method, f"{url}/{path}", headers=headers, params={"page": "1", "page_size": "1"})
            assert r.status_code == 200 and r.json()["page_size"] == 1  # and the route still answers


# -- unknown paths ---------------------------------------------------------------------------

UNKNOWN = ["nope", "api-models/x/y", "", "chat/completions/extra", "v1/models"]


async def test_unknown_paths_are_a_404_envelope(gw):
    url, headers = gw
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        for path in UNKNOWN:
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                r = await c.request(method, f"{url}/{path}", headers=headers, content=b"{}")
                err = _envelope(r, 404, 404)
                assert err["type"] == "not_found_error" and err["code"] == "unknown_route", (method, path)
                assert "openapi.json" in err["message"]
        doc = (await c.get(f"{url}/openapi.json", headers=headers)).json()
        assert not [p for p in doc["paths"] if "*" in p or "Unknown" in json.dumps(doc["paths"][p])]
        assert "/models" in doc["paths"]


async def test_unknown_paths_still_need_authentication(gw):
    url, _ = gw
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        for path in UNKNOWN:
            for method in ("GET", "POST"):
                for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                    r = await c.request(method, f"{url}/{path}", headers=headers, content=b"{}")
                    err = _envelope(r, 403, 403)
                    assert err["type"] == "permission_error", (method, path)


# -- a provider that quotes the key ------------------------------------------------------------


def _no_key(text: str, where: str) -> None:
    assert TEST_KEY not in text and MARK not in text, where


async def test_key_echo_reaches_no_response_and_no_log(gw, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    url, headers = gw
    echo_base = f"http://127.0.0.1:{upstream.port}/echo-key/v1"
    seen: list[str] = []
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        for id, base, models in [("echo", upstream.base_url, ["echo-key"]), ("echo2", echo_base, ["other"])]:
            r = await c.post(f"{url}/api-models", headers=headers,
                             json={"id": id, "base_url": base, "api_key": TEST_KEY, "models": models})
            assert r.status_code == 201

        r = await c.post(f"{url}/chat/completions", headers=headers, json={"model": "echo-key", "messages": MSG})
        assert r.status_code == 401 and MASK in r.json()["error"]["message"]
        seen += [r.text, json.dumps(dict(r.headers))]

        r = await c.post(f"{url}/chat/completions", headers=headers,
                         json={"model": "echo-key", "messages": MSG, "stream": True})
        assert r.status_code == 200 and "partial" in r.text and MASK in r.text and '"error"' in r.text
        seen += [r.text, json.dumps(dict(r.headers))]

        r = await c.post(f"{url}/chat/completions", headers=headers, json={"model": "other", "messages": MSG})
        assert r.status_code == 401 and MASK in r.text
        seen += [r.text, json.dumps(dict(r.headers))]

        for body in ({"id": "echo", "model": "echo-key", "prompt": "hi"},
                     {"base_url": upstream.base_url, "api_key": TEST_KEY, "model": "echo-key", "prompt": "hi"}):
            r = await c.post(f"{url}/api-models/test", headers=headers, json=body)
            assert r.status_code == 200 and r.json()["success"] is False and MASK in r.json()["error"]
            seen += [r.text, json.dumps(dict(r.headers))]

        for body in ({"id": "echo2"}, {"base_url": echo_base, "api_key": TEST_KEY}):
            r = await c.post(f"{url}/api-models/fetch-models", headers=headers, json=body)
            assert r.status_code == 401 and MASK in r.json()["error"]["message"]
            seen += [r.text, json.dumps(dict(r.headers))]

    assert upstream.last()["headers"]["Authorization"] == f"Bearer {TEST_KEY}"  # the key did go upstream
    for i, text in enumerate(seen):
        _no_key(text, f"response {i}")
    records = [rec.getMessage() + " " + repr(rec.args) + " " + str(rec.exc_text or "") for rec in caplog.records]
    assert any("401" in m for m in records)  # the failures were logged...
    for m in records:
        _no_key(m, m[:200])  # ...without the key


def _chain(exc: BaseException) -> str:
    out = []
    e: BaseException | None = exc
    while e is not None:
        out += [str(e), repr(e), json.dumps(getattr(e, "to_envelope", dict)())]
        e = e.__cause__ or e.__context__
    return "\n".join(out)


def test_key_echo_reaches_no_python_exception_or_log(bodhi_home, upstream, caplog):
    from bodhi_nb.notebook.client import Bodhi

    caplog.set_level(logging.DEBUG)
    echo_base = f"http://127.0.0.1:{upstream.port}/echo-key/v1"
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    texts: list[str] = []
    try:
        b.api_models.create("p", upstream.base_url, api_key=TEST_KEY, models=["echo-key"])
        b.api_models.create("q", echo_base, api_key=TEST_KEY, models=["other"])
        for model in ("echo-key", "other"):
            with pytest.raises(UpstreamError) as ei:
                b.chat(model, "x")
            assert ei.value.status == 401 and MASK in ei.value.message
            texts.append(_chain(ei.value))
        got: list[str] = []
        with pytest.raises(UpstreamError) as ei:
            for delta in b.chat("echo-key", "x", stream=True):
                got.append(delta)
        assert got == ["partial "] and "mid-stream" in ei.value.message and MASK in ei.value.message
        texts.append(_chain(ei.value))
        res = b.api_models.test("echo-key", "hi", id="p")
        assert res["success"] is False and MASK in res["error"]
        texts.append(json.dumps(res))
        res = b.api_models.test("echo-key", "hi", base_url=upstream.base_url, api_key=TEST_KEY)
        texts.append(json.dumps(res))
        for kw in ({"id": "q"}, {"base_url": echo_base, "api_key": TEST_KEY}):
            with pytest.raises(UpstreamError) as ei:
                b.api_models.fetch_models(**kw)
            assert ei.value.status == 401 and MASK in ei.value.message
            texts.append(_chain(ei.value))
    finally:
        b.close()
    for i, t in enumerate(texts):
        _no_key(t, f"python text {i}: {t[:200]}")
    for rec in caplog.records:
        _no_key(rec.getMessage() + repr(rec.args) + str(rec.exc_text or ""), rec.getMessage()[:200])
