"""A follower whose Raft tick thread is held up past the election timeout causes no election, and
the late tick is counted in its status:

- held up in a journal fsync (a slow disk) while the wire reads the leader's append: the wire
  reads on until the socket is empty, heartbeats that arrived meanwhile included;
- held up between two ticks (a write the kernel holds up, a starved CPU): PySyncObj's tick checks
  the election deadline before it reads the sockets, so the follower reads what is waiting first
  (replication._StateMachine._before_tick); without that it campaigns.

Also: the node's own threads run below its Raft process ([raft] store_niceness)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
STALL_S = 1.6  # above election_timeout_max_s (1.0), below connection_timeout_s


def stall(cluster: Cluster, node_id: str, seconds: float, at: str) -> None:
    status, _, body = http("POST", cluster.node(node_id).url + "/raftchroma/test/raft-stall", {"seconds": seconds, "at": at})
    assert (status, body) == (200, {"seconds": seconds, "at": at})


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


def test_a_stall_needs_a_place_and_a_sane_length(faulty: Cluster) -> None:
    url = faulty.node("n1").url + "/raftchroma/test/raft-stall"
    for bad in ({"seconds": 0, "at": "tick"}, {"seconds": 11, "at": "tick"}, {"seconds": True, "at": "tick"},
                {"seconds": "1", "at": "tick"}, {"seconds": 1}, {"seconds": 1, "at": "disk"}, [1]):
        status, _, body = http("POST", url, bad)
        assert (status, body["error"]) == (400, "InvalidArgumentError"), (bad, body)


@pytest.mark.slow
@pytest.mark.parametrize("at", ["fsync", "tick"])
def test_a_follower_held_up_past_its_election_timeout_causes_no_election(faulty: Cluster, at: str) -> None:
    cluster = faulty
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    before = cluster.node(follower).answered_status()
    terms_before = {n: cluster.node(n).answered_status()["term"] for n in cluster.nodes}
    stall(cluster, follower, STALL_S, at)
    name = f"after-a-stall-{at}"
    status, _, body = http("POST", cluster.node(leader).url + SCOPE + "/collections", {"name": name})
    assert status == 200, body
    late = wait_for(lambda: (s := cluster.node(follower).status()) and s["late_ticks"] > before["late_ticks"] and s,
                    30, f"{follower} to count its late tick")
    assert late["longest_tick_overrun_s"] >= STALL_S - 0.1, late
    status, _, _ = http("GET", cluster.node(follower).url + SCOPE + f"/collections/{name}")
    assert status == 200
    assert {n: cluster.node(n).answered_status()["term"] for n in cluster.nodes} == terms_before, cluster.log_tail()
    assert cluster.leader() == leader
