"""A local cluster of real `raftchroma serve` processes, for one jepsen-lite run.

Owns: a fresh temp directory with a generated cluster.toml (free 127.0.0.1 ports, a secret,
allow_reset false), one process group per node, every signal sent to them, and the test-only
partition and disk-fault controls of each node. Nodes always run with `--fault-injection` (these are test
clusters): `block` tells a node to drop all Raft messages to and from some peers, `set_faults`
makes its journal and store writes fail (disk full, I/O errors). Signals go to
the process groups this module started and to nothing else. The cluster can grow (`new_node`: free
ports, its own data dir, cluster.toml rewritten, started with `--join`) and shrink (`retire`):
`members` are the nodes the harness holds for members, which heal, the leader search and the
convergence wait consider; `nodes` keeps every node ever started, for `kill_all` and the logs. The
membership changes themselves are requests (`change_membership`, `transfer_leader`, `members_of`)
that the nemesis decides on. `LocalCluster` is a context manager:
on exit every node is resumed (SIGCONT, so that a paused node can die) and then SIGKILLed.
It must not judge results or choose faults (the nemesis does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

STATUS_TIMEOUT_S = 1.0
BLOCK_TIMEOUT_S = 2.0
MEMBERSHIP_REQUEST_TIMEOUT_S = 15.0  # raftchroma waits up to 10 s for a membership change to commit
GRACEFUL_STOP_S = 10.0
KILL_WAIT_S = 10.0
POLL_INTERVAL_S = 0.1
PASSWORD = "jepsen-lite-secret"


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now, held open together so that they are distinct."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class NodeProcess:
    node_id: str
    http_port: int
    raft_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    join: bool = False  # added at runtime: started with `serve --join`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class ClusterOptions:
    nodes: int = 3
    unsafe_local_reads: bool = False
    write_timeout_s: float = 3.0
    read_timeout_s: float = 2.0


@dataclass
class LocalCluster:
    """N nodes in `root`; use as `with LocalCluster.create(opts) as cluster:`."""

    root: Path
    options: ClusterOptions
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    pid_file: Path | None = None  # {node: pid} of every start, for a last-resort cleanup
    _owns_root: bool = False
    # The nodes the harness holds for members (added and not removed), in the order they came.
    # Replaced, never mutated in place, so a reader on another thread sees one whole list.
    members: list[str] = field(default_factory=list)
    # node id -> HTTP port, of every node ever created: clients keep a reference (NodeClient),
    # so nodes added during the run are reachable without telling them.
    http_ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, options: ClusterOptions, root: Path | None = None,
               pid_file: Path | None = None) -> LocalCluster:
        owns = root is None
        root = Path(tempfile.mkdtemp(prefix="jepsen-lite-")) if root is None else root
        ports = free_ports(options.nodes * 2)
        cluster = cls(root, options, pid_file=pid_file, _owns_root=owns)
        for i in range(options.nodes):
            node_id = f"n{i + 1}"
            cluster.nodes[node_id] = NodeProcess(node_id, ports[2 * i], ports[2 * i + 1], root / f"{node_id}.log")
            cluster.http_ports[node_id] = ports[2 * i]
        cluster.members = list(cluster.nodes)
        cluster.write_config()
        return cluster

    def new_node(self, node_id: str) -> NodeProcess:
        """A node for the running cluster (free ports, data dir `data/<id>`), written into
        cluster.toml; not a member until `admit`. Safe for the members: each read its bootstrap
        membership at its first start (data_dir/membership.json), later edits change nothing."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} already exists in this run")
        http_port, raft_port = free_ports(2)
        node = NodeProcess(node_id, http_port, raft_port, self.root / f"{node_id}.log", join=True)
        self.nodes[node_id] = node
        self.http_ports[node_id] = http_port
        self.write_config()
        return node

    def admit(self, node_id: str) -> None:
        """The node is a member from now on (heal, the leader search and convergence include it)."""
        if node_id not in self.members:
            self.members = [*self.members, node_id]

    def retire(self, node_id: str) -> None:
        """The node is no longer a member: never started again, left out of every wait."""
        self.members = [n for n in self.members if n != node_id]

    def member_address(self, node_id: str) -> dict[str, str]:
        node = self.nodes[node_id]
        return {"id": node_id, "raft": f"127.0.0.1:{node.raft_port}", "http": f"127.0.0.1:{node.http_port}"}

    @property
    def config_path(self) -> Path:
        return self.root / "cluster.toml"

    def write_config(self) -> None:
        lines = ["[cluster]", 'read_consistency = "linearizable"', "allow_reset = false",
                 f'secret = "{PASSWORD}"', f"write_timeout_s = {self.options.write_timeout_s}",
                 f"read_timeout_s = {self.options.read_timeout_s}"]
        for node in self.nodes.values():
            lines += ["", "[[node]]", f'id = "{node.node_id}"', f'raft = "127.0.0.1:{node.raft_port}"',
                      f'http = "127.0.0.1:{node.http_port}"', f'data_dir = "data/{node.node_id}"']
        self.config_path.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill_all()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.alive():
            raise RuntimeError(f"{node_id} is already running")
        cmd = [sys.executable, "-m", "raftchroma", "serve", "--config", str(self.config_path), "--node", node_id,
               "--fault-injection"]
        if node.join:  # only its first start reads it (bootstrap membership); harmless after
            cmd.append("--join")
        if self.options.unsafe_local_reads:
            cmd.append("--unsafe-local-reads")
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, env=env, cwd=self.root)
        node.paused = False
        self._write_pids()

    def _write_pids(self) -> None:
        if self.pid_file is None:
            return
        known = json.loads(self.pid_file.read_text()) if self.pid_file.exists() else {}
        for node_id, node in self.nodes.items():
            if node.process is not None:
                known.setdefault(node_id, [])
                if node.process.pid not in known[node_id]:
                    known[node_id].append(node.process.pid)
        self.pid_file.write_text(json.dumps(known) + "\n")

    def start_if_down(self, node_id: str) -> bool:
        """True if the node was down and has been started (a fresh process is unblocked). A node
        that is not a member (removed, or never added) is never started again."""
        if self.nodes[node_id].alive() or node_id not in self.members:
            return False
        self.start(node_id)
        return True

    def start_all(self) -> None:
        for node_id, node in self.nodes.items():
            if not node.alive():
                self.start(node_id)

    def _signal(self, node: NodeProcess, sig: int) -> bool:
        if not node.alive():
            return False
        assert node.process is not None
        try:
            os.killpg(node.process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self, node_id: str) -> None:
        """SIGKILL; a paused node is resumed first so that it can die."""
        node = self.nodes[node_id]
        self._signal(node, signal.SIGCONT)
        if self._signal(node, signal.SIGKILL) and node.process is not None:
            node.process.wait(timeout=KILL_WAIT_S)
        node.paused = False

    def pause(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if self._signal(node, signal.SIGSTOP):
            node.paused = True

    def resume(self, node_id: str) -> None:
        node = self.nodes[node_id]
        self._signal(node, signal.SIGCONT)
        node.paused = False

    def stop(self, node_id: str, grace_s: float = GRACEFUL_STOP_S) -> bool:
        """SIGTERM and wait; SIGKILL after `grace_s`. True if the node stopped by itself."""
        node = self.nodes[node_id]
        self.resume(node_id)
        if not self._signal(node, signal.SIGTERM) or node.process is None:
            return True
        try:
            node.process.wait(timeout=grace_s)
            return True
        except subprocess.TimeoutExpired:
            self.kill(node_id)
            return False

    def kill_all(self) -> None:
        for node_id in self.nodes:
            try:
                self.kill(node_id)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def block(self, node_id: str, peers: Sequence[str], timeout_s: float = BLOCK_TIMEOUT_S) -> bool:
        """Makes the node drop every Raft message to and from `peers` (replacing its previous
        set; `[]` heals it). False if the node is down, paused, or did not confirm in time. A
        link is cut only when both ends block each other: the caller blocks both sides."""
        node = self.nodes[node_id]
        if not node.alive() or node.paused:
            return False
        body = json.dumps({"blocked": sorted(peers)}).encode()
        request = urllib.request.Request(node.url + "/raftchroma/test/partition", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return sorted(json.loads(resp.read())["blocked"]) == sorted(peers)
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return False

    def set_faults(self, node_id: str, disk_full: bool, apply_fails: bool,
                   timeout_s: float = BLOCK_TIMEOUT_S) -> bool:
        """The node's test-only disk faults (`POST /raftchroma/test/faults`): `disk_full` makes its
        Raft journal appends and store changes fail with ENOSPC, `apply_fails` its store changes
        with EIO; both False heals. False if the node is down, paused, or did not confirm in time."""
        node = self.nodes[node_id]
        if not node.alive() or node.paused:
            return False
        wanted = {"disk_full": disk_full, "apply_fails": apply_fails}
        request = urllib.request.Request(node.url + "/raftchroma/test/faults", data=json.dumps(wanted).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return json.loads(resp.read()) == wanted
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return False

    # ----------------------------------------------------------- membership

    def request(self, node_id: str, method: str, path: str, body: Any = None,
                timeout_s: float = MEMBERSHIP_REQUEST_TIMEOUT_S) -> tuple[int | None, Any]:
        """One admin request to a node: (HTTP status, decoded body), or (None, the transport
        error) when there was no reply (refused, timed out, reset)."""
        node = self.nodes[node_id]
        if not node.alive() or node.paused:
            return None, "down or paused"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(node.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"null")
            except ValueError:
                return exc.code, None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def members_of(self, node_id: str) -> dict[str, Any] | None:
        """`GET /raftchroma/members` of one node: {"members", "leader", "membership_index"}."""
        status, body = self.request(node_id, "GET", "/raftchroma/members", timeout_s=STATUS_TIMEOUT_S * 2)
        return body if status == 200 and isinstance(body, dict) else None

    def change_membership(self, leader: str, op: str, node_id: str) -> tuple[int | None, Any]:
        """`add` (as a non-voter), `promote` or `remove` `node_id`, asked of `leader`."""
        if op == "add":
            return self.request(leader, "POST", "/raftchroma/members", self.member_address(node_id))
        if op == "promote":
            return self.request(leader, "POST", f"/raftchroma/members/{node_id}/promote", {})
        if op == "remove":
            return self.request(leader, "DELETE", f"/raftchroma/members/{node_id}")
        raise ValueError(f"unknown membership change {op!r}")

    def transfer_leader(self, leader: str, to: str | None = None) -> tuple[int | None, Any]:
        return self.request(leader, "POST", "/raftchroma/transfer-leader", {} if to is None else {"to": to})

    # --------------------------------------------------------------- status

    def status(self, node_id: str, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
        node = self.nodes[node_id]
        if not node.alive() or node.paused:
            return None
        try:
            with urllib.request.urlopen(node.url + "/raftchroma/status", timeout=timeout_s) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def leader(self) -> str | None:
        """The leader every reachable member agrees on and that says it leads, or None."""
        members = self.members
        statuses = {n: self.status(n) for n in members}
        reachable = {n: s for n, s in statuses.items() if s is not None}
        leaders = {s.get("leader") for s in reachable.values()}
        if len(leaders) != 1 or None in leaders:
            return None
        leader = leaders.pop()
        ok = leader in reachable and reachable[leader].get("role") == "leader"
        return leader if ok and len(reachable) * 2 > len(members) else None

    def wait_for_leader(self, timeout_s: float) -> str | None:
        return _poll(self.leader, timeout_s)

    def wait_converged(self, timeout_s: float) -> dict[str, int] | None:
        """Polls until every member is up, blocks no peer, has no injected disk fault, agrees on
        one leader, and has applied the same index."""
        def converged() -> dict[str, int] | None:
            statuses = {n: self.status(n) for n in self.members}
            if any(s is None for s in statuses.values()):
                return None
            rows = [s for s in statuses.values() if s is not None]
            leaders = {s["leader"] for s in rows}
            commit = max(int(s["commit_index"]) for s in rows)
            # applied_index counts raftchroma's own entries; raft_applied_index also counts
            # PySyncObj's internal ones, so it is the one to compare with the commit index.
            caught_up = all(int(s["raft_applied_index"]) >= commit and int(s["apply_queue"]) == 0 for s in rows)
            applied = {n: int(s["applied_index"]) for n, s in statuses.items() if s is not None}
            unblocked = all(not s.get("blocked_peers") for s in rows)
            no_faults = all(not any((s.get("injected_faults") or {}).values()) for s in rows)
            agreed = len(leaders) == 1 and None not in leaders and len(set(applied.values())) == 1
            if not (agreed and caught_up and unblocked and no_faults):
                return None
            return applied
        return _poll(converged, timeout_s)

    def copy_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for node in self.nodes.values():
            if node.log_path.exists():
                shutil.copy(node.log_path, dest / node.log_path.name)
        shutil.copy(self.config_path, dest / "cluster.toml")


def _poll(fn: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(POLL_INTERVAL_S)
