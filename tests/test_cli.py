"""`raftchroma up` and `raftchroma status` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Cluster, make_cluster, wait_for


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_node(pid: int) -> bool:
    """Whether `pid` is still a raftchroma node (pids are reused; never kill a stranger)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"raftchroma" in cmdline and b"serve" in cmdline


def _stop_up(up: subprocess.Popen[str], node_pids: list[int]) -> None:
    """Cleanup whatever a test left: `up` stops its own nodes on SIGINT; SIGKILL is the fallback."""
    if up.poll() is None:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_group(up.pid)
            up.wait(timeout=30)
    for pid in node_pids:
        if _is_node(pid):
            _kill_group(pid)


def _start_up(cluster: Cluster, stderr_path: Path) -> subprocess.Popen[str]:
    """`raftchroma up` on the cluster's file, in its own session, stderr to `stderr_path`."""
    with stderr_path.open("w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "raftchroma", "up", "--config", str(cluster.config_path)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)


def _banner(up: subprocess.Popen[str]) -> list[str]:
    """The lines `up` prints up to and including "cluster is up"."""
    lines = []
    for line in up.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("cluster is up"):
            break
    return lines


@pytest.mark.slow
def test_up_prints_urls_and_leader_restarts_a_killed_node_then_ctrl_c_stops_every_node(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    stderr_path = tmp_path / "up.stderr"
    up = _start_up(cluster, stderr_path)
    node_pids: list[int] = []
    try:
        lines = _banner(up)
        urls = [n.url for n in cluster.nodes.values()]
        assert [line.split()[1] for line in lines[:3]] == urls
        assert sum("(leader)" in line for line in lines[:3]) == 1
        status = subprocess.run([sys.executable, "-m", "raftchroma", "status", "--json", "--config",
                                 str(cluster.config_path)], capture_output=True, text=True, timeout=60)
        rows = json.loads(status.stdout)
        node_pids = [row["pid"] for row in rows]
        assert all(row["reachable"] for row in rows)
        assert len({row["leader"] for row in rows}) == 1
        assert sorted(row["role"] for row in rows) == ["follower", "follower", "leader"]
        assert all(row["snapshot_index"] == 0 and row["log_len"] >= 1 and row["journal_bytes"] > 0 for row in rows)
        victim = cluster.node("n2")
        victim_pid = node_pids.pop(1)
        os.killpg(victim_pid, signal.SIGKILL)  # each node runs in its own session: pid == pgid

        def restarted() -> int | None:
            status = victim.status(timeout_s=0.5)
            return status["pid"] if status and status["pid"] != victim_pid else None
        node_pids.append(wait_for(restarted, 60, "up to start the killed node again"))
        assert "raftchroma: node n2 was killed by SIGKILL; starting it again in 1 s" in stderr_path.read_text()
        assert len({row["leader"] for row in json.loads(subprocess.run(
            [sys.executable, "-m", "raftchroma", "status", "--json", "--config", str(cluster.config_path)],
            capture_output=True, text=True, timeout=60).stdout)} - {None}) == 1
        table = subprocess.run([sys.executable, "-m", "raftchroma", "status", "--config", str(cluster.config_path)],
                               capture_output=True, text=True, timeout=60).stdout.splitlines()
        assert table[0].split() == ["id", "url", "reachable", "voting", "role", "term", "leader", "commit_index",
                                    "applied_index", "lag", "match_index", "snapshot_index", "log_len",
                                    "journal_bytes"]
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
        for node in cluster.nodes.values():
            wait_for(lambda: node.status(timeout_s=0.5) is None, 30, f"{node.node_id} to stop")
    finally:
        _stop_up(up, node_pids)


@pytest.mark.slow
def test_up_does_not_restart_a_node_that_refuses_to_start(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    journal = tmp_path / "data" / "n3" / "raft.log"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b"not a raftchroma journal")
    stderr_path = tmp_path / "up.stderr"
    up = _start_up(cluster, stderr_path)
    node_pids: list[int] = []
    try:
        lines = _banner(up)
        node_pids = [cluster.node(n).status(timeout_s=5)["pid"] for n in ("n1", "n2")]
        leader_lines = [line for line in lines[:3] if "(leader)" in line]
        assert len(leader_lines) == 1 and leader_lines[0].split()[0] in ("n1", "n2")
        wait_for(lambda: "node n3 refused to start (exit 3)" in stderr_path.read_text(), 60, "the refusal")
        assert cluster.node("n3").status(timeout_s=0.5) is None
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 3
        text = stderr_path.read_text()
        assert "corrupt Raft journal" in text and "starting it again" not in text
        for node in cluster.nodes.values():
            wait_for(lambda: node.status(timeout_s=0.5) is None, 30, f"{node.node_id} to stop")
    finally:
        _stop_up(up, node_pids)


def test_status_marks_unreachable_nodes(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    result = subprocess.run([sys.executable, "-m", "raftchroma", "status", "--config", str(cluster.config_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    rows = result.stdout.strip().splitlines()
    assert rows[0].split()[:3] == ["id", "url", "reachable"]
    assert [r.split()[2] for r in rows[1:]] == ["False", "False", "False"]


def test_serve_refuses_a_raft_address_beyond_loopback_without_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('[[node]]\nid = "a"\nraft = "10.1.2.3:7001"\nhttp = "127.0.0.1:8001"\ndata_dir = "data/a"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("RAFTCHROMA_SECRET", "RAFTCHROMA_PASSWORD")}
    result = subprocess.run([sys.executable, "-m", "raftchroma", "serve", "--config", str(config), "--node", "a"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("raftchroma: refusing to start node a: Raft listens beyond loopback and no cluster "
                               "secret is set")
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_up_gives_a_cluster_without_a_secret_a_random_one_readable_only_by_its_owner(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    text = cluster.config_path.read_text()
    assert 'secret = "test-secret"' in text
    cluster.config_path.write_text(text.replace('secret = "test-secret"', ""))
    stderr_path = tmp_path / "up.stderr"
    up = _start_up(cluster, stderr_path)
    node_pids: list[int] = []
    try:
        _banner(up)
        node_pids = [cluster.node(n).status(timeout_s=5)["pid"] for n in cluster.nodes]
        paths = [tmp_path / "data" / n / "raft-secret" for n in cluster.nodes]
        secrets = {path.read_text().strip() for path in paths}
        assert len(secrets) == 1 and len(secrets.pop()) == 64
        assert {path.stat().st_mode & 0o777 for path in paths} == {0o600}
        col = cluster.node("n2").client().get_or_create_collection("secret-up")
        col.add(ids=["a"], embeddings=[[1.0, 2.0]])
        assert cluster.node("n3").client().get_collection("secret-up").get(ids=["a"])["ids"] == ["a"]
    finally:
        _stop_up(up, node_pids)
