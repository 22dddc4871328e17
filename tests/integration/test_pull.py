"""Pull GGUF files from a fake Hugging Face Hub on 127.0.0.1 (HF_ENDPOINT) into the HF cache:
progress, a dropped connection resumed, a cancelled pull, bad quants, and the pulled model chatting."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

from bodhi_nb.objs.errors import InvalidRequestError, NotFoundError
from bodhi_nb.services.data_service import DataService
from bodhi_nb.services.hub import HubService, PullCancelled, PullRef, choose_file

GGUF = DataService.builtin_path()
pytestmark = pytest.mark.skipif(GGUF is None, reason="needs the local extra (the bundled GGUF is what the hub serves)")
CHUNK = DOWNLOAD_CHUNK_SIZE  # the unit huggingface_hub reports progress and keeps bytes in
FAKE_HUB = Path(__file__).resolve().parents[1] / "resources" / "fake_hub.py"


class FakeHub:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(FAKE_HUB), "--gguf", str(GGUF)], stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

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
    svc = HubService.for_data(DataService(bodhi_home))
    seen: list[tuple[int, int | None]] = []
    res = svc.pull("test/tiny-GGUF:Q4_1", progress=lambda done, total: seen.append((done, total)))
    size = GGUF.stat().st_size
    assert res["model"] == "test/tiny-GGUF:Q4_1" and res["filename"] == "tiny.Q4_1.gguf"
    assert _sha(res["path"]) == _sha(GGUF)
    assert len(seen) > 3 and seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # progress only moves forward
    names = [m.alias for m in DataService(bodhi_home).list_model_aliases()]
    assert "test/tiny-GGUF:Q4_1" in names  # discovery finds it at once
    # pulling again is a no-op: no second GET of the file
    gets = [r for r in hub.log() if r["method"] == "GET" and "/resolve/" in r["path"]]
    svc.pull("test/tiny-GGUF:Q4_1")
    assert [r for r in hub.log() if r["method"] == "GET" and "/resolve/" in r["path"]] == gets


def test_dropped_connection_resumes_with_a_range_request(hub, bodhi_home):
    cut = 2 * CHUNK + 12345  # huggingface_hub writes whole chunks; the partial third one is fetched again
    hub.control(cut_after=cut)
    res = HubService.for_data(DataService(bodhi_home)).pull("test/tiny-GGUF/tiny.Q4_1.gguf")
    ranges = [r["range"] for r in hub.log() if r["method"] == "GET" and "/resolve/" in r["path"]]
    assert ranges == [None, f"bytes={2 * CHUNK}-"]  # resumed after the bytes it kept, not restarted
    assert _sha(res["path"]) == _sha(GGUF)


def test_cancelled_pull_leaves_nothing_and_a_new_pull_completes(hub, bodhi_home):
    svc = HubService.for_data(DataService(bodhi_home))

    def interrupt(done, total):
        if done >= CHUNK:
            raise PullCancelled("stop")  # what the panel's Stop / DELETE on the job does

    with pytest.raises(PullCancelled):
        svc.pull("test/tiny-GGUF:Q4_1", progress=interrupt)
    assert _cached_ggufs(bodhi_home) == []  # no half file is ever discovered
    assert "test/tiny-GGUF:Q4_1" not in [m.alias for m in DataService(bodhi_home).list_model_aliases()]
    res = svc.pull("test/tiny-GGUF:Q4_1")
    assert _sha(res["path"]) == _sha(GGUF)


def test_bad_references_list_the_choices(hub, bodhi_home):
    svc = HubService.for_data(DataService(bodhi_home))
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


async def test_http_pull_job_progress_cancel_and_done(hub, api, bodhi_home):
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
    status, job, _ = await api("DELETE", f"modelfiles/pull/{job['id']}")
    assert status == 200
    hub.control(release=True)
    job = await _poll(api, job["id"], lambda j: j["status"] != "running")
    assert job["status"] == "cancelled" and job["error"]["code"] == "pull_cancelled"
    assert _cached_ggufs(bodhi_home) == []

    status, job, _ = await api("POST", "modelfiles/pull", {"model": "test/tiny-GGUF:Q4_1"})
    job = await _poll(api, job["id"], lambda j: j["status"] != "running")
    assert job["status"] == "done" and job["progress"] == 1.0 and job["error"] is None
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


def test_local_tab_pull_box_shows_progress(hub, bodhi_home):
    from bodhi_nb.client import Bodhi
    from bodhi_nb.widgets import AliasesPanel
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
        box.pull_btn.click()
        assert box.pull_btn.disabled and "Pulling" in box.status.value
        await box.runner.wait()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
        assert "chat with it as test/tiny-GGUF:Q4_1" in box.status.value and box.bar.value == 1.0
        assert len(seen) > 3 and 0 < seen[1] < 1 and seen == sorted(seen)
        assert "test/tiny-GGUF:Q4_1" in p.models_table.value  # the table refreshed itself
        assert "MB of" in box.info.value and not box.pull_btn.disabled and box.stop_btn.disabled
    finally:
        b.close()


@pytest.mark.local_model
def test_pulled_model_answers_a_chat(hub, bodhi_home):
    from bodhi_nb.client import Bodhi
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
