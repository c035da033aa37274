"""A follower whose Raft tick thread is held up past the election timeout (one journal fsync
stalled, as a slow disk does) causes no election: the wire reads every message waiting in the
socket, the leader's heartbeats among them, before the tick ends, and the next tick sees a fresh
election deadline. The late tick is counted and shown in the follower's status."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
STALL_S = 1.6  # above election_timeout_max_s (1.0), below connection_timeout_s


def stall_next_fsync(cluster: Cluster, node_id: str, seconds: float) -> None:
    status, _, body = http("POST", cluster.node(node_id).url + "/raftchroma/test/fsync-stall", {"seconds": seconds})
    assert (status, body) == (200, {"seconds": seconds})


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = make_cluster(Path(tmp_path_factory.mktemp("cluster")), serve_args=("--fault-injection",))
    try:
        start_cluster(cluster)
        yield cluster
    finally:
        cluster.stop_all()


def test_the_node_runs_chroma_and_http_below_its_raft_process(faulty: Cluster) -> None:
    """[raft] store_niceness (default 5): every thread of the node's process, Chroma's included,
    runs five nice levels below the Raft process, which keeps the priority the node started with."""
    for node_id in faulty.nodes:
        parent = psutil.Process(faulty.node(node_id).process.pid)
        (raft,) = parent.children()
        base = psutil.Process().nice()
        thread_nice = {os.getpriority(os.PRIO_PROCESS, t.id) for t in parent.threads()}
        assert (raft.nice(), thread_nice, len(parent.threads()) > 5) == (base, {base + 5}, True)


@pytest.mark.slow
def test_a_follower_stalled_by_a_slow_fsync_causes_no_election(faulty: Cluster) -> None:
    cluster = faulty
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    for bad in ({"seconds": 0}, {"seconds": 11}, {"seconds": True}, {"seconds": "1"}, [1]):
        status, _, body = http("POST", cluster.node(follower).url + "/raftchroma/test/fsync-stall", bad)
        assert (status, body["error"]) == (400, "InvalidArgumentError"), (bad, body)
    terms_before = {n: cluster.node(n).answered_status()["term"] for n in cluster.nodes}
    stall_next_fsync(cluster, follower, STALL_S)
    status, _, body = http("POST", cluster.node(leader).url + SCOPE + "/collections", {"name": "after-a-stall"})
    assert status == 200, body
    late = wait_for(lambda: (s := cluster.node(follower).status()) and s["late_ticks"] >= 1 and s, 30,
                    f"{follower} to count its late tick")
    assert late["longest_tick_overrun_s"] >= STALL_S - 0.1, late
    status, _, _ = http("GET", cluster.node(follower).url + SCOPE + "/collections/after-a-stall")
    assert status == 200
    assert {n: cluster.node(n).answered_status()["term"] for n in cluster.nodes} == terms_before, cluster.log_tail()
    assert cluster.leader() == leader

