#!/usr/bin/env python3
"""Benchmark: the same workloads through `chromadb.HttpClient` against single-node Chroma
(`chroma run`) and a 3-node raftchroma cluster, on 127.0.0.1.

Owns: starting both servers in temp dirs (each process in its own process group, stopped
by pid / process group when the run ends, also on error, timeout or SIGTERM), generating
seeded data, timing the workloads, printing a table and writing
`bench/results/<UTC timestamp>.json`.

Must not: run unbounded (every loop is counted, every wait has a deadline, and a watchdog
alarm ends the run after --deadline-s), reach beyond 127.0.0.1, or stop processes it did
not start. The cluster comes from tests/harness.py, used read-only.

Run from anywhere:  python bench/ingest_and_query.py  [--help for sizes]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402

from tests.harness import ChromaRun, Cluster, http, make_cluster, start_cluster, wait_for  # noqa: E402

CONSISTENCY_HEADER = "X-Raftchroma-Read-Consistency"
LEADER_TIMEOUT_S = 60.0
CATCH_UP_TIMEOUT_S = 120.0
WARMUP_OPS = 5
QUERY_N_RESULTS = 10
RESULTS_DIR = REPO_ROOT / "bench" / "results"


class BenchTimeout(Exception):
    """The watchdog fired: the run took longer than --deadline-s."""


# ------------------------------------------------------------------ measurements


@dataclasses.dataclass
class Measurement:
    workload: str
    target: str
    unit: str  # "ops/s" or "records/s"
    operations: int
    records: int
    elapsed_s: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        amount = self.records if self.unit == "records/s" else self.operations
        return amount / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms)
        return {
            "workload": self.workload, "target": self.target, "unit": self.unit, "rate": round(self.rate, 2),
            "operations": self.operations, "records": self.records, "elapsed_s": round(self.elapsed_s, 3),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 2),
            "latency_ms_max": round(float(lat.max()), 2),
        }


def timed(operations: int, op: Callable[[int], Any],
          warmup: Callable[[int], Any] | None = None) -> tuple[float, list[float], list[Any]]:
    """Run `op(i)` for i in range(operations), one at a time; (elapsed s, latencies ms, outputs)."""
    for i in range(WARMUP_OPS if warmup else 0):
        warmup(i)
    latencies_ms, outputs = [], []
    start = time.perf_counter()
    for i in range(operations):
        t0 = time.perf_counter()
        outputs.append(op(i))
        latencies_ms.append((time.perf_counter() - t0) * 1000)
    return time.perf_counter() - start, latencies_ms, outputs


# ----------------------------------------------------------------------- servers


class ChromaServer(ChromaRun):
    """tests.harness.ChromaRun, started and ready in one call, with a client."""

    def start(self, allow_reset: bool = False) -> None:
        super().start(allow_reset)
        self.wait_ready()

    def client(self) -> Any:
        return chromadb.HttpClient(host="127.0.0.1", port=self.port, settings=Settings(anonymized_telemetry=False))


@dataclasses.dataclass
class Targets:
    """The clients each workload runs against, by display name."""

    chroma: Any
    leader: Any
    follower: Any
    follower_stale: Any
    cluster: Cluster
    leader_id: str
    follower_id: str


def raft_clients(cluster: Cluster, leader_id: str) -> tuple[str, Any, Any, Any]:
    follower_id = next(n for n in sorted(cluster.nodes) if n != leader_id)
    leader = cluster.node(leader_id).client(**{CONSISTENCY_HEADER: "linearizable"})
    follower = cluster.node(follower_id).client(**{CONSISTENCY_HEADER: "linearizable"})
    stale = cluster.node(follower_id).client(**{CONSISTENCY_HEADER: "stale"})
    return follower_id, leader, follower, stale


def raft_terms(cluster: Cluster) -> dict[str, Any]:
    out = {}
    for node_id in sorted(cluster.nodes):
        status = cluster.node(node_id).status(timeout_s=2.0) or {}
        out[node_id] = {"role": status.get("role"), "term": status.get("term"), "leader": status.get("leader")}
    return out


def wait_caught_up(cluster: Cluster, leader_id: str) -> float:
    """Wait until every node has applied what the leader has committed; returns the wait in s."""
    start = time.perf_counter()

    def caught_up() -> bool:
        leader = cluster.node(leader_id).status(timeout_s=2.0)
        statuses = [cluster.node(n).status(timeout_s=2.0) for n in cluster.nodes]
        if leader is None or any(s is None for s in statuses):
            return False
        return all(s["applied_index"] >= leader["commit_index"] for s in statuses)

    wait_for(caught_up, CATCH_UP_TIMEOUT_S, "every node to apply the leader's log", interval_s=0.1)
    return time.perf_counter() - start


# --------------------------------------------------------------------- workloads


def bench_single_adds(client: Any, target: str, args: argparse.Namespace) -> Measurement:
    collection = client.create_collection("single_adds_" + target.replace(" ", "_"))
    rng = np.random.default_rng(args.seed + 1)
    vectors = rng.random((args.single_adds + WARMUP_OPS, args.dim), dtype=np.float32)
    elapsed_s, lat, _ = timed(
        args.single_adds,
        lambda i: collection.add(ids=[f"s{i}"], embeddings=vectors[i:i + 1]),
        warmup=lambda i: collection.add(ids=[f"w{i}"], embeddings=vectors[args.single_adds + i:args.single_adds + i + 1]),
    )
    return Measurement("single-record add", target, "ops/s", args.single_adds, args.single_adds, elapsed_s, lat)


def ingest_vectors(args: argparse.Namespace) -> np.ndarray:
    return np.random.default_rng(args.seed).random((args.ingest_records, args.dim), dtype=np.float32)


def bench_ingest(client: Any, target: str, vectors: np.ndarray, args: argparse.Namespace) -> Measurement:
    collection = client.create_collection("ingest")
    starts = list(range(0, len(vectors), args.batch_size))

    def add_batch(b: int) -> None:
        lo = starts[b]
        hi = min(lo + args.batch_size, len(vectors))
        collection.add(ids=[f"v{i}" for i in range(lo, hi)], embeddings=vectors[lo:hi])

    elapsed_s, lat, _ = timed(len(starts), add_batch)
    workload = f"batched ingest ({args.batch_size}/batch)"
    return Measurement(workload, target, "records/s", len(starts), len(vectors), elapsed_s, lat)


def bench_gets(client: Any, target: str, args: argparse.Namespace) -> Measurement:
    collection = client.get_collection("ingest")
    picks = np.random.default_rng(args.seed + 2).integers(0, args.ingest_records, args.gets + WARMUP_OPS)
    elapsed_s, lat, out = timed(args.gets, lambda i: collection.get(ids=[f"v{picks[i]}"])["ids"],
                                warmup=lambda i: collection.get(ids=[f"v{picks[args.gets + i]}"]))
    missing = sum(1 for ids in out if len(ids) != 1)
    if missing:
        raise AssertionError(f"{target}: {missing} of {args.gets} gets by id found nothing")
    return Measurement("get by id", target, "ops/s", args.gets, args.gets, elapsed_s, lat)


def bench_queries(client: Any, target: str, args: argparse.Namespace) -> tuple[Measurement, list[list[str]]]:
    collection = client.get_collection("ingest")
    queries = np.random.default_rng(args.seed + 3).random((args.queries + WARMUP_OPS, args.dim), dtype=np.float32)
    elapsed_s, lat, out = timed(
        args.queries,
        lambda i: collection.query(query_embeddings=queries[i:i + 1], n_results=QUERY_N_RESULTS)["ids"][0],
        warmup=lambda i: collection.query(query_embeddings=queries[args.queries + i:args.queries + i + 1],
                                          n_results=QUERY_N_RESULTS),
    )
    return Measurement(f"query n_results={QUERY_N_RESULTS}", target, "ops/s", args.queries, args.queries, elapsed_s, lat), out


def bench_counts(client: Any, target: str, args: argparse.Namespace) -> Measurement:
    collection = client.get_collection("ingest")
    elapsed_s, lat, out = timed(args.counts, lambda i: collection.count(), warmup=lambda i: collection.count())
    wrong = [c for c in out if c != args.ingest_records]
    if wrong:
        raise AssertionError(f"{target}: count answered {wrong[0]}, expected {args.ingest_records}")
    return Measurement("count", target, "ops/s", args.counts, args.counts, elapsed_s, lat)


def top_k_agreement(reference: list[list[str]], other: list[list[str]]) -> float:
    """Mean overlap of two answers' top-k id sets, over the same queries."""
    overlaps = [len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(reference, other)]
    return round(float(np.mean(overlaps)), 4) if overlaps else float("nan")


def exact_top_k(vectors: np.ndarray, args: argparse.Namespace) -> list[list[str]]:
    """Brute-force top-k by squared L2 (Chroma's default space) for the measured queries."""
    queries = np.random.default_rng(args.seed + 3).random((args.queries, args.dim), dtype=np.float32)
    distances = (queries ** 2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors ** 2).sum(1)[None, :]
    best = np.argsort(distances, axis=1)[:, :QUERY_N_RESULTS]
    return [[f"v{i}" for i in row] for row in best]


def query_quality(answers: dict[str, list[list[str]]], vectors: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """HNSW is approximate: report each target's recall against brute force, and replica agreement."""
    exact = exact_top_k(vectors, args)
    leader, follower = answers["raftchroma leader (linearizable)"], answers["raftchroma follower (linearizable)"]
    return {
        "recall_at_10_vs_exact": {target: top_k_agreement(exact, ids) for target, ids in answers.items()},
        "top10_agreement_leader_vs_follower": top_k_agreement(leader, follower),
    }


# -------------------------------------------------------------------------- run


def read_targets(t: Targets) -> Iterator[tuple[str, Any]]:
    yield "chroma", t.chroma
    yield "raftchroma leader (linearizable)", t.leader
    yield "raftchroma follower (linearizable)", t.follower
    yield "raftchroma follower (stale)", t.follower_stale


def run_workloads(t: Targets, args: argparse.Namespace, log: Callable[[str], None]) -> tuple[list[Measurement], dict[str, Any]]:
    results: list[Measurement] = []
    notes: dict[str, Any] = {}
    for target, client in (("chroma", t.chroma), ("raftchroma leader", t.leader), ("raftchroma follower", t.follower)):
        log(f"single-record adds via {target}")
        results.append(bench_single_adds(client, target, args))
    vectors = ingest_vectors(args)
    for target, client in (("chroma", t.chroma), ("raftchroma leader", t.leader)):
        log(f"batched ingest of {args.ingest_records} via {target}")
        results.append(bench_ingest(client, target, vectors, args))
    notes["follower_catch_up_after_ingest_s"] = round(wait_caught_up(t.cluster, t.leader_id), 3)
    answers: dict[str, list[list[str]]] = {}
    for target, client in read_targets(t):
        log(f"gets, queries and counts via {target}")
        results.append(bench_gets(client, target, args))
        measurement, answers[target] = bench_queries(client, target, args)
        results.append(measurement)
        results.append(bench_counts(client, target, args))
    notes["query"] = query_quality(answers, vectors, args)
    return results, notes


def with_ratios(results: list[Measurement]) -> list[dict[str, Any]]:
    chroma_rate = {m.workload: m.rate for m in results if m.target == "chroma"}
    order = list(dict.fromkeys(m.workload for m in results))
    rows = []
    for m in sorted(results, key=lambda m: order.index(m.workload)):  # stable: targets keep their order
        row = m.summary()
        base = chroma_rate.get(m.workload)
        row["ratio_vs_chroma"] = None if m.target == "chroma" or not base else round(m.rate / base, 3)
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("workload", "target", "rate", "unit", "p50 ms", "p99 ms", "raftchroma/chroma")
    lines = [header]
    for r in rows:
        ratio = "" if r["ratio_vs_chroma"] is None else f"{r['ratio_vs_chroma']:.2f}"
        lines.append((r["workload"], r["target"], f"{r['rate']:.1f}", r["unit"], f"{r['latency_ms_p50']:.1f}",
                      f"{r['latency_ms_p99']:.1f}", ratio))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(widths[i]) if i < 2 or i == 3 else cell.rjust(widths[i])
                                     for i, cell in enumerate(line)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def environment() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "platform": platform.platform(), "chromadb": chromadb.__version__,
        "note": "servers (1 chroma, 3 raftchroma nodes) and the client share this machine",
    }


def write_results(report: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{report['started_utc']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dim", type=int, default=384, help="embedding dimension")
    p.add_argument("--single-adds", type=int, default=200, help="sequential one-record adds per target")
    p.add_argument("--ingest-records", type=int, default=10_000, help="records of the batched ingest")
    p.add_argument("--batch-size", type=int, default=500, help="records per add in the batched ingest")
    p.add_argument("--gets", type=int, default=300, help="gets by id per target")
    p.add_argument("--queries", type=int, default=200, help="queries per target")
    p.add_argument("--counts", type=int, default=300, help="counts per target")
    p.add_argument("--seed", type=int, default=42, help="seed of every generated vector and id pick")
    p.add_argument("--deadline-s", type=int, default=900, help="watchdog: abort (and clean up) after this long")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-temp", action="store_true", help="keep the servers' temp dir (logs, data) after success too")
    args = p.parse_args(argv)
    for name in ("dim", "single_adds", "ingest_records", "batch_size", "gets", "queries", "counts", "deadline_s"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def install_stop_handlers(deadline_s: int) -> None:
    def on_alarm(signum: int, frame: Any) -> None:
        raise BenchTimeout(f"the benchmark ran longer than --deadline-s={deadline_s}")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(deadline_s)


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    def log(message: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    started_utc = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    env_before = environment()
    chroma = ChromaServer(root)
    (root / "cluster").mkdir()
    cluster = make_cluster(root / "cluster")
    try:
        log(f"starting chroma run on 127.0.0.1:{chroma.port}")
        chroma.start()
        log("starting a 3-node raftchroma cluster")
        leader_id = start_cluster(cluster, timeout_s=LEADER_TIMEOUT_S)
        follower_id, leader, follower, stale = raft_clients(cluster, leader_id)
        targets = Targets(chroma.client(), leader, follower, stale, cluster, leader_id, follower_id)
        terms_before = raft_terms(cluster)
        results, notes = run_workloads(targets, args, log)
        notes["raft_before"], notes["raft_after"] = terms_before, raft_terms(cluster)
        notes["leader_changed"] = any(terms_before[n]["term"] != notes["raft_after"][n]["term"] for n in terms_before)
    except BaseException:
        print(f"raftchroma node logs (tail):\n{cluster.log_tail(15)}", file=sys.stderr)
        raise
    finally:
        signal.alarm(0)  # the watchdog must not interrupt the cleanup itself
        cluster.stop_all()
        chroma.stop()
    env = environment()
    env["load_average_before"] = env_before["load_average_1_5_15"]
    return {"started_utc": started_utc, "total_s": round(time.perf_counter() - t0, 1), "params": vars(args) | {
        "results_dir": str(args.results_dir)}, "environment": env, "leader": leader_id, "follower": follower_id,
        "notes": notes, "results": with_ratios(results)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_stop_handlers(args.deadline_s)
    root = Path(tempfile.mkdtemp(prefix="raftchroma-bench-"))
    try:
        report = run(args, root)
    except BaseException:
        print(f"benchmark failed; its servers are stopped, their logs and data are kept in {root}", file=sys.stderr)
        raise
    signal.alarm(0)
    if not args.keep_temp:
        shutil.rmtree(root, ignore_errors=True)
    print(format_table(report["results"]))
    notes = report["notes"]
    print(f"leader {report['leader']}, follower {report['follower']}; leader changed during the run: "
          f"{notes['leader_changed']}; follower caught up {notes['follower_catch_up_after_ingest_s']} s after ingest")
    print(f"query recall@{QUERY_N_RESULTS} vs brute force: {notes['query']['recall_at_10_vs_exact']}; "
          f"leader/follower top-{QUERY_N_RESULTS} agreement: {notes['query']['top10_agreement_leader_vs_follower']}")
    print(f"load average (1, 5, 15 min) before {report['environment']['load_average_before']}, "
          f"after {report['environment']['load_average_1_5_15']}")
    print(f"total {report['total_s']} s; results written to {write_results(report, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
