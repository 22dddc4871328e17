"""Dialect benchmark: what translating Anthropic Messages and OpenAI Responses costs over the
chat-completions pass-through, on one server and one upstream, interleaved in one run.

Run: .venv/bin/python benchmarks/bench_dialects.py [--n 400] [--chunks 2000] [--rounds 5]
Writes benchmarks/results/dialects.json.
Targets: translation cost p50 <= 0.2 ms per request (the gateway's own time, `x-bodhi-overhead-ms`,
translated minus pass-through; Responses with store: false, the store's own cost measured apart);
a relayed stream through a translation >= 0.9x the pass-through relay's chunks per second, paced at
2,000 chunks/s (as bench_gateway.py's relay test) and unpaced (as fast as the CPU allows).

The upstream is tests/resources/fake_openai.py, so the same chat answer comes back on every path:
`bodhi/v1/chat/completions` relays it as it is; `bodhi/v1/messages` and `bodhi/v1/responses` turn
the client's request into chat and the chat answer (or stream) into the client's dialect.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_gateway import RESULTS, start, summary  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bodhi_nb.objs.dialects import dialect  # noqa: E402

MSG = [{"role": "user", "content": "hello benchmark"}]
PATHS = {  # path -> (body for model m, the text of its non-streamed answer)
    "chat": ("chat/completions", lambda m, **k: {"model": m, "messages": MSG, **k}),
    "messages": ("messages", lambda m, **k: {"model": m, "max_tokens": k.pop("max_tokens", 64), "messages": MSG, **k}),
    "responses": ("responses", lambda m, **k: {"model": m, "input": MSG[0]["content"], "store": False,
                                               **({"max_output_tokens": k.pop("max_tokens")} if "max_tokens" in k
                                                  else {}), **k}),
}


def bench_requests(gw: str, headers: dict[str, str], n: int) -> dict:
    """The gateway's own time per non-streamed request on each path, interleaved."""
    reported: dict[str, list[float]] = {k: [] for k in PATHS}
    with httpx.Client(trust_env=False, headers=headers) as c:
        for i in range(n + 20):
            for name, (path, body) in PATHS.items():
                r = c.post(f"{gw}/{path}", json=body("fast/echo"))
                r.raise_for_status()
                if i >= 20:  # after warming connections, imports and the index
                    reported[name].append(float(r.headers["x-bodhi-overhead-ms"]))
    out = {name: summary(xs) for name, xs in reported.items()}
    base = out["chat"]["p50"]
    return {"gateway_ms": out, "translation_cost_ms_p50": {k: round(out[k]["p50"] - base, 3)
                                                           for k in ("messages", "responses")}}


def bench_pure(n: int) -> dict:
    """The translation functions alone, per request (request in, answer out), in this process."""
    chat_answer = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: hello benchmark"},
                                "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 3,
                                                                     "total_tokens": 6}}
    out = {}
    for name, (_, body) in (("messages", PATHS["messages"]), ("responses", PATHS["responses"])):
        d = dialect("anthropic" if name == "messages" else "openai_responses")
        req = body("m")
        times = []
        for _ in range(n):
            t = time.perf_counter()
            d.request_to_chat(req)
            d.chat_to_response(chat_answer, model="m", request=req)
            times.append((time.perf_counter() - t) * 1000)
        out[name] = summary(times)
    return out


def _stream_rate(c: httpx.Client, url: str, body: dict) -> float:
    """Text deltas per second as the client receives them (first to last)."""
    first = last = 0.0
    n = 0
    with c.stream("POST", url, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            data = json.loads(line[5:])
            delta = (data.get("choices") or [{}])[0].get("delta", {}).get("content") if "choices" in data \
                else (data.get("delta") or {}).get("text") if data.get("type") == "content_block_delta" \
                else data.get("delta") if data.get("type") == "response.output_text.delta" else None
            if delta:
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
    return (n - 1) / (last - first) if n > 1 and last > first else 0.0


def bench_streams(gw: str, headers: dict[str, str], chunks: int, rounds: int, model: str) -> dict:
    """Each path's stream of `chunks` chunks from `model` (slow-stream: as fast as the upstream can;
    paced-N: N chunks per second), interleaved over `rounds`."""
    rates: dict[str, list[float]] = {k: [] for k in PATHS}
    with httpx.Client(trust_env=False, headers=headers, timeout=120) as c:
        for _ in range(rounds):
            for name, (path, body) in PATHS.items():
                rates[name].append(_stream_rate(c, f"{gw}/{path}", body(f"fast/{model}", max_tokens=chunks,
                                                                        stream=True)))
    med = {k: round(statistics.median(v), 1) for k, v in rates.items()}
    return {"model": model, "chunks_per_s_median": med, "ratio_to_pass_through": {
        k: round(med[k] / med["chat"], 3) for k in ("messages", "responses")}, "_raw": rates}


def bench_store(gw: str, headers: dict[str, str], n: int) -> dict:
    """What `store: true` (the Responses API's default) adds: the response kept in SQLite."""
    out: dict[str, list[float]] = {"store_false": [], "store_true": []}
    with httpx.Client(trust_env=False, headers=headers) as c:
        for i in range(n + 10):
            for key, store in (("store_false", False), ("store_true", True)):
                r = c.post(f"{gw}/responses", json={"model": "fast/echo", "input": "hi", "store": store})
                r.raise_for_status()
                if i >= 10:
                    out[key].append(float(r.headers["x-bodhi-overhead-ms"]))
    return {k: summary(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=int, default=2000, help="chunks/s of the paced stream (bench_gateway's relay rate)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        procs, _, gw, headers = start(Path(tmp))
        httpx.put(f"{gw}/api-models/fast", headers=headers, trust_env=False,
                  json={"models": ["echo", "slow-stream", f"paced-{args.rate}"]}).raise_for_status()
        try:
            res = {"requests": bench_requests(gw, headers, args.n), "pure": bench_pure(args.n * 10),
                   "streams_paced": bench_streams(gw, headers, args.chunks, args.rounds, f"paced-{args.rate}"),
                   "streams_unpaced": bench_streams(gw, headers, args.chunks, args.rounds, "slow-stream"),
                   "responses_store": bench_store(gw, headers, args.n // 4)}
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    clean = json.loads(json.dumps(res))
    for k in ("streams_paced", "streams_unpaced"):
        clean[k].pop("_raw", None)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dialects.json").write_text(json.dumps(clean, indent=2) + "\n")
    print(json.dumps(clean, indent=2))
    cost, ratio = clean["requests"]["translation_cost_ms_p50"], clean["streams_paced"]["ratio_to_pass_through"]
    fast = clean["streams_unpaced"]["ratio_to_pass_through"]
    for name, ok in [*((f"{k}: translation cost p50 <= 0.2 ms", v <= 0.2) for k, v in cost.items()),
                     *((f"{k}: paced stream relay >= 0.9x pass-through", v >= 0.9) for k, v in ratio.items()),
                     *((f"{k}: unpaced (CPU-bound) stream relay >= 0.9x pass-through", v >= 0.9)
                       for k, v in fast.items())]:
        print(f"{'PASS' if ok else 'MISS'}  {name}")


if __name__ == "__main__":
    main()
