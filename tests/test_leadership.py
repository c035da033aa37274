"""Leadership handed over on purpose: `raftchroma cluster transfer-leader`, and a leader that is
stopped gracefully (SIGTERM) handing over before it exits, on a real 3-node cluster."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.harness import Cluster, http, wait_for


def statuses(cluster: Cluster, among: list[str]) -> dict[str, dict]:
    return {n: cluster.node(n).answered_status() for n in among}


def test_transfer_leader_by_command_moves_leadership_in_one_term(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    target = sorted(n for n in cluster.nodes if n != leader)[0]
    term = cluster.node(leader).answered_status()["term"]
    wait_for(lambda: len({s["applied_index"] for s in statuses(cluster, list(cluster.nodes)).values()}) == 1, 30,
             "every node to hold the whole log")
    result = subprocess.run([sys.executable, "-m", "raftchroma", "cluster", "transfer-leader", "--to", target,
                             "--config", str(cluster.config_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"leader: {leader} -> {target}"
    assert cluster.leader() == target
    assert {s["term"] for s in statuses(cluster, list(cluster.nodes)).values()} == {term + 1}
    col = cluster.node(leader).client().get_or_create_collection("after-transfer")
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    assert cluster.node(target).client().get_collection("after-transfer").get(ids=["a"])["ids"] == ["a"]
    status, _, body = http("POST", cluster.node(leader).url + "/raftchroma/transfer-leader", {})
    assert (status, body["error"]) == (409, "NotLeader")
    status, _, body = http("POST", cluster.node(target).url + "/raftchroma/transfer-leader", {"to": "nope"})
    assert (status, body["error"]) == (409, "TransferRefused")


def test_a_leader_stopped_gracefully_hands_over_before_it_exits(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    others = [n for n in cluster.nodes if n != leader]
    term = cluster.node(leader).answered_status()["term"]
    wait_for(lambda: len({s["applied_index"] for s in statuses(cluster, list(cluster.nodes)).values()}) == 1, 30,
             "every node to hold the whole log")
    log_size = cluster.node(leader).log_path.stat().st_size
    cluster.node(leader).process.send_signal(signal.SIGTERM)
    assert cluster.node(leader).process.wait(timeout=60) == 0
    successor = cluster.leader(among=others)
    handed = cluster.node(leader).log_path.read_bytes()[log_size:].decode(errors="replace")
    assert f"leadership handed to {successor} before stopping" in handed, handed[-2000:]
    assert {s["term"] for s in statuses(cluster, others).values()} == {term + 1}  # one TimeoutNow election
    col = cluster.node(successor).client().get_or_create_collection("after-handover")
    col.add(ids=["b"], embeddings=[[1.0, 2.0]])
