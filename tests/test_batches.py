"""A batch is atomic to every reader: 40 s of 500-record adds and upserts through a follower, with
stale and linearizable readers on every node, show only whole batches; and no election happens
(Raft runs in its own process, so Chroma's GIL-bound work never stalls heartbeats)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
BATCH = 500
DIM = 8
RUN_S = 40.0
STALE = {"X-Raftchroma-Read-Consistency": "stale"}
LINEARIZABLE = {"X-Raftchroma-Read-Consistency": "linearizable"}


def batch_body(batch: int, version: int) -> dict[str, Any]:
    vectors = np.random.default_rng(batch * 1000 + version).random((BATCH, DIM), dtype=np.float32)
    return {"ids": [f"b{batch}-{i}" for i in range(BATCH)], "embeddings": vectors.tolist(),
            "metadatas": [{"batch": batch, "version": version}] * BATCH}


class Writer(threading.Thread):
    """Adds batch k, then upserts batch k-1 to a new version, until the deadline."""

    def __init__(self, url: str, collection_id: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.url, self.collection_id, self.deadline = url, collection_id, deadline
        self.batches = 0
        self.versions: dict[int, int] = {}
        self.errors: list[Any] = []

    def run(self) -> None:
        base = f"{self.url}{SCOPE}/collections/{self.collection_id}"
        while time.monotonic() < self.deadline:
            status, _, body = http("POST", base + "/add", batch_body(self.batches, 0), timeout_s=60)
            if status != 201:
                self.errors.append(("add", status, body))
                return
            self.versions[self.batches] = 0
            self.batches += 1
            if self.batches > 1:
                previous = self.batches - 2
                status, _, body = http("POST", base + "/upsert", batch_body(previous, self.versions[previous] + 1),
                                       timeout_s=60)
                if status != 200:
                    self.errors.append(("upsert", status, body))
                    return
                self.versions[previous] += 1


class Reader(threading.Thread):
    """Counts records and reads one batch at a time; notes every read that is not whole."""

    def __init__(self, url: str, collection_id: str, headers: dict[str, str], deadline: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.collection_id, self.headers, self.deadline = url, collection_id, headers, deadline
        self.random = np.random.default_rng(seed)
        self.reads = 0
        self.torn: list[Any] = []
        self.errors: list[Any] = []

    def run(self) -> None:
        base = f"{self.url}{SCOPE}/collections/{self.collection_id}"
        while time.monotonic() < self.deadline:
            status, _, count = http("GET", base + "/count", headers=self.headers, timeout_s=60)
            if status != 200:
                self.errors.append(("count", status, count))
                return
            self.reads += 1
            if count % BATCH:
                self.torn.append(("count", count))
            if count:
                self.check_batch(base, int(self.random.integers(count // BATCH)))

    def check_batch(self, base: str, batch: int) -> None:
        status, _, got = http("POST", base + "/get", {"where": {"batch": batch}, "include": ["metadatas"]},
                              headers=self.headers, timeout_s=60)
        if status != 200:
            self.errors.append(("get", status, got))
            return
        self.reads += 1
        versions = {m["version"] for m in got["metadatas"]}
        if len(got["ids"]) != BATCH or len(versions) != 1:
            self.torn.append(("batch", batch, len(got["ids"]), sorted(versions)))


def terms(cluster: Cluster) -> dict[str, tuple[int, int]]:
    out = {}
    for node_id, node in cluster.nodes.items():
        status = node.status(timeout_s=10)
        assert status is not None, node_id
        out[node_id] = (status["term"], status["leader_changes"])
    return out


@pytest.mark.slow
def test_readers_on_every_node_see_whole_batches_and_no_election_happens(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    try:
        leader = start_cluster(cluster)
        follower = next(n for n in cluster.nodes if n != leader)
        status, _, col = http("POST", cluster.node(follower).url + SCOPE + "/collections", {"name": "batches"})
        assert status == 200, col
        before = terms(cluster)
        deadline = time.monotonic() + RUN_S
        writer = Writer(cluster.node(follower).url, col["id"], deadline)
        readers = [Reader(node.url, col["id"], headers, deadline, seed)
                   for seed, (node, headers) in enumerate((n, h) for n in cluster.nodes.values()
                                                          for h in (STALE, LINEARIZABLE))]
        for thread in (writer, *readers):
            thread.start()
        for thread in (writer, *readers):
            thread.join(timeout=RUN_S + 120)
        after = terms(cluster)
        assert writer.errors == [] and writer.batches >= 5, (writer.errors, writer.batches)
        assert [r.errors for r in readers] == [[]] * len(readers)
        assert sum(r.reads for r in readers) >= 50
        assert [r.torn for r in readers] == [[]] * len(readers)
        assert after == before, f"elections during the run: {before} -> {after}"
    finally:
        cluster.stop_all()
