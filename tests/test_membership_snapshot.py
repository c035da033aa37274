"""Membership across snapshots: a node added after the leader compacted its log learns the cluster
from the snapshot it installs (the snapshot records the members, not just addresses), and keeps
that membership across its own restart, when the snapshot file is all it has of the log's past."""

from __future__ import annotations

import pytest

from tests.harness import http, make_cluster, start_cluster, wait_for

SNAPSHOT_MIN_ENTRIES = 20


def members_of(node) -> list[tuple[str, bool]]:  # noqa: ANN001 (NodeProcess)
    code, _, body = http("GET", node.url + "/raftchroma/members")
    assert code == 200
    return [(m["id"], m["voter"]) for m in body["members"]]


@pytest.mark.slow
def test_a_node_added_after_compaction_learns_the_membership_from_the_snapshot(tmp_path) -> None:  # noqa: ANN001
    cluster = make_cluster(tmp_path, raft_keys=f"snapshot_min_entries = {SNAPSHOT_MIN_ENTRIES}")
    try:
        leader = start_cluster(cluster)
        n4 = cluster.new_node("n4")  # added before it runs: its add entry is compacted away before it starts
        code, _, added = http("POST", cluster.node(leader).url + "/raftchroma/members",
                              {"id": "n4", "raft": f"127.0.0.1:{n4.raft_port}", "http": f"127.0.0.1:{n4.http_port}"})
        assert code == 200, added
        collection = cluster.node(leader).client().get_or_create_collection("compacted")
        for i in range(3 * SNAPSHOT_MIN_ENTRIES):
            collection.add(ids=[f"r{i}"], embeddings=[[float(i), 1.0]])
        wait_for(lambda: cluster.node(leader).answered_status()["snapshot_index"] > added["index"] + 1, 60,
                 "the leader to compact its log past the add entry")

        cluster.start("n4", args=("--join",))
        status = wait_for(lambda: (s := cluster.node("n4").status()) and s["snapshot_installs"] >= 1
                          and s["applied_index"] >= 3 * SNAPSHOT_MIN_ENTRIES and s, 60,
                          "n4 to install the leader's snapshot")
        # No membership entry in its log: the snapshot's record says which entry put it in force.
        assert status["member"] is True and status["voter"] is False and status["membership_index"] == added["index"]
        assert status["log_len"] < status["applied_index"] - added["index"]
        expected = [("n1", True), ("n2", True), ("n3", True), ("n4", False)]
        assert members_of(cluster.node("n4")) == expected
        assert cluster.node("n4").client().get_collection("compacted").count() == 3 * SNAPSHOT_MIN_ENTRIES

        cluster.kill("n4")
        cluster.start("n4")  # without --join: its data dir decides now
        wait_for(lambda: (s := cluster.node("n4").status()) and s["role"] != "unknown" and s["leader"] == leader,
                 60, "n4 to follow the leader again after its restart")
        assert members_of(cluster.node("n4")) == expected
        assert cluster.node("n4").answered_status()["voter"] is False
    finally:
        cluster.stop_all()
