"""ResponseCache: keys, LRU bound, stats/clear, and sharing one file between processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing

import pytest

from bodhi_nb.services.cache import DEFAULT_MAX_BYTES, ResponseCache, cache_key

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_key_ignores_stream_and_model_and_key_order_but_not_params_or_target():
    k = cache_key("api:a|u|m", BODY)
    assert k == cache_key("api:a|u|m", {**BODY, "stream": False, "stream_options": {"include_usage": True}})
    assert k == cache_key("api:a|u|m", dict(reversed(list(BODY.items()))))
    assert k == cache_key("api:a|u|m", {**BODY, "model": "another/name-for-the-same-target"})
    assert k != cache_key("api:a|u|m", {**BODY, "temperature": 0.5})
    assert k != cache_key("api:b|u|m", BODY)
    assert len(k) == 64 and int(k, 16) >= 0


def test_round_trip_stats_and_clear(tmp_path):
    c = ResponseCache(tmp_path / "cache.sqlite")
    assert c.get("nope") is None
    c.put("k1", b'{"choices": []}')
    assert c.get("k1") == b'{"choices": []}'
    s = c.stats()
    assert (s["entries"], s["hits"], s["misses"]) == (1, 1, 1) and s["bytes"] == len("k1") + 15
    assert c.clear() == 1 and c.get("k1") is None and c.stats()["entries"] == 0 and c.stats()["bytes"] == 0


def test_wal_mode(tmp_path):
    c = ResponseCache(tmp_path / "cache.sqlite")
    c.put("k", b"v")
    with sqlite3.connect(tmp_path / "cache.sqlite") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_lru_eviction_keeps_the_recently_used_and_stays_under_the_bound(tmp_path):
    c = ResponseCache(tmp_path / "cache.sqlite", max_bytes=10_000)
    keys = [f"k{i:03d}" for i in range(15)]
    for k in keys:
        c.put(k, b"x" * 496)  # 500 bytes an entry with its key
    assert c.stats()["entries"] == 15
    assert c.get(keys[0]) is not None  # the oldest becomes the most recently used
    for i in range(15, 30):
        c.put(f"k{i:03d}", b"y" * 496)
    s = c.stats()
    assert s["bytes"] <= 10_000 and s["entries"] < 30
    assert c.get(keys[0]) is not None, "recently used entry was evicted"
    assert c.get(keys[1]) is None, "least recently used entry survived"
    assert c.get("k029") is not None
    with sqlite3.connect(tmp_path / "cache.sqlite") as raw:  # the trigger-kept total is the real one
        assert raw.execute("SELECT SUM(size), COUNT(*) FROM entries").fetchone() == (s["bytes"], s["entries"])


def test_an_entry_larger_than_the_bound_is_not_stored(tmp_path):
    c = ResponseCache(tmp_path / "cache.sqlite", max_bytes=1_000)
    c.put("small", b"1")
    c.put("huge", b"x" * 2_000)
    assert c.get("huge") is None and c.get("small") == b"1"


def test_replacing_an_entry_keeps_the_total_right(tmp_path):
    c = ResponseCache(tmp_path / "cache.sqlite")
    c.put("k", b"x" * 100)
    c.put("k", b"x" * 10)
    assert c.stats()["bytes"] == 11 and c.stats()["entries"] == 1


def test_bad_bound_is_refused(tmp_path):
    with pytest.raises(ValueError):
        ResponseCache(tmp_path / "c.sqlite", max_bytes=0)


def test_two_processes_write_and_read_one_file(tmp_path):
    """Writers in other processes, at the same time as this one, past the bound (810 KB into 700 KB):
    eviction runs; each writer's newest entry is within the 630 KB eviction keeps."""
    path = tmp_path / "cache.sqlite"
    script = textwrap.dedent(f"""
        import sys
        from bodhi_nb.services.cache import ResponseCache
        c = ResponseCache({str(path)!r}, max_bytes=700_000)
        for i in range(300):
            c.put(f"{{sys.argv[1]}}-{{i}}", b"z" * 900)
        c.put(f"{{sys.argv[1]}}-last", b"done")
        print("ok")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    mine = ResponseCache(path, max_bytes=700_000)
    for i in range(300):
        mine.put(f"me-{i}", b"m" * 900)
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok"
    assert mine.get("a-last") == b"done" and mine.get("b-last") == b"done"
    s = mine.stats()
    assert s["bytes"] <= 700_000 and s["entries"] < 903
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT SUM(size), COUNT(*) FROM entries").fetchone() == (s["bytes"], s["entries"])


def test_queued_writes_are_seen_at_once_and_committed_by_the_writer(tmp_path):
    path = tmp_path / "cache.sqlite"
    c = ResponseCache(path)
    c.put_later("k", b"queued")
    assert c.get("k") == b"queued"  # this process sees it before it commits
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the writer thread commits it for other processes
        if ResponseCache(path).get("k") == b"queued":
            break
        time.sleep(0.01)
    else:
        raise AssertionError("queued entry never committed")


def test_queued_writes_are_committed_at_exit(tmp_path):
    path = tmp_path / "cache.sqlite"
    script = ("from bodhi_nb.services.cache import ResponseCache\n"
              f"ResponseCache({str(path)!r}).put_later('from-child', b'bye')\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert ResponseCache(path).get("from-child") == b"bye"


def test_hits_keep_entries_recent_through_the_queue(tmp_path):
    c = ResponseCache(tmp_path / "cache.sqlite", max_bytes=5_000)
    for i in range(8):
        c.put(f"k{i}", b"x" * 496)
    assert c.get("k0") is not None  # queued recency mark
    for i in range(8, 12):
        c.put(f"k{i}", b"x" * 496)  # commits the mark before evicting
    assert c.get("k0") is not None and c.get("k1") is None


KERNEL_LIKE = ("import sys\nfrom bodhi_nb.services.cache import ResponseCache\n"
               "c = ResponseCache(sys.argv[1])\n"  # no bound given, as a kernel's Bodhi() opens it
               "c.put('from-kernel', b'v' * 100)\nprint(c.stats()['max_bytes'])\n")


def test_a_process_given_no_bound_evicts_by_the_stored_one_not_its_default(tmp_path):
    path = tmp_path / "cache.sqlite"
    server_bound = 1024 * 1024 * 1024  # the server's response_cache_max_mb=1024, above the 512 MB default
    ResponseCache(path, max_bytes=server_bound).stats()
    with closing(sqlite3.connect(path)) as raw, raw:  # 600 MB accounted for (the bound reads the sizes)
        raw.execute("INSERT INTO entries VALUES ('big', x'00', ?, 0, 0)", (600 * 1024 * 1024,))
    p = subprocess.run([sys.executable, "-c", KERNEL_LIKE, str(path)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert p.returncode == 0, p.stderr
    c = ResponseCache(path)
    assert c.get("from-kernel") == b"v" * 100
    assert c.get("big") is not None, "a kernel trimmed the shared cache to its own default bound"
    assert p.stdout.strip() == str(server_bound) == str(c.stats()["max_bytes"])


def test_a_smaller_stored_bound_is_followed_too_and_the_default_applies_when_none_is_stored(tmp_path):
    path = tmp_path / "cache.sqlite"
    assert ResponseCache(path).stats()["max_bytes"] == DEFAULT_MAX_BYTES
    ResponseCache(path, max_bytes=5_000).close()
    c = ResponseCache(path)
    for i in range(20):
        c.put(f"k{i:02d}", b"x" * 496)
    s = c.stats()
    assert s["max_bytes"] == 5_000 and s["bytes"] <= 5_000 and c.get("k19") is not None
    c.put("too-big", b"x" * 6_000)  # larger than the stored bound: not stored
    assert c.get("too-big") is None


def test_an_unusable_file_does_not_stop_a_process_that_stores_its_bound(tmp_path, caplog):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    c = ResponseCache(path, max_bytes=10_000)  # the server starting: a warning, not a failure
    assert "cannot be used" in caplog.text and c.max_bytes == 10_000
    with pytest.raises(sqlite3.DatabaseError):
        c.get("k")  # the request that uses it says so
