"""Sustained batch ingest through a follower must not starve Raft heartbeats."""

from __future__ import annotations

import numpy as np
import pytest

from tests.harness import Cluster

TOTAL_RECORDS = 20_000
BATCH_SIZE = 500
DIM = 384


@pytest.mark.slow
def test_sustained_ingest_through_a_follower_causes_no_election(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    terms_before = {n: cluster.node(n).answered_status()["term"] for n in cluster.nodes}
    col = cluster.node(follower).client().create_collection("ingest")
    rng = np.random.default_rng(7)
    for start in range(0, TOTAL_RECORDS, BATCH_SIZE):
        vectors = rng.random((BATCH_SIZE, DIM), dtype=np.float32)
        col.add(ids=[f"v{i}" for i in range(start, start + BATCH_SIZE)], embeddings=vectors)
    statuses = {n: cluster.node(n).answered_status() for n in cluster.nodes}
    assert {n: s["term"] for n, s in statuses.items()} == terms_before, {
        n: (s["term"], s["late_ticks"], s["longest_tick_overrun_s"]) for n, s in statuses.items()}
    assert {s["leader"] for s in statuses.values()} == {leader}
    for node_id in cluster.nodes:
        assert cluster.node(node_id).client().get_collection("ingest").count() == TOTAL_RECORDS
