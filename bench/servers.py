"""The servers under test: one `chroma run` and one 3-node raftchroma cluster, from tests/harness.py,
and what the benchmark reads from the cluster's /raftchroma/status.

Owns: starting and stopping both (each process in its own process group, stopped by process
group, see harness), clients for them, waiting until every node has applied the leader's log,
and the terms observed before and after each workload. Must not: stop a process it did not
start, or wait without a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Iterator

import chromadb
from chromadb.config import Settings

from tests.harness import ChromaRun, Cluster, make_cluster, start_cluster, wait_for

CONSISTENCY_HEADER = "X-Raftchroma-Read-Consistency"
LEADER_TIMEOUT_S = 60.0
CAUGHT_UP_TIMEOUT_S = 300.0
STATUS_TIMEOUT_S = 5.0
STATUS_POLL_S = 0.05
# The cluster runs with the product's defaults (write_timeout_s, read_timeout_s, election
# timeouts), not the generous test bounds of tests/harness.DEFAULT_CLUSTER_KEYS.
CLUSTER_KEYS = ""


@dataclasses.dataclass
class Servers:
    root: Path
    chroma: ChromaRun
    cluster: Cluster

    @classmethod
    def create(cls, root: Path) -> "Servers":
        (root / "cluster").mkdir(parents=True)
        return cls(root, ChromaRun(root / "chroma"), make_cluster(root / "cluster", cluster_keys=CLUSTER_KEYS,
                                                                  allow_reset=False))

    def start(self) -> str:
        """Start both; returns the cluster's leader."""
        self.chroma.start()
        self.chroma.wait_ready()
        return start_cluster(self.cluster, timeout_s=LEADER_TIMEOUT_S)

    def stop(self) -> None:
        try:
            self.cluster.stop_all()
        finally:
            self.chroma.stop()

    def pids(self) -> list[int]:
        return [p.pid for p in self.cluster.started] + ([self.chroma.process.pid] if self.chroma.process else [])

    @property
    def node_ids(self) -> list[str]:
        return sorted(self.cluster.nodes)

    def chroma_client(self) -> Any:
        return chromadb.HttpClient(host="127.0.0.1", port=self.chroma.port,
                                   settings=Settings(anonymized_telemetry=False))

    def node_client(self, node_id: str, consistency: str = "linearizable") -> Any:
        return self.cluster.node(node_id).client(**{CONSISTENCY_HEADER: consistency})

    def status(self, node_id: str) -> dict[str, Any] | None:
        return self.cluster.node(node_id).status(timeout_s=STATUS_TIMEOUT_S)

    def leader(self) -> str:
        return self.cluster.leader(timeout_s=LEADER_TIMEOUT_S)

    def followers(self, leader: str) -> list[str]:
        return [n for n in self.node_ids if n != leader]


def caught_up(servers: Servers, node_ids: list[str]) -> bool:
    """Every node of `node_ids` answers and has applied what the agreed leader has committed."""
    statuses = [servers.status(n) for n in node_ids]
    if any(s is None for s in statuses) or len({s["leader"] for s in statuses}) != 1:
        return False
    leader = servers.status(statuses[0]["leader"]) if statuses[0]["leader"] else None
    return leader is not None and all(s["applied_index"] >= leader["commit_index"] for s in statuses)


def wait_caught_up(servers: Servers, node_ids: list[str] | None = None) -> float:
    """Wait until every node (of `node_ids`) has applied the leader's log; returns the wait in s."""
    started = time.perf_counter()
    ids = node_ids or servers.node_ids
    wait_for(lambda: caught_up(servers, ids), CAUGHT_UP_TIMEOUT_S, f"{ids} to apply the leader's log",
             interval_s=STATUS_POLL_S)
    return time.perf_counter() - started


# ---------------------------------------------------------------- terms per workload


def raft_view(servers: Servers) -> dict[str, Any]:
    """Each node's term, role, leader and leader-change count; None for a node that does not answer."""
    out: dict[str, Any] = {}
    for node_id in servers.node_ids:
        s = servers.status(node_id)
        out[node_id] = None if s is None else {k: s[k] for k in ("term", "role", "leader", "leader_changes")}
    return out


def max_term(view: dict[str, Any]) -> int | None:
    terms = [v["term"] for v in view.values() if v is not None]
    return max(terms) if terms else None


@dataclasses.dataclass
class TermLog:
    """The Raft terms before and after each workload; an election shows as a higher term."""

    servers: Servers
    phases: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str, fault: bool) -> Iterator[None]:
        before = raft_view(self.servers)
        yield
        after = raft_view(self.servers)
        t0, t1 = max_term(before), max_term(after)
        elections = None if t0 is None or t1 is None else t1 - t0
        self.phases.append({"workload": name, "fault": fault, "term_before": t0, "term_after": t1,
                            "elections": elections, "before": before, "after": after})

    def fault_free_elections(self) -> list[dict[str, Any]]:
        return [p for p in self.phases if not p["fault"] and p["elections"] != 0]
