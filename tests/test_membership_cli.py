"""`raftchroma cluster add | promote | remove` and `raftchroma status` against a real cluster: the
commands an operator types to grow a cluster by a node, then take the leader out of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import Cluster, http, wait_for


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftchroma", *args, "--config", str(cluster.config_path)],
                          capture_output=True, text=True, timeout=120)


def voting(cluster: Cluster) -> dict[str, str]:
    table = cli(cluster, "status").stdout.splitlines()
    header = table[0].split()
    return {line.split()[0]: line.split()[header.index("voting")] for line in table[1:]}


@pytest.mark.slow
def test_cluster_add_promote_then_remove_the_leader_by_command(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    cluster.node(leader).client().get_or_create_collection("grow").add(
        ids=[f"r{i}" for i in range(20)], embeddings=[[float(i), 1.0] for i in range(20)])
    n4 = cluster.new_node("n4")
    cluster.start("n4", args=("--join",))
    joiner = wait_for(lambda: (s := cluster.node("n4").status()) and s["role"] != "unknown" and s, 60, "n4 to answer")
    assert (joiner["member"], joiner["voter"], joiner["leader"]) == (False, False, None)
    assert voting(cluster)["n4"] == "not-member"
    code, _, body = http("GET", cluster.node("n4").url + "/readyz")
    assert (code, body["ready"]) == (503, False) and body["reason"].startswith("not a member of the cluster")

    added = cli(cluster, "cluster", "add", "n4", "--raft", f"127.0.0.1:{n4.raft_port}",
                "--http", f"127.0.0.1:{n4.http_port}", "--promote")
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert lines[0].startswith("added n4 as a non-voter at index ") and lines[0].endswith(
        "members: n1, n2, n3, n4 (non-voter)")
    assert lines[1].startswith("promoted n4 at index ") and lines[1].endswith("members: n1, n2, n3, n4")
    assert voting(cluster) == {"n1": "voter", "n2": "voter", "n3": "voter", "n4": "voter"}
    assert cluster.node("n4").client().get_collection("grow").count() == 20

    again = cli(cluster, "cluster", "promote", "n4")
    assert again.returncode == 1 and "409 MembershipChangeRefused: n4 is already a voter" in again.stderr

    removed = cli(cluster, "cluster", "remove", leader)
    assert removed.returncode == 0, removed.stderr
    moved, gone = removed.stdout.splitlines()
    assert moved.startswith(f"leader: {leader} -> ")
    survivors = sorted({"n1", "n2", "n3", "n4"} - {leader})
    assert gone.startswith(f"removed {leader} at index ") and gone.endswith("members: " + ", ".join(survivors))
    assert voting(cluster)[leader] == "not-member"
    new_leader = cluster.leader(among=survivors)
    cluster.node(new_leader).client().get_collection("grow").add(ids=["after"], embeddings=[[0.5, 0.5]])
    for node_id in survivors:
        wait_for(lambda: cluster.node(node_id).client().get_collection("grow").count() == 21, 30,
                 f"{node_id} to hold the write made after the removal")
    unknown = cli(cluster, "cluster", "remove", "nope")
    assert unknown.returncode == 1 and "nope is not a member" in unknown.stderr
