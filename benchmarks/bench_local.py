"""Local engine benchmark: tokens/s through bodhi_nb vs the same llama_cpp.server called
directly (interleaved in one run), and the engine's cold start.

Run: .venv/bin/python benchmarks/bench_local.py [--rounds 6] [--max-tokens 128] [--threads 2]
Writes benchmarks/results/local.json. Target: bodhi_nb >= 0.95x direct.
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

from bodhi_nb.client import Bodhi  # noqa: E402
from bodhi_nb.services.data_service import BUILTIN_ALIAS  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def direct_stream(base_url: str, max_tokens: int) -> tuple[int, float]:
    tokens, first, last = 0, None, None
    with httpx.stream("POST", f"{base_url}/chat/completions", timeout=300, trust_env=False,
                      json={"model": BUILTIN_ALIAS, "messages": PROMPT, "stream": True, "max_tokens": max_tokens,
                            "temperature": 0, "seed": 1}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                now = time.perf_counter()
                first = first or now
                last = now
                tokens += 1
    return tokens, (last - first) if tokens > 1 else float("nan")


def bodhi_stream(b: Bodhi, max_tokens: int) -> tuple[int, float]:
    tokens, first, last = 0, None, None
    for chunk in b.stream(BUILTIN_ALIAS, PROMPT, max_tokens=max_tokens, temperature=0, seed=1):
        if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
            now = time.perf_counter()
            first = first or now
            last = now
            tokens += 1
    return tokens, (last - first) if tokens > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("BODHI_NO_KEYRING", "1")
    with tempfile.TemporaryDirectory() as tmp:
        b = Bodhi(tmp, master_secret="benchmark-local-master-secret", n_threads=args.threads)
        alias = b.services.data.get_model_alias(BUILTIN_ALIAS)
        t = time.perf_counter()
        base_url = b.services.engine.ensure_sync(alias)
        cold_start = time.perf_counter() - t
        t = time.perf_counter()
        b.chat(BUILTIN_ALIAS, "Hi", max_tokens=1)
        first_request = time.perf_counter() - t
        direct_rates, bodhi_rates = [], []
        try:
            for i in range(args.rounds + 1):
                n1, d1 = direct_stream(base_url, args.max_tokens)
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
