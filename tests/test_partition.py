"""Partitions (via the test-only fault-injecting transport): a deposed leader serves no stale
linearizable read, the majority goes on, and everything converges after healing."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}
STALE = {"X-Raftchroma-Read-Consistency": "stale"}


@pytest.fixture
def faulty_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path, serve_args=("--fault-injection",))
    try:
        start_cluster(cluster)
        yield cluster
    finally:
        cluster.stop_all()


def partition(cluster: Cluster, groups: list[list[str]]) -> None:
    for group in groups:
        others = [n for n in cluster.nodes if n not in group]
        for node_id in group:
            status, _, body = http("POST", cluster.node(node_id).url + "/raftchroma/test/partition", {"blocked": others})
            assert status == 200, body


def _majority_leader(cluster: Cluster, majority: list[str]) -> str | None:
    statuses = [cluster.node(n).status() for n in majority]
    leaders = {s["leader"] for s in statuses if s}
    if len(leaders) == 1 and leaders <= set(majority) and any(s["role"] == "leader" for s in statuses if s):
        return leaders.pop()
    return None


def upsert(url: str, collection_id: str, value: int) -> int:
    status, _, body = http("POST", f"{url}{SCOPE}/collections/{collection_id}/upsert",
                           {"ids": ["reg"], "embeddings": [[1.0]], "metadatas": [{"v": value}]}, timeout_s=60)
    return status


def read(url: str, collection_id: str, headers: dict[str, str]) -> tuple[int, object]:
    status, _, body = http("POST", f"{url}{SCOPE}/collections/{collection_id}/get", {"ids": ["reg"]},
                           headers=headers, timeout_s=60)
    return status, body


@pytest.mark.slow
def test_isolated_leader_serves_no_stale_linearizable_read(faulty_cluster: Cluster) -> None:
    cluster = faulty_cluster
    old_leader = cluster.leader()
    majority = [n for n in cluster.nodes if n != old_leader]
    old_url = cluster.node(old_leader).url
    status, _, col = http("POST", old_url + SCOPE + "/collections", {"name": "part"})
    assert status == 200 and upsert(old_url, col["id"], 1) == 200

    partition(cluster, [[old_leader], majority])
    new_leader = wait_for(lambda: _majority_leader(cluster, majority), 60, "a leader inside the majority")
    assert upsert(cluster.node(new_leader).url, col["id"], 2) == 200

    status, body = read(old_url, col["id"], LIN)
    assert status == 503 and body["error"] == "NoQuorum", body
    status, body = read(old_url, col["id"], STALE)
    assert status == 200 and body["metadatas"] == [{"v": 1}]  # stale is allowed to be stale
    status, body = read(cluster.node(majority[0]).url, col["id"], LIN)
    assert status == 200 and body["metadatas"] == [{"v": 2}]

    partition(cluster, [list(cluster.nodes)])
    wait_for(lambda: read(old_url, col["id"], LIN) == (200, read(old_url, col["id"], LIN)[1])
             and read(old_url, col["id"], LIN)[1]["metadatas"] == [{"v": 2}], 60, "the old leader to converge")
    digests = [http("GET", cluster.node(n).url + "/raftchroma/digest", headers=LIN)[2]["collections"]
               for n in cluster.nodes]
    assert digests[0] == digests[1] == digests[2]


def test_partition_endpoint_is_absent_without_the_flag(cluster: Cluster) -> None:
    status, _, _ = http("POST", cluster.node("n1").url + "/raftchroma/test/partition", {"blocked": ["n2"]})
    assert status == 404
