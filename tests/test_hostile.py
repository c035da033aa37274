"""Hostile but well-formed requests against real 3-node clusters: names made of the error texts
Chroma and the OS produce never stop the cluster; replicas stay identical whatever their CPU
limits; a node whose cluster-wide settings differ is refused and never applies; a write retried
with the same X-Raftchroma-Request-Id after an unknown outcome is applied once."""

from __future__ import annotations

import errno
import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}
ERROR_TEXTS = [
    "disk is full", "database or disk is full", "no space left on device", "disk I/O error", "database is locked",
    "attempt to write a readonly database", "too many open files", "out of memory", "error in compaction",
    "purging logs", "failed to apply logs", "already exists", "UNIQUE constraint failed",
] + [os.strerror(code) for code in (errno.ENOSPC, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENOMEM)]


def as_database_name(text: str) -> str:
    """The text as a database/collection name: Chroma allows only [a-zA-Z0-9._-] there."""
    return re.sub(r"[^a-zA-Z0-9._-]", "-", text).strip("-._")


def digests(cluster: Cluster, index: int) -> list[Any]:
    """Every node's digest once it has applied `index`."""
    out = []
    for node in cluster.nodes.values():
        status, _, body = http("GET", node.url + "/raftchroma/digest",
                               headers={"X-Raftchroma-Read-Consistency": "stale", "X-Raftchroma-Min-Index": str(index)})
        assert status == 200, body
        out.append((body["collections"], body["names"]))
    return out


def write_on_every_node(cluster: Cluster, collection_id: str, tag: str) -> int:
    """One add through each node; all must be acknowledged. The highest index."""
    highest = 0
    for node in cluster.nodes.values():
        status, headers, body = http("POST", f"{node.url}{SCOPE}/collections/{collection_id}/add",
                                     {"ids": [f"{tag}-{node.node_id}"], "embeddings": [[1.0, 2.0]]})
        assert status == 201, (node.node_id, status, body)
        highest = max(highest, int(headers["X-Raftchroma-Index"]))
    return highest


@pytest.mark.slow
def test_names_made_of_error_texts_never_stop_the_cluster(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    try:
        start_cluster(cluster)
        urls = [n.url for n in cluster.nodes.values()]
        status, _, col = http("POST", urls[0] + SCOPE + "/collections", {"name": "probe"})
        assert status == 200, col
        for i, text in enumerate(ERROR_TEXTS):
            first, second = urls[i % 3], urls[(i + 1) % 3]
            answers = [http("POST", url + "/api/v2/tenants", {"name": text})[0] for url in (first, second)]
            assert answers == [200, 409], (text, answers)
            name = as_database_name(text)
            for path, body in (("/api/v2/tenants/default_tenant/databases", {"name": name}),
                               (SCOPE + "/collections", {"name": name})):
                answers = [http("POST", url + path, body)[0] for url in (first, second)]
                assert answers == [200, 409], (text, path, answers)
            index = write_on_every_node(cluster, col["id"], f"after-{i}")  # available right after
        views = digests(cluster, index)
        assert views[0] == views[1] == views[2]
        for node in cluster.nodes.values():
            for text in ERROR_TEXTS:
                status, _, body = http("GET", f"{node.url}/api/v2/tenants/{urllib.parse.quote(text, safe='')}", headers=LIN)
                assert (status, body["name"]) == (200, text)
    finally:
        cluster.stop_all()


@pytest.mark.slow
def test_replicas_store_one_configuration_whatever_their_cpu_limits(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to give nodes different limits")
    cluster = make_cluster(tmp_path)
    try:
        for node_id, cpus in zip(cluster.nodes, ({0}, {0, 1}, {1})):
            cluster.start(node_id, cpus=cpus)
        cluster.leader(timeout_s=60)
        seen = {}
        for node_id, body in (("n1", {"name": "plain"}), ("n2", {"name": "tuned", "configuration": {"hnsw": {"ef_search": 20}}}),
                              ("n1", {"name": "spann", "configuration": {"spann": {"search_nprobe": 8}}}),
                              ("n3", {"name": "given", "configuration": {"hnsw": {"num_threads": 3}}})):
            status, headers, created = http("POST", cluster.node(node_id).url + SCOPE + "/collections", body)
            assert status == 200, created
            index = int(headers["X-Raftchroma-Index"])
            views = []
            for node in cluster.nodes.values():
                status, _, got = http("GET", f"{node.url}{SCOPE}/collections/{body['name']}",
                                      headers={"X-Raftchroma-Read-Consistency": "stale",
                                               "X-Raftchroma-Min-Index": str(index)})
                assert status == 200, got
                views.append(json.dumps(got, sort_keys=True))
            assert views[0] == views[1] == views[2], body["name"]
            seen[body["name"]] = got["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["hnsw"]
        assert seen["plain"]["num_threads"] == 1  # n1 may use one CPU and proposed it
        assert seen["tuned"]["num_threads"] == 2 and seen["tuned"]["ef_search"] == 20
        assert seen["given"]["num_threads"] == 3
    finally:
        cluster.stop_all()


@pytest.mark.slow
def test_a_node_whose_cluster_settings_differ_is_refused_and_applies_nothing(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, allow_reset=True)
    other = tmp_path / "n3.toml"
    other.write_text(cluster.config_path.read_text().replace("allow_reset = true", "allow_reset = false"))
    try:
        cluster.start("n1")
        cluster.start("n2")
        cluster.start("n3", config_path=other)
        cluster.leader(among=["n1", "n2"], timeout_s=60)
        status, headers, col = http("POST", cluster.node("n1").url + SCOPE + "/collections", {"name": "kept"})
        assert status == 200, col
        assert http("POST", cluster.node("n2").url + "/api/v2/reset")[0] == 200
        status, _, _ = http("POST", cluster.node("n1").url + SCOPE + "/collections", {"name": "after"})
        assert status == 200

        def refused() -> dict[str, Any] | None:
            statuses = [cluster.node(n).status() for n in ("n1", "n2", "n3")]
            if any(s is None for s in statuses):
                return None
            reported = [set(s["settings_mismatches"]) for s in statuses]
            return statuses if {"n3"} <= reported[0] | reported[1] else None
        statuses = wait_for(refused, 30, "the members to report n3's differing settings")
        n3 = statuses[2]
        assert n3["applied_index"] == 0 and n3["leader"] is None
        assert n3["settings_fingerprint"] != statuses[0]["settings_fingerprint"] == statuses[1]["settings_fingerprint"]
        assert "differ from this node's" in (tmp_path / "n1.log").read_text() + (tmp_path / "n2.log").read_text()
    finally:
        cluster.stop_all()


def partition(cluster: Cluster, node_id: str, peers: list[str], inbound_only: bool = False) -> None:
    status, _, body = http("POST", cluster.node(node_id).url + "/raftchroma/test/partition",
                           {"blocked": peers, "inbound_only": inbound_only})
    assert status == 200, body


def retry_until_acknowledged(url: str, body: Any, headers: dict[str, str]) -> tuple[Any, int]:
    """Send the same write with the same request id until it is acknowledged: after the partition
    heals, the deaf follower's election may cost a few 503/504 answers first."""
    def attempt() -> tuple[Any, int] | None:
        status, answer_headers, answer = http("POST", url, body, headers=headers)
        if status in (503, 504):
            return None
        assert status == 200, answer
        return answer, int(answer_headers["X-Raftchroma-Index"])
    return wait_for(attempt, 60, "the retried write to be acknowledged", interval_s=0.5)


@pytest.mark.slow
def test_a_write_retried_with_its_request_id_after_an_unknown_outcome_applies_once(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, cluster_keys="write_timeout_s = 3.0\nread_timeout_s = 30.0",
                           serve_args=("--fault-injection",))
    try:
        leader = start_cluster(cluster)
        follower = next(n for n in cluster.nodes if n != leader)
        url = cluster.node(follower).url
        partition(cluster, follower, [leader], inbound_only=True)  # it forwards; it never hears back
        request = {"X-Raftchroma-Request-Id": "0f6d7a52-7b8e-4a43-9f8e-3c3b4f0e6a11"}
        status, _, body = http("POST", url + SCOPE + "/collections", {"name": "once"}, headers=request)
        assert (status, body["error"]) == (504, "WriteOutcomeUnknown"), body
        assert "X-Raftchroma-Request-Id" in body["message"]
        partition(cluster, follower, [])
        for node_id in (follower, leader):  # the retry, on the node that timed out and on another
            retried, index = retry_until_acknowledged(cluster.node(node_id).url + SCOPE + "/collections",
                                                      {"name": "once"}, request)
            assert retried["name"] == "once"
        status, _, again = http("POST", url + SCOPE + "/collections", {"name": "once"})
        assert (status, again["message"]) == (409, "Collection [once] already exists")  # without the id: applied twice
        status, _, listed = http("GET", url + SCOPE + "/collections", headers=LIN)
        assert [c["id"] for c in listed if c["name"] == "once"] == [retried["id"]]
        views = digests(cluster, index)
        assert views[0] == views[1] == views[2]
    finally:
        cluster.stop_all()


def test_raft_port_strangers_are_dropped_and_the_node_lives_on(tmp_path: Path) -> None:
    """PySyncObj's admin utility (a list message), a 'readonly' peer and a bare member address are
    not a member's hello: the connection is dropped and nothing else happens (the utility's list
    used to raise in the hello check, which stopped the node)."""
    import subprocess
    import sys

    cluster = make_cluster(tmp_path, size=1)
    try:
        start_cluster(cluster)
        node = cluster.node("n1")
        before = node.answered_status()
        for args in (["-status"], ["-add", "127.0.0.1:1"]):
            subprocess.run([sys.executable, "-m", "pysyncobj.syncobj_admin", "-conn", f"127.0.0.1:{node.raft_port}",
                            "-pass", "test-secret", *args], capture_output=True, timeout=30)
        after = wait_for(lambda: node.status(), 10, "the node to answer")
        assert node.alive() and after["term"] == before["term"] and after["role"] == "leader"
        assert http("POST", node.url + SCOPE + "/collections", {"name": "still-here"})[0] == 200
    finally:
        cluster.stop_all()
