"""The physical bound of a 3-replica ingest on this machine: three embedded Chroma stores
(chromadb.PersistentClient), one per process, ingesting the same records in the same batches at
the same time. No network, no Raft: whatever raftchroma's replication costs on top is the gap.

Owns: the store process (`python -m bench.bound ...`: load, say ready, wait for "go" on stdin,
ingest, write its timings as JSON) and the launcher that runs three of them, each in its own
process group, killed by process group if anything goes wrong. Must not: leave one running.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.harness import kill_group, wait_for

from bench.options import REPO_ROOT, Options

STORES = 3
READY_TIMEOUT_S = 120.0
INGEST_TIMEOUT_S = 1_200.0


def vectors(records: int, dim: int, seed: int) -> np.ndarray:
    """The ingest's records: the same seed gives the same vectors in every process."""
    return np.random.default_rng(seed).random((records, dim), dtype=np.float32)


# ------------------------------------------------------------------ the store process


def store_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="one embedded store of the physical bound")
    for name in ("path", "ready", "out"):
        p.add_argument("--" + name, type=Path, required=True)
    for name in ("records", "dim", "batch-size", "seed"):
        p.add_argument("--" + name, type=int, required=True)
    args = p.parse_args(argv)
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(args.path), settings=Settings(anonymized_telemetry=False))
    collection = client.create_collection("ingest")
    data = vectors(args.records, args.dim, args.seed)
    args.ready.write_text("ready\n")
    if sys.stdin.readline().strip() != "go":
        sys.exit("bench.bound: stdin closed before go")
    started = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on one machine
    latencies_ms = []
    for lo in range(0, args.records, args.batch_size):
        hi = min(lo + args.batch_size, args.records)
        t0 = time.perf_counter()
        collection.add(ids=[f"v{i}" for i in range(lo, hi)], embeddings=data[lo:hi])
        latencies_ms.append((time.perf_counter() - t0) * 1000)
    ended = time.monotonic()
    result = {"started_monotonic": started, "ended_monotonic": ended, "records": args.records,
              "count": collection.count(), "latencies_ms": latencies_ms}
    args.out.write_text(json.dumps(result))


# ------------------------------------------------------------------------ launcher


def run_bound(root: Path, options: Options, log: Any) -> dict[str, Any]:
    """Three stores ingest `options.records` at once; per-store and all-three rates in vec/s."""
    root.mkdir(parents=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(STORES):
            procs.append(_spawn(root / f"store{k}", options))
        log(f"physical bound: {STORES} embedded stores loading")
        wait_for(lambda: _all_ready(root, procs), READY_TIMEOUT_S, "the bound's stores to be ready", interval_s=0.1)
        for proc in procs:
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        for proc in procs:
            if proc.wait(timeout=INGEST_TIMEOUT_S) != 0:
                raise RuntimeError(f"a bound store exited with {proc.returncode}; see {root}")
        results = [json.loads((root / f"store{k}" / "result.json").read_text()) for k in range(STORES)]
    finally:
        for proc in procs:
            kill_group(proc)
    return _summarise(results, options.records) | {"pids": [proc.pid for proc in procs]}


def _spawn(store_dir: Path, options: Options) -> subprocess.Popen[bytes]:
    store_dir.mkdir()
    cmd = [sys.executable, "-m", "bench.bound", "--path", str(store_dir / "chroma"),
           "--ready", str(store_dir / "ready"), "--out", str(store_dir / "result.json"),
           "--records", str(options.records), "--dim", str(options.dim),
           "--batch-size", str(options.batch_size), "--seed", str(options.seed)]
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    with open(store_dir / "store.log", "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, cwd=store_dir)


def _all_ready(root: Path, procs: list[subprocess.Popen[bytes]]) -> bool:
    for k, proc in enumerate(procs):
        if proc.poll() is not None:
            raise RuntimeError(f"bound store {k} exited with {proc.returncode} while loading; "
                               f"see {root / f'store{k}' / 'store.log'}")
    return all((root / f"store{k}" / "ready").exists() for k in range(len(procs)))


def _summarise(results: list[dict[str, Any]], records: int) -> dict[str, Any]:
    for r in results:
        if r["count"] != records:
            raise AssertionError(f"a bound store holds {r['count']} records, expected {records}")
    per_store = [records / (r["ended_monotonic"] - r["started_monotonic"]) for r in results]
    span_s = max(r["ended_monotonic"] for r in results) - min(r["started_monotonic"] for r in results)
    latencies = [ms for r in results for ms in r["latencies_ms"]]
    return {"stores": len(results), "records": records, "per_store_vec_per_s": [round(v, 1) for v in per_store],
            "all_three_vec_per_s": round(records / span_s, 1), "span_s": round(span_s, 3),
            "batch_latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
            "batch_latency_ms_p99": round(float(np.percentile(latencies, 99)), 2)}


if __name__ == "__main__":
    store_main()
