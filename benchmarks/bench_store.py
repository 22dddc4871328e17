"""Store benchmark: KEK derivation, encryptions per second, routing-style lookups.

Run: .venv/bin/python benchmarks/bench_store.py [--models 1000] [--per-model 20]
Writes benchmarks/results/store.json and prints a table.
Targets: KDF <= 1 s once, >= 2,000 encrypt/s, lookup <= 50 us.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bodhi_nb.objs import ApiModelAlias  # noqa: E402
from bodhi_nb.services.db import ConfigStore, LockedJSONStorage  # noqa: E402
from bodhi_nb.services.db import _encryption as enc  # noqa: E402

SECRET = "benchmark-master-secret-0123456789"


def bench_kdf() -> float:
    t = time.perf_counter()
    enc.derive_kek(SECRET, enc.new_salt(), enc.PBKDF2_ITERATIONS)
    return time.perf_counter() - t


def bench_encrypt(n: int = 5000) -> tuple[float, float]:
    c = enc.RecordCipher(enc.derive_kek(SECRET, b"s" * 32, 1000))
    t = time.perf_counter()
    tokens = [c.encrypt("sk-benchmark-key-0123456789abcdef", f"r{i}", "api_key") for i in range(n)]
    enc_rate = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i, tok in enumerate(tokens):
        c.decrypt(tok, f"r{i}", "api_key")
    return enc_rate, n / (time.perf_counter() - t)


def populate(home: Path, n_models: int, per_model: int) -> ConfigStore:
    db = ConfigStore(home, SECRET)
    # Bulk-load through the storage in one write (create() rewrites the file per record).
    storage = LockedJSONStorage(db.path)
    data = storage.snapshot()
    cipher = db._cipher  # noqa: SLF001 - benchmark only
    table = data.setdefault("api_model_aliases", {})
    for i in range(n_models):
        a = ApiModelAlias(id=f"prov{i}", base_url=f"http://127.0.0.1:{10000 + i}/v1",
                          models=[f"model-{i}-{j}" for j in range(per_model)],
                          prefix=f"p{i}/" if i % 2 else None)
        doc = a.model_dump(mode="json")
        doc["api_key"] = cipher.encrypt(f"sk-bench-{i:06d}-abcdefgh", a.id, "api_key")
        table[a.id] = doc
    storage.write(data)
    return db


def bench_lookup(db: ConfigStore, n_models: int, per_model: int, n: int = 20000) -> dict[str, float]:
    names = [(f"p{i}/" if i % 2 else "") + f"model-{i}-{i % per_model}" for i in range(n_models)]
    assert db.find_by_served_name(names[0])  # builds the index once
    samples = []
    for k in range(n):
        name = names[k % len(names)]
        t = time.perf_counter_ns()
        hit = db.find_by_served_name(name)
        samples.append(time.perf_counter_ns() - t)
        assert hit
    samples.sort()
    return {"p50_us": samples[len(samples) // 2] / 1000, "p99_us": samples[int(len(samples) * 0.99)] / 1000,
            "mean_us": statistics.fmean(samples) / 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--per-model", type=int, default=20)
    args = ap.parse_args()
    os.environ["BODHI_NO_KEYRING"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        kdf = bench_kdf()
        enc_rate, dec_rate = bench_encrypt()
        t = time.perf_counter()
        db = populate(Path(tmp), args.models, args.per_model)
        load = time.perf_counter() - t
        t = time.perf_counter()
        db.find_by_served_name("model-0-0")
        index = time.perf_counter() - t
        look = bench_lookup(db, args.models, args.per_model)
    res = {
        "kdf_seconds": round(kdf, 4),
        "encrypt_per_s": round(enc_rate),
        "decrypt_per_s": round(dec_rate),
        "models": args.models, "per_model": args.per_model,
        "populate_seconds": round(load, 3),
        "index_build_seconds": round(index, 4),
        "lookup": {k: round(v, 2) for k, v in look.items()},
    }
    out = Path(__file__).parent / "results" / "store.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    targets = [("KDF <= 1 s", kdf <= 1.0), (">= 2,000 encrypt/s", enc_rate >= 2000),
               ("lookup p50 <= 50 us", look["p50_us"] <= 50)]
    for name, ok in targets:
        print(f"{'PASS' if ok else 'MISS'}  {name}")


if __name__ == "__main__":
    main()
