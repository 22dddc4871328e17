"""Files and Batches through the gateway with the official openai SDK: jobs that run here (local
models, providers without a batch API), hostile input, and jobs read back by id."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from bodhi_nb.services.local_engine import local_extra_available
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels
from tests.conftest import TEST_KEY
from tests.resources.servers import start_fake, wait_for

no_local = not local_extra_available() or LocalModels.builtin_path() is None


@pytest.fixture(scope="module")
def slow_upstream():
    """batch_upstream.py: an OpenAI chat server with no Files/Batches API (`lat-N` answers after N ms)."""
    proc, port = start_fake("batch_upstream.py", "--key", TEST_KEY)
    yield f"http://127.0.0.1:{port}/v1"
    proc.kill()
    proc.wait()


@pytest.fixture
def client(jp_serverapp, http_server_client, jp_http_port, jp_base_url, api, slow_upstream):
    async def make() -> openai.OpenAI:
        code, body, _ = await api("POST", "api-models", {"id": "slow", "base_url": slow_upstream, "api_key": TEST_KEY,
                                                         "models": ["lat-10", "echo"], "prefix": "slow/"})
        assert code == 201, body
        return openai.OpenAI(base_url=f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1",
                             api_key=jp_serverapp.identity_provider.token, max_retries=0,
                             http_client=httpx.Client(trust_env=False, timeout=120))
    return make


def _lines(model: str, n: int, *, bad: int = 0) -> bytes:
    rows = [json.dumps({"custom_id": f"row-{i:03d}", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"r{i}"}]}})
            for i in range(n)]
    rows[1:1] = ["{not json"] * bad
    return ("\n".join(rows) + "\n").encode()


def _wait(c: openai.OpenAI, batch_id: str, timeout: float = 300) -> openai.types.Batch:
    box: dict = {}

    def finished() -> bool:
        box["b"] = c.batches.retrieve(batch_id)
        return box["b"].status in ("completed", "failed", "cancelled", "expired")

    wait_for(finished, timeout, what=f"batch {batch_id} to finish")
    return box["b"]


async def test_a_batch_runs_here_when_the_provider_has_no_batch_api(client, api, slow_upstream):
    c = await client()
    httpx.post(f"{slow_upstream.removesuffix('/v1')}/_stats", trust_env=False)

    def run() -> tuple:
        f = c.files.create(file=("in.jsonl", _lines("slow/lat-10", 30, bad=2)), purpose="batch")
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        done = _wait(c, b.id)
        assert done.status == "completed" and done.output_file_id and done.error_file_id, done
        out = c.files.content(done.output_file_id).text
        err = c.files.content(done.error_file_id).text
        return f, b, done, out, err, c.batches.list(), c.files.retrieve(f.id)

    f, b, done, out, err, listed, again = await asyncio.to_thread(run)
    assert f.purpose == "batch" and f.bytes > 0 and again.id == f.id
    assert b.status == "validating" and b.request_counts.total == 32  # first asks the provider
    assert done.status == "completed" and done.request_counts.completed == 30 and done.request_counts.failed == 2
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["custom_id"] for r in rows] == [f"row-{i:03d}" for i in range(30)]  # ordered by custom_id
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in rows)
    assert rows[5]["response"]["body"]["choices"][0]["message"]["content"] == "echo: r5"
    bad = [json.loads(x) for x in err.splitlines()]
    assert len(bad) == 2 and all(x["response"] is None and x["error"]["code"] == "invalid_request" for x in bad)
    assert done.errors is not None and [e.line for e in done.errors.data] == [2, 3]
    assert listed.data[0].id == b.id
    # Every answered row is one ledger row, recorded as the batch's.
    code, usage, _ = await api("GET", "usage?surface=batch&page_size=100")
    assert code == 200 and usage["total"] == 30
    # The provider was asked whether it has a batch API, once; the file was never copied to it.
    other = httpx.get(f"{slow_upstream.removesuffix('/v1')}/_stats", trust_env=False).json()["other"]
    assert other == ["GET /v1/batches?limit=1"]


async def test_a_provider_that_lists_no_batches_still_gets_the_upload(client, slow_upstream):
    """A 405 to the listing says the path exists without GET: the gateway still tries the
    provider's Files API (here a 404 too, so the job then runs here)."""
    c = await client()
    root = slow_upstream.removesuffix("/v1")
    httpx.post(f"{root}/_stats?listing=405", trust_env=False)

    def run() -> openai.types.Batch:
        f = c.files.create(file=("in.jsonl", _lines("slow/echo", 3)), purpose="batch")
        return _wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                         completion_window="24h").id)

    done = await asyncio.to_thread(run)
    assert done.status == "completed" and done.request_counts.completed == 3
    other = httpx.get(f"{root}/_stats", trust_env=False).json()["other"]
    assert other == ["GET /v1/batches?limit=1", "POST /v1/files"]


async def test_hostile_batches_are_4xx_and_lose_nothing(client, api, jp_fetch):
    c = await client()

    def run() -> dict:
        out = {}
        f = c.files.create(file=("in.jsonl", _lines("slow/echo", 2)), purpose="batch")
        for name, kw in (("unknown_model", {"input_file_id": c.files.create(
                              file=("u.jsonl", _lines("nobody/serves-this", 1)), purpose="batch").id}),
                         ("unknown_file", {"input_file_id": "file-nope"})):
            with pytest.raises(openai.NotFoundError) as ei:
                c.batches.create(endpoint="/v1/chat/completions", completion_window="24h", **kw)
            out[name] = ei.value
        with pytest.raises(openai.BadRequestError) as ei:
            c.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
        out["endpoint"] = ei.value
        out["file"] = c.files.retrieve(f.id)
        return out

    out = await asyncio.to_thread(run)
    assert out["unknown_model"].status_code == 404 and "nobody/serves-this" in out["unknown_model"].message
    assert out["unknown_file"].code == "file_not_found" and out["endpoint"].status_code == 400
    assert out["file"].bytes > 0  # the stored file is still there
    code, listed, _ = await api("GET", "batches")
    assert code == 200 and listed["data"] == []  # nothing half-made


async def test_a_file_over_the_limit_is_a_413(jp_serverapp, http_server_client, jp_http_port, jp_base_url):
    services = jp_serverapp.web_app.settings["bodhi_nb.services"]
    services.ops.batches.max_file_bytes = 1000
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1/files"
    headers = {"Authorization": f"Bearer {jp_serverapp.identity_provider.token}"}
    async with httpx.AsyncClient(trust_env=False) as h:
        r = await h.post(url, headers=headers, data={"purpose": "batch"}, files={"file": ("big.jsonl", b"x" * 5000)})
        # Refused from its Content-Length alone: the bytes are read and dropped, never stored.
        huge = await h.post(url, headers=headers, data={"purpose": "batch"},
                            files={"file": ("huge.jsonl", b"x" * 300_000)})
        ok = await h.post(url, headers=headers, data={"purpose": "batch"}, files={"file": ("s.jsonl", b"{}\n")})
        try:  # refused before its body is read: a 403, or the connection closed under the upload
            refused = (await h.post(url, data={"purpose": "batch"}, files={"file": ("s.jsonl", b"{}\n")})).status_code
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            refused = 403
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "file_too_large"
    assert ok.status_code == 200 and ok.json()["bytes"] == 3
    assert refused == 403
    stored = list(services.ops.batches.store.dir.iterdir())
    assert [p.name for p in stored] == [f"{ok.json()['id']}.jsonl"]  # no partial upload left behind


@pytest.mark.local_model
@pytest.mark.skipif(no_local, reason="needs the local extra")
async def test_a_batch_on_the_local_model(client):
    c = await client()

    def run():
        f = c.files.create(file=("in.jsonl", _lines(BUILTIN_ALIAS, 3)), purpose="batch")
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        done = _wait(c, b.id)
        return done, c.files.content(done.output_file_id).text

    done, out = await asyncio.to_thread(run)
    assert done.status == "completed" and done.request_counts.completed == 3
    assert [json.loads(x)["custom_id"] for x in out.splitlines()] == ["row-000", "row-001", "row-002"]


# -- at the provider: OpenAI Batch and Anthropic Message Batches (tests/resources/fake_batches.py) ---


@pytest.fixture
def jp_server_config(jp_server_config):
    """Poll a provider's batch every 50 ms (the fake advances one step per poll)."""
    return {**jp_server_config, "BodhiExtension": {**jp_server_config["BodhiExtension"], "batch_poll_seconds": 0.05}}


@pytest.fixture(scope="module")
def batch_provider():
    proc, port = start_fake("fake_batches.py", "--key", TEST_KEY)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


async def test_batches_run_at_openai_and_anthropic_format_providers(client, api, batch_provider):
    c = await client()
    for id, fmt in (("oa", "openai"), ("an", "anthropic")):
        code, body, _ = await api("POST", "api-models", {"id": id, "base_url": f"{batch_provider}/v1", "api_key": TEST_KEY,
                                                         "api_format": fmt, "models": ["echo", "status-400"],
                                                         "prefix": f"{id}/"})
        assert code == 201, body

    def run(model: str) -> tuple:
        f = c.files.create(file=("in.jsonl", _lines(model, 12)), purpose="batch")
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        done = _wait(c, b.id, 60)
        return b, done, c.files.content(done.output_file_id).text if done.output_file_id else ""

    for model in ("oa/echo", "an/echo"):
        b, done, out = await asyncio.to_thread(run, model)
        assert b.status == "validating" and done.status == "completed", (model, done)
        rows = [json.loads(x) for x in out.splitlines()]
        # The provider answers in any order (the fake: reversed); the output is ordered by custom_id.
        assert [r["custom_id"] for r in rows] == [f"row-{i:03d}" for i in range(12)], model
        assert rows[3]["response"]["body"]["choices"][0]["message"]["content"] == "echo: r3", model
        assert rows[3]["response"]["body"]["model"] == model  # the name asked, not the upstream's
    state = httpx.get(f"{batch_provider}/_state", trust_env=False).json()
    assert all(n == 2 for n in state["processed"].values())  # each custom_id once per provider
    assert TEST_KEY not in json.dumps(state["files"])  # the provider got lines, never our key in them
    code, usage, _ = await api("GET", "usage?surface=batch&by=model")
    assert {g["model"]: g["requests"] for g in usage["data"]} == {"oa/echo": 12, "an/echo": 12}


async def test_a_broken_multipart_upload_is_a_400(jp_serverapp, http_server_client, jp_http_port, jp_base_url):
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1/files"
    headers = {"Authorization": f"Bearer {jp_serverapp.identity_provider.token}",
               "Content-Type": "multipart/form-data; boundary=a222103b9b30b1f9e8be6882ecedb1d2"}
    body = b"--a222103b9b30b1f9e8be6882ecedb1d2\r\n[]--a222103b9b30b1f9e8be6882ecedb1d2--\r\n"  # found by schemathesis
    async with httpx.AsyncClient(trust_env=False) as h:
        r = await h.post(url, headers=headers, content=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    services = jp_serverapp.web_app.settings["bodhi_nb.services"]
    assert list(services.ops.batches.store.dir.iterdir()) == []  # nothing of it kept
