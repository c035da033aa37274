"""The test-only store and journal faults behind jepsen-lite's disk-full and apply-fail nemeses:
a node whose applies fail retries (never records a result), the others go on, and once healed it
catches up to identical state; a follower whose journal is full cannot take entries, the others
commit without it, and it catches up after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"


def faults(cluster: Cluster, node_id: str, **flags: bool) -> None:
    status, _, body = http("POST", cluster.node(node_id).url + "/raftchroma/test/faults", flags)
    assert status == 200, body


def add(url: str, collection_id: str, ids: list[str]) -> tuple[int, Any]:
    status, headers, body = http("POST", f"{url}{SCOPE}/collections/{collection_id}/add",
                                 {"ids": ids, "embeddings": [[1.0, 2.0]] * len(ids)})
    return status, int(headers.get("X-Raftchroma-Index", 0))


def digest(cluster: Cluster, node_id: str, index: int) -> Any:
    status, _, body = http("GET", cluster.node(node_id).url + "/raftchroma/digest",
                           headers={"X-Raftchroma-Read-Consistency": "stale", "X-Raftchroma-Min-Index": str(index)})
    assert status == 200, body
    return body["collections"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["apply_fails", "disk_full"])
def test_a_follower_with_a_failing_disk_retries_and_catches_up(tmp_path: Path, fault: str) -> None:
    cluster = make_cluster(tmp_path, serve_args=("--fault-injection",))
    try:
        leader = start_cluster(cluster)
        victim = next(n for n in cluster.nodes if n != leader)
        url = cluster.node(leader).url
        status, _, col = http("POST", url + SCOPE + "/collections", {"name": "faults"})
        assert status == 200, col
        faults(cluster, victim, **{fault: True})
        acked = []
        for i in range(10):
            status, index = add(url, col["id"], [f"a{i}"])
            assert status == 201
            acked.append(index)
        if fault == "apply_fails":
            wait_for(lambda: (s := cluster.node(victim).status()) and s["apply_error"], 20, "the apply error to show")
        assert cluster.node(victim).answered_status()["applied_index"] < acked[-1]
        faults(cluster, victim)
        assert digest(cluster, victim, acked[-1]) == digest(cluster, leader, acked[-1])
        status = cluster.node(victim).answered_status()
        assert status["apply_error"] is None and status["injected_faults"] == {"disk_full": False, "apply_fails": False}
    finally:
        cluster.stop_all()
