"""tests/resources/fake_batches.py, driven by the real SDKs (openai, anthropic) over loopback.

The fake stands in for the providers' batch APIs in the gateway's batch-job tests (issue #21),
so these tests pin what it promises: OpenAI Files + Batches (upload, line-by-line validation at
create, one status step per retrieve, results in reverse input order, the error file, cancel,
list, 401s) and Anthropic Message Batches (create-time checks, in_progress -> ended over two
retrieves, JSONL results parsed by the SDK, errored and canceled results, cancel, list, delete).
The installed anthropic SDK (2.16) sends `Authorization: Bearer` and `anthropic-version:
2026-10-21` by default; the fake, like the gateway's Anthropic dialect and fake_anthropic.py,
wants `x-api-key` and `2023-06-01`, so the client here sends those as default headers.
Every wait is a bounded loop of retrieves: the fake advances only when polled, never by time.
"""

from __future__ import annotations

import json
import subprocess

import anthropic
import httpx
import openai
import pytest

from tests.resources.servers import start_fake

KEY = "k"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def port():
    proc, port = start_fake("fake_batches.py", "--key", KEY)
    yield port
    proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(autouse=True)
def clean(port):
    httpx.delete(f"http://127.0.0.1:{port}/_state", trust_env=False).raise_for_status()


def state(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/_state", trust_env=False).json()


@pytest.fixture
def oai(port):
    with httpx.Client(trust_env=False) as http:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, http_client=http, max_retries=0)


@pytest.fixture
def ant(port):
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=0,
                               default_headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})


def line(cid: str, text: str, *, model: str = "echo", url: str = CHAT, **extra: object) -> dict:
    return {"custom_id": cid, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}, **extra}


def jsonl(rows: list) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


def upload(oai: openai.OpenAI, rows: list) -> str:
    return oai.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch").id


def poll_openai(oai: openai.OpenAI, bid: str, until: set[str], limit: int = 10) -> tuple[object, list[str]]:
    seen = []
    for _ in range(limit):
        batch = oai.batches.retrieve(bid)
        seen.append(batch.status)
        if batch.status in until:
            return batch, seen
    raise AssertionError(f"batch {bid} did not reach {until} in {limit} polls: {seen}")


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x]


# -- OpenAI -------------------------------------------------------------------------------------

def test_a_batch_moves_one_step_per_poll_and_writes_its_output_in_reverse_order(oai, port):
    rows = [line(f"req-{i}", f"hello {i}") for i in range(3)]
    f = oai.files.create(file=("in.jsonl", jsonl(rows)), purpose="batch")
    assert (f.object, f.purpose, f.status, f.filename, f.bytes) == ("file", "batch", "processed", "in.jsonl",
                                                                     len(jsonl(rows)))
    assert f.id.startswith("file-") and oai.files.retrieve(f.id) == f
    assert oai.files.content(f.id).content == jsonl(rows)

    created = oai.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h", metadata={"job": "j1"})
    assert created.id.startswith("batch_") and created.object == "batch"
    assert (created.status, created.endpoint, created.input_file_id, created.completion_window, created.metadata,
            created.output_file_id, created.error_file_id, created.errors) == (
        "validating", CHAT, f.id, "24h", {"job": "j1"}, None, None, None)
    assert created.expires_at == created.created_at + 86400

    done, seen = poll_openai(oai, created.id, {"completed"})
    assert seen == ["in_progress", "finalizing", "completed"]
    assert done.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    assert done.usage is not None and done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens

    out = read_jsonl(oai.files.content(done.output_file_id).text)
    assert [r["custom_id"] for r in out] == ["req-2", "req-1", "req-0"]  # reverse of input, on purpose
    for r in out:
        assert r["id"].startswith("batch_req_") and r["error"] is None
        assert r["response"]["status_code"] == 200 and r["response"]["request_id"]
        body = r["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "echo"
        assert body["choices"][0]["message"] == {"role": "assistant", "refusal": None,
                                                 "content": f"echo: hello {r['custom_id'][-1]}"}
        assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert oai.files.retrieve(done.output_file_id).purpose == "batch_output"

    # polling an ended batch changes nothing and processes nothing again
    again, _ = poll_openai(oai, created.id, {"completed"})
    assert again.output_file_id == done.output_file_id
    st = state(port)
    assert st["processed"] == {"req-0": 1, "req-1": 1, "req-2": 1}
    assert st["batches"][created.id]["status"] == "completed" and st["batches"][created.id]["provider"] == "openai"
    assert st["files"][f.id] == {"filename": "in.jsonl", "purpose": "batch", "bytes": f.bytes, "lines": 3}

    deleted = oai.files.delete(f.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (f.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(f.id)


def test_bad_lines_land_in_the_error_file_and_the_good_ones_still_run(oai, port):
    rows = [line("ok-1", "one"),
            "this is not json",
            line("wrong-url", "x", url="/v1/embeddings"),
            line("ok-1", "duplicate"),
            {"custom_id": "no-model", "method": "POST", "url": CHAT, "body": {"messages": []}},
            {**line("get", "x"), "method": "GET"},
            line("extra", "x", extra_field=1),
            line("upstream-500", "x", model="status-500"),
            line("ok-2", "two")]
    bid = oai.batches.create(input_file_id=upload(oai, rows), endpoint=CHAT, completion_window="24h").id
    done, _ = poll_openai(oai, bid, {"completed"})
    assert done.request_counts.model_dump() == {"total": 9, "completed": 2, "failed": 7}
    assert done.errors is None

    out = read_jsonl(oai.files.content(done.output_file_id).text)
    assert [(r["custom_id"], r["response"]["body"]["choices"][0]["message"]["content"]) for r in out] == [
        ("ok-2", "echo: two"), ("ok-1", "echo: one")]
    errs = read_jsonl(oai.files.content(done.error_file_id).text)
    assert len(errs) == 7 and all(r["id"].startswith("batch_req_") for r in errs)
    bad = [(r["custom_id"], r["error"]["code"]) for r in errs if r["response"] is None]
    assert bad == [("extra", "unexpected_parameter"), ("get", "invalid_method"),
                   ("no-model", "missing_required_parameter"), ("ok-1", "duplicate_custom_id"),
                   ("wrong-url", "invalid_url"), (None, "invalid_json_line")]  # reverse order too
    assert errs[-1]["error"]["message"].startswith("Line 2:")
    upstream = [r for r in errs if r["response"] is not None]
    assert [(r["custom_id"], r["response"]["status_code"], r["error"]) for r in upstream] == [("upstream-500", 500, None)]
    assert upstream[0]["response"]["body"]["error"]["message"] == "fake upstream says 500"
    assert state(port)["processed"] == {"ok-1": 1, "upstream-500": 1, "ok-2": 1}


def test_a_file_with_no_valid_line_makes_the_batch_fail_listing_the_lines(oai):
    rows = ["{", line("a", "x", url="/v1/responses"), {"custom_id": "b"}]
    bid = oai.batches.create(input_file_id=upload(oai, rows), endpoint=CHAT, completion_window="24h").id
    failed, seen = poll_openai(oai, bid, {"failed"})
    assert seen == ["failed"] and failed.failed_at
    assert [(e.line, e.code) for e in failed.errors.data] == [
        (1, "invalid_json_line"), (2, "invalid_url"), (3, "missing_required_parameter")]
    assert failed.errors.data[2].param == "method"
    assert (failed.output_file_id, failed.error_file_id, failed.in_progress_at) == (None, None, None)


def test_embeddings_and_responses_batches_answer_in_their_endpoint_shape(oai):
    emb = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "embed", "input": ["a b", "c"] if i else "solo"}} for i in range(2)]
    resp = [{"custom_id": "r0", "method": "POST", "url": "/v1/responses",
             "body": {"model": "echo", "input": [{"role": "user", "content": "ping"}]}}]
    results = {}
    for endpoint, rows in (("/v1/embeddings", emb), ("/v1/responses", resp)):
        bid = oai.batches.create(input_file_id=upload(oai, rows), endpoint=endpoint, completion_window="24h").id
        done, _ = poll_openai(oai, bid, {"completed"})
        results[endpoint] = {r["custom_id"]: r["response"]["body"]
                             for r in read_jsonl(oai.files.content(done.output_file_id).text)}
    e1 = results["/v1/embeddings"]["e1"]
    assert e1["object"] == "list" and [d["index"] for d in e1["data"]] == [0, 1]
    assert len(e1["data"][0]["embedding"]) == 8 and e1["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    r0 = results["/v1/responses"]["r0"]
    assert r0["object"] == "response" and r0["status"] == "completed"
    assert r0["output"][0]["content"][0] == {"type": "output_text", "text": "echo: ping", "annotations": []}


def test_create_refuses_what_openai_refuses(oai):
    fid = upload(oai, [line("a", "x")])
    for kwargs, param in (({"extra_body": {"priority": "high"}}, "priority"),
                          ({"endpoint": "/v1/completions"}, "endpoint"),
                          ({"completion_window": "1h"}, "completion_window"),
                          ({"input_file_id": "file-nope"}, "input_file_id")):
        args = {"input_file_id": fid, "endpoint": CHAT, "completion_window": "24h", **kwargs}
        with pytest.raises(openai.BadRequestError) as err:
            oai.batches.create(**args)
        assert err.value.body["param"] == param, kwargs
    with pytest.raises(openai.BadRequestError):
        oai.files.create(file=("in.jsonl", b"{}\n"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError):
        oai.files.create(file=("in.txt", b"{}\n"), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batch_nope")


def test_cancel_goes_through_cancelling_to_cancelled_and_keeps_the_counts(oai, port):
    rows = [line("h0", "x", model="hold"), line("h1", "y")]
    bid = oai.batches.create(input_file_id=upload(oai, rows), endpoint=CHAT, completion_window="24h").id
    held, seen = poll_openai(oai, bid, {"in_progress"})
    assert oai.batches.retrieve(bid).status == "in_progress"  # "hold" keeps it there
    cancelling = oai.batches.cancel(bid)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert cancelling.request_counts == held.request_counts
    cancelled, seen = poll_openai(oai, bid, {"cancelled"})
    assert seen == ["cancelled"] and cancelled.cancelled_at
    assert cancelled.request_counts.model_dump() == {"total": 2, "completed": 0, "failed": 0}
    assert (cancelled.output_file_id, cancelled.error_file_id) == (None, None)
    assert state(port)["processed"] == {}
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(bid)


def test_cancel_while_finalizing_keeps_the_results_already_made(oai):
    bid = oai.batches.create(input_file_id=upload(oai, [line("a", "x"), line("b", "y")]), endpoint=CHAT,
                             completion_window="24h").id
    poll_openai(oai, bid, {"finalizing"})
    assert oai.batches.cancel(bid).status == "cancelling"
    cancelled, _ = poll_openai(oai, bid, {"cancelled"})
    assert cancelled.request_counts.model_dump() == {"total": 2, "completed": 2, "failed": 0}
    assert [r["custom_id"] for r in read_jsonl(oai.files.content(cancelled.output_file_id).text)] == ["b", "a"]


def test_list_pages_newest_first_with_after_and_limit(oai):
    fid = upload(oai, [line("a", "x")])
    ids = [oai.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h").id for _ in range(3)]
    first = oai.batches.list(limit=2)
    assert [b.id for b in first.data] == [ids[2], ids[1]] and first.has_more is True
    rest = oai.batches.list(limit=2, after=first.data[-1].id)
    assert [b.id for b in rest.data] == [ids[0]] and rest.has_more is False
    assert [b.id for b in oai.batches.list(limit=1)] == ids[::-1]  # the SDK's auto-pagination follows `after`
    raw = httpx.get(f"{oai.base_url}batches", headers={"Authorization": f"Bearer {KEY}"}, trust_env=False).json()
    assert (raw["object"], raw["first_id"], raw["last_id"], raw["has_more"]) == ("list", ids[2], ids[0], False)


def test_a_wrong_or_missing_openai_key_is_a_401_in_openais_envelope(port):
    with httpx.Client(trust_env=False) as http:
        bad = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
        assert err.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            bad.batches.list()
    r = httpx.get(f"http://127.0.0.1:{port}/v1/batches", trust_env=False)
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    assert state(port)["files"] == {}


# -- Anthropic ----------------------------------------------------------------------------------

def params(text: str, model: str = "echo", **extra: object) -> dict:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def poll_anthropic(ant: anthropic.Anthropic, bid: str, limit: int = 10) -> tuple[object, list[str]]:
    seen = []
    for _ in range(limit):
        batch = ant.messages.batches.retrieve(bid)
        seen.append(batch.processing_status)
        if batch.processing_status == "ended":
            return batch, seen
    raise AssertionError(f"message batch {bid} did not end in {limit} polls: {seen}")


def test_a_message_batch_ends_on_the_second_poll_and_the_sdk_reads_its_results(ant, port):
    requests = [{"custom_id": "m-0", "params": params("hello there")},
                {"custom_id": "m-1", "params": params("x", model="status-400")},
                {"custom_id": "m-2", "params": {**params("x"), "messages": [{"role": "assistant", "content": "hi"}]}},
                {"custom_id": "m-3", "params": params("bye")}]
    created = ant.messages.batches.create(requests=requests)
    assert created.id.startswith("msgbatch_") and created.type == "message_batch"
    assert created.processing_status == "in_progress" and created.request_counts.processing == 4
    assert (created.ended_at, created.cancel_initiated_at, created.archived_at, created.results_url) == (
        None, None, None, None)
    assert (created.expires_at - created.created_at).total_seconds() == 86400

    ended, seen = poll_anthropic(ant, created.id)
    assert seen == ["in_progress", "ended"] and ended.ended_at
    assert ended.results_url == f"http://127.0.0.1:{port}/v1/messages/batches/{created.id}/results"
    assert ended.request_counts.model_dump() == {"processing": 0, "succeeded": 2, "errored": 2, "canceled": 0,
                                                 "expired": 0}

    results = list(ant.messages.batches.results(created.id))
    assert all(isinstance(r, anthropic.types.messages.MessageBatchIndividualResponse) for r in results)
    assert [r.custom_id for r in results] == ["m-3", "m-2", "m-1", "m-0"]  # reverse of request order, on purpose
    by_id = {r.custom_id: r.result for r in results}
    ok = by_id["m-0"]
    assert ok.type == "succeeded" and ok.message.type == "message" and ok.message.role == "assistant"
    assert ok.message.content[0].text == "echo: hello there" and ok.message.stop_reason == "end_turn"
    assert ok.message.usage.input_tokens == 2 and ok.message.usage.output_tokens == 3
    assert by_id["m-3"].message.content[0].text == "echo: bye"
    assert by_id["m-1"].type == "errored" and by_id["m-1"].error.type == "error"
    assert by_id["m-1"].error.error.type == "invalid_request_error"
    assert by_id["m-2"].type == "errored" and "start" in by_id["m-2"].error.error.message  # checked at processing

    st = state(port)
    assert st["processed"] == {"m-0": 1, "m-1": 1, "m-2": 1, "m-3": 1}
    assert st["batches"][created.id] == {"provider": "anthropic", "status": "ended", "polls": 3,
                                         "request_counts": ended.request_counts.model_dump()}
    assert st["last"]["path"] == f"/v1/messages/batches/{created.id}/results"
    assert st["last"]["headers"]["X-Api-Key"] == KEY


def test_message_batch_create_refuses_bad_requests_with_a_400(ant, port):
    good = {"custom_id": "ok", "params": params("x")}
    for requests in ([],
                     [{"custom_id": "has space", "params": params("x")}],
                     [{"custom_id": "a" * 65, "params": params("x")}],
                     [good, good],
                     [{"custom_id": "no-max", "params": {"model": "echo", "messages": [{"role": "user", "content": "x"}]}}],
                     [{"custom_id": "no-msgs", "params": {**params("x"), "messages": []}}],
                     [{"custom_id": "extra", "params": params("x"), "priority": 1}]):
        with pytest.raises(anthropic.BadRequestError) as err:
            ant.messages.batches.create(requests=requests)
        assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "invalid_request_error"
    assert ant.messages.batches.create(requests=[{"custom_id": "A-z_09" + "x" * 58, "params": params("x")}]).id
    assert state(port)["last"]["body"]["requests"][0]["custom_id"] == "A-z_09" + "x" * 58


def test_a_canceled_message_batch_ends_with_every_request_canceled(ant, port):
    requests = [{"custom_id": "c0", "params": params("x", model="hold")}, {"custom_id": "c1", "params": params("y")}]
    bid = ant.messages.batches.create(requests=requests).id
    for _ in range(3):  # "hold" keeps it in progress however often it is polled
        assert ant.messages.batches.retrieve(bid).processing_status == "in_progress"
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.delete(bid)  # only an ended batch can be deleted
    canceling = ant.messages.batches.cancel(bid)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at
    ended, seen = poll_anthropic(ant, bid)
    assert seen == ["ended"] and ended.request_counts.canceled == 2 and ended.request_counts.succeeded == 0
    assert sorted((r.custom_id, r.result.type) for r in ant.messages.batches.results(bid)) == [
        ("c0", "canceled"), ("c1", "canceled")]
    assert state(port)["processed"] == {}
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.cancel(bid)
    deleted = ant.messages.batches.delete(bid)
    assert (deleted.id, deleted.type) == (bid, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.batches.retrieve(bid)


def test_message_batches_list_newest_first(ant):
    ids = [ant.messages.batches.create(requests=[{"custom_id": "a", "params": params("x")}]).id for _ in range(3)]
    page = ant.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[2], ids[1]] and page.has_more is True
    assert (page.first_id, page.last_id) == (ids[2], ids[1])
    assert [b.id for b in ant.messages.batches.list(limit=2, after_id=ids[1]).data] == [ids[0]]
    assert [b.id for b in ant.messages.batches.list(limit=1)] == ids[::-1]  # auto-pagination by after_id


def test_a_wrong_key_or_a_missing_version_is_refused_in_anthropics_envelope(port):
    bad = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="wrong", max_retries=0,
                              default_headers={"x-api-key": "wrong", "anthropic-version": "2023-06-01"})
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.batches.list()
    assert err.value.body["error"]["type"] == "authentication_error"
    # the SDK's own defaults (Bearer, 2026-10-21) are not the documented x-api-key
    plain = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        plain.messages.batches.create(requests=[{"custom_id": "a", "params": params("x")}])
    r = httpx.get(f"http://127.0.0.1:{port}/v1/messages/batches", headers={"x-api-key": KEY}, trust_env=False)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in r.json()["error"]["message"]
