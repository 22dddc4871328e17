"""Batch benchmark: a local batch of N rows (default 100,000) at the runner's 64 requests in flight
against an upstream that answers after 100 ms, through a Jupyter server, timed against the ideal
(rows x 100 ms / 64), with the server's memory before and after.

Run: .venv/bin/python benchmarks/bench_batches.py [--rows 100000] [--latency 100]
Writes benchmarks/results/batches.json. Targets: wall time <= 1.15x the ideal; the server's
memory growth (RSS) <= 100 MB over the job.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bodhi_nb.server_core.operations._batch_run import CONCURRENCY  # noqa: E402
from tests.resources.servers import start_fake, start_jupyter, wait_for  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEY = "sk-benchmark-key-0000000000000000"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def by_tenth(reqs: list[dict]) -> list[float]:
    """Rows answered per second in each tenth of the job's span: whether it slows as it goes."""
    t0, t1 = min(r["t"] for r in reqs), max(r["t_end"] for r in reqs)
    step = (t1 - t0) / 10
    counts = [0] * 10
    for r in reqs:
        counts[min(9, int((r["t_end"] - t0) / step))] += 1
    return [round(c / step, 1) for c in counts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--latency", type=int, default=100, help="upstream latency in ms")
    args = ap.parse_args()
    up, port = start_fake("batch_upstream.py", "--key", KEY)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        server, gw, headers = start_jupyter(tmp / "home", tmp)
        try:
            with httpx.Client(trust_env=False, headers=headers, timeout=300) as c:
                c.post(f"{gw}/api-models", json={"id": "slow", "base_url": f"http://127.0.0.1:{port}/v1", "api_key": KEY,
                                                 "models": [f"lat-{args.latency}"], "prefix": "s/"}).raise_for_status()
                src = tmp / "in.jsonl"
                with src.open("w") as f:
                    for i in range(args.rows):
                        f.write(json.dumps({"custom_id": f"r{i:07d}", "method": "POST", "url": "/v1/chat/completions",
                                            "body": {"model": f"s/lat-{args.latency}", "max_tokens": 5,
                                                     "messages": [{"role": "user", "content": f"row {i}"}]}}) + "\n")
                with src.open("rb") as fh:
                    fid = c.post(f"{gw}/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", fh)}).json()["id"]
                before = rss_mb(server.pid)
                t0 = time.perf_counter()
                b = c.post(f"{gw}/batches", json={"input_file_id": fid, "endpoint": "/v1/chat/completions",
                                                  "completion_window": "24h"}).json()
                peak = before

                def done() -> dict | None:
                    nonlocal peak
                    peak = max(peak, rss_mb(server.pid))
                    s = c.get(f"{gw}/batches/{b['id']}").json()
                    return s if s["status"] in ("completed", "failed", "cancelled") else None

                # Polled twice a second, as a notebook's progress bar does (a 20 ms poll is 50 requests/s
                # of the server's own loop spent on answering it, not on the batch).
                final = wait_for(done, 3600, "the batch", interval=0.5)
                wall = time.perf_counter() - t0
                after = rss_mb(server.pid)
                # The upstream's own record: how many rows it held at once on average, and for how long.
                reqs = httpx.get(f"http://127.0.0.1:{port}/_stats", trust_env=False, timeout=60).json()["requests"]
                span = max(r["t_end"] for r in reqs) - min(r["t"] for r in reqs)
                upstream = {"mean_in_flight": round(sum(r["t_end"] - r["t"] for r in reqs) / span, 1),
                            "mean_latency_ms": round(1000 * sum(r["t_end"] - r["t"] for r in reqs) / len(reqs), 1),
                            "rows_per_s_by_tenth": by_tenth(reqs)}
        finally:
            server.terminate()
            server.wait(30)
            up.kill()
    ideal = args.rows * args.latency / 1000 / CONCURRENCY
    res = {"rows": args.rows, "latency_ms": args.latency, "concurrency": CONCURRENCY, "status": final["status"],
           "completed": final["request_counts"]["completed"], "wall_s": round(wall, 1), "ideal_s": round(ideal, 1),
           "ratio_to_ideal": round(wall / ideal, 3), "rows_per_s": round(args.rows / wall, 1),
           "server_rss_mb": {"before": round(before, 1), "peak": round(peak, 1), "after": round(after, 1),
                             "growth_peak": round(peak - before, 1)}, "upstream": upstream}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batches.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    for name, ok in (("wall <= 1.15x ideal", res["ratio_to_ideal"] <= 1.15),
                     ("memory growth <= 100 MB", res["server_rss_mb"]["growth_peak"] <= 100)):
        print(f"{'PASS' if ok else 'MISS'}  {name}")


if __name__ == "__main__":
    main()
