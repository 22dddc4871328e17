"""Batch benchmark: `Bodhi.map` against a loopback upstream with fixed latency, next to
LiteLLM's `batch_completion` and LangChain's `ChatOpenAI.batch` at the same concurrency.

Run: .venv/bin/python benchmarks/bench_batch.py [--rows 1000] [--latency-ms 100] [--concurrency 32]
     [--rounds 3] [--memory-rows 1000 10000] [--skip-others]
Writes benchmarks/results/batch.json.

Targets: wall clock <= 1.2x the ideal (rows / concurrency x latency); memory flat from
1,000 to 10,000 rows; a cache hit <= 1 ms per row. LiteLLM and LangChain are installed by
this script into a throwaway venv (never project dependencies); when that install fails
(e.g. offline) the script says so and skips their rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / "tests" / "resources" / "batch_upstream.py"
RESULTS = Path(__file__).parent / "results"
KEY = "sk-bench-not-a-real-key-0000000000"
SECRET = "benchmark-master-secret-xyz"


class Upstream:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(UPSTREAM), "--key", KEY], stdout=subprocess.PIPE, text=True)
        self.root = f"http://127.0.0.1:{int(self.proc.stdout.readline().split()[1])}"
        self.base_url = f"{self.root}/v1"

    def reset(self) -> None:
        httpx.post(f"{self.root}/_stats", trust_env=False)

    def stats(self) -> dict:
        s = httpx.get(f"{self.root}/_stats", trust_env=False).json()
        return {"requests": len(s["requests"]), "max_in_flight": s["max_in_flight"],
                "ok": sum(r["status"] == 200 for r in s["requests"])}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def bodhi(home: Path, up: Upstream):
    from bodhi_nb import Bodhi

    b = Bodhi(home, master_secret=SECRET, kdf_iterations=1_000)
    if "up" not in [m["id"] for m in b.api_models.list()]:
        b.api_models.create("up", up.base_url, api_key=KEY, prefix="up/", forward_all_with_prefix=True)
    return b


def _cpu() -> float:
    """CPU seconds of this process, all threads (the client's cost, whatever the machine's load)."""
    t = os.times()
    return t.user + t.system


def bench_bodhi(up: Upstream, tmp: Path, rows: int, latency_ms: int, concurrency: int) -> dict:
    b = bodhi(tmp / "bodhi", up)
    inputs = [f"row {i}" for i in range(rows)]
    model = f"up/lat-{latency_ms}"
    b.map(model, ["warm-up"], progress=False)  # the first request opens the connection pool
    up.reset()
    load = os.getloadavg()[0]
    c0, t = _cpu(), time.perf_counter()
    out = b.map(model, inputs, concurrency=concurrency, progress=False)
    wall = time.perf_counter() - t
    cpu_ms = (_cpu() - c0) / rows * 1000
    miss = up.stats()
    assert all(r.error is None for r in out), [r.error for r in out if r.error][:3]
    up.reset()
    t = time.perf_counter()
    again = b.map(model, inputs, concurrency=concurrency, progress=False)
    hit_wall = time.perf_counter() - t
    assert all(r.cached for r in again) and up.stats()["requests"] == 0
    t = time.perf_counter()
    b.map(model, inputs, concurrency=concurrency, progress=True)
    bar_wall = time.perf_counter() - t
    ideal = rows / concurrency * latency_ms / 1000
    stop_s = interrupt_latency(b, up, concurrency)
    b.close()
    return {"rows": rows, "concurrency": concurrency, "latency_ms": latency_ms, "ideal_s": round(ideal, 3),
            "wall_s": round(wall, 3), "ratio": round(wall / ideal, 3), "upstream": miss,
            "client_cpu_ms_per_row": round(cpu_ms, 3), "load_avg_1min_before": round(load, 2),
            "cache_hit_wall_s": round(hit_wall, 3), "cache_hit_ms_per_row": round(hit_wall / rows * 1000, 3),
            "cache_hit_with_progress_bar_ms_per_row": round(bar_wall / rows * 1000, 3),
            "interrupt_to_return_s": stop_s}


def interrupt_latency(b, up: Upstream, concurrency: int) -> float:
    """Seconds from a Ctrl-C (while `concurrency` requests hang upstream) until map returns."""
    import _thread
    import threading

    up.reset()
    fired: list[float] = []

    def interrupt() -> None:
        while httpx.get(f"{up.root}/_stats", trust_env=False).json()["in_flight"] < concurrency:
            time.sleep(0.01)
        fired.append(time.perf_counter())
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    out = b.map("up/echo", [f"!slow {i}" for i in range(concurrency * 2)], concurrency=concurrency, progress=False)
    took = time.perf_counter() - fired[0]
    assert all(r.error is not None for r in out)
    return round(took, 3)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, time, tracemalloc
    sys.path.insert(0, {root!r})
    from benchmarks.bench_batch import Upstream, bodhi
    from pathlib import Path
    up = Upstream.__new__(Upstream)
    up.base_url = {base_url!r}
    rows, concurrency, home = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    b = bodhi(home, up)
    inputs = [f"mem {{rows}} row {{i}}" for i in range(rows)]
    b.map("up/echo", ["warm-up"], progress=False)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    out = b.map("up/lat-5", inputs, concurrency=concurrency, progress=False)
    wall = time.perf_counter() - t
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert all(r.error is None for r in out)
    print(json.dumps({{"rows": rows, "wall_s": round(wall, 2), "peak_mb": round((peak - base) / 2**20, 2),
                      "retained_mb": round((cur - base) / 2**20, 2),
                      "working_mb": round((peak - cur) / 2**20, 2)}}))
""")


def bench_memory(up: Upstream, tmp: Path, sizes: list[int], concurrency: int) -> list[dict]:
    """Each size in a fresh process: traced peak during map, what the results retain, and the
    difference (the working memory of the job itself, which should not grow with rows)."""
    script = MEMORY_SCRIPT.format(root=str(ROOT), base_url=up.base_url)
    out = []
    for n in sizes:
        r = subprocess.run([sys.executable, "-c", script, str(n), str(concurrency), str(tmp / f"mem{n}")],
                           check=True, capture_output=True, text=True, timeout=1800)
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


OTHERS_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    def cpu():
        t = os.times()
        return t.user + t.system
    which, base_url, key, rows, latency, conc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
    msgs = [f"row {i}" for i in range(rows)]
    if which == "litellm":
        import litellm
        litellm.suppress_debug_info = True
        kw = dict(model=f"openai/lat-{latency}", api_base=base_url, api_key=key, max_retries=0)
        litellm.completion(messages=[{"role": "user", "content": "warm-up"}], **kw)
        c0, t = cpu(), time.perf_counter()
        res = litellm.batch_completion(messages=[[{"role": "user", "content": m}] for m in msgs], max_workers=conc, **kw)
        wall = time.perf_counter() - t
        ok = sum(1 for r in res if not isinstance(r, Exception) and r.choices[0].message.content)
    else:
        from langchain_openai import ChatOpenAI
        llm = ChatOpenAI(model=f"lat-{latency}", base_url=base_url, api_key=key, max_retries=0)
        llm.invoke("warm-up")
        c0, t = cpu(), time.perf_counter()
        res = llm.batch(msgs, config={"max_concurrency": conc}, return_exceptions=True)
        wall = time.perf_counter() - t
        ok = sum(1 for r in res if not isinstance(r, Exception) and r.content)
    import importlib.metadata as md
    version = md.version("litellm" if which == "litellm" else "langchain-openai")
    print(json.dumps({"wall_s": round(wall, 3), "ok": ok, "version": version,
                      "client_cpu_ms_per_row": round((cpu() - c0) / rows * 1000, 3)}))
""")


def others_venv(path: Path) -> Path | None:
    """A throwaway venv with litellm and langchain-openai; None (with a message) when pip fails."""
    py = path / "bin" / "python"
    if not (path / ".ok").exists():
        print(f"installing litellm and langchain-openai into a throwaway venv at {path} ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "--quiet", "litellm", "langchain-openai"], check=True,
                           timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"SKIPPED LiteLLM and LangChain: installing them failed ({exc}); offline?", flush=True)
            return None
        (path / ".ok").touch()
    return py


def bench_others(up: Upstream, venv: Path, rows: int, latency_ms: int, concurrency: int) -> dict:
    py = others_venv(venv)
    if py is None:
        return {"skipped": "install failed (offline?)"}
    out: dict = {}
    for which in ("litellm", "langchain"):
        up.reset()
        r = subprocess.run([str(py), "-c", OTHERS_SCRIPT, which, up.base_url, KEY, str(rows), str(latency_ms),
                            str(concurrency)], capture_output=True, text=True, timeout=1800, check=False,
                           env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
        if r.returncode != 0:
            out[which] = {"skipped": r.stderr.strip().splitlines()[-1][:300] if r.stderr.strip() else "failed"}
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        ideal = rows / concurrency * latency_ms / 1000
        out[which] = {**res, "ratio": round(res["wall_s"] / ideal, 3), "upstream": up.stats(),
                      "load_avg_1min_after": round(os.getloadavg()[0], 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--memory-rows", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--skip-others", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "bodhi-bench-others-venv"))
    args = ap.parse_args()
    up = Upstream()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            result: dict = {"rounds": []}
            for i in range(args.rounds):  # alternate the tools, so each sees the same machine load
                rnd = {"bodhi": bench_bodhi(up, tmp / f"round{i}", args.rows, args.latency_ms, args.concurrency)}
                if not args.skip_others:
                    rnd.update(bench_others(up, Path(args.venv), args.rows, args.latency_ms, args.concurrency))
                print(json.dumps(rnd, indent=1), flush=True)
                result["rounds"].append(rnd)
            result["median_ratio"] = {k: statistics.median(r[k]["ratio"] for r in result["rounds"])
                                      for k in result["rounds"][0] if "ratio" in result["rounds"][0][k]}
            result["median_client_cpu_ms_per_row"] = {
                k: statistics.median(r[k]["client_cpu_ms_per_row"] for r in result["rounds"])
                for k in result["rounds"][0] if "client_cpu_ms_per_row" in result["rounds"][0][k]}
            print(json.dumps({k: result[k] for k in ("median_ratio", "median_client_cpu_ms_per_row")}), flush=True)
            result["memory"] = bench_memory(up, tmp, args.memory_rows, args.concurrency)
            print(json.dumps(result["memory"], indent=1), flush=True)
    finally:
        up.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
