"""Restart and snapshot-install times for a large store (default 100k x 384-d vectors).

Starts a 3-node raftchroma cluster (tests/harness.py) in a temp dir, ingests the vectors through
the real chromadb client in batches, waits for every node to hold a snapshot, then measures:
  - restart: once the follower's store is marked clean (idle), SIGKILL it, start it, time until
    it answers a linearizable count correctly (the kept-store fast path);
  - install: SIGKILL a follower, delete its data dir, start it, time until it has caught up by
    snapshot install and answers the count.
Prints a table and writes JSON to bench/results/. Stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import http, make_cluster, start_cluster, wait_for  # noqa: E402

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}


def count_on(url: str, collection_id: str) -> int | None:
    try:
        status, _, body = http("GET", f"{url}{SCOPE}/collections/{collection_id}/count", headers=LIN, timeout_s=5)
    except OSError:
        return None
    return body if status == 200 else None


def timed_recovery(cluster, node_id: str, collection_id: str, expected: int, wipe: bool) -> float:
    cluster.kill(node_id)
    if wipe:
        shutil.rmtree(cluster.root / "data" / node_id)
    started = time.monotonic()
    cluster.start(node_id)
    wait_for(lambda: count_on(cluster.node(node_id).url, collection_id) == expected, 900,
             f"{node_id} to serve {expected} records", interval_s=0.1)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--snapshot-min-entries", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="raftchroma-snapbench-"))
    cluster = make_cluster(root, raft_keys=f"snapshot_min_entries = {args.snapshot_min_entries}",
                           cluster_keys="write_timeout_s = 120.0\nread_timeout_s = 60.0")
    try:
        leader = start_cluster(cluster)
        follower = next(n for n in cluster.nodes if n != leader)
        col = cluster.node(leader).client().create_collection("big")
        terms_before = {n: cluster.node(n).status()["term"] for n in cluster.nodes}
        rng = np.random.default_rng(1)
        started = time.monotonic()
        for start in range(0, args.records, args.batch):
            col.add(ids=[f"v{i}" for i in range(start, start + args.batch)],
                    embeddings=rng.random((args.batch, args.dim), dtype=np.float32))
        ingest_s = time.monotonic() - started
        for node_id in cluster.nodes:
            wait_for(lambda: cluster.node(node_id).status()["snapshot_index"] > 0, 600, f"{node_id} to snapshot")
        terms_after = {n: cluster.node(n).status()["term"] for n in cluster.nodes}
        wait_for(lambda: cluster.node(follower).status()["store_clean"], 120, "the follower's store to be clean")
        status = cluster.node(follower).status()
        restart_s = timed_recovery(cluster, follower, str(col.id), args.records, wipe=False)
        kept_index = cluster.node(follower).status()["store_kept_index"]
        install_s = timed_recovery(cluster, follower, str(col.id), args.records, wipe=True)
        result = {
            "records": args.records, "dim": args.dim, "batch": args.batch, "ingest_s": round(ingest_s, 1),
            "snapshot_bytes": status["snapshot_bytes"], "journal_bytes": status["journal_bytes"],
            "log_len": status["log_len"], "restart_to_serving_s": round(restart_s, 1),
            "restart_kept_store_at_index": kept_index,
            "terms_before_ingest": terms_before, "terms_after_ingest_and_snapshots": terms_after,
            "fresh_node_snapshot_install_to_serving_s": round(install_s, 1),
            "date": time.strftime("%Y-%m-%d"), "cores": __import__("os").cpu_count(),
        }
        print(json.dumps(result, indent=2))
        out = REPO / "bench" / "results" / f"snapshot-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
