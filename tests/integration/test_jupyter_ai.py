"""jupyter-ai 3's `%%ai` answers through the gateway after `bodhi_nb.configure_jupyter_ai()`.

jupyter-ai is an optional test dependency. It brings a Jupyter server extension
(jupyter_ai_litellm) that every server in an environment would load, so .ci/run installs
it beside the venv (`pip install --target .venv/jupyter-ai`), and only this test's
IPython subprocess puts it on its path. The test skips only when it is absent, and fails
instead under BODHI_NB_REQUIRE_OPTIONAL=1 (as .ci/run sets).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_KEY, optional_dependency
from tests.resources.servers import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
SIDE_DIR = Path(os.environ.get("BODHI_JUPYTER_AI_DIR", ROOT / ".venv" / "jupyter-ai"))


def _jupyter_ai_path() -> str | None:
    if importlib.util.find_spec("jupyter_ai_magic_commands") is not None:
        return ""
    if (SIDE_DIR / "jupyter_ai_magic_commands").is_dir():
        return str(SIDE_DIR)
    return None


JAI = _jupyter_ai_path()
pytestmark = optional_dependency(JAI is not None, "jupyter-ai-magic-commands is not installed (optional)")

SCRIPT = textwrap.dedent("""
    import os, sys
    if os.environ["T_JAI_PATH"]:
        sys.path.append(os.environ["T_JAI_PATH"])  # after the venv: its packages win, jupyter-ai's extras come from here
    ip = get_ipython()
    if os.environ["T_STEP"] == "configure":
        import bodhi_nb
        setup = bodhi_nb.configure_jupyter_ai("fake/echo")
        print("SETUP", repr(setup))
    ip.run_line_magic("load_ext", "jupyter_ai_magic_commands")
    out = ip.run_cell_magic("ai", os.environ["T_MODEL"] + " --format text", "hello through jupyter-ai")
    print("REPLY", str(out))
""")


@pytest.fixture
def gateway(tmp_path, upstream):
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "BODHI_HOME": str(tmp_path / "bodhi"), "HF_HOME": str(tmp_path / "hf"),
           "BODHI_ENCRYPTION_KEY": "jupyter-ai-test-master-secret", "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    server = subprocess.Popen([sys.executable, "-m", "jupyter_server", f"--port={port}", "--ip=127.0.0.1",
                               "--ServerApp.open_browser=False", f"--IdentityProvider.token={token}",
                               "--ServerApp.jpserver_extensions={'bodhi_nb': True}", "--allow-root"],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"))  # noqa: SIM115 - the server outlives this call
    url = f"http://127.0.0.1:{port}/bodhi/v1"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        wait_http_ok(f"{url}/models", server, headers=auth, log=tmp_path / "server.log")
        r = httpx.post(f"{url}/api-models", headers=auth, trust_env=False, json={
            "id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY, "models": ["echo"], "prefix": "fake/"})
        assert r.status_code == 201, r.text
        yield url, token
    finally:
        server.terminate()
        server.wait(30)


def _run(tmp_path, url, token, step, model, key=None):
    """A real IPython application (it reads the profile's config files), running SCRIPT."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "JUPYTER_TOKEN")}
    env.update(IPYTHONDIR=str(tmp_path / "ipython"), JUPYTER_DATA_DIR=str(tmp_path / "jdata"),
               BODHI_GATEWAY_URL=url, BODHI_GATEWAY_TOKEN=token, T_JAI_PATH=JAI, T_STEP=step, T_MODEL=model,
               LITELLM_LOCAL_MODEL_COST_MAP="True")  # LiteLLM would fetch its price list from the internet
    if key:
        env["OPENAI_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "-c", SCRIPT],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)


def test_percent_percent_ai_answers_through_the_gateway(tmp_path, gateway, upstream):
    url, token = gateway
    # 1) configure in a kernel-like shell; the alias works at once (the token comes from the server here)
    r = _run(tmp_path, url, token, "configure", "bodhi")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "REPLY echo: hello through jupyter-ai" in r.stdout, r.stdout + r.stderr[-3000:]
    assert token not in r.stdout
    sent = upstream.last()
    assert sent["body"]["model"] == "echo" and sent["headers"]["Authorization"] == f"Bearer {TEST_KEY}"
    assert token not in json.dumps(sent)  # the Jupyter token stops at the gateway

    # 2) what was written holds the gateway URL and no secret
    ipy = json.loads((tmp_path / "ipython" / "profile_default" / "ipython_config.json").read_text())
    aliases = ipy["AiMagics"]["initial_aliases"]
    assert aliases["bodhi"] == {"target": "openai/fake/echo", "api_base": url, "api_key_name": None}
    assert aliases["bodhi/fake/echo"]["target"] == "openai/fake/echo"
    jai = json.loads((tmp_path / "jdata" / "jupyter_ai" / "config.json").read_text())
    assert jai["model_provider_id"] == "openai/fake/echo" and jai["fields"]["openai/fake/echo"] == {"api_base": url}
    assert "openai/fake/echo" in [m["model_id"] for m in jai["custom_models"]]  # every gateway model
    assert all(m["params"] == {"api_base": url} for m in jai["custom_models"])
    assert jai.get("api_keys", {}) == {}
    for text in (json.dumps(ipy), json.dumps(jai)):
        assert token not in text and TEST_KEY not in text

    # 3) a fresh shell reads the written profile; the key comes from the environment at run time
    r = _run(tmp_path, url, token, "plain", "bodhi/fake/echo", key=token)
    assert "REPLY echo: hello through jupyter-ai" in r.stdout, r.stdout + r.stderr[-3000:]
    r = _run(tmp_path, url, token, "plain", "bodhi", key="not-the-token")
    assert "REPLY echo" not in r.stdout and "Error calling language model" in r.stdout  # other keys are refused
