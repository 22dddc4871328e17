"""Local engine benchmark: tokens/s through bodhi_nb vs the same llama_cpp.server called
directly (interleaved in one run), and the engine's cold start.

Run: .venv/bin/python benchmarks/bench_local.py [--rounds 6] [--max-tokens 128] [--threads 2]
Writes benchmarks/results/local.json. Target: bodhi_nb >= 0.95x direct.

With --modes: a chat-only engine vs one loaded with embedding=True (chat tokens/s, time to
first token on a long prompt, memory), and the cost of switching a running chat engine to
embedding mode. Writes benchmarks/results/local_modes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bodhi_nb.notebook.client import Bodhi  # noqa: E402
from bodhi_nb.services.local_engine import EngineEndpoint, LocalEngine, Purpose  # noqa: E402
from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def direct_stream(ep: EngineEndpoint, max_tokens: int, messages: list[dict[str, str]] = PROMPT
                  ) -> tuple[int, float, float]:
    """(content chunks, seconds from the first chunk to the last, seconds to the first chunk)."""
    tokens, first, last = 0, None, None
    start = time.perf_counter()
    with httpx.stream("POST", f"{ep.base_url}/chat/completions", timeout=600, trust_env=False,
                      headers={"Authorization": f"Bearer {ep.api_key}"},
                      json={"model": BUILTIN_ALIAS, "messages": messages, "stream": True, "max_tokens": max_tokens,
                            "temperature": 0, "seed": 1}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                now = time.perf_counter()
                first = first or now
                last = now
                tokens += 1
    if first is None or last is None:
        return 0, float("nan"), float("nan")
    return tokens, (last - first) if tokens > 1 else float("nan"), first - start


def bodhi_stream(b: Bodhi, max_tokens: int) -> tuple[int, float]:
    tokens, first, last = 0, None, None
    for chunk in b.stream(BUILTIN_ALIAS, PROMPT, max_tokens=max_tokens, temperature=0, seed=1):
        if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
            now = time.perf_counter()
            first = first or now
            last = now
            tokens += 1
    return tokens, (last - first) if tokens > 1 else float("nan")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used: the work done, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return -1


def modes(args: argparse.Namespace) -> None:
    """Chat on a chat-only engine vs an embedding=True one (alternating), and the switch cost."""
    long_text = " ".join(f"Note {i}: the harbour was calm and the boats came back at dusk." for i in range(70))
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2, \
            tempfile.TemporaryDirectory() as t3:
        engines = {name: LocalEngine(home, LocalModels(home), n_threads=args.threads, idle_timeout=3600)
                   for name, home in (("chat", t1), ("embedding", t2), ("switch", t3))}
        alias = engines["chat"].data.get_model_alias(BUILTIN_ALIAS)
        try:
            cold: dict[str, float] = {}
            eps: dict[str, EngineEndpoint] = {}
            purposes: tuple[tuple[str, Purpose], ...] = (("chat", "chat"), ("embedding", "embeddings"))
            for name, purpose in purposes:
                t = time.perf_counter()
                eps[name] = engines[name].ensure_sync(alias, purpose)
                cold[name] = time.perf_counter() - t
            rates: dict[str, list[float]] = {"chat": [], "embedding": []}
            ttft: dict[str, list[float]] = {"chat": [], "embedding": []}
            cpu_gen: dict[str, list[float]] = {"chat": [], "embedding": []}
            cpu_prompt: dict[str, list[float]] = {"chat": [], "embedding": []}
            pids = {name: engines[name].status()["pid"] for name in ("chat", "embedding")}
            same_count = True
            for i in range(args.rounds + 1):
                counts = {}
                # A new first line each round, so no prompt cache helps.
                long_msgs = [{"role": "user", "content": f"Round {i}. {long_text} Summarise."}]
                for name in ("chat", "embedding"):
                    c0 = _cpu_s(pids[name])
                    n, d, _ = direct_stream(eps[name], args.max_tokens)
                    c1 = _cpu_s(pids[name])
                    _, _, first = direct_stream(eps[name], 1, long_msgs)  # prompt processing dominates
                    c2 = _cpu_s(pids[name])
                    counts[name] = n
                    if i:  # round 0 warms up
                        rates[name].append((n - 1) / d)
                        ttft[name].append(first)
                        cpu_gen[name].append(c1 - c0)
                        cpu_prompt[name].append(c2 - c1)
                same_count = same_count and counts["chat"] == counts["embedding"]
            rss = {name: _rss_mib(engines[name].status()["pid"]) for name in ("chat", "embedding")}
            engines["chat"].stop()
            engines["embedding"].stop()
            switch, back = [], []
            for _ in range(args.rounds):
                engines["switch"].stop()
                engines["switch"].ensure_sync(alias, "chat")
                t = time.perf_counter()
                engines["switch"].ensure_sync(alias, "embeddings")  # stop the chat engine, start in embedding mode
                switch.append(time.perf_counter() - t)
                t = time.perf_counter()
                engines["switch"].ensure_sync(alias, "chat")  # stays in embedding mode: no reload
                back.append(time.perf_counter() - t)
        finally:
            for e in engines.values():
                e.stop()
    med = statistics.median
    res = {"model": BUILTIN_ALIAS, "threads": args.threads, "max_tokens": args.max_tokens, "rounds": args.rounds,
           "long_prompt_words": len(long_text.split()),
           "chat_tokens_per_s": {"chat_only": round(med(rates["chat"]), 1),
                                 "embedding_true": round(med(rates["embedding"]), 1)},
           "long_prompt_ttft_s": {"chat_only": round(med(ttft["chat"]), 3),
                                  "embedding_true": round(med(ttft["embedding"]), 3)},
           "engine_cpu_s_per_reply": {"chat_only": round(med(cpu_gen["chat"]), 3),
                                      "embedding_true": round(med(cpu_gen["embedding"]), 3)},
           "engine_cpu_s_per_long_prompt": {"chat_only": round(med(cpu_prompt["chat"]), 3),
                                            "embedding_true": round(med(cpu_prompt["embedding"]), 3)},
           "same_token_count_every_round": same_count,
           "rss_mib": {"chat_only": rss["chat"], "embedding_true": rss["embedding"]},
           "cold_start_s": {"chat_only": round(cold["chat"], 3), "embedding_true": round(cold["embedding"], 3)},
           "switch_chat_to_embeddings_s": round(med(switch), 3),
           "chat_on_embedding_engine_ensure_s": round(med(back), 4),
           "all": {"rates": rates, "ttft": ttft, "cpu_gen": cpu_gen, "cpu_prompt": cpu_prompt, "switch": switch}}
    out = Path(__file__).parent / "results" / "local_modes.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "all"}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", action="store_true", help="chat-only vs embedding=True engine, and the switch cost")
    args = ap.parse_args()
    os.environ.setdefault("BODHI_NO_KEYRING", "1")
    if args.modes:
        modes(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        b = Bodhi(tmp, master_secret="benchmark-local-master-secret", n_threads=args.threads)
        alias = b.services.data.get_model_alias(BUILTIN_ALIAS)
        t = time.perf_counter()
        ep = b.services.engine.ensure_sync(alias)
        cold_start = time.perf_counter() - t
        t = time.perf_counter()
        b.chat(BUILTIN_ALIAS, "Hi", max_tokens=1)
        first_request = time.perf_counter() - t
        direct_rates, bodhi_rates = [], []
        try:
            for i in range(args.rounds + 1):
                n1, d1, _ = direct_stream(ep, args.max_tokens)
                n2, d2 = bodhi_stream(b, args.max_tokens)
                if i == 0:
                    continue  # warm-up round
                direct_rates.append((n1 - 1) / d1)
                bodhi_rates.append((n2 - 1) / d2)
        finally:
            b.services.engine.stop()
            b.close()
    d, v = statistics.median(direct_rates), statistics.median(bodhi_rates)
    res = {"model": BUILTIN_ALIAS, "threads": args.threads, "max_tokens": args.max_tokens, "rounds": args.rounds,
           "cold_start_s": round(cold_start, 3), "first_request_after_start_s": round(first_request, 3),
           "direct_tokens_per_s": round(d, 1), "bodhi_tokens_per_s": round(v, 1), "ratio": round(v / d, 3),
           "direct_all": [round(x, 1) for x in direct_rates], "bodhi_all": [round(x, 1) for x in bodhi_rates]}
    out = Path(__file__).parent / "results" / "local.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(f"{'PASS' if v / d >= 0.95 else 'MISS'}  bodhi_nb >= 0.95x direct")


if __name__ == "__main__":
    main()
