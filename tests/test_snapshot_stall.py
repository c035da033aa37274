"""A snapshot that takes longer than the election timeout to write does not stall heartbeats into
an election (PySyncObj hazard: its serializer runs in the tick thread, which sends heartbeats).

A large store is stood in for by `--test-snapshot-write-delay-s` (writing the snapshot takes
that much longer: 6 s, above the 4 s maximum election timeout). The second case is the proof
that the first one exercises the hazard: with `--test-snapshot-in-tick-thread` the tick thread
waits for the snapshot, as PySyncObj's own serializer makes it, and the cluster holds an election.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Cluster, make_cluster, start_cluster, wait_for

SNAPSHOT_MIN_ENTRIES = 40
WRITE_DELAY_S = 6.0  # above election_timeout_max_s (4 s by default)

pytestmark = pytest.mark.slow


def _terms(cluster: Cluster) -> dict[str, tuple[int, str]]:
    """(term, leader) of every node; a status call that times out on a busy machine is retried."""
    statuses = {n: wait_for(lambda: cluster.node(n).status(timeout_s=5), 30, f"{n}'s status") for n in cluster.nodes}
    return {n: (s["term"], s["leader"]) for n, s in statuses.items()}


def _highest_term(cluster: Cluster) -> int:
    return max(term for term, _ in _terms(cluster).values())


@pytest.mark.parametrize("in_tick_thread", [False, True], ids=["applier-thread", "tick-thread"])
def test_slow_snapshot_does_not_cause_an_election(tmp_path: Path, in_tick_thread: bool) -> None:
    serve_args = ("--fault-injection", "--test-snapshot-write-delay-s", str(WRITE_DELAY_S))
    if in_tick_thread:
        serve_args += ("--test-snapshot-in-tick-thread",)
    cluster = make_cluster(tmp_path, raft_keys=f"snapshot_min_entries = {SNAPSHOT_MIN_ENTRIES}", serve_args=serve_args)
    try:
        leader = start_cluster(cluster)
        col = cluster.node(leader).client().get_or_create_collection("stall")
        before = _terms(cluster)
        assert {leader_id for _, leader_id in before.values()} == {leader}
        for i in range(SNAPSHOT_MIN_ENTRIES + 10):
            col.upsert(ids=[f"r{i}"], embeddings=[[float(i), 1.0]])
        if in_tick_thread:
            term_before = max(term for term, _ in before.values())
            wait_for(lambda: _highest_term(cluster) > term_before, 60, "an election caused by the stalled tick thread")
            return
        for node_id in cluster.nodes:
            wait_for(lambda: (cluster.node(node_id).status() or {}).get("snapshot_index", 0) > 0, 60,
                     f"{node_id} to snapshot")
        col.upsert(ids=["after"], embeddings=[[0.0, 0.0]])
        assert _terms(cluster) == before  # same term, same leader, on every node
        assert col.count() == SNAPSHOT_MIN_ENTRIES + 11
    finally:
        cluster.stop_all()
