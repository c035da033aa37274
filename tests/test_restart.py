"""Restarts: the store is rebuilt from the durable journal; damage is refused, not served."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Cluster, http, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}


def digest_of(cluster: Cluster, node_id: str) -> dict:
    status, _, body = http("GET", cluster.node(node_id).url + "/raftchroma/digest", headers=LIN, timeout_s=60)
    assert status == 200, body
    return body["collections"]


@pytest.mark.slow
def test_all_nodes_sigkilled_come_back_with_every_acknowledged_write(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    client = cluster.node("n2").client()
    col = client.create_collection("survivors")
    for i in range(30):
        col.upsert(ids=[f"k{i % 10}"], embeddings=[[float(i), 2.0]], metadatas=[{"i": i}])
    col.delete(ids=["k0"])
    client.create_collection("doomed")
    client.delete_collection("doomed")
    before = digest_of(cluster, "n1")
    cluster.crash_all()
    for node_id in cluster.nodes:
        assert digest_of(cluster, node_id) == before
    got = cluster.node("n3").client().get_collection("survivors").get(ids=["k9"])
    assert got["metadatas"] == [{"i": 29}]
    assert [c.name for c in cluster.node("n1").client().list_collections()] == ["survivors"]


@pytest.mark.slow
def test_killed_follower_catches_up_on_writes_it_missed(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    col = cluster.node(leader).client().create_collection("catchup")
    col.add(ids=["before"], embeddings=[[1.0]])
    cluster.kill(follower)
    for i in range(20):
        col.add(ids=[f"during{i}"], embeddings=[[float(i)]])
    cluster.start(follower)
    wait_for(lambda: (cluster.node(follower).status() or {}).get("applied_index", 0)
             >= cluster.node(leader).answered_status()["applied_index"], 60, "the follower to catch up")
    stale = cluster.node(follower).client(**{"X-Raftchroma-Read-Consistency": "stale"})
    assert stale.get_collection("catchup").count() == 21
    assert digest_of(cluster, follower) == digest_of(cluster, leader)


def test_truncated_journal_refuses_to_start_and_serves_nothing(tmp_path: Path) -> None:
    from tests.harness import make_cluster
    cluster = make_cluster(tmp_path, size=1)
    try:
        cluster.start("n1")
        cluster.leader(timeout_s=60)
        cluster.node("n1").client().create_collection("precious")
        cluster.kill("n1")
    finally:
        cluster.stop_all()
    journal = tmp_path / "data" / "n1" / "raft.log"
    journal.write_bytes(journal.read_bytes()[:-5])
    result = subprocess.run([sys.executable, "-m", "raftchroma", "serve", "--config", str(cluster.config_path),
                             "--node", "n1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "corrupt Raft journal" in result.stderr and str(journal) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_node_killed_while_idle_keeps_its_store_and_skips_the_replay(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    col = cluster.node(leader).client().create_collection("kept")
    for i in range(19):
        col.add(ids=[f"k{i}"], embeddings=[[float(i), 0.5]])
    status, headers, _ = http("POST", f"{cluster.node(leader).url}{SCOPE}/collections/{col.id}/add",
                              {"ids": ["k19"], "embeddings": [[19.0, 0.5]]})
    last_write_index = int(headers["X-Raftchroma-Index"])
    wait_for(lambda: cluster.node(follower).answered_status()["store_clean"], 30, "the follower to mark its store clean")
    before = digest_of(cluster, leader)  # a read barrier: it does not dirty the store
    cluster.kill(follower)
    cluster.start(follower)
    status = cluster.node(follower).answered_status()
    assert status["store_kept_index"] >= last_write_index and status["snapshot_installs"] == 0
    assert digest_of(cluster, follower) == before
    col.add(ids=["after"], embeddings=[[9.0, 9.0]])
    assert cluster.node(follower).client().get_collection("kept").count() == 21
