"""Install-time promises: the extension is enabled by pip install; Binder's postBuild works;
`make lab` opens the quickstart."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.resources.servers import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _ext_list(py: str | Path, env: dict[str, str] | None = None) -> str:
    r = subprocess.run([str(py), "-m", "jupyter", "server", "extension", "list"], capture_output=True, text=True,
                       env=env)
    return _ANSI.sub("", r.stdout + r.stderr)


def test_extension_enabled_by_install():
    out = _ext_list(sys.executable)
    assert "bodhi_nb enabled" in out
    assert re.search(r"bodhi_nb\s+[\d.]*\s*OK", out), out


@pytest.mark.timeout(1800)  # a machine without pip's wheel cache builds llama.cpp again
def test_binder_postbuild_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    src = tmp_path / "repo"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "*.pyc", "__pycache__", "artifacts",
                                                             ".pytest_cache", "results"))
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "PYTHON": str(py)}
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(["bash", "binder/postBuild"], cwd=src, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "self-check ok" in r.stdout
    assert "bodhi_nb enabled" in _ext_list(py, env)
    start = subprocess.run(["bash", "binder/start", str(py), "-c", "import os; print(os.environ['BODHI_HOME'])"],
                           cwd=src, env=env, capture_output=True, text=True)
    assert start.stdout.strip().endswith(".bodhi_nb")


@pytest.mark.skipif(not (ROOT / ".venv" / ".installed").exists(), reason="make lab needs the Makefile's .venv")
def test_make_lab_serves_the_quickstart(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "BODHI_HOME": str(tmp_path / "bodhi"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "BODHI_ENCRYPTION_KEY": "make-lab-test-master-secret"}
    args = f"--no-browser --port={port} --ip=127.0.0.1 --IdentityProvider.token={token}"
    proc = subprocess.Popen(["make", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "wb"))
    url = f"http://127.0.0.1:{port}/lab/tree/notebooks/01_quickstart.ipynb"
    try:
        wait_http_ok(url, proc, headers={"Authorization": f"token {token}"}, timeout=120, log=tmp_path / "lab.log")
        c = httpx.get(f"http://127.0.0.1:{port}/api/contents/notebooks/01_quickstart.ipynb",
                      headers={"Authorization": f"token {token}"}, trust_env=False)
        assert c.status_code == 200 and c.json()["type"] == "notebook"
        landing = httpx.get(f"http://127.0.0.1:{port}/", headers={"Authorization": f"token {token}"}, trust_env=False)
        assert landing.status_code == 302 and "/lab/tree/notebooks/01_quickstart.ipynb" in landing.headers["location"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
