"""The usage ledger on a real SQLite file: token extraction, the stream tap, rows,
grouping, prices, the budget, retention, content opt-in, and writers in several processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from bodhi_nb.objs.errors import BudgetExceeded, InvalidRequestError, NotFoundError
from bodhi_nb.server_core.origin import current_surface, using_surface
from bodhi_nb.services.usage import (
    Ledger,
    StreamTap,
    TokenUsage,
    UsageRecord,
    parse_when,
    usage_from_body,
    with_include_usage,
)
from bodhi_nb.services.usage._sqlite import connect, iso_utc, write_tx

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def ledger(tmp_path: Path):
    led = Ledger.open(tmp_path)
    yield led
    led.close()


def rec(model: str = "m", **kw) -> UsageRecord:
    kw.setdefault("prompt_tokens", 10)
    kw.setdefault("completion_tokens", 5)
    if "total_tokens" not in kw and kw["prompt_tokens"] is not None:
        kw["total_tokens"] = kw["prompt_tokens"] + (kw["completion_tokens"] or 0)
    return UsageRecord(model=model, **kw)


def sse(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


CONTENT = [{"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}}]}
           for w in ("Hello", " world")]
FINISH = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE = {"id": "c", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}


def stream_bytes(with_usage: bool = True, sep: bytes = b"\n\n") -> bytes:
    events = [*CONTENT, FINISH, *([USAGE] if with_usage else [])]
    out = b"".join(sse(e) for e in events) + b"data: [DONE]\n\n"
    return out.replace(b"\n\n", sep)


def feed_in_pieces(tap: StreamTap, data: bytes, size: int) -> bytes:
    out = b"".join(tap.feed(data[i:i + size]) for i in range(0, len(data), size))
    return out + tap.end()


# -- tokens ----------------------------------------------------------------------------------


def test_usage_from_completion_embeddings_and_garbage():
    assert usage_from_body({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}) == \
        TokenUsage(3, 4, 7)
    assert usage_from_body({"usage": {"prompt_tokens": 6, "total_tokens": 6}}) == TokenUsage(6, None, 6)
    assert usage_from_body({"usage": {"prompt_tokens": 2, "completion_tokens": 3}}) == TokenUsage(2, 3, 5)
    for bad in (None, [], {"usage": None}, {"usage": {"prompt_tokens": "3"}}, {"usage": {"prompt_tokens": -1}},
                {"usage": {"prompt_tokens": True}}):
        assert usage_from_body(bad) is None


def test_include_usage_is_added_only_to_streams_that_did_not_ask():
    body = {"model": "m", "stream": True, "stream_options": {"other": 1}}
    new, added = with_include_usage(body)
    assert added and new["stream_options"] == {"other": 1, "include_usage": True}
    assert body["stream_options"] == {"other": 1}  # the caller's dict is untouched
    for same in ({"model": "m"}, {"model": "m", "stream": False},
                 {"model": "m", "stream": True, "stream_options": {"include_usage": True}}):
        assert with_include_usage(same) == (same, False)


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_tap_without_strip_relays_bytes_unchanged_and_finds_usage(size):
    data = stream_bytes()
    tap = StreamTap()
    assert feed_in_pieces(tap, data, size) == data
    assert tap.usage == TokenUsage(7, 2, 9)


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
@pytest.mark.parametrize("size", [1, 5, 33, 10_000])
def test_tap_strip_removes_only_the_usage_event(sep, size):
    tap = StreamTap(strip=True)
    assert feed_in_pieces(tap, stream_bytes(True, sep), size) == stream_bytes(False, sep)
    assert tap.usage == TokenUsage(7, 2, 9)


def test_tap_strip_removes_usage_riding_on_a_content_chunk():
    riding = {**CONTENT[1], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    nulls = {**CONTENT[0], "usage": None}
    tap = StreamTap(strip=True)
    out = tap.feed(sse(nulls) + sse(riding) + b"data: [DONE]\n\n") + tap.end()
    events = [json.loads(e[6:]) for e in out.split(b"\n\n") if e.startswith(b"data: {")]
    assert events == [nulls, CONTENT[1]] and tap.usage == TokenUsage(1, 2, 3)


def test_tap_counts_text_events_and_collects_text():
    tap = StreamTap(count=True, content=True)
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    feed_in_pieces(tap, sse(role) + stream_bytes(False), 3)
    assert tap.content_events == 2 and "".join(tap.text) == "Hello world" and tap.usage is None


# -- time and surface ------------------------------------------------------------------------


def test_parse_when_accepts_dates_times_and_spans():
    assert parse_when("2026-01-31") == "2026-01-31T00:00:00.000Z"
    assert parse_when("2026-01-31T12:30:00+02:00") == "2026-01-31T10:30:00.000Z"
    assert parse_when("2026-01-31T10:30:00Z") == "2026-01-31T10:30:00.000Z"
    assert parse_when(None) is None
    week_ago = parse_when("7d")
    assert week_ago is not None and week_ago < iso_utc(time.time() - 6 * 86400)
    with pytest.raises(InvalidRequestError) as e:
        parse_when("yesterday", "until")
    assert e.value.param == "until" and e.value.status == 400


def test_surface_context():
    assert current_surface() == "python"
    with using_surface("widget"):
        assert current_surface() == "widget"
    assert current_surface() == "python"
    with pytest.raises(ValueError), using_surface("bogus"):
        pass


# -- rows and groups -------------------------------------------------------------------------


def test_rows_keep_every_field_newest_first_and_paginate(ledger):
    now = time.time()
    for i in range(5):
        ledger.record(rec(f"m{i}", surface="http", provider="p", upstream_model=f"u{i}", status=200,
                          latency_ms=12.5, ttft_ms=3.0, kernel_id="k1", notebook="a.ipynb", ts=now - 100 + i))
    rows, total = ledger.query(page=1, page_size=2)
    assert total == 5 and [r["model"] for r in rows] == ["m4", "m3"]
    r = rows[0]
    assert {k: r[k] for k in ("surface", "provider", "upstream_model", "status", "error_code", "prompt_tokens",
                               "completion_tokens", "total_tokens", "cached", "latency_ms", "ttft_ms",
                               "cost_usd", "kernel_id", "notebook", "content")} == {
        "surface": "http", "provider": "p", "upstream_model": "u4", "status": 200, "error_code": None,
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cached": False, "latency_ms": 12.5,
        "ttft_ms": 3.0, "cost_usd": None, "kernel_id": "k1", "notebook": "a.ipynb", "content": None}
    assert r["time"] == iso_utc(now - 96) and r["time"].endswith("Z")
    rows3, _ = ledger.query(page=3, page_size=2)
    assert [x["model"] for x in rows3] == ["m0"]


def test_groups_sum_tokens_requests_errors_and_filter_by_time(ledger):
    day = 86400
    t0 = (int(time.time()) // day) * day + 3600  # 01:00 UTC today
    ledger.record(rec("a", surface="http", ts=t0))
    ledger.record(rec("a", surface="python", ts=t0 + 1, status=502, error_code="upstream_error",
                      prompt_tokens=None, completion_tokens=None, total_tokens=None))
    ledger.record(rec("b", surface="http", ts=t0 + 2, prompt_tokens=100, completion_tokens=50))
    ledger.record(rec("a", surface="http", ts=t0 - day))  # yesterday
    groups, total = ledger.query(by="model")
    assert total == 2
    assert groups[0] == {"model": "b", "requests": 1, "errors": 0, "error_rate": 0.0, "prompt_tokens": 100,
                         "completion_tokens": 50, "total_tokens": 150, "cost_usd": None}
    assert groups[1]["model"] == "a" and groups[1]["requests"] == 3 and groups[1]["total_tokens"] == 30
    assert groups[1]["errors"] == 1 and groups[1]["error_rate"] == pytest.approx(1 / 3)
    today = time.strftime("%Y-%m-%d", time.gmtime(t0))
    by_day, _ = ledger.query(by="day,model")
    assert (by_day[0]["day"], by_day[0]["model"], by_day[0]["requests"]) == (today, "b", 1)
    assert by_day[-1]["day"] < today
    since, _ = ledger.query(since=today, by="surface")
    assert {g["surface"]: g["requests"] for g in since} == {"http": 2, "python": 1}
    until, total = ledger.query(until=today)
    assert total == 1 and until[0]["model"] == "a"
    only, total = ledger.query(surface="python")
    assert total == 1 and only[0]["status"] == 502
    for bad in ({"by": "colour"}, {"by": "model,model"}, {"page": 0}, {"page_size": 0}, {"page_size": 5000}):
        with pytest.raises(InvalidRequestError):
            ledger.query(**bad)


@pytest.mark.parametrize("by", [None, "model"])
@pytest.mark.parametrize(("param", "value"), [("page", 10**30), ("page", 2**63), ("page", -1), ("page", 1.5),
                                              ("page", True), ("page_size", 10**30), ("page_size", -5),
                                              ("page_size", "10")])
def test_page_and_page_size_out_of_range_are_a_400_naming_them(ledger, by, param, value):
    ledger.record(rec("m"))
    with pytest.raises(InvalidRequestError) as e:
        ledger.query(by=by, **{param: value})
    assert e.value.status == 400 and e.value.param == param and "between 1 and" in str(e.value)


def test_the_last_allowed_page_is_an_empty_page(ledger):
    from bodhi_nb.objs.paging import MAX_PAGE, MAX_PAGE_SIZE

    ledger.record(rec("m"))
    assert ledger.query(page=MAX_PAGE, page_size=MAX_PAGE_SIZE) == ([], 1)
    assert ledger.query(by="model", page=MAX_PAGE, page_size=MAX_PAGE_SIZE) == ([], 1)


# -- prices and budget -----------------------------------------------------------------------


def test_prices_give_the_expected_cost_model_price_wins(ledger):
    ledger.set_price("openai", 1.0, 2.0, scope="provider")
    ledger.set_price("gpt-x", 3.0, 15.0)
    ledger.set_price("up-model", 0.5, 0.5)
    ledger.record(rec("gpt-x", provider="openai", prompt_tokens=1000, completion_tokens=200))
    ledger.record(rec("other", provider="openai", prompt_tokens=1000, completion_tokens=200))
    ledger.record(rec("alias/y", provider="elsewhere", upstream_model="up-model", prompt_tokens=2_000_000,
                      completion_tokens=0))
    ledger.record(rec("local-thing", provider="local"))
    ledger.record(rec("emb", provider="openai", prompt_tokens=500, completion_tokens=None, total_tokens=500))
    rows = {r["model"]: r["cost_usd"] for r in ledger.query()[0]}
    assert rows["gpt-x"] == pytest.approx((1000 * 3.0 + 200 * 15.0) / 1e6)
    assert rows["other"] == pytest.approx((1000 * 1.0 + 200 * 2.0) / 1e6)
    assert rows["alias/y"] == pytest.approx(1.0)
    assert rows["local-thing"] is None
    assert rows["emb"] == pytest.approx(500 / 1e6)
    assert [(p.scope, p.name) for p in ledger.prices()] == [("model", "gpt-x"), ("model", "up-model"),
                                                             ("provider", "openai")]
    ledger.delete_price("gpt-x")
    with pytest.raises(NotFoundError):
        ledger.delete_price("gpt-x")
    for bad in ((" ", 1, 1), ("m", -1, 1), ("m", 1, float("nan")), ("m", "1", 1)):
        with pytest.raises(InvalidRequestError):
            ledger.set_price(*bad)
    with pytest.raises(InvalidRequestError):
        ledger.set_price("m", 1, 1, scope="team")  # type: ignore[arg-type]


def test_budget_blocks_priced_requests_with_429_and_lets_unpriced_through(tmp_path):
    led = Ledger.open(tmp_path, daily_budget_usd=10.0)
    try:
        led.set_price("paid", 1_000_000.0, 0.0)  # $1 per prompt token
        assert led.budget().daily_usd == 10.0 and not led.budget().exceeded
        led.check_budget("paid")
        led.set_budget(2.5)  # the stricter limit wins
        led.record(rec("paid", prompt_tokens=3, completion_tokens=0))
        state = led.budget()
        assert state.daily_usd == 2.5 and state.stored_usd == 2.5 and state.option_usd == 10.0
        assert state.spent_today_usd == pytest.approx(3.0) and state.exceeded and state.remaining_usd == 0
        with pytest.raises(BudgetExceeded) as e:
            led.check_budget("paid")
        env = e.value.to_envelope()["error"]
        assert e.value.status == 429 and env["code"] == "budget_exceeded" and "$2.50" in env["message"]
        assert 0 < int(e.value.headers["Retry-After"]) <= 86400
        led.check_budget("free-local-model", provider="local")  # no price: costs nothing, passes
        led.set_budget(None)
        assert led.budget().daily_usd == 10.0 and not led.budget().exceeded
        led.check_budget("paid")
        with pytest.raises(InvalidRequestError):
            led.set_budget(-1)
    finally:
        led.close()


def test_budget_set_in_another_process_reaches_the_check(tmp_path):
    server = Ledger.open(tmp_path, budget_refresh=0.0)
    kernel = Ledger.open(tmp_path)
    try:
        kernel.set_price("paid", 1_000_000.0, 0.0)
        kernel.record(rec("paid", prompt_tokens=1, completion_tokens=0))
        kernel.set_budget(0.5)
        deadline = time.monotonic() + 10
        while True:  # the server's cached state catches up on its next refresh
            try:
                server.check_budget("paid")
            except BudgetExceeded:
                break
            assert time.monotonic() < deadline, "the budget set elsewhere never applied"
            time.sleep(0.02)
    finally:
        server.close()
        kernel.close()


# -- retention, content, writer ----------------------------------------------------------------


def test_old_rows_are_pruned_on_open(tmp_path):
    led = Ledger.open(tmp_path, retention_days=30)
    led.record(rec("old", ts=time.time() - 31 * 86400))
    led.record(rec("new", ts=time.time() - 29 * 86400))
    led.close()
    again = Ledger.open(tmp_path, retention_days=30)
    try:
        assert [r["model"] for r in again.query()[0]] == ["new"]
    finally:
        again.close()


KERNEL_LIKE = textwrap.dedent("""
    import sys
    from bodhi_nb.objs.errors import BudgetExceeded
    from bodhi_nb.services.usage import Ledger
    led = Ledger.open(sys.argv[1])  # no options, as a kernel's Bodhi() opens it
    try:
        led.check_budget("paid")
        print("passed")
    except BudgetExceeded as e:
        print(e.status, e.code)
    led.flush()
    led.prune()  # what the writer does every hour
    led.close()
""")


def _kernel_like(home: Path) -> str:
    p = subprocess.run([sys.executable, "-c", KERNEL_LIKE, str(home)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.mark.parametrize(("retention", "survivors"), [(0, ["200d", "400d"]), (365, ["200d"])])
def test_a_process_without_options_prunes_by_the_servers_retention(tmp_path, retention, survivors):
    server = Ledger.open(tmp_path, retention_days=retention, server=True)
    for days in (400, 200):
        server.record(rec(f"{days}d", ts=time.time() - days * 86400))
    server.close()
    assert _kernel_like(tmp_path) == "passed"
    with closing(connect(tmp_path / "usage.sqlite")) as conn:
        assert [m for (m,) in conn.execute("SELECT model FROM usage ORDER BY time")] == survivors[::-1]
    again = Ledger.open(tmp_path)  # and the stored setting outlives the server
    try:
        assert again.retention() == retention
    finally:
        again.close()


def test_retention_defaults_to_90_days_and_an_explicit_one_is_stored(tmp_path):
    led = Ledger.open(tmp_path)
    try:
        assert led.retention() == 90
    finally:
        led.close()
    Ledger.open(tmp_path, retention_days=7).close()
    led = Ledger.open(tmp_path)
    try:
        assert led.retention() == 7
    finally:
        led.close()
    for bad in (-1, float("nan"), "7"):
        with pytest.raises(InvalidRequestError):
            Ledger.open(tmp_path, retention_days=bad)  # type: ignore[arg-type]


def test_the_servers_budget_option_applies_in_every_process(tmp_path):
    server = Ledger.open(tmp_path, daily_budget_usd=0.5, server=True)
    server.set_price("paid", 1_000_000.0, 0.0)
    server.record(rec("paid", prompt_tokens=1, completion_tokens=0))  # $1 spent
    server.close()
    assert _kernel_like(tmp_path) == "429 budget_exceeded"
    kernel = Ledger.open(tmp_path)
    try:
        state = kernel.budget()
        assert (state.daily_usd, state.option_usd, state.stored_usd, state.exceeded) == (0.5, 0.5, None, True)
        with pytest.raises(BudgetExceeded) as e:
            kernel.check_budget("paid")
        assert "daily_budget_usd" in str(e.value)  # says which limit to change
    finally:
        kernel.close()
    Ledger.open(tmp_path, server=True).close()  # the server restarted without the option
    assert _kernel_like(tmp_path) == "passed"


def test_a_kernels_own_budget_option_only_tightens_its_own_limit(tmp_path):
    Ledger.open(tmp_path, daily_budget_usd=5.0, server=True).close()
    kernel = Ledger.open(tmp_path, daily_budget_usd=20.0)  # cannot loosen the server's
    try:
        assert kernel.budget().daily_usd == 5.0
    finally:
        kernel.close()
    kernel = Ledger.open(tmp_path, daily_budget_usd=1.0)
    try:
        assert kernel.budget().daily_usd == 1.0
    finally:
        kernel.close()
    other = Ledger.open(tmp_path)  # and is not stored for the others
    try:
        assert other.budget().daily_usd == 5.0
    finally:
        other.close()


@pytest.mark.parametrize("log_content", [False, True])
def test_content_is_kept_only_when_asked(tmp_path, log_content):
    led = Ledger.open(tmp_path, log_content=log_content)
    try:
        led.record(rec("m", content=json.dumps({"messages": [{"role": "user", "content": "secret plan"}]})))
        row = led.query()[0][0]
        assert ("secret plan" in (row["content"] or "")) is log_content
    finally:
        led.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("usage.sqlite*"))
    assert (b"secret plan" in raw) is log_content


def test_record_never_waits_for_a_locked_file(tmp_path):
    led = Ledger.open(tmp_path, flush_interval=0.01)
    holder = connect(led.path)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        led.record(rec("queued"))  # returns at once although the file is locked
        with closing(connect(led.path)) as reader:
            assert reader.execute("SELECT COUNT(*) FROM usage").fetchone()[0] == 0
        holder.execute("COMMIT")
        led.flush()
        assert [r["model"] for r in led.query()[0]] == ["queued"]
    finally:
        holder.close()
        led.close()


def test_writer_stops_cleanly_at_exit_and_keeps_queued_rows(tmp_path):
    code = textwrap.dedent(f"""
        from bodhi_nb.services.usage import Ledger, UsageRecord
        led = Ledger.open({str(tmp_path)!r}, flush_interval=60)
        for i in range(50):
            led.record(UsageRecord(model="exit", prompt_tokens=i))
    """)  # no close(): the atexit hook must write the queue
    p = subprocess.run([sys.executable, "-W", "error", "-X", "dev", "-c", code], check=False, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == ""
    with closing(connect(tmp_path / "usage.sqlite")) as conn:
        assert conn.execute("SELECT COUNT(*), SUM(prompt_tokens) FROM usage").fetchone() == (50, sum(range(50)))


def test_threads_of_one_process_lose_no_row(ledger):
    def burst(t):
        for i in range(200):
            ledger.record(rec(f"t{t}", prompt_tokens=i))

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.query()[1] == 800


WRITER = textwrap.dedent("""
    import sys
    from bodhi_nb.services.usage import Ledger, UsageRecord
    led = Ledger.open(sys.argv[1], batch_size=int(sys.argv[3]), flush_interval=0.001)
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\\n"
    for i in range(int(sys.argv[2])):
        led.record(UsageRecord(model=sys.argv[4], prompt_tokens=i))
    led.close()
""")


def test_three_processes_writing_at_once_lose_no_row(tmp_path):
    Ledger.open(tmp_path).close()  # schema exists before the race (each would create it too)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "600", str(bs), f"p{n}"], cwd=ROOT,
                              text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for n, bs in enumerate((1, 7, 50))]
    assert [p.stdout.readline() for p in procs] == ["ready\n"] * 3  # all up before any writes
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    with closing(connect(tmp_path / "usage.sqlite")) as conn:
        counts = dict(conn.execute("SELECT model, COUNT(DISTINCT prompt_tokens) FROM usage GROUP BY model"))
        assert counts == {"p0": 600, "p1": 600, "p2": 600}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with write_tx(tmp_path / "usage.sqlite"):
        pass  # no lock left behind


def test_tap_notes_the_end_and_an_upstream_error_event():
    tap = StreamTap()
    tap.feed(stream_bytes(False))
    assert tap.done and tap.error is None
    tap = StreamTap()
    tap.feed(sse(CONTENT[0]) + sse({"error": {"message": "overloaded", "code": "server_busy"}}))
    assert not tap.done and tap.error == "server_busy"
    tap = StreamTap()
    tap.feed(sse({"error": "plain text"}))
    assert tap.error == "upstream_error"


def test_an_unusable_file_means_no_ledger_not_a_failure(tmp_path, caplog):
    (tmp_path / "usage.sqlite").write_bytes(b"this is not a database" * 100)
    assert Ledger.try_open(tmp_path) is None
    assert "cannot be used" in caplog.text and "not recorded" in caplog.text
    with pytest.raises(InvalidRequestError):
        Ledger.try_open(tmp_path / "fresh", daily_budget_usd=-1)  # a wrong option is still an error


# -- JupyterHub mode: the hub user on each row, budgets per user and per group -----------------

# The usage table as schema 2 created it (git: bodhi_nb/services/usage/_sqlite.py before schema 3),
# with the request_key column its initialise() added.
SCHEMA_2 = (
    """CREATE TABLE usage (
        id INTEGER PRIMARY KEY, time TEXT NOT NULL, surface TEXT NOT NULL, model TEXT NOT NULL, provider TEXT,
        upstream_model TEXT, target TEXT, status INTEGER NOT NULL, error_code TEXT, prompt_tokens INTEGER,
        completion_tokens INTEGER, total_tokens INTEGER, cached INTEGER NOT NULL DEFAULT 0, latency_ms REAL,
        ttft_ms REAL, cost_usd REAL, kernel_id TEXT, notebook TEXT, content TEXT, request_key TEXT)""",
    "CREATE INDEX usage_time ON usage (time)",
    "CREATE UNIQUE INDEX usage_request_key ON usage (request_key) WHERE request_key IS NOT NULL",
    """CREATE TABLE prices (
        scope TEXT NOT NULL CHECK (scope IN ('model', 'provider')), name TEXT NOT NULL,
        input_usd_per_mtok REAL NOT NULL, output_usd_per_mtok REAL NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (scope, name))""",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "PRAGMA user_version = 2",
)


@pytest.fixture
def hub(tmp_path: Path):
    """A ledger with a priced model ($1 per prompt token) and no periodic refresh, so only a
    write, `budget()` or `budgets()` brings the cached state up to date."""
    led = Ledger.open(tmp_path, budget_refresh=3600.0)
    led.set_price("paid", 1_000_000.0, 0.0)
    yield led
    led.close()


def spend(led: Ledger, usd: int, user: str | None, groups: tuple[str, ...] = ()) -> None:
    led.record(rec("paid", prompt_tokens=usd, completion_tokens=0, hub_user=user, hub_server="", hub_groups=groups))


def test_rows_carry_the_hub_user_and_server_and_filter_and_group_by_user(ledger):
    ledger.record(rec("m", hub_user="alice", hub_server="gpu", hub_groups=("team",)))
    ledger.record(rec("m", hub_user="alice", hub_server="", prompt_tokens=100))
    ledger.record(rec("m", hub_user="bob", hub_server=""))
    ledger.record(rec("m"))  # not in hub mode
    rows, total = ledger.query(hub_user="alice")
    assert total == 2 and {(r["hub_user"], r["hub_server"]) for r in rows} == {("alice", "gpu"), ("alice", "")}
    assert "hub_groups" not in rows[0]  # stored for group budgets, not a row field
    everyone, _ = ledger.query()
    assert [r["hub_user"] for r in everyone if r["hub_user"] is None] == [None]
    groups, total = ledger.query(by="user")
    assert total == 3 and groups[0]["user"] == "alice"  # the most tokens first
    assert {g["user"]: g["requests"] for g in groups} == {"alice": 2, "bob": 1, None: 1}
    by_two, _ = ledger.query(by="user,model", hub_user="bob")
    assert [(g["user"], g["model"], g["requests"]) for g in by_two] == [("bob", "m", 1)]
    assert ledger.totals(hub_user="alice")["total_tokens"] == 15 + 105
    assert ledger.totals(hub_user="nobody")["requests"] == 0


def test_a_schema_2_file_opens_keeps_its_rows_and_gains_the_hub_columns(tmp_path):
    path = tmp_path / "usage.sqlite"
    with closing(connect(path)) as conn:
        for stmt in SCHEMA_2:
            conn.execute(stmt)
        conn.execute("INSERT INTO usage (time, surface, model, status, total_tokens, request_key) "
                     "VALUES (?, 'http', 'old', 200, 7, 'b1:r1')", (iso_utc(time.time() - 60),))
    led = Ledger.open(tmp_path)
    try:
        led.record(rec("new", hub_user="alice", hub_server="", hub_groups=("team",)))
        rows, total = led.query()
        assert total == 2 and [(r["model"], r["hub_user"]) for r in rows] == [("new", "alice"), ("old", None)]
        led.record(rec("old-again", request_key="b1:r1"))  # the old row's key still counts once
        assert led.query()[1] == 2
    finally:
        led.close()
    with closing(connect(path)) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(usage)")}
        assert {"hub_user", "hub_server", "hub_groups", "request_key"} <= columns
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert "usage_hub_user" in {r[1] for r in conn.execute("PRAGMA index_list(usage)")}
        assert conn.execute("SELECT hub_groups FROM usage WHERE model = 'new'").fetchone() == (",team,",)
    Ledger.open(tmp_path).close()  # opening it again alters nothing more


def test_a_user_budget_stops_that_user_on_a_priced_model_only(hub):
    hub.set_user_budget("alice", 2.0)
    hub.check_budget("paid", user="alice")  # nothing spent yet
    spend(hub, 3, "alice")
    spend(hub, 5, "bob")
    hub.flush()  # the write refreshes the cached state: a user budget is set
    with pytest.raises(BudgetExceeded) as e:
        hub.check_budget("paid", user="alice")
    env = e.value.to_envelope()["error"]
    assert e.value.status == 429 and env["code"] == "budget_exceeded"
    assert env["message"] == ("User alice's daily budget of $2.00 is spent ($3.0000 used since 00:00 UTC). "
                              "An admin can raise it (PUT bodhi/v1/usage/budgets/users/alice), "
                              "or wait until 00:00 UTC.")
    assert 0 < int(e.value.headers["Retry-After"]) <= 86400
    hub.check_budget("paid", user="bob")  # bob has no budget of his own
    hub.check_budget("paid")  # nor does a request of no hub user
    hub.check_budget("free-local-model", provider="local", user="alice")  # unpriced: always passes
    assert hub.budgets() == {"users": {"alice": {"daily_usd": 2.0, "spent_today_usd": 3.0}}, "groups": {}}
    assert not hub.budget().exceeded  # the global budget is untouched


def test_a_group_budget_stops_members_and_not_others(hub):
    hub.set_group_budget("team", 4.0)
    spend(hub, 3, "alice", ("team", "other"))
    spend(hub, 2, "carol", ("team",))  # the group's spend is its members' together
    spend(hub, 9, "bob", ("outsiders",))
    spend(hub, 9, "dave", ("Team", "te_m"))  # neither is the group "team"
    hub.flush()
    for member in (("alice", ("team",)), ("erin", ("other", "team"))):
        with pytest.raises(BudgetExceeded) as e:
            hub.check_budget("paid", user=member[0], groups=member[1])
        assert str(e.value).startswith("Group team's daily budget of $4.00 is spent ($5.0000 used since 00:00 UTC).")
        assert "PUT bodhi/v1/usage/budgets/groups/team" in str(e.value) and "Retry-After" in e.value.headers
    hub.check_budget("paid", user="bob", groups=("outsiders",))
    hub.check_budget("paid", user="alice")  # the groups are the ones the request names
    hub.check_budget("free-local-model", provider="local", user="alice", groups=("team",))
    assert hub.budgets()["groups"] == {"team": {"daily_usd": 4.0, "spent_today_usd": 5.0}}


def test_the_users_own_budget_is_named_before_a_groups(hub):
    hub.set_user_budget("alice", 1.0)
    hub.set_group_budget("team", 1.0)
    spend(hub, 2, "alice", ("team",))
    hub.flush()
    with pytest.raises(BudgetExceeded, match="^User alice's daily budget"):
        hub.check_budget("paid", user="alice", groups=("team",))
    with pytest.raises(BudgetExceeded, match="^Group team's daily budget"):
        hub.check_budget("paid", user="bob", groups=("team",))


def test_removing_a_user_or_group_budget_lets_them_through_again(hub):
    hub.set_user_budget("alice", 0.5)
    hub.set_group_budget("team", 0.5)
    spend(hub, 1, "alice", ("team",))
    assert hub.budgets()["users"]["alice"]["spent_today_usd"] == 1.0
    with pytest.raises(BudgetExceeded):
        hub.check_budget("paid", user="alice")
    hub.set_user_budget("alice", None)
    hub.check_budget("paid", user="alice")
    with pytest.raises(BudgetExceeded):
        hub.check_budget("paid", user="alice", groups=("team",))
    hub.set_group_budget("team", None)
    hub.check_budget("paid", user="alice", groups=("team",))
    assert hub.budgets() == {"users": {}, "groups": {}}
    hub.set_user_budget("alice", 10.0)  # raising it works as well as removing it
    hub.check_budget("paid", user="alice")


def test_a_user_budget_set_in_another_process_applies(hub, tmp_path):
    other = Ledger.open(tmp_path)
    try:
        other.set_user_budget("alice", 0.5)
        spend(other, 1, "alice")
        other.flush()
    finally:
        other.close()
    hub.check_budget("paid", user="alice")  # the cache is as old as budget_refresh allows
    hub._refresh_budget()  # what the writer thread does every budget_refresh seconds
    with pytest.raises(BudgetExceeded):
        hub.check_budget("paid", user="alice")


def test_the_global_budget_works_as_before_beside_hub_budgets(hub):
    hub.set_user_budget("alice", 100.0)
    hub.set_budget(2.0)
    spend(hub, 3, "bob")
    assert hub.budget().exceeded
    for kw in ({}, {"user": "alice"}, {"user": "bob", "groups": ("team",)}):
        with pytest.raises(BudgetExceeded) as e:
            hub.check_budget("paid", **kw)
        assert str(e.value).startswith("Today's usage budget of $2.00 is spent")
    hub.check_budget("free-local-model", provider="local", user="alice")
    hub.set_budget(None)
    hub.check_budget("paid", user="alice")


def test_hub_budget_names_and_amounts_are_checked(hub):
    for bad in ("", "  ", None, 3):
        with pytest.raises(InvalidRequestError) as e:
            hub.set_user_budget(bad, 1.0)  # type: ignore[arg-type]
        assert e.value.param == "user"
    with pytest.raises(InvalidRequestError) as e:
        hub.set_group_budget("a,b", 1.0)  # rows store groups comma-separated
    assert e.value.param == "group"
    for amount in (-1, float("nan"), float("inf"), "1", True):
        with pytest.raises(InvalidRequestError) as e:
            hub.set_group_budget("team", amount)  # type: ignore[arg-type]
        assert e.value.param == "daily_usd"
    assert hub.budgets() == {"users": {}, "groups": {}}


def test_hub_groups_are_stored_between_commas_each_once(ledger):
    from bodhi_nb.services.usage._budgets import encode_groups

    assert encode_groups(("b", "a", "b")) == ",a,b,"
    assert encode_groups(()) is None and encode_groups(["x,y"]) is None
    assert encode_groups("solo") == ",solo,"  # one name alone is one group, not its letters
    ledger.record(rec("m", hub_user="alice", hub_groups=("z", "a")))
    ledger.flush()
    with closing(connect(ledger.path)) as conn:
        assert conn.execute("SELECT hub_groups FROM usage").fetchall() == [(",a,z,",)]
