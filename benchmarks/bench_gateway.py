"""Gateway benchmark: the same requests sent directly to a fast upstream and through the
bodhi_nb extension, interleaved in one run.

Run: .venv/bin/python benchmarks/bench_gateway.py [--n 400] [--chunks 2000] [--concurrency 50]
Writes benchmarks/results/gateway.json and benchmarks/results/gateway.png.
Targets: overhead p50 <= 1.5 ms, p99 <= 5 ms; TTFT +<= 2 ms; relay >= 0.95x direct;
0 errors at 50 concurrent streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / "tests" / "resources" / "fake_openai.py"
RESULTS = Path(__file__).parent / "results"
MSG = [{"role": "user", "content": "hello benchmark"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50": round(pct(xs, 50), 3), "p95": round(pct(xs, 95), 3), "p99": round(pct(xs, 99), 3),
            "mean": round(statistics.fmean(xs), 3)}


def wait_ready(url: str, headers: dict[str, str], proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"process exited: {proc.args}")
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready")


def start(tmp: Path, up_url: str | None = None, extra: tuple[str, ...] = (), code: Path | None = None
          ) -> tuple[list[subprocess.Popen], str, str, dict[str, str]]:
    """A fake upstream (unless `up_url` names one) and a Jupyter server with the extension
    (`extra` options; `code`: run the bodhi_nb package found there instead of this checkout's)."""
    procs = []
    if up_url is None:
        up = subprocess.Popen([sys.executable, str(UPSTREAM)], stdout=subprocess.PIPE, text=True)
        up_url = f"http://127.0.0.1:{int(up.stdout.readline().split()[1])}/v1"
        procs.append(up)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "BODHI_HOME": str(tmp / "bodhi"), "BODHI_ENCRYPTION_KEY": "benchmark-master-secret-xyz",
           "JUPYTER_RUNTIME_DIR": str(tmp / "rt"), "HF_HOME": str(tmp / "hf")}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    srv = subprocess.Popen([sys.executable, "-m", "jupyter_server", f"--port={port}", "--ip=127.0.0.1",
                            "--ServerApp.open_browser=False", f"--IdentityProvider.token={token}",
                            "--ServerApp.jpserver_extensions={'bodhi_nb': True}", "--allow-root",
                            "--log-level=WARN", *extra], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    gw = f"http://127.0.0.1:{port}/bodhi/v1"
    headers = {"Authorization": f"Bearer {token}"}
    wait_ready(f"{gw}/models", headers, srv)
    r = httpx.post(f"{gw}/api-models", headers=headers, trust_env=False,
                   json={"id": "fast", "base_url": up_url, "models": ["echo", "slow-stream"], "prefix": "fast/"})
    assert r.status_code == 201, r.text
    return [*procs, srv], up_url, gw, headers


def bench_non_stream(up: str, gw: str, headers: dict[str, str], n: int) -> dict:
    direct, via, reported = [], [], []
    with httpx.Client(trust_env=False) as a, httpx.Client(trust_env=False, headers=headers) as b:
        for _ in range(20):  # warm both paths (connections, imports, index)
            a.post(f"{up}/chat/completions", json={"model": "echo", "messages": MSG})
            b.post(f"{gw}/chat/completions", json={"model": "fast/echo", "messages": MSG})
        for _ in range(n):
            t = time.perf_counter()
            a.post(f"{up}/chat/completions", json={"model": "echo", "messages": MSG}).raise_for_status()
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            r = b.post(f"{gw}/chat/completions", json={"model": "fast/echo", "messages": MSG})
            via.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            reported.append(float(r.headers["x-bodhi-overhead-ms"]))
    return {"direct_ms": summary(direct), "gateway_ms": summary(via),
            "overhead_ms": {k: round(summary(via)[k] - summary(direct)[k], 3) for k in ("p50", "p95", "p99", "mean")},
            "reported_overhead_ms": summary(reported), "_raw": {"direct": direct, "via": via, "reported": reported}}


def bench_hop(up: str, gw: str, headers: dict[str, str], n: int) -> dict:
    """The floor: a Jupyter-authenticated request that never leaves the server (GET models)
    against the upstream's own GET models. Whatever a proxy inside Jupyter does costs this."""
    direct, via = [], []
    with httpx.Client(trust_env=False) as a, httpx.Client(trust_env=False, headers=headers) as b:
        for _ in range(20):
            a.get(f"{up}/models")
            b.get(f"{gw}/models")
        for _ in range(n):
            t = time.perf_counter()
            a.get(f"{up}/models")
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            b.get(f"{gw}/models").raise_for_status()
            via.append((time.perf_counter() - t) * 1000)
    return {"upstream_models_ms": summary(direct), "jupyter_models_ms": summary(via),
            "jupyter_hop_extra_ms_p50": round(pct(via, 50) - pct(direct, 50), 3)}


def _stream(client: httpx.Client, url: str, model: str, max_tokens: int, rate: float = 0) -> tuple[float, int, float]:
    t = time.perf_counter()
    first = None
    chunks = 0
    with client.stream("POST", url, json={"model": model, "messages": MSG, "stream": True,
                                          "max_tokens": max_tokens, "x_chunk_rate": rate}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunks += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    return ((first or end) - t) * 1000, chunks, end - (first or t)


def bench_stream(up: str, gw: str, headers: dict[str, str], n: int, chunks: int, rate: float) -> dict:
    ttft_d, ttft_g, rate_d, rate_g, max_d, max_g = [], [], [], [], [], []
    with httpx.Client(trust_env=False, timeout=60) as a, httpx.Client(trust_env=False, headers=headers, timeout=60) as b:
        for _ in range(5):
            _stream(a, f"{up}/chat/completions", "echo", 8)
            _stream(b, f"{gw}/chat/completions", "fast/echo", 8)
        for _ in range(n):
            ttft_d.append(_stream(a, f"{up}/chat/completions", "echo", 8)[0])
            ttft_g.append(_stream(b, f"{gw}/chat/completions", "fast/echo", 8)[0])
        for _ in range(5):  # upstream paced at `rate` chunks/s, as a fast provider streams
            _, c, dt = _stream(a, f"{up}/chat/completions", "slow-stream", chunks, rate)
            rate_d.append(c / dt)
            _, c, dt = _stream(b, f"{gw}/chat/completions", "fast/slow-stream", chunks, rate)
            rate_g.append(c / dt)
        for _ in range(5):  # unpaced: the most the relay can carry here
            _, c, dt = _stream(a, f"{up}/chat/completions", "slow-stream", chunks)
            max_d.append(c / dt)
            _, c, dt = _stream(b, f"{gw}/chat/completions", "fast/slow-stream", chunks)
            max_g.append(c / dt)
    rd, rg = statistics.median(rate_d), statistics.median(rate_g)
    return {"ttft_direct_ms": summary(ttft_d), "ttft_gateway_ms": summary(ttft_g),
            "ttft_overhead_ms_p50": round(pct(ttft_g, 50) - pct(ttft_d, 50), 3),
            "relay_chunks_per_s": {"paced_at": rate, "direct": round(rd), "gateway": round(rg), "ratio": round(rg / rd, 3)},
            "relay_unpaced_chunks_per_s": {"direct": round(statistics.median(max_d)),
                                           "gateway": round(statistics.median(max_g)),
                                           "ratio": round(statistics.median(max_g) / statistics.median(max_d), 3)},
            "_raw": {"ttft_direct": ttft_d, "ttft_gateway": ttft_g}}


async def bench_concurrent(gw: str, headers: dict[str, str], concurrency: int, chunks: int) -> dict:
    errors = 0
    lat: list[float] = []

    async def one(c: httpx.AsyncClient) -> None:
        nonlocal errors
        t = time.perf_counter()
        try:
            n = 0
            async with c.stream("POST", f"{gw}/chat/completions", json={"model": "fast/slow-stream", "messages": MSG,
                                                                         "stream": True, "max_tokens": chunks}) as r:
                if r.status_code != 200:
                    errors += 1
                    return
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        if '"error"' in line:
                            errors += 1
                            return
                        n += 1
            if n != chunks + 1:  # content chunks + the finish chunk
                errors += 1
        except httpx.HTTPError:
            errors += 1
        lat.append((time.perf_counter() - t) * 1000)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, headers=headers, timeout=120, limits=limits) as c:
        t = time.perf_counter()
        await asyncio.gather(*(one(c) for _ in range(concurrency)))
        wall = time.perf_counter() - t
    return {"concurrency": concurrency, "chunks_each": chunks, "errors": errors, "latency_ms": summary(lat),
            "wall_s": round(wall, 3)}


def bench_ab(up: str, a: tuple[str, dict[str, str]], b: tuple[str, dict[str, str]], n: int,
             names: tuple[str, str]) -> dict:
    """Two servers over the same upstream, the same requests alternating between them in one
    run, so load and CPU state hit both alike; deltas are `names[0]` minus `names[1]`."""
    x, y = names
    lat: dict[str, list[float]] = {x: [], y: []}
    rep: dict[str, list[float]] = {x: [], y: []}
    done: dict[str, list[float]] = {x: [], y: []}
    body = {"model": "fast/echo", "messages": MSG}
    with httpx.Client(trust_env=False, timeout=60) as c:
        for _ in range(20):
            for gw, h in (a, b):
                c.post(f"{gw}/chat/completions", json=body, headers=h)
        for i in range(n):
            order = ((x, a), (y, b)) if i % 2 else ((y, b), (x, a))
            for name, (gw, h) in order:
                t = time.perf_counter()
                r = c.post(f"{gw}/chat/completions", json=body, headers=h)
                lat[name].append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                rep[name].append(float(r.headers["x-bodhi-overhead-ms"]))
        for i in range(max(50, n // 4)):  # streams: e.g. the ledger asks for usage and strips it back out
            order = ((x, a), (y, b)) if i % 2 else ((y, b), (x, a))
            for name, (gw, h) in order:
                c.headers.update(h)
                t = time.perf_counter()
                _stream(c, f"{gw}/chat/completions", "fast/slow-stream", 200)
                done[name].append((time.perf_counter() - t) * 1000)

    def delta(d: dict[str, list[float]]) -> float:
        return round(pct(d[x], 50) - pct(d[y], 50), 3)

    return {"non_stream_ms": {k: summary(v) for k, v in lat.items()},
            "reported_overhead_ms": {k: summary(v) for k, v in rep.items()},
            "stream_200_chunks_ms": {k: summary(v) for k, v in done.items()},
            "delta_ms_p50": {"end_to_end": delta(lat), "reported": delta(rep), "stream_200": delta(done)}}


def baseline_checkout(ref: str, into: Path) -> Path:
    """The package as it was at git `ref`, unpacked (no worktree, nothing written to .git)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "bodhi_nb"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def chart(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    raw = res["non_stream"]["_raw"]
    hi = pct(raw["via"], 99) * 1.2
    axes[0].hist([raw["direct"], raw["via"]], bins=50, range=(0, hi), label=["direct", "via bodhi_nb"])
    axes[0].set(title="Non-streamed latency (ms)", xlabel="ms", ylabel="requests")
    axes[0].legend()
    axes[1].hist(raw["reported"], bins=50, color="tab:green")
    axes[1].set(title="x-bodhi-overhead-ms (time in the gateway)", xlabel="ms")
    s = res["stream"]
    axes[2].bar(["direct", "via bodhi_nb"], [s["relay_chunks_per_s"]["direct"], s["relay_chunks_per_s"]["gateway"]],
                color=["tab:blue", "tab:orange"])
    axes[2].set(title=f"Relayed SSE chunks/s (ratio {s['relay_chunks_per_s']['ratio']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rate", type=float, default=2000, help="paced upstream chunks/s for the relay test")
    ap.add_argument("--ledger-ab", action="store_true",
                    help="also measure the usage ledger's overhead against a second server without it")
    ap.add_argument("--baseline", metavar="GIT_REF",
                    help="also compare, in the same run, with a server running the package as it was at GIT_REF")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        procs, up, gw, headers = start(Path(tmp))
        try:
            ab = {}
            if args.ledger_ab:  # first, while both servers are fresh
                more, _, gw_off, h_off = start(Path(tmp) / "off", up, ("--BodhiExtension.usage_ledger=False",))
                procs += more
                ab["ledger_ab"] = bench_ab(up, (gw, headers), (gw_off, h_off), args.n, ("on", "off"))
            if args.baseline:
                code = baseline_checkout(args.baseline, Path(tmp) / "baseline_code")
                more, _, gw_base, h_base = start(Path(tmp) / "base", up, (), code)
                procs += more
                ab["baseline_ab"] = {"ref": args.baseline, **bench_ab(up, (gw, headers), (gw_base, h_base), args.n,
                                                                         ("now", "baseline"))}
            res = {"jupyter_hop": bench_hop(up, gw, headers, args.n),
                   "non_stream": bench_non_stream(up, gw, headers, args.n),
                   "stream": bench_stream(up, gw, headers, max(50, args.n // 4), args.chunks, args.rate),
                   "concurrent": asyncio.run(bench_concurrent(gw, headers, args.concurrency, 200)), **ab}
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    RESULTS.mkdir(exist_ok=True)
    chart(res, RESULTS / "gateway.png")
    clean = json.loads(json.dumps(res))
    for part in clean.values():
        part.pop("_raw", None)
    (RESULTS / "gateway.json").write_text(json.dumps(clean, indent=2) + "\n")
    print(json.dumps(clean, indent=2))
    ns, st, cc = clean["non_stream"], clean["stream"], clean["concurrent"]
    for name, ok in [("overhead p50 <= 1.5 ms", ns["overhead_ms"]["p50"] <= 1.5),
                     ("overhead p99 <= 5 ms", ns["overhead_ms"]["p99"] <= 5),
                     ("TTFT + <= 2 ms", st["ttft_overhead_ms_p50"] <= 2),
                     ("relay >= 0.95x direct", st["relay_chunks_per_s"]["ratio"] >= 0.95),
                     ("0 errors at 50 streams", cc["errors"] == 0),
                     *([("usage ledger + <= 0.1 ms p50 (in the gateway)",
                         clean["ledger_ab"]["delta_ms_p50"]["reported"] <= 0.1)] if args.ledger_ab else []),
                     *([(f"end-to-end p50 at or under {args.baseline}'s",
                         clean["baseline_ab"]["delta_ms_p50"]["end_to_end"] <= 0)] if args.baseline else [])]:
        print(f"{'PASS' if ok else 'MISS'}  {name}")


if __name__ == "__main__":
    main()
