"""Real browser: JupyterLab started here, Debian Chromium driven by Playwright, the panel
chatting with the bundled local model and, for fixed Markdown, with the loopback fake
upstream (an API model). Screenshots of every tab go to tests/browser/artifacts/."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from bodhi_nb.services.local_models import LocalModels
from tests.conftest import TEST_KEY, optional_dependency
from tests.resources.servers import free_port, wait_http_ok

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.browser,
    optional_dependency(Path(CHROMIUM).exists(), "Debian chromium is not installed"),
    optional_dependency(LocalModels.builtin_path() is not None, "the bundled model (the local extra) is not installed"),
]


NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "panel", "metadata": {}, "outputs": [],
               "source": ["import bodhi_nb\n", "bodhi_nb.panel()"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


MASTER = "browser-test-master-secret-123"
# The echo model answers "echo: " + the prompt, so the reply is fixed Markdown: a code block,
# a table, and HTML that must stay inert.
MARKDOWN_PROMPT = ("Here is code:\n```python\nprint('hi from bodhi')\n```\n\n| col A | col B |\n|---|---|\n"
                   "| 1 | 2 |\n\n<img src=x onerror=\"window.__bodhi_xss=1\"> <script>window.__bodhi_xss=2</script>")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, upstream):
    from bodhi_nb.notebook.client import Bodhi

    tmp_path = tmp_path_factory.mktemp("lab")
    root = tmp_path / "root"
    root.mkdir()
    (root / "panel.ipynb").write_text(json.dumps(NOTEBOOK))
    b = Bodhi(tmp_path / "bodhi", master_secret=MASTER)
    b.api_models.create("fake", upstream.base_url, api_key=TEST_KEY, models=["echo"], prefix="fake/")
    b.close()
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "BODHI_HOME": str(tmp_path / "bodhi"), "HF_HOME": str(tmp_path / "hf"),
           "BODHI_ENCRYPTION_KEY": MASTER, "BODHI_NB_THREADS": "2",
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
                    "from bodhi_nb.services.local_models import LocalModels; import sys; "
                    "LocalEngine(sys.argv[1], LocalModels(sys.argv[1])).stop()", str(tmp_path / "bodhi")], check=False)


class _Browser:
    """Chromium on the panel notebook, run once; `page` is ready with the panel shown."""

    def __init__(self, pw, base: str, token: str) -> None:
        from playwright.sync_api import expect

        self.browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                                                "--disable-component-update", "--disable-sync", "--no-first-run"])
        self.page = page = self.browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{base}/lab/tree/panel.ipynb?token={token}")
        expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=90_000)
        page.get_by_role("menuitem", name="Run").click()
        page.get_by_text("Run All Cells", exact=True).click()
        self.box = page.locator("textarea[placeholder='Type a message…']")
        expect(self.box).to_be_visible(timeout=60_000)

    def send(self, model_label: str, text: str):
        from playwright.sync_api import expect

        page = self.page
        page.locator(".widget-dropdown select").first.select_option(label=model_label)
        before = page.locator(".bodhi-assistant").count()
        self.box.fill(text)
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".bodhi-assistant")).to_have_count(before + 1, timeout=120_000)
        expect(page.locator(".bodhi-status.bodhi-ok")).to_contain_text("Done", timeout=120_000)
        return page.locator(".bodhi-assistant").last


def test_panel_chats_with_the_local_model_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = _Browser(pw, *lab)
        try:
            b.page.screenshot(path=str(ARTIFACTS / "01_panel.png"))
            reply = b.send("Local · smollm2:135m", "Name a colour.")
            text = reply.inner_text()
            assert text.startswith("assistant") and len(text.strip()) > len("assistant") + 1
            expect(b.page.locator(".widget-label", has_text="tok/s")).to_be_visible()
            b.page.screenshot(path=str(ARTIFACTS / "02_chat_reply.png"))
        finally:
            b.page.screenshot(path=str(ARTIFACTS / "last.png"))
            b.browser.close()


def test_markdown_reply_renders_inert_and_code_goes_into_a_cell(lab):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = _Browser(pw, *lab)
        page = b.page
        try:
            reply = b.send("API · fake/echo", MARKDOWN_PROMPT)
            expect(reply.locator("table th", has_text="col A")).to_be_visible()
            expect(reply.locator("table td", has_text="2")).to_be_visible()
            expect(reply.locator("pre code", has_text="print('hi from bodhi')")).to_be_visible()
            assert reply.locator("pre code span[style]").count() > 0  # highlighted
            # the HTML in the reply is shown as text, and nothing of it ran
            expect(reply).to_contain_text('<img src=x onerror="window.__bodhi_xss=1">')
            assert reply.locator("img, script").count() == 0
            assert page.evaluate("window.__bodhi_xss") is None
            page.screenshot(path=str(ARTIFACTS / "03_markdown_reply.png"))

            # "Insert code as cell" goes through JupyterLab's own commands (ipylab)
            page.get_by_role("button", name="Insert code as cell").click()
            expect(page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor",
                                has_text="print('hi from bodhi')")).to_be_visible(timeout=30_000)
            expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(2)

            news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's news prompt covers the panel
            if news.count():
                news.click()
            tabs = page.locator(".widget-tab .lm-TabBar-tab")
            titles = tabs.all_inner_texts()
            assert titles[:3] == ["Chat", "API models", "Local aliases"], titles
            for i, title in enumerate(titles, start=4):  # every tab, whatever the panel grows
                tabs.nth(i - 4).click()
                page.screenshot(path=str(ARTIFACTS / f"{i:02d}_tab_{title.lower().replace(' ', '_')}.png"),
                                full_page=True)
            page.get_by_role("tab", name="API models").click()
            expect(page.locator(".bodhi-table").get_by_role("cell", name="fake", exact=True)).to_be_visible()

            # the Usage tab: the chats above are in the ledger, with a chart drawn as a PNG image
            page.get_by_role("tab", name="Usage").click()
            usage = page.locator(".bodhi-usage")
            usage.locator("button", has_text="Refresh").click()
            expect(usage.locator(".bodhi-status", has_text="Updated at")).to_be_visible(timeout=60_000)
            chart = usage.locator("img.widget-image")
            expect(chart).to_be_visible()
            assert chart.evaluate("img => img.complete && img.naturalWidth > 300 && img.naturalHeight > 100")
            expect(usage.locator(".bodhi-table").get_by_role("cell", name="fake/echo", exact=True)).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "08_tab_usage.png"), full_page=True)
        finally:
            page.screenshot(path=str(ARTIFACTS / "last_markdown.png"))
            b.browser.close()
