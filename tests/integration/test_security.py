"""Authentication on every route (token, wrong token, cookie without XSRF), and
the key absent from exceptions, reprs, executed notebooks and the OpenAPI document."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.objs import UpstreamError
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET
from tests.route_table import every_route

MARK = "SECRET-9f8e7d6c5b4a3210"
ROUTES = every_route()


async def _cookie_session(c: httpx.AsyncClient, base: str, token: str) -> str:
    """Log in through Jupyter's login form, as a browser would; returns the _xsrf value."""
    r = await c.get(f"{base}login")
    xsrf = c.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)
    r = await c.post(f"{base}login", data={"_xsrf": xsrf, "password": token}, follow_redirects=False)
    assert r.status_code == 302, r.text[:500]
    return c.cookies.get("_xsrf") or xsrf


async def test_cookie_without_xsrf_is_refused_on_every_route(jp_serverapp, http_server_client, jp_http_port,
                                                            jp_base_url):
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    async with httpx.AsyncClient(trust_env=False) as c:
        xsrf = await _cookie_session(c, base, jp_serverapp.identity_provider.token)
        for method, path in ROUTES:
            r = await c.request(method, f"{base}bodhi/v1/{path}", content=b"{}")
            assert r.status_code == 403, (method, path, r.status_code)
            assert r.json()["error"]["type"] == "permission_error"
        # the same session with its XSRF token is let in (so the refusals above are about XSRF)
        ok = await c.get(f"{base}bodhi/v1/models", headers={"X-XSRFToken": xsrf})
        assert ok.status_code == 200


def test_exceptions_and_reprs_hold_no_key(bodhi_home, upstream):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    b.api_models.create("p", upstream.base_url, api_key=TEST_KEY, models=["status-401", "status-429", "echo"])
    texts = [repr(b), repr(b.services), repr(b.services.db), repr(b.api_models), repr(b.services.db.master_secret),
             repr(b.services.db.record("p")), repr(b.api_models.get("p"))]
    for model in ("status-401", "status-429"):
        with pytest.raises(UpstreamError) as ei:
            b.chat(model, "x")
        texts += [str(ei.value), repr(ei.value), json.dumps(ei.value.to_envelope())]
    from bodhi_nb.services.upstream_client import ForwardTarget, RawCredentials

    texts += [repr(ForwardTarget("http://h/v1", "m", TEST_KEY)), repr(RawCredentials("http://h/v1", TEST_KEY))]
    res = b.api_models.test("echo", "x", base_url=upstream.base_url, api_key=TEST_KEY + "-wrong")
    texts.append(json.dumps(res))
    b.close()
    blob = "\n".join(texts)
    assert "401" in blob and MARK not in blob and TEST_KEY not in blob


def test_executed_remote_notebook_holds_no_key(tmp_path):
    """Run the remote-provider demo with the recognisable key as the provider's key; scan its outputs."""
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    from bodhi_nb.services.local_models import LocalModels

    if LocalModels.builtin_path() is None:
        pytest.skip("needs the local extra")
    path = Path(__file__).resolve().parents[2] / "notebooks" / "02_remote_api_models.ipynb"
    nb = nbformat.read(path, as_version=4)
    # Make the demo's throwaway provider key our recognisable one (first code cell builds it).
    src = nb.cells[1].source
    assert 'api_key = "sk-local-" + secrets.token_hex(16)' in src
    nb.cells[1].source = src.replace('api_key = "sk-local-" + secrets.token_hex(16)', f'api_key = "{TEST_KEY}"')
    env_backup = dict(os.environ)
    os.environ.update(BODHI_HOME=str(tmp_path / "bodhi"), HF_HOME=str(tmp_path / "hf"), BODHI_NB_THREADS="2",
                      BODHI_ENCRYPTION_KEY="notebook-leak-test-secret-1")
    os.environ.pop("OPENAI_API_KEY", None)
    try:
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
        from bodhi_nb.services.local_engine import LocalEngine

        LocalEngine(tmp_path / "bodhi", LocalModels(tmp_path / "bodhi")).stop()
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert '"output_type"' in outputs and "True" in outputs  # it ran and printed
    assert TEST_KEY not in outputs and MARK not in outputs
    for f in (tmp_path / "bodhi").rglob("*"):
        if f.is_file():
            assert MARK.encode() not in f.read_bytes(), f


async def test_wider_schemathesis_budget_no_500s(jp_serverapp, http_server_client, jp_http_port, jp_base_url,
                                                 tmp_path):
    from tests.resources.schemathesis_run import run_schemathesis

    code, out = await run_schemathesis(jp_serverapp, jp_http_port, jp_base_url, tmp_path,
                                       int(os.environ.get("BODHI_NB_FUZZ_EXAMPLES_WIDE", "60")))
    assert code == 0, out[-6000:]
    assert "Fuzzing" in out and "passed" in out
