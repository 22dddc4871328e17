"""Ledger rows from a real Jupyter kernel (kernel id and notebook path), embeddings
through both surfaces, and the log_content opt-in storing the prompt and the reply."""

from __future__ import annotations

import json
import os
import textwrap

import pandas as pd
import pytest

from bodhi_nb.notebook.client import Bodhi
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET


def _fake(b: Bodhi, upstream) -> None:
    b.api_models.create("fake", upstream.base_url, api_key=TEST_KEY, models=["echo", "slow-stream"], prefix="fake/")


def test_a_kernel_records_its_kernel_id_and_notebook(bodhi_home, upstream):
    from jupyter_client.multikernelmanager import MultiKernelManager

    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    try:
        _fake(b, upstream)
        runtime = bodhi_home.parent / "runtime"
        runtime.mkdir()
        mkm = MultiKernelManager(connection_dir=str(runtime))
        env = {**os.environ, "BODHI_HOME": str(bodhi_home), "JPY_SESSION_NAME": "work/analysis.ipynb"}
        kid = mkm.start_kernel(kernel_name="python3", env=env)
        kc = mkm.get_kernel(kid).client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            code = textwrap.dedent(f"""
                from bodhi_nb.notebook.client import Bodhi
                b = Bodhi(master_secret={TEST_SECRET!r}, kdf_iterations={FAST_KDF})
                assert b.chat("fake/echo", "from a kernel") == "echo: from a kernel"
                b.services.ledger.flush()
            """)
            reply = kc.execute_interactive(code, timeout=60)
            assert reply["content"]["status"] == "ok", reply["content"]
        finally:
            kc.stop_channels()
            mkm.shutdown_all(now=True)
        row = b.usage().iloc[0]
        assert (row["kernel_id"], row["notebook"], row["surface"]) == (kid, "work/analysis.ipynb", "python")
        assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 4)
    finally:
        b.close()


def test_embeddings_are_rows_from_python_and_http(bodhi_home, upstream):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    try:
        _fake(b, upstream)
        vectors = b.embed(["one two three", "four five"], "fake/echo", progress=False)
        assert len(vectors) == 2
        row = b.usage().iloc[0]
        assert (row["model"], row["status"], row["prompt_tokens"], row["total_tokens"]) == ("fake/echo", 200, 5, 5)
        assert pd.isna(row["completion_tokens"])  # embeddings have no output tokens
        b.prices.set("fake/echo", input=1_000_000, output=0)
        b.embed("six seven", "fake/echo", progress=False)
        assert b.usage().iloc[0]["cost_usd"] == pytest.approx(2.0)
    finally:
        b.close()


@pytest.mark.parametrize("stream", [False, True])
def test_log_content_keeps_the_prompt_and_the_reply(bodhi_home, upstream, stream):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, log_content=True)
    try:
        _fake(b, upstream)
        if stream:
            text = "".join(b.chat("fake/echo", "keep this prompt", stream=True))
        else:
            text = b.chat("fake/echo", "keep this prompt")
        content = json.loads(b.usage().iloc[0]["content"])
        assert content == {"messages": [{"role": "user", "content": "keep this prompt"}], "reply": text}
        assert text == "echo: keep this prompt"
    finally:
        b.close()
