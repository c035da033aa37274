"""Operating a cluster, on real nodes: /metrics values that move when they should, /readyz and
/livez, `raftchroma status` with each node's lag, JSON logs, and separate listen and advertised
addresses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Cluster, NodeProcess, http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
COLLECTIONS_ROUTE = "/api/v2/tenants/{tenant}/databases/{database}/collections"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(node: NodeProcess) -> Samples:
    status, headers, text = http("GET", node.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain"), text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(node_or_samples: NodeProcess | Samples, name: str, **labels: str) -> float | None:
    samples = scrape(node_or_samples) if isinstance(node_or_samples, NodeProcess) else node_or_samples
    return samples.get((name, frozenset(labels.items())))


def create_collections(node: NodeProcess, prefix: str, count: int) -> None:
    for i in range(count):
        status, _, body = http("POST", node.url + SCOPE + "/collections", {"name": f"{prefix}-{i}"})
        assert status == 200, body


def raft_child(node: NodeProcess) -> psutil.Process:
    """The node's Raft process (raft_process.py), a child of the `serve` process."""
    children = [p for p in psutil.Process(node.process.pid).children() if "raft_main" in " ".join(p.cmdline())]
    assert len(children) == 1, children
    return children[0]


def status_rows(cluster: Cluster) -> dict[str, list[str]]:
    """`raftchroma status` (the table) run as a user runs it, by node id."""
    done = subprocess.run([sys.executable, "-m", "raftchroma", "status", "--config", str(cluster.config_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines[0].split()
    return {row[0]: dict(zip(header, row)) for row in (line.split() for line in lines[1:])}


@pytest.fixture
def ops_cluster(fresh_cluster: Cluster) -> Cluster:
    return fresh_cluster


def test_metrics_count_writes_and_requests_follow_a_stopped_follower_and_a_new_term(ops_cluster: Cluster) -> None:
    cluster = ops_cluster
    leader_id = cluster.leader()
    leader = cluster.node(leader_id)
    before = scrape(leader)
    create_collections(leader, "counted", 3)
    after = scrape(leader)
    committed = "raftchroma_proposals_committed_total"
    assert metric(after, committed, kind="write") - metric(before, committed, kind="write") == 3
    assert metric(after, "raftchroma_http_requests_total", method="POST", route=COLLECTIONS_ROUTE, status="200") == 3
    apply_count = "raftchroma_apply_duration_seconds_count"
    assert metric(after, apply_count) - metric(before, apply_count) == 3
    assert metric(after, "raftchroma_journal_fsync_duration_seconds_count") > 0
    assert metric(after, "raftchroma_is_leader") == 1 and metric(after, "raftchroma_has_leader") == 1

    # A follower whose Raft process is stopped: the leader's view of its lag grows with every write.
    follower_id = sorted(n for n in cluster.nodes if n != leader_id)[0]
    follower = cluster.node(follower_id)
    lag = "raftchroma_peer_lag_entries"
    wait_for(lambda: metric(leader, lag, peer=follower_id) == 0, 30, "the follower to catch up")
    commit = metric(leader, "raftchroma_commit_index")
    wait_for(lambda: follower.answered_status()["applied_index"] == commit, 30, "the follower to apply everything")
    frozen = raft_child(follower)
    frozen.suspend()
    try:
        create_collections(leader, "lagging", 2)
        wait_for(lambda: metric(leader, lag, peer=follower_id) == 2, 30, "a lag of 2")
        create_collections(leader, "lagging-more", 3)
        wait_for(lambda: metric(leader, lag, peer=follower_id) == 5, 30, "a lag of 5")
        assert metric(leader, "raftchroma_peer_match_index", peer=follower_id) == commit
        other_id = next(n for n in cluster.nodes if n not in (leader_id, follower_id))
        assert metric(leader, lag, peer=other_id) == 0

        def table() -> dict[str, dict[str, str]] | None:
            rows = status_rows(cluster)
            return rows if rows[other_id]["lag"] == "0" else None  # until the other follower has applied
        rows = wait_for(table, 60, "`raftchroma status` to show the lags")
        assert set(rows) == set(cluster.nodes)
        assert (rows[follower_id]["lag"], rows[follower_id]["match_index"]) == ("5", str(int(commit)))
        assert rows[leader_id]["lag"] == "0" and rows[leader_id]["role"] == "leader"
        assert rows[other_id]["match_index"] == str(int(commit) + 5)
    finally:
        frozen.resume()
    wait_for(lambda: metric(cluster.node(cluster.leader()), lag, peer=follower_id) == 0, 60, "the follower to catch up")

    # The leader dies: the new leader's /metrics shows a higher term.
    leader_id = cluster.leader(timeout_s=60)
    term = metric(cluster.node(leader_id), "raftchroma_term")
    cluster.kill(leader_id)
    new_id = cluster.leader(timeout_s=60)
    assert new_id != leader_id
    samples = scrape(cluster.node(new_id))
    assert metric(samples, "raftchroma_term") > term
    assert metric(samples, "raftchroma_is_leader") == 1
    assert metric(samples, "raftchroma_leader_changes_seen_total") >= 2


def test_readyz_fails_on_a_lone_survivor_and_recovers_livez_stays_up(ops_cluster: Cluster) -> None:
    cluster = ops_cluster
    for node in cluster.nodes.values():
        wait_for(lambda: http("GET", node.url + "/readyz")[0] == 200, 30, f"{node.node_id} ready")
        status, _, body = http("GET", node.url + "/livez")
        assert (status, body) == (200, {"live": True, "node": node.node_id})
    survivor = cluster.node("n1")
    for node_id in ("n2", "n3"):
        cluster.kill(node_id)

    def not_ready() -> dict[str, Any] | None:
        status, _, body = http("GET", survivor.url + "/readyz")
        return body if status == 503 else None
    body = wait_for(not_ready, 60, "the survivor to report not ready")
    assert body["ready"] is False and body["node"] == "n1" and body["reason"]
    assert http("GET", survivor.url + "/livez")[0] == 200
    for node_id in ("n2", "n3"):
        cluster.start(node_id)
    wait_for(lambda: http("GET", survivor.url + "/readyz")[0] == 200, 60, "the survivor to be ready again")
    status, _, body = http("GET", survivor.url + "/readyz")
    assert body == {"ready": True, "node": "n1", "applied_index": body["applied_index"]} and status == 200


def test_json_logs_one_object_per_line_from_both_processes(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, size=1, serve_args=("--log-format", "json"))
    try:
        start_cluster(cluster)
        create_collections(cluster.node("n1"), "logged", 1)
        cluster.kill("n1", signal.SIGTERM)
    finally:
        cluster.stop_all()
    lines = [line for line in cluster.node("n1").log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    assert all({"ts", "level", "node", "logger", "msg"} <= set(r) and r["node"] == "n1" for r in records)
    assert any(r["logger"] == "raftchroma.http.app" and "serving the Chroma API" in r["msg"] for r in records)
    assert any(r.get("process") == "raft" and "leader changed" in r["msg"] for r in records)
    assert any(r["msg"] == "node n1 stopped" for r in records)


def test_nodes_listening_on_other_addresses_than_they_advertise_form_a_cluster(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    raft = {n: cluster.node(n).raft_port for n in cluster.nodes}
    web = {n: cluster.node(n).http_port for n in cluster.nodes}
    listen_in_file = {"n1": f'raft_listen = "0.0.0.0:{raft["n1"]}"\nhttp_listen = "127.0.0.1:{web["n1"]}"\n'}
    lines = ['[cluster]\npassword = "test-secret"\nwrite_timeout_s = 30.0\nread_timeout_s = 30.0']
    for node_id in cluster.nodes:  # peers and clients dial "localhost"
        lines.append(f'[[node]]\nid = "{node_id}"\nraft = "localhost:{raft[node_id]}"\nhttp = "localhost:{web[node_id]}"\n'
                     f'data_dir = "data/{node_id}"\n{listen_in_file.get(node_id, "")}')
    cluster.config_path.write_text("\n".join(lines))
    try:
        cluster.start("n1")
        cluster.start("n2", by_env=True, env={"RAFTCHROMA_RAFT_LISTEN": f"0.0.0.0:{raft['n2']}",
                                              "RAFTCHROMA_HTTP_LISTEN": f"127.0.0.1:{web['n2']}"})
        cluster.start("n3", by_env=True)  # binds the advertised localhost addresses
        leader = cluster.leader(timeout_s=60)
        assert leader in cluster.nodes
        status, headers, body = http("POST", cluster.node("n2").url + SCOPE + "/collections", {"name": "bound"})
        assert status == 200, body
        index = int(headers["X-Raftchroma-Index"])
        for node in cluster.nodes.values():
            wait_for(lambda: node.answered_status()["applied_index"] >= index, 30, f"{node.node_id} to apply the write")
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp") if c.status == "LISTEN"}
        assert {("0.0.0.0", raft["n1"]), ("0.0.0.0", raft["n2"]), ("127.0.0.1", web["n1"]),
                ("127.0.0.1", web["n2"])} <= listening
        assert ("0.0.0.0", raft["n3"]) not in listening and ("127.0.0.1", raft["n3"]) in listening
        assert {row["leader"] for row in status_rows(cluster).values()} == {leader}
    finally:
        cluster.stop_all()
