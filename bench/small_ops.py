#!/usr/bin/env python3
"""Many small operations, one client at a time: what Chroma's own client tests do (issue 12).

Owns: a loop of the small calls those tests make (a new client, reset, create a collection, add
1-10 records, get, query, count, list and delete collections), timed per call through
`chromadb.HttpClient` against `chroma run` and against a FOLLOWER of a 3-node raftchroma cluster
(both from tests/harness.py, `allow_reset` on); per-op p50/p90 and totals are printed and written
to `bench/results/small-ops-<UTC stamp>.json`. `--profile` runs `py-spy record` on the follower
and the leader (each with its Raft child) while the raftchroma loop runs.

Must not: stop processes it did not start (the harness kills exactly its own process groups;
py-spy is stopped by its pid), run unbounded (every wait has a deadline), or reach beyond
127.0.0.1. Embeddings are given explicitly, so no embedding model is loaded.

Run:  python bench/small_ops.py [--iterations 200] [--target both|raftchroma|chroma] [--profile]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402

from tests.harness import ChromaRun, make_cluster, start_cluster  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
CLUSTER_KEYS = "write_timeout_s = 30.0\nread_timeout_s = 30.0"
LEADER_TIMEOUT_S = 60.0
DIMENSION = 8
RECORDS_MAX = 10
PROFILE_RATE_HZ = 250
PYSPY_STOP_TIMEOUT_S = 60.0
OPS = ("client", "reset", "create_collection", "add", "get", "query", "count", "list_collections",
       "delete_collection")


def run_loop(port: int, iterations: int, seed: int) -> dict[str, list[float]]:
    """The op mix, `iterations` times; seconds per call, by op."""
    rng = random.Random(seed)
    timings: dict[str, list[float]] = {op: [] for op in OPS}

    def timed(op: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = fn()
        timings[op].append(time.perf_counter() - started)
        return value

    settings = Settings(anonymized_telemetry=False, allow_reset=True)
    for i in range(iterations):
        client = timed("client", lambda: chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings))
        timed("reset", client.reset)
        col = timed("create_collection", lambda: client.create_collection(f"col{i}", embedding_function=None))
        count = rng.randint(1, RECORDS_MAX)
        ids = [f"id{k}" for k in range(count)]
        vectors = [[rng.random() for _ in range(DIMENSION)] for _ in range(count)]
        timed("add", lambda: col.add(ids=ids, embeddings=vectors, documents=[f"doc {k}" for k in ids],
                                    metadatas=[{"k": k} for k in range(count)]))
        got = timed("get", lambda: col.get(ids=ids[:2]))
        assert len(got["ids"]) == min(2, count), got
        timed("query", lambda: col.query(query_embeddings=[vectors[0]], n_results=min(3, count)))
        assert timed("count", col.count) == count
        timed("list_collections", client.list_collections)
        timed("delete_collection", lambda: client.delete_collection(f"col{i}"))
    return timings


def summarize(timings: dict[str, list[float]], wall_s: float) -> dict[str, Any]:
    ops = {}
    for op, seconds in timings.items():
        ordered = sorted(seconds)
        ops[op] = {"calls": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 2),
                   "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 2),
                   "total_s": round(sum(ordered), 3)}
    return {"wall_s": round(wall_s, 2), "ops": ops}


def start_pyspy(pid: int, out: Path, duration_s: int) -> subprocess.Popen[bytes]:
    cmd = ["py-spy", "record", "--pid", str(pid), "--subprocesses", "--idle", "--threads", "--format", "raw",
           "--rate", str(PROFILE_RATE_HZ), "--duration", str(duration_s), "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_pyspy(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        process.wait(timeout=PYSPY_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bench_chroma(root: Path, iterations: int, seed: int) -> dict[str, Any]:
    chroma = ChromaRun(root / "chroma")
    try:
        chroma.start(allow_reset=True)
        chroma.wait_ready()
        started = time.monotonic()
        timings = run_loop(chroma.port, iterations, seed)
        return summarize(timings, time.monotonic() - started)
    finally:
        chroma.stop()


def bench_raftchroma(root: Path, iterations: int, seed: int, profile_dir: Path | None) -> dict[str, Any]:
    (root / "cluster").mkdir(parents=True)
    cluster = make_cluster(root / "cluster", cluster_keys=CLUSTER_KEYS, allow_reset=True)
    spies: list[subprocess.Popen[bytes]] = []
    try:
        leader = start_cluster(cluster, timeout_s=LEADER_TIMEOUT_S)
        follower = sorted(n for n in cluster.nodes if n != leader)[0]
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            for role, node_id in (("follower", follower), ("leader", leader)):
                spies.append(start_pyspy(cluster.node(node_id).process.pid, profile_dir / f"{role}.txt", 3600))
        started = time.monotonic()
        timings = run_loop(cluster.node(follower).http_port, iterations, seed)
        summary = summarize(timings, time.monotonic() - started)
        summary["status"] = {n: _status_summary(cluster.node(n).status(timeout_s=5.0)) for n in sorted(cluster.nodes)}
        return summary
    finally:
        for spy in spies:
            stop_pyspy(spy)
        cluster.stop_all()


def _status_summary(status: dict[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {}
    return {k: status.get(k) for k in ("role", "term", "leader_changes", "commit_index", "applied_index",
                                       "group_commit")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--target", choices=("both", "raftchroma", "chroma"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="py-spy the follower and the leader (raw format)")
    parser.add_argument("--label", default="", help="recorded in the JSON (e.g. 'before', 'after')")
    args = parser.parse_args()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {"iterations": args.iterations, "seed": args.seed, "label": args.label,
                              "load_before": os.getloadavg(), "targets": {}}
    with tempfile.TemporaryDirectory(prefix="small-ops-") as tmp:
        root = Path(tmp)
        if args.target in ("both", "chroma"):
            report["targets"]["chroma run"] = bench_chroma(root, args.iterations, args.seed)
        if args.target in ("both", "raftchroma"):
            profile_dir = RESULTS_DIR / f"small-ops-{stamp}-pyspy" if args.profile else None
            report["targets"]["raftchroma follower"] = bench_raftchroma(root, args.iterations, args.seed, profile_dir)
    report["load_after"] = os.getloadavg()
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"small-ops-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {out}")


def print_table(report: dict[str, Any]) -> None:
    targets = report["targets"]
    print(f"{'op':<20}" + "".join(f"{name + ' p50 ms':>26}{'total s':>10}" for name in targets))
    for op in OPS:
        print(f"{op:<20}" + "".join(f"{t['ops'][op]['p50_ms']:>26}{t['ops'][op]['total_s']:>10}"
                                    for t in targets.values()))
    print(f"{'wall':<20}" + "".join(f"{'':>26}{t['wall_s']:>10}" for t in targets.values()))


if __name__ == "__main__":
    main()
