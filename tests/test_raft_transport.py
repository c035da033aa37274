"""The Raft transport: multi-MB entries replicate, single writes are prompt (hostile peers: test_raft_wire.py)."""

from __future__ import annotations

import numpy as np

from tests.harness import Cluster, wait_for


def test_multi_megabyte_entry_replicates_through_a_follower(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    col = cluster.node(follower).client().get_or_create_collection("big-entry")
    vectors = np.random.default_rng(3).random((2000, 384), dtype=np.float32)  # ~3 MB of float32
    col.add(ids=[f"b{i}" for i in range(2000)], embeddings=vectors)
    for node_id in cluster.nodes:
        got = cluster.node(node_id).client().get_collection("big-entry").get(ids=["b0", "b1999"], include=["embeddings"])
        assert got["ids"] == ["b0", "b1999"]
        assert np.array_equal(np.asarray(got["embeddings"], dtype=np.float32), vectors[[0, 1999]])


def test_sequential_single_writes_all_commit(cluster: Cluster) -> None:
    col = cluster.node("n2").client().get_or_create_collection("singles")
    for i in range(40):
        col.upsert(ids=[f"s{i}"], embeddings=[[float(i), 1.0]])
    counts = [cluster.node(n).client().get_collection("singles").count() for n in cluster.nodes]
    assert counts == [40, 40, 40]
    wait_for(lambda: len({cluster.node(n).answered_status()["applied_index"] for n in cluster.nodes}) == 1, 30,
             "all nodes to reach the same applied index")
