"""Test harness: real `raftchroma serve` processes on free 127.0.0.1 ports in a temp dir, and the
real `chroma run` that differential tests compare them with.

Owns: writing a cluster.toml, starting each node in its own process group, polling (never
sleeping) until the cluster has a leader, killing exactly the processes it started, and
small HTTP helpers. Safe under pytest-xdist: nothing is shared between clusters.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import chromadb
from chromadb.config import Settings

PYTHON = sys.executable


# Ports for test nodes come from below Linux's ephemeral range (32768-60999), so no outgoing
# connection's local port can take one between the pick and the node's bind, and each pytest-xdist
# worker picks from a block of its own, so two workers never hand out the same port (a node's HTTP
# port once answered with another cluster's Raft handshake). Within a worker, ports are handed out
# in turn, each checked free when picked.
PORTS_LOW, PORTS_HIGH = 10_000, 32_768
_handed_out = 0


def _port_block() -> tuple[int, int]:
    """[start, end) of this process's ports: its xdist worker's share, or (outside pytest-xdist) a
    share chosen by pid."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if worker.startswith("gw") and worker[2:].isdigit() and workers > 0:
        shares, share = workers, int(worker[2:])
    else:
        shares, share = 64, os.getpid() % 64
    size = (PORTS_HIGH - PORTS_LOW) // shares
    return PORTS_LOW + share * size, PORTS_LOW + (share + 1) * size


def free_ports(count: int) -> list[int]:
    """`count` distinct ports, free when picked, from this process's block (see PORTS_LOW)."""
    global _handed_out
    start, end = _port_block()
    ports: list[int] = []
    for _ in range(end - start):
        if len(ports) == count:
            break
        port = start + _handed_out % (end - start)
        _handed_out += 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (a node of this worker still runs on it): the next one
        ports.append(port)
    if len(ports) < count:
        raise RuntimeError(f"no {count} free ports in {start}-{end}")
    return ports


def kill_group(process: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group of `process` (started with start_new_session) and reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout_s: float = 30.0,
         context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; returns (status, headers, parsed JSON body or raw text or None).
    `context` verifies an https node (and carries a client certificate if one is needed)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None or raw is not None:
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as resp:
            return resp.status, dict(resp.headers), decode_body(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), decode_body(exc.read())


def decode_body(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


@dataclass
class NodeProcess:
    node_id: str
    http_port: int
    raft_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    ssl_context: ssl.SSLContext | None = None  # set: the node serves https ([tls]), verified with this
    voter: bool = True  # false: written as `voter = false` (a non-voting read replica from its first start)
    join: bool = False  # true: written as `join = true` (not in the bootstrap membership: added later)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.http_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        try:
            code, _, body = http("GET", self.url + "/raftchroma/status", timeout_s=timeout_s, context=self.ssl_context)
        except (OSError, urllib.error.URLError):
            return None
        return body if code == 200 else None

    def answered_status(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """The node's status, asked until it answers: a live node applying a large batch may not
        answer within `status`'s one second (Chroma holds its GIL for the whole call)."""
        return wait_for(self.status, timeout_s, f"{self.node_id} to answer its status")

    def client(self, **headers: str) -> Any:
        return chromadb.HttpClient(host="127.0.0.1", port=self.http_port, headers=headers or None,
                                   settings=Settings(anonymized_telemetry=False))


@dataclass
class Cluster:
    root: Path
    nodes: dict[str, NodeProcess]
    extra_config: str = ""  # TOML appended to cluster.toml: [[token]] tables, [tls], [http]
    serve_args: tuple[str, ...] = ()
    allow_reset: bool = True
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # added to each node's environment (tokens in env vars)

    @property
    def config_path(self) -> Path:
        return self.root / "cluster.toml"

    def write_config(self, cluster_keys: str = "", raft_keys: str = "") -> None:
        self._config_keys = (cluster_keys, raft_keys)
        lines = ["[cluster]", 'read_consistency = "linearizable"', f"allow_reset = {str(self.allow_reset).lower()}",
                 'secret = "test-secret"', cluster_keys, "[raft]", raft_keys]
        for node in self.nodes.values():
            lines += ["[[node]]", f'id = "{node.node_id}"', f'raft = "127.0.0.1:{node.raft_port}"',
                      f'http = "127.0.0.1:{node.http_port}"', f'data_dir = "data/{node.node_id}"']
            if not node.voter:
                lines.append("voter = false")
            if node.join:
                lines.append("join = true")
        lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, node_id: str, config_path: Path | None = None, cpus: set[int] | None = None,
              env: dict[str, str] | None = None, by_env: bool = False, args: tuple[str, ...] = ()) -> None:
        """Start a node; `config_path` overrides the cluster's file, `cpus` limits the CPUs it may use,
        `env` adds environment variables; `by_env` names the file and node in RAFTCHROMA_CONFIG and
        RAFTCHROMA_NODE instead of options; `args` are added to `serve`'s (e.g. `--join`)."""
        node = self.nodes[node_id]
        assert not node.alive(), f"{node_id} is already running"
        log = open(node.log_path, "ab")
        config = str(config_path or self.config_path)
        where = [] if by_env else ["--config", config, "--node", node_id]
        cmd = [PYTHON, "-m", "raftchroma", "serve", *where, *self.serve_args, *args]
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False", **self.env, **(env or {}))
        if by_env:
            env.update(RAFTCHROMA_CONFIG=config, RAFTCHROMA_NODE=node_id)
        limit = (lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None
        node.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                        preexec_fn=limit)
        log.close()
        self.started.append(node.process)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[node_id]
        if node.alive():
            os.killpg(node.process.pid, sig)
            node.process.wait(timeout=30)

    def crash_all(self) -> str:
        """SIGKILL every node, start them all again, and return the leader they elect."""
        for node_id in self.nodes:
            self.kill(node_id)
        for node_id in self.nodes:
            self.start(node_id)
        return self.leader(timeout_s=60)

    def stop_all(self) -> None:
        for process in self.started:
            kill_group(process)

    def leader(self, among: list[str] | None = None, timeout_s: float = 30.0) -> str:
        """The id of the leader that every live node (or `among`) agrees on."""
        def agreed() -> str | None:
            ids = among or [n for n, p in self.nodes.items() if p.alive()]
            statuses = [self.nodes[n].status() for n in ids]
            if any(s is None for s in statuses):
                return None
            leaders = {s["leader"] for s in statuses}
            if len(leaders) == 1 and None not in leaders:
                leader = leaders.pop()
                return leader if (self.nodes[leader].status() or {}).get("role") == "leader" else None
            return None
        return wait_for(agreed, timeout_s, "an agreed leader")

    def node(self, node_id: str) -> NodeProcess:
        return self.nodes[node_id]

    def new_node(self, node_id: str, join: bool = False) -> NodeProcess:
        """A node for a running cluster (free ports, its own data dir), written into cluster.toml
        (`join`: marked `join = true`). The members keep the membership they started with
        (data_dir/membership.json); start it with `args=("--join",)` (or `join`) and add it with
        `raftchroma cluster add`."""
        http_port, raft_port = free_ports(2)
        node = NodeProcess(node_id, http_port, raft_port, self.root / f"{node_id}.log",
                           ssl_context=next(iter(self.nodes.values())).ssl_context, join=join)
        self.nodes[node_id] = node
        self.write_config(*self._config_keys)
        return node

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for node in self.nodes.values():
            if node.log_path.exists():
                text = node.log_path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {node.node_id} ---\n" + "\n".join(text))
        return "\n".join(out)


# Generous bounds: CI runs several 3-node clusters at once on 2 cores.
DEFAULT_CLUSTER_KEYS = "write_timeout_s = 30.0\nread_timeout_s = 30.0"


def make_cluster(root: Path, size: int = 3, cluster_keys: str = DEFAULT_CLUSTER_KEYS, raft_keys: str = "",
                 serve_args: tuple[str, ...] = (), allow_reset: bool = True, extra_toml: str = "",
                 client_ssl: ssl.SSLContext | None = None, env: dict[str, str] | None = None,
                 non_voters: tuple[str, ...] = ()) -> Cluster:
    """`extra_toml`: tables appended to cluster.toml ([[token]], [tls], [http]); `client_ssl`: the
    nodes serve https (`extra_toml` has [tls]) and the harness reaches them with this context;
    `env`: added to every node's environment; `non_voters`: node ids bootstrapped as non-voting
    read replicas (`voter = false`)."""
    ports = free_ports(size * 2)
    nodes = {}
    for i in range(size):
        node_id = f"n{i + 1}"
        nodes[node_id] = NodeProcess(node_id, ports[2 * i], ports[2 * i + 1], root / f"{node_id}.log",
                                     ssl_context=client_ssl, voter=node_id not in non_voters)
    cluster = Cluster(root, nodes, extra_config=extra_toml, serve_args=serve_args, allow_reset=allow_reset,
                      env=dict(env or {}))
    cluster.write_config(cluster_keys, raft_keys)
    return cluster


def start_cluster(cluster: Cluster, timeout_s: float = 60.0) -> str:
    for node_id in cluster.nodes:
        cluster.start(node_id)
    return cluster.leader(timeout_s=timeout_s)


CHROMA_EXE = Path(PYTHON).parent / "chroma"
CHROMA_START_TIMEOUT_S = 30.0


@dataclass
class ChromaRun:
    """One `chroma run` (the chromadb package's server) on a free port, with its data and log under
    `root`, in its own process group; `stop` kills exactly that group."""

    root: Path
    port: int = field(default_factory=lambda: free_ports(1)[0])
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, allow_reset: bool = False) -> None:
        """Start it; `allow_reset` needs Chroma's config file (the command line has no flag for it)."""
        assert not self.alive(), "chroma run is already running"
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "chroma.log", "ab")
        cmd = [str(CHROMA_EXE), "run", "--path", str(self.root / "data"), "--host", "127.0.0.1", "--port", str(self.port)]
        if allow_reset:
            config = self.root / "chroma.yaml"
            config.write_text(f'port: {self.port}\nlisten_address: "127.0.0.1"\n'
                              f'persist_path: "{self.root / "data"}"\nallow_reset: true\n')
            cmd = [str(CHROMA_EXE), "run", str(config)]
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                        cwd=self.root)
        log.close()

    def wait_ready(self) -> None:
        def up() -> bool:
            assert self.alive(), "chroma run exited during start-up"
            try:
                return http("GET", self.url + "/api/v2/heartbeat", timeout_s=1.0)[0] == 200
            except OSError:
                return False
        wait_for(up, CHROMA_START_TIMEOUT_S, "chroma run to answer its heartbeat")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            self.process.wait(timeout=30)
