"""Several processes feed one ledger: a live Jupyter server answering HTTP while two
kernel-like processes call the facade, all at once, and no row is lost. Plus a local
stream through the real llama.cpp engine, counted from the engine's own chunks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bodhi_nb.services.local_engine import local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]
N = 40

KERNEL = textwrap.dedent(f"""
    import sys
    from bodhi_nb.notebook.client import Bodhi
    b = Bodhi(sys.argv[1], master_secret={TEST_SECRET!r}, kdf_iterations={FAST_KDF})
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\\n"
    for i in range({N}):
        assert b.chat("fake/echo", f"kernel {{sys.argv[2]}} row {{i}}").startswith("echo: ")
    b.close()
""")  # no explicit ledger close: the writer's exit hook must store what is queued


async def test_server_and_two_kernels_writing_at_once_lose_no_row(api, upstream, bodhi_home):
    code, _, _ = await api("POST", "api-models", {"id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY,
                                                  "models": ["echo"], "prefix": "fake/"})
    assert code == 201
    kernels = await asyncio.to_thread(lambda: [
        subprocess.Popen([sys.executable, "-c", KERNEL, str(bodhi_home), str(k)], cwd=ROOT, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE) for k in (1, 2)])
    try:
        for k in kernels:  # both kernels are up before anyone starts
            assert await asyncio.to_thread(k.stdout.readline) == "ready\n"
        for k in kernels:
            k.stdin.write("go\n")
            k.stdin.flush()
        for i in range(N):
            code, _, _ = await api("POST", "chat/completions",
                                      {"model": "fake/echo", "messages": [{"role": "user", "content": f"http {i}"}]})
            assert code == 200
        codes = await asyncio.gather(*(asyncio.to_thread(k.wait, 120) for k in kernels))
    finally:
        for k in kernels:
            if k.poll() is None:
                k.kill()
    assert codes == [0, 0]
    code, page, _ = await api("GET", "usage?by=surface")
    assert code == 200
    assert {g["surface"]: (g["requests"], g["errors"], g["total_tokens"]) for g in page["data"]} == {
        "python": (2 * N, 0, 2 * N * (3 + 5)), "http": (N, 0, N * (3 + 3))}  # "echo: kernel k row i" = 5 words
    code, page, _ = await api("GET", "usage?page_size=1000")
    assert page["total"] == 3 * N and len({r["id"] for r in page["data"]}) == 3 * N


@pytest.mark.local_model
@pytest.mark.skipif(not local_extra_available() or LocalModels.builtin_path() is None, reason="needs the local extra")
def test_local_stream_is_counted_from_the_engine(bodhi_home):
    """The engine reports a stream's usage in a last chunk the client did not ask for: the
    ledger takes its counts and the client never sees it."""
    from bodhi_nb.notebook.client import Bodhi

    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, n_threads=2)
    try:
        params = {"max_tokens": 12, "temperature": 0, "seed": 7}
        whole = b.completion(BUILTIN_ALIAS, "Write a long story about a cat.", **params)
        chunks = list(b.stream(BUILTIN_ALIAS, "Write a long story about a cat.", **params))
        assert not any("usage" in c and c["usage"] for c in chunks)
        rows = b.usage().iloc[::-1].to_dict("records")  # oldest first
        assert [(r["provider"], r["upstream_model"]) for r in rows] == [("local", BUILTIN_ALIAS)] * 2
        assert rows[0]["completion_tokens"] == whole["usage"]["completion_tokens"] == 12
        assert rows[0]["prompt_tokens"] == whole["usage"]["prompt_tokens"] > 0
        assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"], rows[1]["total_tokens"]) == (
            whole["usage"]["prompt_tokens"], 12, whole["usage"]["prompt_tokens"] + 12)
        assert rows[1]["ttft_ms"] > 0 and rows[1]["status"] == 200
    finally:
        b.services.engine.stop()
        b.close()
