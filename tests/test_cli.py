"""`raftchroma up` and `raftchroma status` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import http, make_cluster, wait_for


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_up_prints_urls_and_leader_then_ctrl_c_stops_every_node(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    up = subprocess.Popen([sys.executable, "-m", "raftchroma", "up", "--config", str(cluster.config_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    node_pids: list[int] = []
    try:
        lines = []
        for line in up.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("cluster is up"):
                break
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
        table = subprocess.run([sys.executable, "-m", "raftchroma", "status", "--config", str(cluster.config_path)],
                               capture_output=True, text=True, timeout=60).stdout.splitlines()
        assert table[0].split() == ["id", "url", "reachable", "role", "term", "leader", "commit_index",
                                    "applied_index", "snapshot_index", "log_len", "journal_bytes"]
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
        for node in cluster.nodes.values():
            wait_for(lambda: node.status(timeout_s=0.5) is None, 30, f"{node.node_id} to stop")
    finally:
        _kill_group(up.pid)
        for pid in node_pids:
            _kill_group(pid)
        up.wait(timeout=30)


def test_status_marks_unreachable_nodes(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path)
    result = subprocess.run([sys.executable, "-m", "raftchroma", "status", "--config", str(cluster.config_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    rows = result.stdout.strip().splitlines()
    assert rows[0].split()[:3] == ["id", "url", "reachable"]
    assert [r.split()[2] for r in rows[1:]] == ["False", "False", "False"]
