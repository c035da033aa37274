"""Faults on a real cluster: the leader SIGKILLed mid-stream, and a lost quorum."""

from __future__ import annotations

import itertools
import time
import urllib.error

import pytest

from tests.harness import Cluster, http, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}


def try_add(url: str, collection_id: str, record_id: str) -> str:
    """'ok', 'fail' (definitely not written) or 'info' (may have been written)."""
    try:
        status, _, body = http("POST", f"{url}{SCOPE}/collections/{collection_id}/add",
                               {"ids": [record_id], "embeddings": [[1.0, 2.0]]}, timeout_s=15)
    except ConnectionRefusedError:
        return "fail"
    except (urllib.error.URLError, OSError) as exc:
        refused = isinstance(getattr(exc, "reason", None), ConnectionRefusedError)
        return "fail" if refused else "info"
    if status == 201:
        return "ok"
    return "info" if status == 504 else "fail"


def all_ids(url: str, collection_id: str) -> set[str]:
    status, _, body = http("POST", f"{url}{SCOPE}/collections/{collection_id}/get", {"include": []}, headers=LIN)
    assert status == 200, body
    return set(body["ids"])


@pytest.mark.slow
def test_leader_killed_during_writes_loses_no_acknowledged_write(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    status, _, col = http("POST", cluster.node(leader).url + SCOPE + "/collections", {"name": "failover"})
    assert status == 200
    urls = itertools.cycle([cluster.node(n).url for n in cluster.nodes])
    acked, unknown, acked_after_kill = [], [], 0
    killed_at = None
    for i in itertools.count():
        if i == 40:
            cluster.kill(leader)
            killed_at = time.monotonic()
        if killed_at is not None and acked_after_kill >= 40:
            break
        assert i < 2000, "writes did not resume after the leader was killed"
        url = next(urls)
        if url == cluster.node(leader).url and killed_at is not None:
            continue
        outcome = try_add(url, col["id"], f"r{i}")
        if outcome == "ok":
            acked.append(f"r{i}")
            acked_after_kill += killed_at is not None
        elif outcome == "info":
            unknown.append(f"r{i}")
    survivors = [n for n in cluster.nodes if n != leader]
    new_leader = cluster.leader(among=survivors)
    assert new_leader != leader
    for node_id in survivors:
        present = all_ids(cluster.node(node_id).url, col["id"])
        assert set(acked) <= present, f"{node_id} lost {sorted(set(acked) - present)}"
        assert present <= set(acked) | set(unknown)


@pytest.mark.slow
def test_no_quorum_fails_writes_and_linearizable_reads_within_bound(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    survivor = next(n for n in cluster.nodes if n != leader)
    url = cluster.node(survivor).url
    status, _, col = http("POST", url + SCOPE + "/collections", {"name": "quorum"})
    assert status == 200
    for node_id in cluster.nodes:
        if node_id != survivor:
            cluster.kill(node_id)
    started = time.monotonic()
    status, _, body = http("POST", f"{url}{SCOPE}/collections/{col['id']}/add",
                           {"ids": ["q"], "embeddings": [[1.0]]}, timeout_s=60)
    write_s = time.monotonic() - started
    assert (status, body["error"]) in {(503, "NoQuorum"), (504, "WriteOutcomeUnknown")}, body
    assert write_s < 45  # write_timeout_s (30 s in tests) plus slack
    status, _, body = http("GET", f"{url}{SCOPE}/collections/{col['id']}/count", headers=LIN, timeout_s=60)
    assert (status, body["error"]) == (503, "NoQuorum"), body
    status, _, body = http("GET", f"{url}{SCOPE}/collections/{col['id']}/count",
                           headers={"X-Raftchroma-Read-Consistency": "stale"})
    assert (status, body) == (200, 0)


@pytest.mark.slow
def test_write_without_any_leader_is_a_definite_503(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    leader = cluster.leader()
    survivor = next(n for n in cluster.nodes if n != leader)
    for node_id in cluster.nodes:
        if node_id != survivor:
            cluster.kill(node_id)
    url = cluster.node(survivor).url
    wait_for(lambda: not cluster.node(survivor).answered_status()["leader_connected"], 30, "the survivor to lose its leader")
    status, _, body = http("POST", url + SCOPE + "/collections", {"name": "never"}, timeout_s=60)
    assert (status, body["error"]) == (503, "NoQuorum"), body
