"""The local engine holds no secret, demands its own key, keeps its files private, exits by
itself when idle (even after its starter was SIGKILLed), and one local name serves chat and
embeddings. Real llama.cpp, the bundled SmolLM2 model."""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.services.local_engine import KEEP_LOGS, LocalEngine, local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET
from tests.resources.servers import process_gone, wait_for

pytestmark = [pytest.mark.local_model,
              pytest.mark.skipif(not local_extra_available() or LocalModels.builtin_path() is None,
                                 reason="needs the local extra")]

THREADS = int(os.environ.get("BODHI_NB_TEST_THREADS", "2"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(bodhi_home):
    eng = LocalEngine(bodhi_home, LocalModels(bodhi_home), n_threads=THREADS, idle_timeout=600)
    yield eng
    eng.stop()


def _builtin(eng: LocalEngine):
    return eng.data.get_model_alias(BUILTIN_ALIAS)


def test_engine_environment_holds_no_secret(engine, monkeypatch):
    planted = {"BODHI_ENCRYPTION_KEY": TEST_SECRET, "OPENAI_API_KEY": TEST_KEY, "JUPYTER_TOKEN": "jt-4f1c9e2a7b",
               "HF_TOKEN": "hf_planted_7d3a", "MY_SERVICE_SECRET": "s3cr3t-planted", "OMP_AUTH_TOKEN": "omp-planted"}
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    ep = engine.ensure_sync(_builtin(engine))
    pid = engine.status()["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    names = {kv.split("=", 1)[0] for kv in environ.split("\0") if kv}
    assert "PATH" in names  # it did read the engine's real environment
    for k, v in planted.items():
        assert k not in names and v not in environ
    assert ep.api_key not in environ  # its own key is not there either...
    assert ep.api_key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()  # ...nor on its command line


def test_a_request_without_the_engine_key_is_refused(engine):
    ep = engine.ensure_sync(_builtin(engine))
    chat = {"model": BUILTIN_ALIAS, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    with httpx.Client(trust_env=False, timeout=60) as c:
        assert c.get(f"{ep.base_url}/models").status_code == 401
        assert c.post(f"{ep.base_url}/chat/completions", json=chat).status_code == 401
        wrong = {"Authorization": "Bearer not-the-engine-key"}
        assert c.post(f"{ep.base_url}/chat/completions", json=chat, headers=wrong).status_code == 401
        assert c.post(f"{ep.base_url}/embeddings", json={"input": "x"}, headers=wrong).status_code == 401
        ok = c.post(f"{ep.base_url}/chat/completions", json=chat, headers={"Authorization": f"Bearer {ep.api_key}"})
        assert ok.status_code == 200 and ok.json()["choices"]


def test_a_second_request_waits_instead_of_cutting_a_stream_short(engine):
    """Every process on this BODHI_HOME shares the engine: a chat panel's reply must not be
    truncated because a kernel sent a request meanwhile."""
    ep = engine.ensure_sync(_builtin(engine))
    auth = {"Authorization": f"Bearer {ep.api_key}"}
    body = {"model": BUILTIN_ALIAS, "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
            "max_tokens": 48, "temperature": 0, "stream": True}
    streaming, other = threading.Event(), {}

    def second() -> None:
        streaming.wait(120)
        r = httpx.post(f"{ep.base_url}/chat/completions", headers=auth, trust_env=False, timeout=300,
                       json={**body, "stream": False, "max_tokens": 2})
        other["status"] = r.status_code

    t = threading.Thread(target=second)
    t.start()
    pieces, finish = 0, None
    with httpx.stream("POST", f"{ep.base_url}/chat/completions", headers=auth, json=body, timeout=300,
                      trust_env=False) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                pieces += bool((choice.get("delta") or {}).get("content"))
                finish = choice.get("finish_reason") or finish
            if pieces == 2:
                streaming.set()
    t.join(300)
    assert finish == "length" and pieces > 2  # the whole reply, not cut at the second request
    assert other["status"] == 200


def test_engine_state_and_log_are_private(engine, bodhi_home):
    logs = bodhi_home / "logs"
    logs.mkdir(mode=0o755)
    logs.chmod(0o755)
    for i in range(KEEP_LOGS + 5):  # left by earlier starts (an older version: world-readable)
        old = logs / f"engine-{1_700_000_000 + i}-1.log"
        old.write_text("old log\n")
        old.chmod(0o644)
        os.utime(old, (1_700_000_000 + i, 1_700_000_000 + i))
    ep = engine.ensure_sync(_builtin(engine))
    st = engine.status()
    kept = sorted(logs.glob("engine-*.log"))
    assert len(kept) == KEEP_LOGS and Path(st["log_file"]) in kept  # the oldest went, the newest stays
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in kept)
    state_file, log_file = bodhi_home / "engine.json", Path(st["log_file"])
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600 and log_file.stat().st_size > 0
    assert stat.S_IMODE(log_file.parent.stat().st_mode) == 0o700
    assert json.loads(state_file.read_text())["api_key"] == ep.api_key  # other processes reuse it from here
    assert "api_key" not in st and ep.api_key not in json.dumps(st)
    assert ep.api_key not in repr(ep) and ep.api_key not in log_file.read_text(errors="replace")


def test_same_local_alias_serves_embeddings_and_chat(bodhi_home):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, n_threads=THREADS)
    try:
        question = "What is the capital of France?"
        chat_only = b.chat(BUILTIN_ALIAS, question, max_tokens=12, temperature=0, seed=1)  # chat-only engine first
        eng = b.services.engine
        assert chat_only.strip() and not eng.status()["embedding"]
        ep = eng.ensure_sync(_builtin(eng), "embeddings")  # reloads once, in embedding mode
        pid = eng.status()["pid"]
        before = b.chat(BUILTIN_ALIAS, question, max_tokens=12, temperature=0, seed=1)
        texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly bond yields rose sharply."]
        r = httpx.post(f"{ep.base_url}/embeddings", json={"model": BUILTIN_ALIAS, "input": texts},
                       headers={"Authorization": f"Bearer {ep.api_key}"}, trust_env=False, timeout=120)
        assert r.status_code == 200, r.text
        vecs = [d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])]
        assert len(vecs) == 3 and len({len(v) for v in vecs}) == 1 and len(vecs[0]) > 100
        assert all(isinstance(x, float) and math.isfinite(x) for x in vecs[0])  # one pooled vector per text
        # The same engine, now with both abilities, keeps answering chat for the same name, with
        # the reply a chat-only engine gives, before and after an embeddings request.
        after = b.chat(BUILTIN_ALIAS, question, max_tokens=12, temperature=0, seed=1)
        assert chat_only == before == after
        assert eng.status()["pid"] == pid and eng.status()["embedding"]
        assert eng.ensure_sync(_builtin(eng), "embeddings").base_url == ep.base_url  # no reload either way
    finally:
        b.services.engine.stop()
        b.close()


_KERNEL = textwrap.dedent("""
    import sys
    from bodhi_nb import Bodhi
    b = Bodhi(sys.argv[1], master_secret=sys.argv[2], kdf_iterations=int(sys.argv[3]), n_threads=int(sys.argv[4]),
              engine_idle_timeout=float(sys.argv[5]))
    print(b.chat("smollm2:135m", "Hi", max_tokens=2) is not None, b.services.engine.status()["pid"], flush=True)
    sys.stdin.read()  # stay up until killed, like an idle kernel
""")


def test_engine_of_a_sigkilled_kernel_exits_after_its_idle_timeout(bodhi_home):
    idle = 3.0
    kernel = subprocess.Popen([sys.executable, "-c", _KERNEL, str(bodhi_home), TEST_SECRET, str(FAST_KDF),
                               str(THREADS), str(idle)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        line = kernel.stdout.readline()
        assert line.startswith("True "), line
        pid = int(line.split()[1])
        assert not process_gone(pid)
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(30)
        wait_for(lambda: process_gone(pid), idle + 10, f"engine {pid} to exit after its starter was SIGKILLed")
        assert not (bodhi_home / "engine.json").exists()  # it forgot itself under the lock
        log = next((bodhi_home / "logs").glob("engine-*.log")).read_text(errors="replace")
        assert "idle timeout reached" in log
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()
        LocalEngine(bodhi_home, LocalModels(bodhi_home)).stop()


def test_idle_exit_is_not_reported_as_a_crash_and_the_next_request_restarts(bodhi_home):
    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, n_threads=THREADS,
              engine_idle_timeout=2)
    try:
        assert b.chat(BUILTIN_ALIAS, "Hi", max_tokens=2) is not None
        pid = b.services.engine.status()["pid"]
        wait_for(lambda: process_gone(pid) and b.services.engine.status() is None, 2 + 10, "the idle exit")
        assert b.chat(BUILTIN_ALIAS, "Hi again", max_tokens=2) is not None
        assert b.services.engine.status()["pid"] != pid and b.services.engine._last_crash is None
    finally:
        b.services.engine.stop()
        b.close()


_EXIT_LINE = "from bodhi_nb import Bodhi; print(Bodhi().models())"
_EXIT_WITH_PENDING = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from bodhi_nb import Bodhi
    b = Bodhi()
    async def pending():
        try:
            await asyncio.sleep(3600)
        finally:
            Path(sys.argv[1]).write_text("unwound")
    b._loop.submit(pending())
    print(b.models())
""")


@pytest.mark.parametrize("code", [_EXIT_LINE, _EXIT_WITH_PENDING], ids=["models", "pending-task"])
def test_no_task_destroyed_warning_at_exit(bodhi_home, tmp_path, code):
    env = {**os.environ, "BODHI_HOME": str(bodhi_home), "BODHI_ENCRYPTION_KEY": TEST_SECRET, "BODHI_NO_KEYRING": "1",
           "PYTHONWARNINGS": "default"}
    for i in range(3):
        marker = tmp_path / f"unwound-{i}"
        r = subprocess.run([sys.executable, "-X", "dev", "-c", code, str(marker)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and BUILTIN_ALIAS in r.stdout, r.stderr[-2000:]
        assert "Task was destroyed" not in r.stderr and "was never awaited" not in r.stderr, r.stderr[-2000:]
        if code is _EXIT_WITH_PENDING:  # the I/O loop cancelled its task and let it unwind before exiting
            assert marker.read_text() == "unwound"


@pytest.fixture
def jp_server_config(jp_server_config):
    jp_server_config["BodhiExtension"]["engine_idle_timeout"] = 3.0
    return jp_server_config


async def test_server_option_idle_timeout_and_gateway_key(api, bodhi_home):
    """Through the live gateway (which must send the engine key), then the engine leaves by itself."""
    code, data, _ = await api("POST", "chat/completions", {"model": BUILTIN_ALIAS, "max_tokens": 2,
                                                           "messages": [{"role": "user", "content": "Hi"}]})
    assert code == 200 and data["choices"], data
    eng = LocalEngine(bodhi_home, LocalModels(bodhi_home))
    st = eng.status()
    assert st["alive"]
    cmd = Path(f"/proc/{st['pid']}/cmdline").read_bytes().split(b"\0")
    assert cmd[cmd.index(b"--idle_timeout") + 1] == b"3"
    wait_for(lambda: process_gone(st["pid"]), 3 + 10, "the server's engine to exit when idle")
