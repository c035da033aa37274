"""Membership changes where something goes wrong, each from a reviewer's reproduction on a real
cluster: a change lost to a full disk must not block every later change; a joiner whose file marks
earlier joiners must still reach a leader among them; a node that kept campaigning after its
removal is refused by `raftchroma cluster add` until it starts empty."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

RAFT_KEYS = "election_timeout_min_s = 1.5\nelection_timeout_max_s = 3.0"  # no stray elections on a busy machine


def add(cluster: Cluster, leader: str, node_id: str) -> tuple[int, dict]:
    node = cluster.node(node_id)
    code, _, body = http("POST", cluster.node(leader).url + "/raftchroma/members",
                         {"id": node_id, "raft": f"127.0.0.1:{node.raft_port}", "http": f"127.0.0.1:{node.http_port}"},
                         timeout_s=60)
    return code, body


def member_ids(cluster: Cluster, node_id: str) -> list[tuple[str, bool]]:
    return [(m["id"], m["voter"]) for m in http("GET", cluster.node(node_id).url + "/raftchroma/members")[2]["members"]]


@pytest.mark.slow
def test_a_change_lost_to_a_full_disk_does_not_refuse_every_later_change(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, raft_keys=RAFT_KEYS, serve_args=("--fault-injection",))
    try:
        leader = start_cluster(cluster)
        url = cluster.node(leader).url
        cluster.new_node("n4")
        cluster.new_node("n5")
        assert http("POST", url + "/raftchroma/test/faults", {"disk_full": True})[0] == 200
        code, body = add(cluster, leader, "n4")  # the leader's journal cannot take the entry
        assert (code, body["error"]) == (504, "WriteOutcomeUnknown")
        assert http("POST", url + "/raftchroma/test/faults", {"disk_full": False})[0] == 200
        answers: list[tuple[int, str]] = []

        def added() -> bool:
            code, body = add(cluster, leader, "n5")
            answers.append((code, body.get("error", "")))
            return code == 200
        wait_for(added, 30, "a later membership change to be accepted", interval_s=0.5)
        assert {error for code, error in answers if code != 200} <= {"MembershipChangeRefused"}
        assert member_ids(cluster, leader) == [("n1", True), ("n2", True), ("n3", True), ("n5", False)]
        assert cluster.node(leader).answered_status()["role"] == "leader"
    finally:
        cluster.stop_all()


@pytest.mark.slow
def test_a_joiner_reaches_a_leader_that_joined_before_it(tmp_path: Path) -> None:
    """Kubernetes-style: every copy of the file marks the added nodes `join = true`. n3 joined and
    leads; n4's file lists n3 only as a joiner, yet n4 must accept n3's connection and follow it."""
    cluster = make_cluster(tmp_path, size=2, raft_keys=RAFT_KEYS)
    try:
        leader = start_cluster(cluster)
        cluster.new_node("n3", join=True)
        cluster.start("n3")
        assert add(cluster, leader, "n3")[0] == 200
        wait_for(lambda: (s := cluster.node("n3").status()) and s["applied_index"] >= 3 and s, 60, "n3 to catch up")
        wait_for(lambda: http("POST", cluster.node(leader).url + "/raftchroma/members/n3/promote", {})[0] == 200, 60,
                 "n3 to be promoted", interval_s=0.5)
        code, _, body = http("POST", cluster.node(leader).url + "/raftchroma/transfer-leader", {"to": "n3"})
        assert (code, body) == (200, {"leader": "n3"})

        cluster.new_node("n4", join=True)
        cluster.start("n4")
        assert add(cluster, "n3", "n4")[0] == 200
        status = wait_for(lambda: (s := cluster.node("n4").status()) and s["member"] and s["leader"] == "n3" and s,
                          60, "n4 to follow n3")
        assert status["voter"] is False
        assert member_ids(cluster, "n4") == [("n1", True), ("n2", True), ("n3", True), ("n4", False)]
    finally:
        cluster.stop_all()


@pytest.mark.slow
def test_cluster_add_refuses_a_removed_node_that_kept_campaigning_until_it_starts_empty(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, raft_keys=RAFT_KEYS)
    try:
        leader = start_cluster(cluster)
        followers = sorted((n for n in cluster.nodes if n != leader), key=lambda n: cluster.node(n).raft_port)
        removed = followers[-1]  # the higher address dials the others: it keeps trying to campaign
        assert http("DELETE", cluster.node(leader).url + f"/raftchroma/members/{removed}")[0] == 200
        leader_term = cluster.node(leader).answered_status()["term"]
        wait_for(lambda: cluster.node(removed).answered_status()["term"] > leader_term, 60,
                 f"{removed} to campaign above the leader's term")
        node = cluster.node(removed)
        command = [sys.executable, "-m", "raftchroma", "cluster", "add", removed, "--raft", f"127.0.0.1:{node.raft_port}",
                   "--http", f"127.0.0.1:{node.http_port}", "--config", str(cluster.config_path)]
        refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "above the leader's" in refused.stderr and "empty its data_dir" in refused.stderr
        assert [m for m, _ in member_ids(cluster, leader)] == sorted(set(cluster.nodes) - {removed})

        cluster.kill(removed)
        shutil.rmtree(cluster.root / "data" / removed)
        cluster.start(removed, args=("--join",))
        wait_for(lambda: (s := cluster.node(removed).status()) and s["role"] != "unknown", 60, f"{removed} to start")
        added = subprocess.run(command + ["--promote"], capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
        assert member_ids(cluster, removed) == [(n, True) for n in sorted(cluster.nodes)]
    finally:
        cluster.stop_all()
