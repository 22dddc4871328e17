"""The operations layer: one status per error on every surface, and a free event loop.

The same bad input through HTTP, the `Bodhi` facade and the CLI gives the same status and
code (the rule lives once, in server_core/operations). And while another process holds
the store's file lock and a write waits for it, the server keeps answering `GET models`
and chats: store work runs in worker threads, never on the server's event loop.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.objs import BodhiError
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET
from tests.resources.cli import cli

LONG = "x" * 31

# (HTTP call, Bodhi call, CLI args): the same bad input on each surface.
CASES = {
    "bad id": (("POST", "api-models", {"id": "bad id", "base_url": "http://x/v1", "models": ["m"]}),
               lambda b: b.api_models.create("bad id", "http://x/v1", models=["m"]),
               ("api-models", "create", "bad id", "http://x/v1", "--models", "m", "--no-key")),
    "bad base_url": (("POST", "api-models", {"id": "ok", "base_url": "ftp://x", "models": ["m"]}),
                     lambda b: b.api_models.create("ok", "ftp://x", models=["m"]),
                     ("api-models", "create", "ok", "ftp://x", "--models", "m", "--no-key")),
    "missing api model": (("DELETE", "api-models/missing", None),
                          lambda b: b.api_models.delete("missing"),
                          ("api-models", "delete", "missing")),
    "test prompt too long": (("POST", "api-models/test", {"id": "missing", "model": "m", "prompt": LONG}),
                             lambda b: b.api_models.test("m", LONG, id="missing"),
                             ("api-models", "test", "missing", "m", "--prompt", LONG)),
    "missing alias": (("DELETE", "aliases/nope", None),
                      lambda b: b.aliases.delete("nope"),
                      ("aliases", "delete", "nope")),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_one_status_and_code_per_error_on_every_surface(case, api, tmp_path):
    (method, path, body), py_call, cli_args = CASES[case]
    status, data, _ = await api(method, path, body)
    http = (status, data["error"]["code"])

    b = Bodhi(tmp_path / "py_home", master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    with pytest.raises(BodhiError) as ei:
        await asyncio.to_thread(py_call, b)
    python = (ei.value.status, ei.value.code)

    r = await asyncio.to_thread(cli, tmp_path / "cli_home", *cli_args)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    cli_status, cli_code = r.stderr.split("(", 1)[1].split(")", 1)[0].split()
    assert http == python == (int(cli_status), cli_code), (case, http, python, r.stderr)
    assert 400 <= http[0] < 500


HOLD_LOCK = """
import sys
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("LOCKED", flush=True)
import select
select.select([sys.stdin], [], [], 30)  # released when the test says so, when it dies (EOF), or after 30 s
lock.release()
"""


def _waiting_on_file_lock() -> bool:
    """A thread of this process (the in-process Jupyter server's) is inside FileLock.acquire."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == "acquire" and "filelock" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
    return False


async def test_server_answers_while_a_store_write_waits_for_the_lock(api, upstream, bodhi_home):
    code, _, _ = await api("POST", "api-models", {"id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY,
                                                   "models": ["echo"], "prefix": "fake/"})
    assert code == 201
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(bodhi_home / "bodhi_nb.db.json.lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        put = asyncio.ensure_future(api("PUT", "api-models/fake", {"models": ["echo", "other"]}))
        deadline = time.monotonic() + 20
        while not _waiting_on_file_lock():  # the write has reached the lock (in a worker thread)
            assert time.monotonic() < deadline and not put.done(), "the write never waited on the lock"
            await asyncio.sleep(0.01)

        t0 = time.perf_counter()
        code, models, _ = await api("GET", "models")
        t_models = time.perf_counter() - t0
        t0 = time.perf_counter()
        code2, reply, _ = await api("POST", "chat/completions",
                                    {"model": "fake/echo", "messages": [{"role": "user", "content": "free"}]})
        t_chat = time.perf_counter() - t0
        # Both answered while the write is still waiting: the event loop was never blocked.
        assert not put.done(), "the write finished although the lock is held"
        assert code == 200 and "fake/echo" in [m["id"] for m in models["data"]]
        assert code2 == 200 and reply["choices"][0]["message"]["content"] == "echo: free"
        print(f"while a write waited on the lock: GET models {t_models * 1000:.1f} ms, chat {t_chat * 1000:.1f} ms")
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
    code, data, _ = await put
    assert code == 200 and data["models"] == ["echo", "other"]


async def test_a_store_written_by_another_process_is_reread_off_the_event_loop(api, upstream, bodhi_home,
                                                                               monkeypatch):
    import threading
    from pathlib import Path

    from bodhi_nb.services.db import store as service

    code, _, _ = await api("POST", "api-models", {"id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY,
                                                   "models": ["echo"], "prefix": "fake/"})
    assert code == 201
    rebuilt_on: list[str] = []
    real = service.ConfigStore._build_index

    def spy(db, generation):  # type: ignore[no-untyped-def]
        rebuilt_on.append(threading.current_thread().name)
        return real(db, generation)

    monkeypatch.setattr(service.ConfigStore, "_build_index", staticmethod(spy))
    writer = Path(__file__).parent / "helpers" / "store_writer.py"
    done = await asyncio.to_thread(subprocess.run, [sys.executable, str(writer), str(bodhi_home), TEST_SECRET,
                                                    "create", "other", "3"], capture_output=True, text=True)
    assert done.stdout.strip() == "done", done.stderr
    code, reply, _ = await api("POST", "chat/completions",
                               {"model": "fake/echo", "messages": [{"role": "user", "content": "after"}]})
    assert code == 200 and reply["choices"][0]["message"]["content"] == "echo: after"
    assert rebuilt_on, "the other process's write was never read"
    assert threading.main_thread().name not in rebuilt_on, rebuilt_on  # the server's loop runs on the main thread
