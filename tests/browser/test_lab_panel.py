"""Real browser: JupyterLab started here, Debian Chromium driven by Playwright, the panel
chatting with the bundled local model. Screenshots go to tests/browser/artifacts/."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from bodhi_nb.services.data_service import DataService
from tests.resources.servers import free_port, wait_http_ok

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
    pytest.mark.skipif(DataService.builtin_path() is None, reason="needs the local extra"),
]


NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "panel", "metadata": {}, "outputs": [],
               "source": ["import bodhi_nb\n", "bodhi_nb.panel()"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture
def lab(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "panel.ipynb").write_text(json.dumps(NOTEBOOK))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "BODHI_HOME": str(tmp_path / "bodhi"), "HF_HOME": str(tmp_path / "hf"),
           "BODHI_ENCRYPTION_KEY": "browser-test-master-secret-123", "BODHI_NB_THREADS": "2",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt")}
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{base}/api/status", proc, headers={"Authorization": f"token {token}"}, log=tmp_path / "lab.log")
    yield base, token
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    subprocess.run([sys.executable, "-c", "from bodhi_nb.services.local_engine import LocalEngine; "
                    "from bodhi_nb.services.data_service import DataService; import sys; "
                    "LocalEngine(sys.argv[1], DataService(sys.argv[1])).stop()", str(tmp_path / "bodhi")], check=False)


def test_panel_chats_with_the_local_model_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    base, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                                           "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/panel.ipynb?token={token}")
            cell = page.locator(".jp-Notebook .jp-Cell").first
            expect(cell).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=90_000)
            page.get_by_role("menuitem", name="Run").click()
            page.get_by_text("Run All Cells", exact=True).click()
            box = page.locator("textarea[placeholder='Type a message…']")
            expect(box).to_be_visible(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "01_panel.png"))
            box.fill("Name a colour.")
            page.get_by_role("button", name="Send").click()
            reply = page.locator(".bodhi-assistant").last
            expect(reply).to_be_visible(timeout=120_000)
            expect(page.locator(".bodhi-status.bodhi-ok")).to_contain_text("Done", timeout=120_000)
            text = reply.inner_text()
            assert text.startswith("assistant:") and len(text) > len("assistant: ") + 1
            expect(page.locator(".widget-label", has_text="tok/s")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "02_chat_reply.png"))
        finally:
            page.screenshot(path=str(ARTIFACTS / "last.png"))
            browser.close()
