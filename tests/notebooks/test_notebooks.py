"""The demo notebooks: committed clean, and run end to end under nbval (`--nbval-lax`)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from bodhi_nb.services.local_models import LocalModels
from tests.resources.servers import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KEY_LIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{16,}|Bearer [A-Za-z0-9_\-]{16,}|api_key\s*=\s*[\"'][^\"'{]{8,}[\"'])")


def test_the_demo_notebooks_are_the_listed_ones():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_remote_api_models.ipynb",
                                           "03_gateway_from_any_kernel.ipynb", "04_local_aliases.ipynb",
                                           "05_batch_over_a_dataframe.ipynb", "06_magic_and_models.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    assert "widgets" not in nb["metadata"]
    text = path.read_text()
    assert not KEY_LIKE.search(text), KEY_LIKE.search(text)
    assert "# NBVAL_CHECK_OUTPUT" in text


@pytest.mark.local_model
@pytest.mark.timeout(1500)
@pytest.mark.skipif(LocalModels.builtin_path() is None, reason="needs the local extra")
def test_notebooks_run_under_nbval(tmp_path):
    home = tmp_path / "bodhi"
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "BODHI_HOME": str(home), "HF_HOME": str(tmp_path / "hf"), "BODHI_NB_THREADS": "2",
           "BODHI_ENCRYPTION_KEY": "notebook-test-master-secret", "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "BODHI_GATEWAY_URL": f"http://127.0.0.1:{port}/bodhi/v1", "BODHI_GATEWAY_TOKEN": token}
    env.pop("OPENAI_API_KEY", None)  # the demo's own local provider, not the real one
    server = subprocess.Popen([sys.executable, "-m", "jupyter_server", f"--port={port}", "--ip=127.0.0.1",
                               "--ServerApp.open_browser=False", f"--IdentityProvider.token={token}",
                               "--ServerApp.jpserver_extensions={'bodhi_nb': True}", "--allow-root"],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"))
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/bodhi/v1/models", server, headers={"Authorization": f"Bearer {token}"},
                     log=tmp_path / "server.log")
        r = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                            "--nbval-cell-timeout=300", *map(str, NOTEBOOKS)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-3000:]
        assert re.search(r"\d+ passed", r.stdout)
    finally:
        server.terminate()
        server.wait(30)
        from bodhi_nb.services.local_engine import LocalEngine

        LocalEngine(home, LocalModels(home)).stop()
