"""Local embeddings benchmark: texts per second through the bodhi_nb HTTP gateway (a real Jupyter
server with the extension) vs the same llama_cpp.server engine called directly, interleaved.

Run: .venv/bin/python benchmarks/bench_embeddings.py [--rounds 12] [--batch 16] [--threads 2]
Writes benchmarks/results/embeddings.json. Target: gateway >= 0.95x direct (float vectors, the
same batch of texts each way, back to back, the order flipped every round; the median of the
per-round ratios, so a busy machine slows both legs of a round alike). Also measured: the
gateway with encoding_format=base64 (which it encodes itself, since llama.cpp answers floats
only), `Bodhi.embed` in-process, and CPU seconds per request in the engine and in the Jupyter
server (the gateway's own work, which no other load on the machine changes).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_gateway import _free_port, wait_ready  # noqa: E402
from bodhi_nb.services.local_models import BUILTIN_ALIAS  # noqa: E402

WORDS = ("harbour boats dusk bread oven river market stock price cat mat rain window garden letter train "
         "station mountain snow lamp book music kitchen coffee morning city bridge field song").split()


def texts(round_no: int, n: int) -> list[str]:
    """n different sentences of 12 words; new ones every round."""
    out = []
    for i in range(n):
        k = round_no * 997 + i * 31
        out.append(" ".join(WORDS[(k + j * 7) % len(WORDS)] for j in range(12)) + f" ({round_no}.{i})")
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_post(client: httpx.Client, url: str, headers: dict[str, str], body: dict) -> float:
    t = time.perf_counter()
    r = client.post(url, headers=headers, json=body)
    dt = time.perf_counter() - t
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["data"]) == len(body["input"])
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("BODHI_NO_KEYRING", "1")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        port, token = _free_port(), secrets.token_hex(16)
        env = {**os.environ, "BODHI_HOME": str(tmp / "bodhi"), "BODHI_ENCRYPTION_KEY": "benchmark-master-secret-xyz",
               "JUPYTER_RUNTIME_DIR": str(tmp / "rt"), "HF_HOME": str(tmp / "hf")}
        srv = subprocess.Popen([sys.executable, "-m", "jupyter_server", f"--port={port}", "--ip=127.0.0.1",
                                "--ServerApp.open_browser=False", f"--IdentityProvider.token={token}",
                                "--ServerApp.jpserver_extensions={'bodhi_nb': True}", "--allow-root",
                                f"--BodhiExtension.n_threads={args.threads}", "--log-level=WARN"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gw = f"http://127.0.0.1:{port}/bodhi/v1"
        gw_headers = {"Authorization": f"Bearer {token}"}
        try:
            wait_ready(f"{gw}/models", gw_headers, srv)
            client = httpx.Client(trust_env=False, timeout=600)
            t = time.perf_counter()
            timed_post(client, f"{gw}/embeddings", gw_headers, {"model": BUILTIN_ALIAS, "input": ["warm up"]})
            cold = time.perf_counter() - t  # engine start in embedding mode + first request
            state = json.loads((tmp / "bodhi" / "engine.json").read_text())
            direct = f"http://127.0.0.1:{state['port']}/v1/embeddings"
            d_headers = {"Authorization": f"Bearer {state['api_key']}"}
            rates: dict[str, list[float]] = {"direct": [], "gateway": [], "gateway_base64": []}
            seconds: dict[str, float] = {}
            ratios: dict[str, list[float]] = {"gateway": [], "gateway_base64": []}
            cpu: dict[str, list[float]] = {"engine_direct": [], "engine_gateway": [], "server_gateway": [],
                                           "server_gateway_base64": []}
            for r in range(args.rounds + 1):
                batch = texts(r, args.batch)
                body = {"model": BUILTIN_ALIAS, "input": batch}
                legs = [("direct", direct, d_headers, body), ("gateway", f"{gw}/embeddings", gw_headers, body),
                        ("gateway_base64", f"{gw}/embeddings", gw_headers, {**body, "encoding_format": "base64"})]
                if r % 2:
                    legs.reverse()
                for name, url, headers, b in legs:
                    e0, s0 = cpu_s(state["pid"]), cpu_s(srv.pid)
                    seconds[name] = timed_post(client, url, headers, b)
                    e1, s1 = cpu_s(state["pid"]), cpu_s(srv.pid)
                    if r:  # round 0 warms up
                        rates[name].append(len(batch) / seconds[name])
                        cpu["engine_direct" if name == "direct" else "engine_gateway"].append(e1 - e0)
                        if name != "direct":
                            cpu[f"server_{name}"].append(s1 - s0)
                if r:
                    for name in ratios:
                        ratios[name].append(seconds["direct"] / seconds[name])
            # In-process: Bodhi.embed on the same engine (shared through BODHI_HOME).
            os.environ["BODHI_HOME"] = str(tmp / "bodhi")
            os.environ["BODHI_ENCRYPTION_KEY"] = "benchmark-master-secret-xyz"
            from bodhi_nb.notebook.client import Bodhi

            b = Bodhi(tmp / "bodhi", n_threads=args.threads)
            try:
                facade = []
                for r in range(args.rounds):
                    batch = texts(100 + r, args.batch)
                    t = time.perf_counter()
                    vecs = b.embed(batch, BUILTIN_ALIAS, progress=False)
                    facade.append(len(batch) / (time.perf_counter() - t))
                    assert len(vecs) == len(batch)
            finally:
                b.close()
            client.close()
        finally:
            srv.terminate()
            srv.wait(30)
    med = {k: statistics.median(v) for k, v in rates.items()}
    res = {"model": BUILTIN_ALIAS, "threads": args.threads, "batch": args.batch, "rounds": args.rounds,
           "cold_start_and_first_request_s": round(cold, 3),
           "texts_per_s": {k: round(v, 2) for k, v in med.items()},
           "bodhi_embed_texts_per_s": round(statistics.median(facade), 2),
           "ratio_of_medians_gateway_vs_direct": round(med["gateway"] / med["direct"], 3),
           "ratio_gateway_vs_direct": round(statistics.median(ratios["gateway"]), 3),
           "ratio_gateway_base64_vs_direct": round(statistics.median(ratios["gateway_base64"]), 3),
           "cpu_s_per_request_median": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
           "load_average_after": os.getloadavg()[0],
           "all": {k: [round(x, 2) for x in v] for k, v in rates.items()},
           "all_ratios": {k: [round(x, 3) for x in v] for k, v in ratios.items()}}
    out = Path(__file__).parent / "results" / "embeddings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "all"}, indent=2))
    print(f"{'PASS' if res['ratio_gateway_vs_direct'] >= 0.95 else 'MISS'}  gateway >= 0.95x direct")


if __name__ == "__main__":
    main()
