"""JupyterHub service benchmark: chat through the hub service against the in-server gateway, in
one run on one upstream, and 20 users x 5 concurrent streams through the hub's proxy.

Run: .venv/bin/python benchmarks/bench_hub.py [--n 300] [--users 20] [--streams 5]
Needs configurable-http-proxy (npm install -g configurable-http-proxy). Writes benchmarks/results/hub.json.

Paths, interleaved request by request (non-streamed chat, tests/resources/fake_openai.py's echo):
  in-server   a Jupyter server's own gateway (its token) -> provider: what every user had before
  service     the hub service, called at its own address with a user's hub token -> provider
  via-proxy   the same through JupyterHub's proxy (configurable-http-proxy)
  user-server a user's Jupyter server (spawned by the hub) -> the hub service -> provider: what a
              notebook's openai client or Bodhi() in a user's server does under the hub
Overhead is each path's p50 minus the in-server gateway's. The load test opens `streams` streams
for each of `users` hub users at once (each with its own token) and counts errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_gateway import RESULTS, start, summary  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.resources.hub import Hub, proxy_available  # noqa: E402

MSG = [{"role": "user", "content": "hello benchmark"}]


def _timed(client: httpx.Client, url: str, model: str) -> float:
    t = time.perf_counter()
    client.post(url, json={"model": model, "messages": MSG}).raise_for_status()
    return (time.perf_counter() - t) * 1000


def latency(paths: dict[str, tuple[httpx.Client, str, str]], n: int) -> dict[str, dict[str, float]]:
    for client, url, model in paths.values():
        for _ in range(20):  # warm: connections, the hub's token cache, the hub link's model list
            _timed(client, url, model)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(n):
        for name, (client, url, model) in paths.items():
            times[name].append(_timed(client, url, model))
    out = {name: summary(xs) for name, xs in times.items()}
    base = out["in-server"]["p50"]
    for name in paths:
        out[name]["overhead_p50_ms"] = round(out[name]["p50"] - base, 3)
    return out


async def load(h: Hub, users: list[str], streams: int) -> dict[str, object]:
    errors: list[str] = []
    chunks = 0

    async def one(client: httpx.AsyncClient, token: str) -> None:
        nonlocal chunks
        body = {"model": "fake/slow-stream", "stream": True, "max_tokens": 50, "messages": MSG}
        try:
            async with client.stream("POST", f"{h.service_gateway}/chat/completions", json=body,
                                     headers=h.auth(token)) as r:
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {(await r.aread())[:200]!r}")
                    return
                done = False
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        chunks += 1
                if not done:
                    errors.append("stream ended without [DONE]")
        except httpx.HTTPError as exc:
            errors.append(repr(exc))

    tokens = [h.token(u) for u in users]
    limits = httpx.Limits(max_connections=len(users) * streams + 10)
    async with httpx.AsyncClient(trust_env=False, timeout=120, limits=limits) as client:
        t = time.perf_counter()
        await asyncio.gather(*(one(client, tok) for tok in tokens for _ in range(streams)))
        wall = time.perf_counter() - t
    return {"users": len(users), "streams_per_user": streams, "requests": len(users) * streams,
            "errors": len(errors), "first_errors": errors[:5], "chunks": chunks, "wall_s": round(wall, 3)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--streams", type=int, default=5)
    args = p.parse_args()
    if not proxy_available():
        raise SystemExit("configurable-http-proxy is not installed: npm install -g configurable-http-proxy")
    users = [f"user{i:02d}" for i in range(1, args.users + 1)]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        procs, up_url, gw, headers = start(tmp / "in-server")
        h = Hub(tmp / "hub", users=tuple(users), admins=("admin",)).start()
        try:
            r = httpx.post(f"{h.service_gateway}/api-models", headers=h.auth(h.token("admin")), trust_env=False,
                           json={"id": "fake", "base_url": up_url, "models": ["echo", "slow-stream"], "prefix": "fake/"})
            assert r.status_code == 201, r.text
            user = users[0]
            h.start_server(user)
            direct = f"http://127.0.0.1:{h.service_port}/services/bodhi/bodhi/v1/chat/completions"
            with httpx.Client(trust_env=False, headers=headers) as local, \
                    httpx.Client(trust_env=False, headers=h.auth(h.token(user))) as hub_client:
                paths = {
                    "in-server": (local, f"{gw}/chat/completions", "fast/echo"),
                    "service": (hub_client, direct, "fake/echo"),
                    "via-proxy": (hub_client, f"{h.service_gateway}/chat/completions", "fake/echo"),
                    "user-server": (hub_client, f"{h.server_url(user)}bodhi/v1/chat/completions", "fake/echo"),
                }
                lat = latency(paths, args.n)
            streams = asyncio.run(load(h, users, args.streams))
        finally:
            h.stop()
            for proc in procs:
                proc.kill()
    out = {"n": args.n, "latency_ms": lat, "load": streams}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hub.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
