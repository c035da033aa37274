"""How long a backup pauses the applier, for a store of a given size (default 40k x 384-d vectors).

Starts a 3-node raftchroma cluster (tests/harness.py) in a temp dir, ingests the vectors through
the leader in batches, then takes a backup from a follower with `raftchroma backup` while a writer
adds one record at a time through that same follower (the worst case: its answers wait for the
copy). Reports the archive's size, the applier pause the archive records, the total backup time,
and the writer's slowest write during the backup against its median outside it. Writes JSON to
bench/results/. Stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import http, make_cluster, start_cluster  # noqa: E402

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"


def add(url: str, collection_id: str, ids: list[str], vectors: np.ndarray) -> int:
    status, _, body = http("POST", f"{url}{SCOPE}/collections/{collection_id}/add",
                           {"ids": ids, "embeddings": vectors.tolist()}, timeout_s=300)
    assert status == 201, body
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="raftchroma-backupbench-"))
    cluster = make_cluster(root)
    try:
        leader = start_cluster(cluster)
        follower = sorted(n for n in cluster.nodes if n != leader)[0]
        status, _, col = http("POST", cluster.node(leader).url + SCOPE + "/collections", {"name": "bench"})
        rng = np.random.default_rng(1)
        started = time.monotonic()
        for first in range(0, args.records, args.batch):
            n = min(args.batch, args.records - first)
            add(cluster.node(leader).url, col["id"], [f"r{first + k}" for k in range(n)],
                rng.standard_normal((n, args.dim)).astype(np.float32))
        ingest_s = time.monotonic() - started
        latencies: list[tuple[float, float]] = []  # (start, seconds)
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                t0 = time.monotonic()
                add(cluster.node(follower).url, col["id"], [f"w{i}"], rng.standard_normal((1, args.dim)).astype(np.float32))
                latencies.append((t0, time.monotonic() - t0))
                i += 1

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        time.sleep(2.0)  # a baseline of writes before the backup, not synchronisation
        archive = root / "bench.backup"
        b0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "raftchroma", "backup", "--to", str(archive),
                               "--url", cluster.node(follower).url], capture_output=True, text=True, timeout=1800)
        b1 = time.monotonic()
        time.sleep(2.0)  # a baseline after it
        stop.set()
        thread.join(timeout=300)
        assert done.returncode == 0, done.stderr
        meta = json.loads(archive.read_bytes().split(b"\n", 2)[1])
        during = [s for t0, s in latencies if b0 <= t0 <= b1 or t0 <= b0 <= t0 + s]
        outside = [s for t0, s in latencies if t0 + s < b0 or t0 > b1]
        result = {
            "records": args.records, "dim": args.dim, "ingest_s": round(ingest_s, 1),
            "archive_bytes": archive.stat().st_size, "store_bytes": meta["store_bytes"],
            "applier_pause_s": meta["applier_pause_s"], "backup_s": round(b1 - b0, 2),
            "writes_during_backup": len(during),
            "slowest_write_during_backup_s": round(max(during), 3) if during else None,
            "median_write_outside_s": round(statistics.median(outside), 4) if outside else None,
        }
        print(json.dumps(result, indent=2))
        out = REPO / "bench" / "results" / f"backup-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        cluster.stop_all()


if __name__ == "__main__":
    main()
