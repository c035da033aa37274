"""A snapshot transfer slower than `connectionTimeout` completes (PySyncObj hazard: it restarted
from zero forever), and the same transfer without raftchroma's keepalive does restart.

The link is made slow by the fault-injecting transport (`--test-snapshot-chunk-delay-s`: the
sender sleeps before each chunk, and PySyncObj sends at most one chunk per heartbeat tick), with
small chunks, so a store of a few hundred records takes several times `connectionTimeout` to
send. The second test is the proof that the first one exercises the hazard: with the keepalive
switched off, the leader drops the connection mid-transfer and starts over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SNAPSHOT_MIN_ENTRIES = 40
CHUNK_BYTES = 8 * 1024
CHUNK_DELAY_S = 0.15
CONNECTION_TIMEOUT_S = 5.0  # RaftTuning's default, which these clusters keep
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}
STALE = {"X-Raftchroma-Read-Consistency": "stale"}

pytestmark = pytest.mark.slow


def _cluster(root: Path, keepalive: bool) -> Cluster:
    serve_args = ("--fault-injection", "--test-snapshot-chunk-delay-s", str(CHUNK_DELAY_S))
    if not keepalive:
        serve_args += ("--test-no-snapshot-keepalive",)
    # The slow link sleeps in the leader's tick thread before each chunk, which also delays its
    # heartbeats to the other follower: election timeouts of 2-4 s (not the default 0.5-1 s) keep
    # that from causing an election, which would restart the transfer this test counts.
    raft_keys = (f"snapshot_min_entries = {SNAPSHOT_MIN_ENTRIES}\nsnapshot_chunk_bytes = {CHUNK_BYTES}\n"
                 "election_timeout_min_s = 2.0\nelection_timeout_max_s = 4.0")
    return make_cluster(root, raft_keys=raft_keys, serve_args=serve_args)


@pytest.fixture(params=[True, False], ids=["keepalive", "no-keepalive"])
def lagging(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cluster, str, str, bool]]:
    """A cluster whose leader has compacted past a stopped follower: (cluster, leader, lagging, keepalive)."""
    keepalive = request.param
    cluster = _cluster(tmp_path, keepalive)
    try:
        leader = start_cluster(cluster)
        lagging_id = next(n for n in cluster.nodes if n != leader)
        cluster.kill(lagging_id)
        col = cluster.node(leader).client().get_or_create_collection("transfer")
        for i in range(0, 5 * SNAPSHOT_MIN_ENTRIES, 2):
            col.add(ids=[f"r{i}", f"r{i + 1}"], embeddings=[[float(i)] * 8, [float(i + 1)] * 8],
                    documents=[f"document {i} " * 40, f"document {i + 1} " * 40])
        wait_for(lambda: (cluster.node(leader).status() or {}).get("snapshot_index", 0) > 0, 60,
                 "the leader to snapshot")
        yield cluster, leader, lagging_id, keepalive
    finally:
        cluster.stop_all()


def _status(cluster: Cluster, node_id: str) -> dict:
    """A node's status; a call that times out on a busy machine is retried."""
    return wait_for(lambda: cluster.node(node_id).status(timeout_s=5), 30, f"{node_id}'s status")


def _sends_to(cluster: Cluster, leader: str, peer: str) -> int:
    return _status(cluster, leader)["snapshot_sends"][peer]


def test_slow_snapshot_transfer(lagging: tuple[Cluster, str, str, bool]) -> None:
    cluster, leader, lagging_id, keepalive = lagging
    snapshot_bytes = _status(cluster, leader)["snapshot_bytes"]
    chunks = snapshot_bytes // CHUNK_BYTES + 1
    # the precondition that makes this a test of the hazard: the transfer outlasts the timeout twice over
    assert chunks * CHUNK_DELAY_S > 2 * CONNECTION_TIMEOUT_S, f"snapshot of {snapshot_bytes} bytes is too small"
    assert _sends_to(cluster, leader, lagging_id) == 0

    cluster.start(lagging_id)
    if not keepalive:
        # PySyncObj's behaviour: the leader hears nothing for connectionTimeout, drops the link, starts over
        wait_for(lambda: _sends_to(cluster, leader, lagging_id) >= 2, 4 * chunks * CHUNK_DELAY_S,
                 "the leader to restart the snapshot transfer")
        assert _status(cluster, lagging_id)["snapshot_installs"] == 0
        return

    def installed() -> bool:
        status, leader_status = cluster.node(lagging_id).status(), cluster.node(leader).status()
        return bool(status and leader_status) and status["snapshot_installs"] >= 1 and \
            status["applied_index"] >= leader_status["applied_index"]
    wait_for(installed, 60 + 4 * chunks * CHUNK_DELAY_S, "the lagging node to install the snapshot")
    assert _sends_to(cluster, leader, lagging_id) == 1  # one transfer, never restarted
    assert _status(cluster, lagging_id)["snapshot_installs"] == 1
    _, _, leader_digest = http("GET", cluster.node(leader).url + "/raftchroma/digest", headers=LIN, timeout_s=60)
    _, _, lagging_digest = http("GET", cluster.node(lagging_id).url + "/raftchroma/digest", headers=STALE,
                                timeout_s=60)
    assert lagging_digest["collections"] == leader_digest["collections"]
    stale = cluster.node(lagging_id).client(**STALE).get_collection("transfer")
    assert stale.count() == 5 * SNAPSHOT_MIN_ENTRIES
