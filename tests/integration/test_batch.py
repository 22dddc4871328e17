"""Bodhi.map / amap and the response cache against a real upstream on 127.0.0.1.

The upstream (tests/resources/batch_upstream.py) adds latency, counts requests in flight,
answers 429 with Retry-After, 503s and 404s for unknown models, and records every request
with its own clock, so timing claims are checked on the server's receive times.
"""

from __future__ import annotations

import _thread
import asyncio
import email.utils
import subprocess
import sys
import textwrap
import threading

import httpx
import pandas as pd
import pytest
from pydantic import BaseModel

from bodhi_nb.notebook.batch import CANCELLED, MapResult
from bodhi_nb.notebook.client import Bodhi
from bodhi_nb.objs import InvalidRequestError, ModelNotFound, UpstreamError
from bodhi_nb.server_core._local_adapter import local_response_format
from bodhi_nb.server_core.app_services import AppServices
from bodhi_nb.services.retry import hinted_delay, retry_delay, retryable
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET
from tests.resources.servers import start_fake, wait_for


class Upstream:
    def __init__(self) -> None:
        self.proc, port = start_fake("batch_upstream.py", "--key", TEST_KEY)
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/v1"

    def stats(self) -> dict:
        return httpx.get(f"{self.root}/_stats", trust_env=False).json()

    def requests(self) -> list[dict]:
        return self.stats()["requests"]

    def reset(self) -> None:
        httpx.post(f"{self.root}/_stats", trust_env=False)


@pytest.fixture(scope="module")
def up():
    u = Upstream()
    yield u
    u.proc.kill()
    u.proc.wait()


@pytest.fixture
def b(bodhi_home, up):
    up.reset()
    bodhi = Bodhi(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    bodhi.api_models.create("up", up.base_url, api_key=TEST_KEY, prefix="up/", forward_all_with_prefix=True)
    yield bodhi
    bodhi.close()


# -- retry rules (pure) ---------------------------------------------------------------------------


def test_hinted_delay_reads_retry_after_and_reset_headers():
    now = 1_700_000_000.0
    assert hinted_delay({"Retry-After": "3"}, now) == 3.0
    assert hinted_delay({"retry-after": email.utils.formatdate(now + 5, usegmt=True)}, now) == pytest.approx(5, abs=1)
    assert hinted_delay({"x-ratelimit-reset-requests": "1m30s", "x-ratelimit-reset-tokens": "250ms"}, now) == 90.0
    assert hinted_delay({"x-ratelimit-reset-tokens": "0.5s"}, now) == 0.5
    assert hinted_delay({"x-ratelimit-reset-requests": str(now + 7)}, now) == pytest.approx(7)
    assert hinted_delay({"retry-after": "soon"}, now) is None and hinted_delay({}, now) is None


def test_only_429_5xx_and_connection_failures_are_retried():
    assert retryable(UpstreamError("x", status=429)) and retryable(UpstreamError("x", status=502))
    assert retryable(UpstreamError("Could not reach the provider"))  # connection failure: 502
    assert not retryable(UpstreamError("x", status=400)) and not retryable(UpstreamError("x", status=404))
    assert not retryable(InvalidRequestError("x"))
    hinted = UpstreamError("x", status=429, headers={"retry-after": "2"})
    assert all(retry_delay(hinted, 1) >= 2 for _ in range(200))
    assert all(0.25 <= retry_delay(UpstreamError("x"), 1) <= 0.5 for _ in range(200))
    assert all(1.0 <= retry_delay(UpstreamError("x"), 3) <= 2.0 for _ in range(200))


# -- map over lists -------------------------------------------------------------------------------


def test_order_kept_and_in_flight_cap_never_exceeded(b, up):
    rows = [f"row {i}" for i in range(40)]
    out = b.map("up/lat-60", rows, concurrency=4, progress=False)
    assert [r.text for r in out] == [f"echo: row {i}" for i in range(40)]
    assert all(isinstance(r, MapResult) and r.error is None and r.attempts == 1 and not r.cached for r in out)
    assert all(r.usage["total_tokens"] > 0 and r.latency_s > 0 for r in out)
    stats = up.stats()
    assert stats["max_in_flight"] == 4 and len(stats["requests"]) == 40


def test_message_lists_system_and_params_pass_through(b, up):
    out = b.map("up/echo", [[{"role": "user", "content": "one"}], "two"], system="be brief", temperature=0,
                progress=False)
    assert [r.text for r in out] == ["echo: one", "echo: two"]


def test_per_row_errors_never_abort_the_batch(b, up):
    rows = ["fine 1", "!400 bad", "fine 2", "!503always down", "fine 3"]
    out = b.map("up/echo", rows, max_retries=1, concurrency=2, progress=False)
    assert [r.text for r in out][::2] == ["echo: fine 1", "echo: fine 2", "echo: fine 3"]
    assert out[1].text is None and "refused the request (400)" in out[1].error and out[1].attempts == 1
    assert "failed (503)" in out[3].error and out[3].attempts == 2  # retried once, then given up
    sent = [r["text"] for r in up.requests()]
    assert sent.count("!400 bad") == 1 and sent.count("!503always down") == 2


def test_unknown_models_are_per_row_errors_and_never_retried(b, up):
    out = b.map("up/no-such-model", ["a", "b"], progress=False)
    assert all("404" in r.error and r.attempts == 1 for r in out)
    assert len(up.requests()) == 2
    with pytest.raises(ModelNotFound):  # nothing serves the name: one error up front, not one per row
        b.map("nothing-serves-this", ["a", "b"], progress=False)
    with pytest.raises(ModelNotFound):
        asyncio.run(b.amap("nothing-serves-this", ["a"], progress=False))
    assert len(up.requests()) == 2


def test_503_is_retried_then_succeeds(b, up):
    out = b.map("up/echo", ["!503 flaky"], progress=False)
    assert out[0].text == "echo: !503 flaky" and out[0].attempts == 2 and out[0].error is None


@pytest.mark.parametrize("directive", ["!429:2", "!429date:2", "!429reset:2"])
def test_retry_after_is_honoured_and_slows_the_whole_batch(b, up, directive):
    limited = f"{directive} limited"
    concurrency = 3
    rows = [limited] + [f"other {i}" for i in range(40)]
    out = b.map("up/lat-20", rows, concurrency=concurrency, progress=False)
    assert all(r.error is None for r in out) and out[0].attempts == 2
    reqs = up.requests()
    first, retry = [r for r in reqs if r["text"] == limited]
    assert first["status"] == 429 and retry["status"] == 200
    # The earliest instant the upstream allowed, on its own clock. The client cannot have read the
    # 429 before the upstream received that request, so these are lower bounds a loaded machine
    # can only make later, never earlier.
    if directive.startswith("!429date"):
        not_before = email.utils.parsedate_to_datetime(first["retry_after"]).timestamp()
    else:
        not_before = first["t"] + 2.0
    assert retry["t"] >= not_before
    # A shared gate: after the 429 left the upstream, the only requests that may still arrive before
    # not_before are those other workers had already sent (at most one each); everything else waits.
    early = [r for r in reqs if r["t"] > first["t_end"] and r["t"] < not_before]
    assert len(early) <= concurrency - 1, early
    assert sum(r["t"] >= not_before for r in reqs) > 20  # the bulk of the batch came after the wait


# -- interrupt and resume -------------------------------------------------------------------------


def test_interrupt_returns_partial_results_and_a_rerun_resumes_from_the_cache(b, up):
    quick = [f"quick {i}" for i in range(6)]
    slow = [f"!slow {i}" for i in range(4)]  # slow only the first time they are asked
    rows = quick + slow

    def interrupt_when_slow_rows_hang():
        wait_for(lambda: up.stats()["in_flight"] == 4 and sum(r["status"] == 200 for r in up.requests()) == 6,
                 what="four slow rows in flight")
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_slow_rows_hang, daemon=True).start()
    out = b.map("up/echo", rows, concurrency=4, progress=False)  # returns instead of raising
    assert [r.text for r in out[:6]] == [f"echo: {q}" for q in quick]
    assert all(r.text is None and r.error == CANCELLED for r in out[6:])
    wait_for(lambda: up.stats()["in_flight"] == 0, what="the cancelled requests to close")
    assert [r["status"] for r in up.requests() if r["text"] in slow] == ["gone"] * 4

    before = len(up.requests())
    again = b.map("up/echo", rows, concurrency=4, progress=False)
    assert [r.text for r in again] == [f"echo: {x}" for x in rows] and all(r.error is None for r in again)
    assert [r.cached for r in again] == [True] * 6 + [False] * 4
    new = [r["text"] for r in up.requests()[before:]]
    assert sorted(new) == sorted(slow), "finished rows were requested again"


def test_cancelling_amap_returns_what_finished(b, up):
    rows = ["done 1", "done 2", "!slow never"]

    async def main():
        task = asyncio.ensure_future(b.amap("up/echo", rows, concurrency=3, progress=False))
        await asyncio.to_thread(wait_for, lambda: up.stats()["in_flight"] == 1 and len(up.requests()) == 3,
                                what="two rows done and the slow one in flight")
        task.cancel()
        return await task

    out = asyncio.run(main())
    assert [r.text for r in out] == ["echo: done 1", "echo: done 2", None] and out[2].error == CANCELLED
    wait_for(lambda: up.stats()["in_flight"] == 0, what="the cancelled request to close")


def test_amap_from_a_running_loop(b, up):
    async def main():
        return await b.amap("up/lat-20", [f"a{i}" for i in range(10)], concurrency=3, progress=False)

    assert [r.text for r in asyncio.run(main())] == [f"echo: a{i}" for i in range(10)]
    assert up.stats()["max_in_flight"] == 3


def test_local_models_get_the_schema_the_way_llama_cpp_reads_it():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = {"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    assert local_response_format(body)["response_format"] == {"type": "json_object", "schema": schema}
    plain = {"model": "m", "response_format": {"type": "json_object"}}
    assert local_response_format(plain) is plain


# -- DataFrames ------------------------------------------------------------------------------------


class Sentiment(BaseModel):
    label: str
    score: float


def test_dataframe_in_new_dataframe_out_and_input_untouched(b, up):
    df = pd.DataFrame({"id": [7, 8, 9], "review": ["good", "bad", "meh"]}, index=["r1", "r2", "r3"])
    before = df.copy(deep=True)
    out = b.map("up/echo", df, template="Classify: {review}", progress=False)
    assert out is not df and list(out.columns) == ["id", "review", "reply", "error"]
    assert list(out.index) == ["r1", "r2", "r3"]
    assert list(out["reply"]) == ["echo: Classify: good", "echo: Classify: bad", "echo: Classify: meh"]
    assert out["error"].isna().all()
    pd.testing.assert_frame_equal(df, before)
    assert list(df.columns) == ["id", "review"]


def test_response_format_model_sends_the_schema_and_expands_parsed_fields(b, up):
    df = pd.DataFrame({"review": ['!json {"label": "pos", "score": 0.9}', '!json {"label": "neg", "score": 0.1}',
                                  "!json not json at all"]})
    before = df.copy(deep=True)
    out = b.map("up/echo", df, template="{review}", response_format=Sentiment, progress=False)
    assert list(out.columns) == ["review", "reply", "error", "label", "score"]
    assert list(out["label"])[:2] == ["pos", "neg"] and list(out["score"])[:2] == [0.9, 0.1]
    assert out["error"][2].startswith("The reply does not match response_format")
    pd.testing.assert_frame_equal(df, before)
    sent = up.requests()[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Sentiment"
    assert set(sent["json_schema"]["schema"]["properties"]) == {"label", "score"}
    results = b.map("up/echo", ['!json {"label": "x", "score": 1}'], response_format=Sentiment, progress=False)
    assert isinstance(results[0].parsed, Sentiment) and results[0].parsed.score == 1.0


def test_dict_schema_is_validated(b, up):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    out = b.map("up/echo", ['!json {"n": 3}', '!json {"n": "three"}'], response_format=schema, progress=False)
    assert out[0].parsed == {"n": 3} and out[0].error is None
    assert out[1].parsed is None and "does not match response_format" in out[1].error


def test_series_in_dataframe_out(b, up):
    s = pd.Series(["a", "b"], name="text", index=[10, 11])
    out = b.map("up/echo", s, template="Say {input}", progress=False)
    assert list(out.columns) == ["text", "reply", "error"] and list(out.index) == [10, 11]
    assert list(out["reply"]) == ["echo: Say a", "echo: Say b"]


def test_bad_inputs_are_refused_before_any_request(b, up):
    df = pd.DataFrame({"review": ["x"]})
    with pytest.raises(InvalidRequestError, match="review_text"):
        b.map("up/echo", df, template="{review_text}", progress=False)
    with pytest.raises(InvalidRequestError, match="template"):
        b.map("up/echo", df, progress=False)
    with pytest.raises(InvalidRequestError, match="inputs"):
        b.map("up/echo", "just one string", progress=False)
    with pytest.raises(InvalidRequestError, match="concurrency"):
        b.map("up/echo", ["x"], concurrency=0, progress=False)
    assert up.requests() == []


def test_progress_bar_reports_rows_failed_and_tokens(b, up, capsys):
    b.map("up/echo", ["a", "!400 b", "c"], progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "failed=1" in err and "tokens=" in err


# -- the cache ---------------------------------------------------------------------------------------


def test_cache_is_shared_between_processes_and_never_holds_the_key(b, up, bodhi_home):
    script = textwrap.dedent(f"""
        from bodhi_nb.notebook.client import Bodhi
        b = Bodhi({str(bodhi_home)!r}, master_secret={TEST_SECRET!r}, kdf_iterations={FAST_KDF})
        out = b.map("up/echo", ["shared 1", "shared 2"], progress=False)
        print([r.cached for r in out], [r.error for r in out])
    """)
    r = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[False, False] [None, None]", r.stderr[-2000:]
    assert len(up.requests()) == 2
    out = b.map("up/echo", ["shared 1", "shared 2"], progress=False)
    assert [r.cached for r in out] == [True, True] and out[1].text == "echo: shared 2"
    assert len(up.requests()) == 2  # answered here from the other process's entries
    stats = b.cache.stats()
    assert stats["entries"] == 2 and stats["hits"] == 2 and stats["path"] == str(bodhi_home / "cache.sqlite")
    for f in bodhi_home.glob("cache.sqlite*"):
        data = f.read_bytes()
        assert TEST_KEY.encode() not in data and b"9f8e7d6c5b4a3210" not in data
    assert b.cache.clear() == 2
    b.map("up/echo", ["shared 1"], progress=False)
    assert len(up.requests()) == 3


def test_chat_uses_the_cache_only_when_asked(b, up):
    assert b.chat("up/echo", "hi", cache=True) == "echo: hi"
    assert b.chat("up/echo", "hi", cache=True) == "echo: hi"
    assert len(up.requests()) == 1
    b.chat("up/echo", "hi")
    b.completion("up/echo", "hi", temperature=0.5, cache=True)  # another body: another entry
    assert len(up.requests()) == 3
    assert b.map("up/echo", ["hi"], progress=False)[0].cached  # map shares chat(cache=True)'s entries
    b.map("up/echo", ["hi"], cache=False, progress=False)
    assert len(up.requests()) == 4


def test_gateway_cache_is_off_unless_the_server_option_enables_it(bodhi_home, up):
    body = {"model": "up/echo", "messages": [{"role": "user", "content": "http"}]}

    async def twice(services: AppServices) -> list[bool]:
        out = []
        for _ in range(2):
            opened = await services.gateway.open_chat(dict(body))
            out.append(opened.cached)
            assert (await opened.response.aread_json())[1]["choices"][0]["message"]["content"] == "echo: http"
        await services.upstream.aclose()
        return out

    up.reset()
    off = AppServices.create(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF)
    Bodhi(services=off).api_models.create("up", up.base_url, api_key=TEST_KEY, prefix="up/",
                                          forward_all_with_prefix=True)
    assert asyncio.run(twice(off)) == [False, False] and len(up.requests()) == 2
    on = AppServices.create(bodhi_home, master_secret=TEST_SECRET, kdf_iterations=FAST_KDF, response_cache=True)
    assert asyncio.run(twice(on)) == [False, True] and len(up.requests()) == 3


@pytest.fixture
def jp_server_config(jp_server_config):
    """This module's Jupyter server runs with the response-cache option on."""
    return {**jp_server_config, "BodhiExtension": {**jp_server_config["BodhiExtension"], "response_cache": True}}


async def test_http_gateway_answers_from_the_cache_when_the_server_option_is_on(api, up, bodhi_home):
    up.reset()
    code, _, _ = await api("POST", "api-models", {"id": "up", "base_url": up.base_url, "api_key": TEST_KEY,
                                                  "prefix": "up/", "forward_all_with_prefix": True})
    assert code == 201
    body = {"model": "up/echo", "messages": [{"role": "user", "content": "over http"}]}
    code, first, headers = await api("POST", "chat/completions", body)
    assert code == 200 and "x-bodhi-cache" not in headers
    code, second, headers = await api("POST", "chat/completions", body)
    assert code == 200 and headers["x-bodhi-cache"] == "hit" and second == first
    code, _, headers = await api("POST", "chat/completions", {**body, "stream": True})
    assert code == 200 and "x-bodhi-cache" not in headers  # streams are never cached
    assert [r["text"] for r in up.requests()] == ["over http", "over http"]
    assert TEST_KEY.encode() not in b"".join(f.read_bytes() for f in bodhi_home.glob("cache.sqlite*"))
