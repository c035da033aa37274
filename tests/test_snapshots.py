"""Snapshots and log compaction: lagging and fresh nodes catch up by snapshot install, in-sync
followers are not pushed into one, restarts start from the local snapshot, damage is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SNAPSHOT_MIN_ENTRIES = 40
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}
STALE = {"X-Raftchroma-Read-Consistency": "stale"}


@pytest.fixture
def compacting_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path, raft_keys=f"snapshot_min_entries = {SNAPSHOT_MIN_ENTRIES}")
    try:
        start_cluster(cluster)
        yield cluster
    finally:
        cluster.stop_all()


def write_batches(cluster: Cluster, node_id: str, count: int, start: int = 0) -> None:
    col = cluster.node(node_id).client().get_or_create_collection("snap")
    for i in range(start, start + count):
        col.upsert(ids=[f"r{i}"], embeddings=[[float(i), 1.0, 2.0]], metadatas=[{"i": i}], documents=[f"doc {i}"])


def digest(cluster: Cluster, node_id: str, headers: dict[str, str] = LIN) -> dict:
    status, _, body = http("GET", cluster.node(node_id).url + "/raftchroma/digest", headers=headers, timeout_s=60)
    assert status == 200, body
    return body["collections"]


def caught_up(cluster: Cluster, node_id: str, leader: str) -> bool:
    status = cluster.node(node_id).status()
    return bool(status) and status["applied_index"] >= cluster.node(leader).answered_status()["applied_index"]


@pytest.mark.slow
def test_lagging_node_catches_up_by_snapshot_and_in_sync_followers_do_not(compacting_cluster: Cluster) -> None:
    cluster = compacting_cluster
    leader = cluster.leader()
    lagging, in_sync = [n for n in cluster.nodes if n != leader]
    write_batches(cluster, leader, 10)
    cluster.kill(lagging)
    write_batches(cluster, leader, 5 * SNAPSHOT_MIN_ENTRIES + 10, start=10)
    wait_for(lambda: cluster.node(leader).answered_status()["snapshot_index"] > 0, 60, "the leader to snapshot")
    assert cluster.node(leader).answered_status()["log_len"] < 3 * SNAPSHOT_MIN_ENTRIES
    cluster.start(lagging)
    wait_for(lambda: caught_up(cluster, lagging, leader), 90, "the lagging node to catch up")
    assert cluster.node(lagging).answered_status()["snapshot_installs"] >= 1
    assert cluster.node(in_sync).answered_status()["snapshot_installs"] == 0
    assert digest(cluster, lagging, STALE) == digest(cluster, leader)
    stale = cluster.node(lagging).client(**STALE).get_collection("snap")
    assert stale.count() == 5 * SNAPSHOT_MIN_ENTRIES + 20


@pytest.mark.slow
def test_fresh_node_with_a_lost_disk_catches_up_by_snapshot(compacting_cluster: Cluster) -> None:
    cluster = compacting_cluster
    leader = cluster.leader()
    victim = next(n for n in cluster.nodes if n != leader)
    write_batches(cluster, leader, 3 * SNAPSHOT_MIN_ENTRIES)
    wait_for(lambda: cluster.node(leader).answered_status()["snapshot_index"] > 0, 60, "the leader to snapshot")
    cluster.kill(victim)
    shutil.rmtree(cluster.root / "data" / victim)
    cluster.start(victim)
    wait_for(lambda: caught_up(cluster, victim, leader), 90, "the fresh node to catch up")
    assert cluster.node(victim).answered_status()["snapshot_installs"] >= 1
    assert digest(cluster, victim, STALE) == digest(cluster, leader)


@pytest.mark.slow
def test_restart_starts_from_the_local_snapshot(compacting_cluster: Cluster) -> None:
    cluster = compacting_cluster
    leader = cluster.leader()
    write_batches(cluster, leader, 3 * SNAPSHOT_MIN_ENTRIES)
    for node_id in cluster.nodes:
        wait_for(lambda: cluster.node(node_id).answered_status()["snapshot_index"] > 0, 60, f"{node_id} to snapshot")
    before = digest(cluster, leader)
    cluster.crash_all()
    for node_id in cluster.nodes:
        status = cluster.node(node_id).answered_status()
        # either the local snapshot was installed, or the store was left clean and kept
        kept = status["store_kept_index"] >= status["snapshot_index"] > 0
        assert (status["snapshot_installs"] == 1 and status["snapshot_index"] > 0) or kept
        assert digest(cluster, node_id) == before


def test_corrupt_snapshot_refuses_to_start(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, size=1, raft_keys="snapshot_min_entries = 5")
    try:
        cluster.start("n1")
        cluster.leader(timeout_s=60)
        write_batches(cluster, "n1", 12)
        wait_for(lambda: cluster.node("n1").answered_status()["snapshot_index"] > 0, 60, "a snapshot")
        cluster.kill("n1")
    finally:
        cluster.stop_all()
    path = tmp_path / "data" / "n1" / "raft.snapshot"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "raftchroma", "serve", "--config", str(cluster.config_path),
                             "--node", "n1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "corrupt snapshot" in result.stderr and str(path) in result.stderr and "checksum" in result.stderr


@pytest.mark.slow
def test_big_entries_trigger_a_snapshot_by_log_bytes(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, raft_keys="snapshot_max_log_bytes = 300000")
    try:
        leader = start_cluster(cluster)
        col = cluster.node(leader).client().create_collection("bytes")
        for batch in range(4):  # 4 entries of ~200 KB each, far below snapshot_min_entries
            vectors = np.random.default_rng(batch).random((500, 100), dtype=np.float32)
            col.add(ids=[f"b{batch}-{i}" for i in range(500)], embeddings=vectors)
        for node_id in cluster.nodes:
            wait_for(lambda: cluster.node(node_id).answered_status()["snapshot_index"] > 0, 60, f"{node_id} to snapshot")
    finally:
        cluster.stop_all()

