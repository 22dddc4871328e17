"""Send microbenchmark: the event loop's CPU per upstream request at 64 in flight, three ways to
the same upstream (tests/resources/batch_upstream.py, 20 ms): `UpstreamClient.forward` (a whole
body straight on aiohttp's session), the same through UpstreamClient's httpx client (httpx over
the same aiohttp transport, the path before), and aiohttp's session called directly (the floor).

Run: .venv/bin/python benchmarks/bench_send.py [--requests 6000]
Writes benchmarks/results/send.json. CPU is this process's (the upstream runs in its own), over
all requests, each way twice, alternated; the lower of the two is kept. This is the cost a
100,000-row batch on the server's loop is bound by (README.md, "Batch jobs").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bodhi_nb.services.upstream_client import ForwardTarget, UpstreamClient  # noqa: E402
from tests.resources.servers import start_fake  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEY = "sk-benchmark-key-0000000000000000"
BODY = {"model": "lat-20", "max_tokens": 5, "messages": [{"role": "user", "content": "row 1"}], "stream": False}


async def per_request(n: int, send: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(ms of CPU per request, requests per second) with 64 workers sharing n requests."""
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            await send()

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[worker() for _ in range(64)])
    return (time.process_time() - cpu) / n * 1000, n / (time.perf_counter() - t)


async def measure(base: str, n: int) -> dict[str, dict[str, float]]:
    svc = UpstreamClient()
    target = ForwardTarget(base, "lat-20", KEY, "API model 'bench'", "openai")
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200), cookie_jar=aiohttp.DummyCookieJar(),
                                    auto_decompress=False)

    async def forward() -> None:
        r = await svc.forward_chat_completion(target, BODY, False)
        await r.aread_json()

    async def through_httpx() -> None:
        r = await svc._client().post(f"{base}/chat/completions", content=json.dumps(BODY).encode(), headers=headers)
        json.loads(r.content)

    async def raw_aiohttp() -> None:
        async with session.post(f"{base}/chat/completions", data=json.dumps(BODY).encode(), headers=headers) as r:
            json.loads(await r.read())

    ways = {"UpstreamClient.forward": forward, "httpx over the aiohttp transport": through_httpx,
            "aiohttp session": raw_aiohttp}
    best: dict[str, dict[str, float]] = {}
    try:
        for _ in range(2):
            for name, send in ways.items():
                cpu_ms, rate = await per_request(n, send)
                if name not in best or cpu_ms < best[name]["cpu_ms_per_request"]:
                    best[name] = {"cpu_ms_per_request": round(cpu_ms, 3), "requests_per_s": round(rate)}
    finally:
        await svc.aclose()
        await session.close()
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=6000)
    args = ap.parse_args()
    up, port = start_fake("batch_upstream.py", "--key", KEY)
    try:
        res = asyncio.run(measure(f"http://127.0.0.1:{port}/v1", args.requests))
    finally:
        up.kill()
        up.wait()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "send.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
