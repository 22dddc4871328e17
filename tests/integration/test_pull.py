"""Pull GGUF files from a fake Hugging Face Hub on 127.0.0.1 (HF_ENDPOINT) into the HF cache:
progress, a dropped connection resumed, interrupted pulls (cancel, DELETE on the job, Ctrl-C, a
killed process) resumed with a Range request, bad quants, and the pulled model chatting."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

from bodhi_nb.objs.errors import InvalidRequestError, NotFoundError, PullCancelled, UpstreamError
from bodhi_nb.services.hub import CancelFlag, HubService, PullRef, _child_env, choose_file
from bodhi_nb.services.local_models import LocalModels
from tests.conftest import TEST_KEY, TEST_SECRET
from tests.resources.servers import start_fake, wait_for

GGUF = LocalModels.builtin_path()
pytestmark = pytest.mark.skipif(GGUF is None, reason="needs the local extra (the bundled GGUF is what the hub serves)")
CHUNK = DOWNLOAD_CHUNK_SIZE  # the unit huggingface_hub reports progress and keeps bytes in


class FakeHub:
    def __init__(self) -> None:
        self.proc, port = start_fake("fake_hub.py", "--gguf", str(GGUF))
        self.url = f"http://127.0.0.1:{port}"

    def control(self, **body) -> None:
        httpx.post(f"{self.url}/_control", json=body, trust_env=False).raise_for_status()

    def log(self) -> list[dict]:
        return httpx.get(f"{self.url}/_log", trust_env=False).json()["requests"]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def hub(bodhi_home, monkeypatch):
    h = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield h
    h.stop()


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cached_ggufs(bodhi_home: Path) -> list[Path]:
    return sorted((bodhi_home.parent / "hf" / "hub").rglob("*.gguf"))


def _partial_size(bodhi_home: Path) -> int:
    """Bytes in the (single) partial download, 0 when there is none."""
    parts = list((bodhi_home.parent / "hf" / "hub").rglob("*.incomplete"))
    assert len(parts) <= 1, parts
    return parts[0].stat().st_size if parts else 0


def _file_gets(hub: FakeHub) -> list[dict]:
    return [r for r in hub.log() if r["method"] == "GET" and "/resolve/" in r["path"]]


HAS_PROC = Path("/proc/self/stat").exists()


def _workers(parent: int) -> list[int]:
    """Pids of live download children of `parent` (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat, cmd = (d / "stat").read_text(), (d / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and b"_hub_worker" in cmd:
            pids.append(int(d.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def test_choose_file_rules():
    files = ["README.md", "m.Q4_K_M.gguf", "m.Q8_0.gguf", "sub/m.IQ2_XS.gguf"]
    assert choose_file(PullRef.parse("o/r:q4_k_m"), files) == "m.Q4_K_M.gguf"
    assert choose_file(PullRef.parse("o/r:IQ2_XS"), files) == "sub/m.IQ2_XS.gguf"
    assert choose_file(PullRef.parse("o/r/sub/m.IQ2_XS.gguf"), files) == "sub/m.IQ2_XS.gguf"
    assert choose_file(PullRef.parse("o/r"), ["only.Q4_0.gguf"]) == "only.Q4_0.gguf"
    with pytest.raises(NotFoundError, match=r"no GGUF with quant 'Q5_0'.*Q4_K_M \(m.Q4_K_M.gguf\), Q8_0"):
        choose_file(PullRef.parse("o/r:Q5_0"), files)
    with pytest.raises(InvalidRequestError, match="holds 3 GGUF files"):
        choose_file(PullRef.parse("o/r"), files)
    for bad in ("nope", "o/r:", "o/r/file.bin", "../x/y"):
        with pytest.raises(InvalidRequestError):
            PullRef.parse(bad)


def test_pull_with_progress_lands_in_the_cache(hub, bodhi_home):
    svc = HubService.for_data(LocalModels(bodhi_home))
    seen: list[tuple[int, int | None]] = []
    res = svc.pull("test/tiny-GGUF:Q4_1", progress=lambda done, total: seen.append((done, total)))
    size = GGUF.stat().st_size
    assert res["model"] == "test/tiny-GGUF:Q4_1" and res["filename"] == "tiny.Q4_1.gguf"
    assert _sha(res["path"]) == _sha(GGUF)
    assert len(seen) > 3 and seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # progress only moves forward
    names = [m.alias for m in LocalModels(bodhi_home).list_model_aliases()]
    assert "test/tiny-GGUF:Q4_1" in names  # discovery finds it at once
    # pulling again is a no-op: no second GET of the file
    gets = [r for r in hub.log() if r["method"] == "GET" and "/resolve/" in r["path"]]
    svc.pull("test/tiny-GGUF:Q4_1")
    assert [r for r in hub.log() if r["method"] == "GET" and "/resolve/" in r["path"]] == gets


def test_dropped_connection_resumes_with_a_range_request(hub, bodhi_home):
    cut = 2 * CHUNK + 12345  # huggingface_hub writes whole chunks; the partial third one is fetched again
    hub.control(cut_after=cut)
    res = HubService.for_data(LocalModels(bodhi_home)).pull("test/tiny-GGUF/tiny.Q4_1.gguf")
    ranges = [r["range"] for r in hub.log() if r["method"] == "GET" and "/resolve/" in r["path"]]
    assert ranges == [None, f"bytes={2 * CHUNK}-"]  # resumed after the bytes it kept, not restarted
    assert _sha(res["path"]) == _sha(GGUF)


def test_cancelled_pull_resumes_where_it_stopped(hub, bodhi_home):
    svc = HubService.for_data(LocalModels(bodhi_home))
    size = GGUF.stat().st_size
    # 1. Cancelled from another thread (the Pull box's Stop) while the hub is stalled mid-file.
    n1 = 3 * CHUNK
    hub.control(hold_after=n1)
    seen: list[tuple[int, int | None]] = []
    flag, outcome = CancelFlag(), []

    def run():
        try:
            outcome.append(svc.pull("test/tiny-GGUF:Q4_1", progress=lambda d, t: seen.append((d, t)), cancel=flag))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: seen and seen[-1][0] >= n1, timeout=60, what="the first bytes")
    flag.set()  # the connection is stalled: only killing the child ends this pull
    t.join(60)
    assert not t.is_alive() and isinstance(outcome[0], PullCancelled) and "pull it again" in outcome[0].message
    assert _partial_size(bodhi_home) == n1  # kept, not discarded
    assert _cached_ggufs(bodhi_home) == []  # but no half file is ever discovered
    assert "test/tiny-GGUF:Q4_1" not in [m.alias for m in LocalModels(bodhi_home).list_model_aliases()]

    # 2. Stopped by a progress callback that raises (the older way to stop), mid-way through the resumed part.
    hub.control(hold_after=2 * CHUNK)
    n2 = n1 + 2 * CHUNK
    seen.clear()

    def interrupt(done, total):
        seen.append((done, total))
        if done >= n2:
            raise PullCancelled("stop")

    with pytest.raises(PullCancelled):
        svc.pull("test/tiny-GGUF:Q4_1", progress=interrupt)
    assert seen[0] == (n1, size)  # progress starts from the bytes already there
    assert _partial_size(bodhi_home) == n2

    # 3. The next pull asks only for the rest, and the file is whole.
    seen.clear()
    res = svc.pull("test/tiny-GGUF:Q4_1", progress=lambda d, t: seen.append((d, t)))
    gets = _file_gets(hub)
    assert [g["range"] for g in gets] == [None, f"bytes={n1}-", f"bytes={n2}-"]
    assert gets[-1]["headers"].get("Range") == f"bytes={n2}-"
    assert seen[0] == (n2, size) and seen[-1] == (size, size)
    assert _sha(res["path"]) == _sha(GGUF) and _partial_size(bodhi_home) == 0
    assert "test/tiny-GGUF:Q4_1" in [m.alias for m in LocalModels(bodhi_home).list_model_aliases()]


def test_two_pulls_of_one_file_share_one_transfer(hub, bodhi_home):
    svc = HubService.for_data(LocalModels(bodhi_home))
    hub.control(hold_after=CHUNK)
    results: list = []

    def pull():
        try:
            results.append(svc.pull("test/tiny-GGUF:Q4_1"))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results.append(exc)

    first, second = threading.Thread(target=pull), threading.Thread(target=pull)
    first.start()
    wait_for(lambda: _partial_size(bodhi_home) >= CHUNK, timeout=60, what="the first pull's bytes")
    second.start()  # it must wait for the first, never append to the same partial file
    wait_for(lambda: sum(r["method"] == "HEAD" for r in hub.log()) >= 2, timeout=60, what="the second pull's HEAD")
    hub.control(release=True)
    first.join(120)
    second.join(120)
    assert len(results) == 2 and all(isinstance(r, dict) for r in results), results
    assert [g["range"] for g in _file_gets(hub)] == [None]  # one transfer
    assert results[0]["path"] == results[1]["path"] and _sha(results[0]["path"]) == _sha(GGUF)


def test_a_partial_file_that_does_not_match_is_discarded(hub, bodhi_home):
    digest = _sha(GGUF)
    partial = bodhi_home.parent / "hf" / "hub" / "models--test--tiny-GGUF" / "blobs" / f"{digest}.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * CHUNK)  # not the file's first bytes
    svc = HubService.for_data(LocalModels(bodhi_home))
    with pytest.raises(UpstreamError) as e:
        svc.pull("test/tiny-GGUF:Q4_1")
    assert e.value.code == "checksum_mismatch" and "pull again" in e.value.message
    assert not partial.exists() and _cached_ggufs(bodhi_home) == []
    res = svc.pull("test/tiny-GGUF:Q4_1")
    assert [g["range"] for g in _file_gets(hub)] == [f"bytes={CHUNK}-", None]
    assert _sha(res["path"]) == digest


def test_child_environment_has_hf_settings_and_no_secrets(monkeypatch, tmp_path):
    secrets = {"BODHI_ENCRYPTION_KEY": TEST_SECRET, "OPENAI_API_KEY": TEST_KEY, "JUPYTER_TOKEN": "jt-secret-123",
               "BODHI_MASTER_SECRET": "ms-secret-456", "ANTHROPIC_API_KEY": TEST_KEY + "-2"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_pull_token")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    env = _child_env()
    assert {k: env[k] for k in ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME")} == {
        "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_pull_token", "HF_HOME": str(tmp_path)}
    assert not set(secrets) & set(env) and not any(v in " ".join(env.values()) for v in secrets.values())


def test_bad_references_list_the_choices(hub, bodhi_home):
    svc = HubService.for_data(LocalModels(bodhi_home))
    with pytest.raises(NotFoundError) as e:
        svc.pull("test/tiny-GGUF:Q9_9")
    assert e.value.status == 404 and "Q4_1 (tiny.Q4_1.gguf), Q8_0 (tiny.Q8_0.gguf)" in e.value.message
    with pytest.raises(InvalidRequestError) as e:
        svc.pull("test/tiny-GGUF")
    assert e.value.status == 400 and "Q4_1 (tiny.Q4_1.gguf)" in e.value.message
    with pytest.raises(InvalidRequestError) as e:
        svc.pull("test/twins-GGUF:Q4_K_M")
    assert "test/twins-GGUF/a/model.Q4_K_M.gguf, test/twins-GGUF/b/model.Q4_K_M.gguf" in e.value.message
    with pytest.raises(NotFoundError, match="Repo test/missing was not found"):
        svc.pull("test/missing:Q4_1")
    assert _cached_ggufs(bodhi_home) == []


async def _poll(api, job_id, until, timeout=120.0):
    deadline = time.monotonic() + timeout
    while True:
        status, job, _ = await api("GET", f"modelfiles/pull/{job_id}")
        assert status == 200, job
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_http_pull_job_progress_cancel_and_resume(hub, api, bodhi_home, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_pull_token")  # passed to the download child, and sent to the hub
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)  # never passed to it
    monkeypatch.setenv("JUPYTER_TOKEN", "jt-secret-123")
    status, err, _ = await api("POST", "modelfiles/pull", {"model": "test/tiny-GGUF:Q9_9"})
    assert status == 404 and err["error"]["code"] == "quant_not_found" and "Q8_0 (tiny.Q8_0.gguf)" in err["error"]["message"]
    status, err, _ = await api("POST", "modelfiles/pull", {"model": "not a repo"})
    assert status == 400 and err["error"]["param"] == "model"
    status, err, _ = await api("POST", "modelfiles/pull", {"modell": "x/y"})
    assert status in (400, 422) and err["error"]["type"] == "invalid_request_error"
    status, err, _ = await api("GET", "modelfiles/pull/doesnotexist")
    assert status == 404

    held = CHUNK  # the hub stops after one chunk until released: the job is mid-way, deterministically
    hub.control(hold_after=held)
    status, job, _ = await api("POST", "modelfiles/pull", {"model": "test/tiny-GGUF:Q4_1"})
    assert status == 202 and job["status"] == "running" and job["model"] == "test/tiny-GGUF:Q4_1"
    job = await _poll(api, job["id"], lambda j: j["downloaded_bytes"] >= held)
    assert job["status"] == "running" and job["downloaded_bytes"] == held
    assert job["total_bytes"] == GGUF.stat().st_size and 0 < job["progress"] < 1
    if HAS_PROC:  # the real child's environment: the HF settings, none of bodhi's secrets
        (pid,) = _workers(os.getpid())
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"HF_ENDPOINT=" + hub.url.encode() in environ and b"HF_TOKEN=hf_pull_token" in environ
        assert TEST_KEY.encode() not in environ and TEST_SECRET.encode() not in environ
        assert b"jt-secret-123" not in environ
    status, job, _ = await api("DELETE", f"modelfiles/pull/{job['id']}")
    assert status == 200  # the hub is still stalled: the job ends because its child is killed
    job = await _poll(api, job["id"], lambda j: j["status"] != "running")
    assert job["status"] == "cancelled" and job["error"]["code"] == "pull_cancelled"
    assert _cached_ggufs(bodhi_home) == [] and await asyncio.to_thread(_partial_size, bodhi_home) == held

    status, job, _ = await api("POST", "modelfiles/pull", {"model": "test/tiny-GGUF:Q4_1"})
    job = await _poll(api, job["id"], lambda j: j["status"] != "running")
    assert job["status"] == "done" and job["progress"] == 1.0 and job["error"] is None
    gets = _file_gets(hub)
    assert [g["range"] for g in gets] == [None, f"bytes={held}-"]  # resumed, not restarted
    assert gets[-1]["headers"].get("Authorization") == "Bearer hf_pull_token"
    (path,) = _cached_ggufs(bodhi_home)
    assert path.name == "tiny.Q4_1.gguf" and _sha(path) == _sha(GGUF)
    status, models, _ = await api("GET", "models")
    assert "test/tiny-GGUF:Q4_1" in [m["id"] for m in models["data"]]
    status, doc, _ = await api("GET", "openapi.json")
    assert {"/modelfiles/pull", "/modelfiles/pull/{id}"} <= set(doc["paths"])


def test_cli_pull_shows_progress(hub, bodhi_home):
    env = {**os.environ, "BODHI_HOME": str(bodhi_home), "HF_HOME": str(bodhi_home.parent / "hf"),
           "HF_ENDPOINT": hub.url}
    r = subprocess.run([sys.executable, "-m", "bodhi_nb.cli", "pull", "test/tiny-GGUF/tiny.Q8_0.gguf"],
                       env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "chat with it as: test/tiny-GGUF:Q8_0" in r.stdout and "100%" in r.stderr
    r = subprocess.run([sys.executable, "-m", "bodhi_nb.cli", "pull", "test/tiny-GGUF:Q2_K"],
                       env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 1 and r.stderr.startswith("error (") and "): test/tiny-GGUF has no GGUF with quant 'Q2_K'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not HAS_PROC or os.name != "posix", reason="signals and /proc")
def test_cli_pull_interrupted_by_ctrl_c_or_a_kill_resumes(hub, bodhi_home):
    env = {**os.environ, "BODHI_HOME": str(bodhi_home), "HF_HOME": str(bodhi_home.parent / "hf"),
           "HF_ENDPOINT": hub.url}
    cmd = [sys.executable, "-m", "bodhi_nb.cli", "pull", "test/tiny-GGUF:Q4_1"]

    def start(hold: int, until: int) -> tuple[subprocess.Popen, int]:
        hub.control(hold_after=hold)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: _partial_size(bodhi_home) >= until, timeout=60, what=f"{until} bytes in the partial file")
        (worker,) = wait_for(lambda: _workers(proc.pid), timeout=60, what="the download child")
        return proc, worker

    # Ctrl-C: the CLI stops its child, says how to resume, and exits 130.
    proc, worker = start(CHUNK, CHUNK)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in err and "Traceback" not in err
    assert not _alive(worker) and _partial_size(bodhi_home) == CHUNK

    # A killed process (like a killed kernel): its child sees stdin close and exits, leaving the partial file.
    proc, worker = start(2 * CHUNK, 3 * CHUNK)
    proc.kill()
    proc.communicate(timeout=60)
    wait_for(lambda: not _alive(worker), timeout=60, what="the orphaned child to exit")
    assert _partial_size(bodhi_home) == 3 * CHUNK

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and "chat with it as: test/tiny-GGUF:Q4_1" in r.stdout, r.stderr
    assert [g["range"] for g in _file_gets(hub)] == [None, f"bytes={CHUNK}-", f"bytes={3 * CHUNK}-"]
    (path,) = _cached_ggufs(bodhi_home)
    assert _sha(path) == _sha(GGUF) and _partial_size(bodhi_home) == 0


def test_local_tab_pull_box_shows_progress(hub, bodhi_home):
    from bodhi_nb.notebook.client import Bodhi
    from bodhi_nb.notebook.widgets import AliasesPanel
    from tests.conftest import FAST_KDF, TEST_SECRET

    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    p = AliasesPanel(b)
    box = p.pull_box
    seen: list[float] = []
    box.bar.observe(lambda ch: seen.append(ch["new"]), names="value")

    async def scenario():
        box.ref.value = "test/tiny-GGUF:Q9_9"
        box.pull_btn.click()
        await box.runner.wait()
        assert "bodhi-error" in box.status.value and "Q4_1 (tiny.Q4_1.gguf)" in box.status.value
        box.ref.value = "test/tiny-GGUF:Q4_1"
        hub.control(hold_after=CHUNK)  # Stop lands while the hub is stalled mid-file
        box.pull_btn.click()
        assert box.pull_btn.disabled and "Pulling" in box.status.value
        deadline = time.monotonic() + 60
        while box.bar.value == 0:
            assert time.monotonic() < deadline, "no progress"
            await asyncio.sleep(0.02)
        box.stop_btn.click()
        await box.runner.wait()
        assert "pull it again to resume" in box.status.value and not box.pull_btn.disabled
        box.pull_btn.click()
        await box.runner.wait()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
        assert "chat with it as test/tiny-GGUF:Q4_1" in box.status.value and box.bar.value == 1.0
        assert len(seen) > 3 and 0 < seen[1] < 1 and seen == sorted(seen)
        assert "test/tiny-GGUF:Q4_1" in p.models_table.value  # the table refreshed itself
        assert "MB of" in box.info.value and not box.pull_btn.disabled and box.stop_btn.disabled
        assert [g["range"] for g in _file_gets(hub)] == [None, f"bytes={CHUNK}-"]  # Stop, then Pull resumed
    finally:
        b.close()


@pytest.mark.local_model
def test_pulled_model_answers_a_chat(hub, bodhi_home):
    from bodhi_nb.notebook.client import Bodhi
    from tests.conftest import FAST_KDF, TEST_SECRET

    b = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    try:
        res = b.aliases.pull("test/tiny-GGUF:Q4_1", show=False)
        assert res["model"] in b.models()
        reply = b.chat(res["model"], "Name a colour.", max_tokens=12, temperature=0)
        assert isinstance(reply, str) and reply.strip()
        assert Path(b.services.data.gguf_path(b.services.data.get_model_alias(res["model"]))) == Path(res["path"])
    finally:
        b.services.engine.stop()
        b.close()
