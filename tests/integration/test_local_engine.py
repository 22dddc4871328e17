"""The real llama.cpp server running the bundled SmolLM2-135M GGUF, through bodhi_nb."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.server_core.model_router import Local
from bodhi_nb.services.local_engine import LocalEngine, local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from tests.conftest import FAST_KDF, TEST_SECRET
from tests.resources.servers import process_gone, wait_for

pytestmark = [pytest.mark.local_model,
              pytest.mark.skipif(not local_extra_available() or LocalModels.builtin_path() is None,
                                 reason="needs the local extra")]

THREADS = int(os.environ.get("BODHI_NB_TEST_THREADS", "2"))


@pytest.fixture
def bodhi(bodhi_home):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, n_threads=THREADS)
    yield b
    b.services.engine.stop()
    b.close()


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")


def test_builtin_model_chat_non_streamed_and_streamed(bodhi):
    assert BUILTIN_ALIAS in bodhi.models()
    assert isinstance(bodhi.route(BUILTIN_ALIAS), Local)
    reply = bodhi.chat(BUILTIN_ALIAS, "What is the capital of France?", max_tokens=16, temperature=0)
    assert isinstance(reply, str) and reply.strip()
    parts = list(bodhi.chat(BUILTIN_ALIAS, "Count to three.", stream=True, max_tokens=16, temperature=0))
    assert len(parts) >= 2 and "".join(parts).strip()
    st = bodhi.services.engine.status()
    assert st["alive"] and st["alias"] == BUILTIN_ALIAS
    assert (bodhi.services.home / "logs").is_dir() and os.path.getsize(st["log_file"]) > 0


def test_switching_aliases_of_one_file_with_different_context_params(bodhi):
    for name, n_ctx in (("small-ctx", 256), ("big-ctx", 1024)):
        bodhi.aliases.create(name, repo="HuggingFaceTB/SmolLM2-135M-Instruct",
                             filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                             context_params={"n_ctx": n_ctx}, request_params={"max_tokens": 4})
    r1 = bodhi.completion("small-ctx", "Hi")
    st1 = bodhi.services.engine.status()
    assert _cmdline(st1["pid"])[_cmdline(st1["pid"]).index("--n_ctx") + 1] == "256"
    assert r1["usage"]["completion_tokens"] <= 4  # request_params applied where unset
    r2 = bodhi.completion("big-ctx", "Hi", max_tokens=2)
    st2 = bodhi.services.engine.status()
    assert st2["pid"] != st1["pid"] and st2["alias"] == "big-ctx"
    assert _cmdline(st2["pid"])[_cmdline(st2["pid"]).index("--n_ctx") + 1] == "1024"
    assert r2["usage"]["completion_tokens"] <= 2  # the request's own value wins
    with pytest.raises(ProcessLookupError):
        os.kill(st1["pid"], 0)  # the first engine is gone: one model at a time


def test_engine_killed_externally_is_recovered(bodhi):
    bodhi.chat(BUILTIN_ALIAS, "Hi", max_tokens=2)
    old = bodhi.services.engine.status()
    os.killpg(old["pid"], signal.SIGKILL)
    wait_for(lambda: process_gone(old["pid"]), 10, "the killed engine to go")
    reply = bodhi.chat(BUILTIN_ALIAS, "Hi again", max_tokens=4)
    new = bodhi.services.engine.status()
    assert reply is not None and new["alive"] and new["pid"] != old["pid"]


def test_second_process_reuses_the_running_engine(bodhi, bodhi_home):
    bodhi.chat(BUILTIN_ALIAS, "Hi", max_tokens=2)
    pid = bodhi.services.engine.status()["pid"]
    other = LocalEngine(bodhi_home, LocalModels(bodhi_home), n_threads=THREADS)
    ep = other.ensure_sync(bodhi.services.data.get_model_alias(BUILTIN_ALIAS))
    assert other.status()["pid"] == pid
    auth = {"Authorization": f"Bearer {ep.api_key}"}  # the key the first process started it with
    assert httpx.get(f"{ep.base_url}/models", headers=auth, trust_env=False).status_code == 200


def test_idle_engine_stops_by_itself(bodhi_home):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, n_threads=THREADS,
              engine_idle_timeout=2)
    try:
        b.chat(BUILTIN_ALIAS, "Hi", max_tokens=2)
        pid = b.services.engine.status()["pid"]
        wait_for(lambda: process_gone(pid), 2 + 10, "the idle engine to exit")
        assert b.services.engine.status() is None
    finally:
        b.services.engine.stop()
        b.close()


def test_start_failure_reports_the_log(bodhi_home, tmp_path):
    data = LocalModels(bodhi_home, hub_dir=tmp_path / "hub")
    snap = tmp_path / "hub" / "models--o--broken" / "snapshots" / "main"
    snap.mkdir(parents=True)
    (snap / "broken.Q4_0.gguf").write_bytes(b"this is not a gguf file")
    eng = LocalEngine(bodhi_home, data, n_threads=THREADS, start_timeout=60)
    from bodhi_nb.objs import LocalEngineUnavailable

    with pytest.raises(LocalEngineUnavailable, match="exited with code"):
        eng.ensure_sync(data.get_model_alias("o/broken:Q4_0"))


def test_a_reused_pid_is_never_signalled(bodhi_home):
    """engine.json naming a pid that now belongs to another process: that process survives."""
    import json
    import subprocess
    import sys
    import time

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        eng = LocalEngine(bodhi_home, LocalModels(bodhi_home), n_threads=THREADS)
        now = time.time()
        (bodhi_home / "engine.json").write_text(json.dumps({
            "pid": stranger.pid, "port": 1, "alias": "x", "config": "c", "model_path": "m", "args": [],
            "log_file": "l", "started_at": now, "last_use": now - 10_000, "owner_pid": 1}))
        assert eng.stop()  # the stale record is cleared...
        assert stranger.poll() is None  # ...but the stranger was not signalled
        assert eng.status() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_an_engine_left_by_an_older_version_is_stopped_not_reused(bodhi_home):
    """engine.json from before the idle timer: a bare llama_cpp.server with no key. It is
    replaced, and stopped rather than left running for good."""
    import json
    import subprocess
    import sys
    import time

    port = 39123
    legacy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "llama_cpp.server",
                               "--port", str(port)], start_new_session=True)
    try:
        wait_for(lambda: "llama_cpp.server" in _cmdline(legacy.pid), 10, "the stand-in to exec")
        now = time.time()
        (bodhi_home / "engine.json").write_text(json.dumps({
            "pid": legacy.pid, "port": port, "alias": BUILTIN_ALIAS, "config": "old", "model_path": "m",
            "args": [], "log_file": "l", "started_at": now, "last_use": now, "owner_pid": 1}))
        eng = LocalEngine(bodhi_home, LocalModels(bodhi_home), n_threads=THREADS)
        ep = eng.ensure_sync(eng.data.get_model_alias(BUILTIN_ALIAS))
        assert legacy.wait(15) is not None  # signalled and gone
        assert eng.status()["pid"] != legacy.pid and ep.api_key
    finally:
        if legacy.poll() is None:
            legacy.kill()
            legacy.wait()
        LocalEngine(bodhi_home, LocalModels(bodhi_home)).stop()
