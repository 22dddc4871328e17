"""The server's usage and cache options hold in every process: a Jupyter server started with
`usage_retention_days=0`, `response_cache_max_mb=1024` and `daily_budget_usd`, then a
kernel-like process that calls `Bodhi()` with no options. The kernel keeps the old rows,
does not trim the shared cache to its own 512 MB default, and is refused over budget."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from bodhi_nb.services.cache import ResponseCache
from bodhi_nb.services.usage._sqlite import connect, iso_utc, write_tx
from tests.conftest import FAST_KDF, TEST_KEY, TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024

KERNEL = textwrap.dedent(f"""
    import json, sys
    from bodhi_nb.notebook.client import Bodhi
    from bodhi_nb.objs.errors import BodhiError
    b = Bodhi(sys.argv[1], master_secret={TEST_SECRET!r}, kdf_iterations={FAST_KDF})  # no usage or cache options
    out = {{"unpriced": b.chat("fake/echo-2", "cache me", cache=True)}}
    out["cache_bound"] = b.cache.stats()["max_bytes"]  # also commits the queued entry
    try:
        b.chat("fake/echo", "over budget")
        out["priced"] = "answered"
    except BodhiError as e:
        out["priced"] = [e.status, e.code, str(e)]
    b.services.ledger.prune()  # what the kernel's writer does every hour
    b.close()
    print(json.dumps(out))
""")


@pytest.fixture
def jp_server_config(jp_server_config):
    cfg = json.loads(json.dumps(jp_server_config))
    cfg["BodhiExtension"].update(usage_retention_days=0.0, response_cache_max_mb=1024, daily_budget_usd=0.5)
    return cfg


async def test_a_kernel_follows_the_servers_retention_cache_bound_and_budget(api, upstream, bodhi_home):
    code, _, _ = await api("POST", "api-models", {"id": "fake", "base_url": upstream.base_url, "api_key": TEST_KEY,
                                                  "models": ["echo", "echo-2"], "prefix": "fake/"})
    assert code == 201
    code, _, _ = await api("PUT", "usage/prices", {"name": "fake/echo", "input_usd_per_mtok": 1_000_000.0,
                                                   "output_usd_per_mtok": 0.0})  # $1 a prompt token
    assert code == 200
    # A row from 400 days ago (kept: retention 0 keeps all) and 600 MB of cache entries, accounted for
    # by size (within the server's 1024 MB bound, over the 512 MB default).
    with write_tx(bodhi_home / "usage.sqlite") as conn:
        conn.execute("INSERT INTO usage (time, surface, model, status) VALUES (?, 'http', 'ancient', 200)",
                     (iso_utc(time.time() - 400 * 86400),))
    assert ResponseCache(bodhi_home / "cache.sqlite").stats()["max_bytes"] == 1024 * MB  # stored by the server
    with closing(sqlite3.connect(bodhi_home / "cache.sqlite")) as raw, raw:
        raw.execute("INSERT INTO entries VALUES ('big', x'00', ?, 0, 0)", (600 * MB,))
    # The server spends today's budget: the answer is given, the next priced request is refused.
    code, _, _ = await api("POST", "chat/completions", {"model": "fake/echo", "messages": [
        {"role": "user", "content": "spend it"}]})
    assert code == 200
    code, budget, _ = await api("GET", "usage/budget")
    assert code == 200 and budget["option_usd"] == 0.5 and budget["exceeded"], budget

    p = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", KERNEL, str(bodhi_home)], cwd=ROOT,
                                capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["unpriced"] == "echo: cache me"
    status, err_code, message = out["priced"]
    assert (status, err_code) == (429, "budget_exceeded") and "$0.50" in message and "daily_budget_usd" in message
    assert out["cache_bound"] == 1024 * MB

    with closing(connect(bodhi_home / "usage.sqlite")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM usage WHERE model = 'ancient'").fetchone()[0] == 1
    with closing(sqlite3.connect(bodhi_home / "cache.sqlite")) as raw:
        keys = {k for (k,) in raw.execute("SELECT key FROM entries")}
    assert "big" in keys and len(keys) == 2, "the kernel trimmed the shared cache below the server's bound"
    code, rows, _ = await api("GET", "usage?model=fake/echo")  # the refusal is a row too
    assert code == 200 and [(r["surface"], r["status"]) for r in rows["data"]] == [("python", 429), ("http", 200)]
