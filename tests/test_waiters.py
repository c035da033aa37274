"""Waiters do not outlive their requests: reads that time out waiting for an index leave nothing
behind (before, every timed-out waiter stayed in the node's heap until that index was applied)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.harness import http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"


def test_timed_out_index_waiters_are_removed(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, size=1, cluster_keys="write_timeout_s = 30.0\nread_timeout_s = 0.5")
    try:
        start_cluster(cluster)
        node = cluster.node("n1")
        headers = {"X-Raftchroma-Read-Consistency": "stale", "X-Raftchroma-Min-Index": str(10 ** 9)}
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(lambda _: http("GET", node.url + SCOPE + "/collections_count", headers=headers),
                                    range(30)))
        assert {(status, body["error"]) for status, _, body in answers} == {(503, "NotReady")}
        status = wait_for(lambda: (s := node.status()) and s["pending_reads"] == 0 and s, 10, "reads to finish")
        assert status["index_waiters"] == 0
        assert http("GET", node.url + SCOPE + "/collections_count")[0] == 200
    finally:
        cluster.stop_all()
