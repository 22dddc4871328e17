"""A real Jupyter server with the bodhi_nb extension, on a non-root base_url; and a `Bodhi`
facade with the session's fake upstream registered as api model "fake"."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET

BASE = "/jupyter/"


@pytest.fixture
def jp_base_url():
    return BASE


@pytest.fixture
def jp_server_config(bodhi_home, monkeypatch):
    monkeypatch.setenv("BODHI_ENCRYPTION_KEY", TEST_SECRET)
    return {
        "ServerApp": {"jpserver_extensions": {"bodhi_nb": True}},
        "BodhiExtension": {"bodhi_home": str(bodhi_home), "kdf_iterations": FAST_KDF, "n_threads": 2,
                           "first_byte_timeout": 3.0, "connect_timeout": 2.0},
    }


@pytest.fixture
def api(jp_fetch):
    """Call a bodhi route: api("POST", "api-models", body) -> (status, json or text, headers)."""

    async def call(method, path, body=None, *, raw=None, headers=None):
        kw = {"method": method, "raise_error": False, "headers": headers or {}}
        if body is not None or raw is not None:
            kw["body"] = raw if raw is not None else json.dumps(body)
        elif method in ("POST", "PUT"):
            kw["body"] = ""
        path, _, query = path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&")) if query else None
        parts = ["bodhi", "v1", *path.split("/")]
        r = await jp_fetch(*parts, params=params, **kw)
        text = r.body.decode()
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return r.code, data, r.headers

    return call


@pytest.fixture
def fake_models() -> list[str]:
    """The upstream models the `bodhi` fixture registers; a module overrides this fixture to
    ask for the fake upstream's other models (tests/resources/fake_openai.py)."""
    return ["echo"]


@pytest.fixture
def bodhi(bodhi_home, upstream, fake_models):
    """A `Bodhi` facade on this test's BODHI_HOME, with the session's fake upstream registered
    as api model "fake" (prefix "fake/", the test key) serving `fake_models`."""
    from bodhi_nb.notebook.client import Bodhi

    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    b.api_models.create("fake", upstream.base_url, api_key=TEST_KEY, models=fake_models, prefix="fake/")
    yield b
    b.close()
