"""A 100,000-row batch run here survives its Jupyter server being SIGKILLed midway.

Against tests/resources/batch_upstream.py (an OpenAI chat server with no Files/Batches API, so the
job runs in the gateway) answering after 100 ms, at the runner's 64 requests in flight: the
server is killed with SIGKILL once a third of the rows are done, started again over the same
BODHI_HOME, and goes on by itself. The output has every custom_id exactly once, in order, and
the usage ledger one answered row per custom_id.
"""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest

from tests.conftest import TEST_KEY
from tests.resources.servers import start_fake, start_jupyter, wait_for

ROWS = 100_000


def _input(path, model: str) -> None:
    with path.open("w") as f:
        for i in range(ROWS):
            f.write(json.dumps({"custom_id": f"r{i:06d}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": model, "max_tokens": 5,
                                         "messages": [{"role": "user", "content": f"row {i}"}]}}) + "\n")


@pytest.mark.timeout(1800)
def test_a_local_batch_resumes_after_sigkill_and_sends_each_row_once(tmp_path):
    up, port = start_fake("batch_upstream.py", "--key", TEST_KEY)
    home = tmp_path / "home"
    server, gw, headers = start_jupyter(home, tmp_path)
    try:
        with httpx.Client(trust_env=False, headers=headers, timeout=120) as c:
            r = c.post(f"{gw}/api-models", json={"id": "slow", "base_url": f"http://127.0.0.1:{port}/v1",
                                                 "api_key": TEST_KEY, "models": ["lat-100"], "prefix": "s/"})
            assert r.status_code == 201, r.text
            src = tmp_path / "in.jsonl"
            _input(src, "s/lat-100")
            with src.open("rb") as fh:
                f = c.post(f"{gw}/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", fh)}).json()
            b = c.post(f"{gw}/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                              "completion_window": "24h"}).json()
            wait_for(lambda: c.get(f"{gw}/batches/{b['id']}").json()["request_counts"]["completed"] >= ROWS // 3,
                     900, "a third of the rows")
        os.kill(server.pid, signal.SIGKILL)
        server.wait(30)
        server, gw, headers = start_jupyter(home, tmp_path)  # resumes unfinished jobs at start
        with httpx.Client(trust_env=False, headers=headers, timeout=120) as c:
            done = wait_for(lambda: (lambda s: s if s["status"] == "completed" else None)(
                c.get(f"{gw}/batches/{b['id']}").json()), 1200, "the batch to complete")
            assert done["request_counts"] == {"total": ROWS, "completed": ROWS, "failed": 0}
            ids = []
            with c.stream("GET", f"{gw}/files/{done['output_file_id']}/content") as out:
                for line in out.iter_lines():
                    row = json.loads(line)
                    assert row["response"]["status_code"] == 200
                    ids.append(row["custom_id"])
            assert ids == [f"r{i:06d}" for i in range(ROWS)]  # each exactly once, ordered by custom_id
            wait_for(lambda: c.get(f"{gw}/usage", params={"surface": "batch", "by": "model"}).json()["data"],
                     60, "the ledger's rows")
            [group] = c.get(f"{gw}/usage", params={"surface": "batch", "by": "model"}).json()["data"]
            sent = httpx.get(f"http://127.0.0.1:{port}/_stats", trust_env=False).json()["requests"]
        assert group["requests"] - group["errors"] == ROWS  # one answered ledger row per custom_id
        # Only requests in flight at the kill (at most the runner's 64, plus what was answered but not yet
        # kept) were sent twice.
        assert ROWS <= len(sent) <= ROWS + 64 * 20
    finally:
        server.terminate()
        server.wait(30)
        up.kill()
        up.wait()
