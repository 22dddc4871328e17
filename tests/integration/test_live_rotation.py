"""Master-key rotation by another process while a real Jupyter server is running.

Key-file secret: the server notices the new key generation, reloads the secret from the
key file and keeps chatting, with no restart. Environment secret: the stale server
refuses (503, one clear sentence) and writes nothing under its old key; after a restart
with the new secret every record, from before and after the rotation, works.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys

import httpx
import pytest

from bodhi_nb.services.db import ConfigStore
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET
from tests.resources.servers import free_port, wait_http_ok

NEW_SECRET = "the-rotated-master-secret-0123456789"


@pytest.fixture
def secret_mode():
    return "file"


@pytest.fixture
def jp_server_config(jp_server_config, monkeypatch, secret_mode):
    """The server of tests/integration/conftest.py (its secret, TEST_SECRET, in the env), with
    the secret from the key file instead unless secret_mode is "env"."""
    if secret_mode != "env":
        monkeypatch.delenv("BODHI_ENCRYPTION_KEY", raising=False)  # BODHI_NO_KEYRING=1: the key file
    return jp_server_config


async def _cli(home, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`bodhi-nb ...` in another process, awaited without blocking the server's event loop."""
    e = {**os.environ, "BODHI_HOME": str(home), "BODHI_NO_KEYRING": "1"}
    e.pop("BODHI_ENCRYPTION_KEY", None)
    e.update(env or {})
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bodhi_nb.cli", *args],
                                   capture_output=True, text=True, env=e, timeout=120)


async def _create(api, upstream, id: str, prefix: str):
    return await api("POST", "api-models", {"id": id, "base_url": upstream.base_url, "api_key": TEST_KEY,
                                            "models": ["echo"], "prefix": prefix})


async def _chat(api, model: str):
    return await api("POST", "chat/completions", {"model": model, "messages": [{"role": "user", "content": "r"}]})


async def test_key_file_server_keeps_working_after_another_process_rotates(api, upstream, bodhi_home):
    code, _, _ = await _create(api, upstream, "before", "b/")
    assert code == 201
    code, data, _ = await _chat(api, "b/echo")
    assert code == 200 and data["choices"][0]["message"]["content"] == "echo: r"
    old = (bodhi_home / ".secret_key").read_text()

    r = await _cli(bodhi_home, "rotate-key")
    assert r.returncode == 0 and "Re-encrypted 1 API key" in r.stdout, r.stderr
    assert (bodhi_home / ".secret_key").read_text() != old

    code, data, _ = await _chat(api, "b/echo")  # the server's next chat: new key loaded, upstream accepts
    assert code == 200 and data["choices"][0]["message"]["content"] == "echo: r"
    assert upstream.last()["headers"]["Authorization"] == f"Bearer {TEST_KEY}"
    code, _, _ = await _create(api, upstream, "after", "a/")  # and it writes under the new key
    assert code == 201
    code, page, _ = await api("GET", "api-models")
    assert code == 200 and all(row["error"] is None and row["api_key_masked"] for row in page["data"])

    fresh = ConfigStore(bodhi_home)  # another process opening with the key file's secret
    assert fresh.get_api_key("before") == TEST_KEY and fresh.get_api_key("after") == TEST_KEY
    with pytest.raises(Exception, match="does not open"):
        ConfigStore(bodhi_home, old.strip())


@pytest.mark.parametrize("secret_mode", ["env"])
async def test_env_server_refuses_after_rotation_and_a_restart_serves_everything(api, upstream, bodhi_home,
                                                                                   tmp_path, secret_mode):
    code, _, _ = await _create(api, upstream, "before", "b/")
    assert code == 201
    r = await _cli(bodhi_home, "rotate-key",
                   env={"BODHI_ENCRYPTION_KEY": TEST_SECRET, "BODHI_NEW_ENCRYPTION_KEY": NEW_SECRET})
    assert r.returncode == 0 and "set BODHI_ENCRYPTION_KEY" in r.stdout, r.stderr
    db_file = bodhi_home / "bodhi_nb.db.json"
    raw = db_file.read_bytes()

    refused = [
        await _create(api, upstream, "late", "l/"),
        await api("PUT", "api-models/before", {"api_key": TEST_KEY}),
        await api("PUT", "api-models/before", {"models": ["echo", "x"]}),
        await api("DELETE", "api-models/before"),
        await api("GET", "api-models"),
        await _chat(api, "b/echo"),
    ]
    for code, data, _ in refused:
        assert code == 503, data
        assert data["error"]["code"] == "master_key_rotated"
        assert data["error"]["message"] == ("The master key was rotated by another process; restart with the new "
                                            "BODHI_ENCRYPTION_KEY.")
    assert db_file.read_bytes() == raw  # nothing written under the stale key

    # Another process with the new secret adds a record after the rotation.
    add = ("import os, sys; from bodhi_nb.objs import ApiModelAlias; from bodhi_nb.services.db import ConfigStore; "
           "ConfigStore(sys.argv[1]).create(ApiModelAlias(id='after', base_url=sys.argv[2], models=['echo'], "
           "prefix='a/'), os.environ['BODHI_API_KEY'])")
    e = {**os.environ, "BODHI_ENCRYPTION_KEY": NEW_SECRET, "BODHI_API_KEY": TEST_KEY}
    r = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", add, str(bodhi_home), upstream.base_url],
                                capture_output=True, text=True, env=e, timeout=120)
    assert r.returncode == 0, r.stderr

    # Restart: a new Jupyter server process started with the new secret.
    port, token = free_port(), secrets.token_hex(16)
    server, log = await asyncio.to_thread(_start_server, bodhi_home, tmp_path, port, token)
    base, headers = f"http://127.0.0.1:{port}/bodhi/v1", {"Authorization": f"Bearer {token}"}
    try:
        await asyncio.to_thread(wait_http_ok, f"{base}/models", server, headers=headers, log=log)
        async with httpx.AsyncClient(base_url=base, headers=headers, trust_env=False, timeout=30) as c:
            page = (await c.get("/api-models")).json()
            assert {row["id"] for row in page["data"]} == {"before", "after"}
            assert all(row["error"] is None and row["api_key_masked"] for row in page["data"])
            for model in ("b/echo", "a/echo"):
                res = await c.post("/chat/completions", json={"model": model,
                                                              "messages": [{"role": "user", "content": "z"}]})
                assert res.status_code == 200 and res.json()["choices"][0]["message"]["content"] == "echo: z"
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 30)


def _start_server(home, tmp_path, port: int, token: str):
    """A Jupyter server process with the bodhi_nb extension and the new secret in its environment."""
    env = {**os.environ, "BODHI_HOME": str(home), "BODHI_ENCRYPTION_KEY": NEW_SECRET,
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "BODHI_NO_KEYRING": "1"}
    log = tmp_path / "server.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", f"--port={port}", "--ip=127.0.0.1",
             "--ServerApp.open_browser=False", f"--IdentityProvider.token={token}",
             "--ServerApp.jpserver_extensions={'bodhi_nb': True}", f"--BodhiExtension.kdf_iterations={FAST_KDF}",
             f"--BodhiExtension.bodhi_home={home}", "--allow-root"],
            env=env, stdout=subprocess.DEVNULL, stderr=err)
    return proc, log
