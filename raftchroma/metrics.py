"""A node's Prometheus metrics: the only module that imports `prometheus_client`.

Owns: every metric's name, help, labels and buckets, one `CollectorRegistry` per node (never the
global one), and the text exposition served at `GET /metrics`. The rest of the code calls the
small methods of `NodeMetrics` (events: a proposal answered, an entry applied...) and hands it a
function that returns a `RaftSample` (state, read at scrape time). It must not read node state
by itself, nor block: scrapes run on the event loop.

The Raft child cannot reach this registry (another process), so what it measures travels with
its status push (raft_process.py, every 20 ms): its state, the leader's match index per peer, and
the journal's fsync durations as cumulative bucket counts (`BucketCounts`, plain Python, so that
the journal needs nothing from prometheus_client).

Names follow etcd's (`etcd_server_has_leader`, `..._proposals_committed_total`), prefix
`raftchroma_`, units last.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

PREFIX = "raftchroma_"
FSYNC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
APPLY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SNAPSHOT_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # 404s and anything without a route: one series, not one per URL


class BucketCounts:
    """A histogram as plain numbers (cumulative counts per upper bound, sum, count), for the Raft
    child, which ships `state()` to the parent with its status. Thread-safe."""

    def __init__(self, bounds_s: tuple[float, ...] = FSYNC_BUCKETS_S) -> None:
        self._bounds_s = bounds_s
        self._counts = [0] * len(bounds_s)  # per bucket, not cumulative
        self._sum_s = 0.0
        self._count = 0
        self._lock = threading.Lock()

    def observe(self, value_s: float) -> None:
        with self._lock:
            for i, bound in enumerate(self._bounds_s):
                if value_s <= bound:
                    self._counts[i] += 1
                    break
            self._sum_s += value_s
            self._count += 1

    def state(self) -> dict[str, Any]:
        with self._lock:
            cumulative, running = [], 0
            for count in self._counts:
                running += count
                cumulative.append(running)
            return {"bounds_s": list(self._bounds_s), "cumulative": cumulative, "sum_s": self._sum_s,
                    "count": self._count}


@dataclass(frozen=True)
class RaftSample:
    """The node's state when scraped (see Node.metrics_sample)."""

    has_leader: bool
    is_leader: bool
    leader_changes: int
    term: int
    commit_index: int
    applied_index: int
    apply_backlog: int
    proposals_pending: int
    snapshot_bytes: int
    peer_match_index: dict[str, int] = field(default_factory=dict)  # leader only: node id -> match index
    journal_fsync: dict[str, Any] = field(default_factory=dict)  # BucketCounts.state() from the Raft child
    is_voter: bool = True  # this node votes in the membership in force
    voters: int = 0  # members that vote, in the membership in force here
    non_voters: int = 0
    late_ticks: int = 0  # Raft ticks that ran more than a heartbeat period late


class _RaftCollector:
    """Turns a RaftSample, taken at each scrape, into metric families."""

    def __init__(self, sample: Callable[[], RaftSample]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        s = self._sample()
        yield _gauge("has_leader", "1 if this node knows a leader, else 0.", int(s.has_leader))
        yield _gauge("is_leader", "1 if this node is the leader, else 0.", int(s.is_leader))
        yield CounterMetricFamily(PREFIX + "leader_changes_seen", "Leaders (new leader or term) seen since start.",
                                  value=s.leader_changes)
        yield CounterMetricFamily(PREFIX + "late_ticks", "Raft ticks that ran more than a heartbeat period late "
                                  "(heartbeats and votes waited: a slow disk or a starved CPU).", value=s.late_ticks)
        yield _gauge("term", "Current Raft term.", s.term)
        yield _gauge("commit_index", "Raft commit index known to this node.", s.commit_index)
        yield _gauge("applied_index", "Last log index applied to this node's store.", s.applied_index)
        yield _gauge("apply_backlog_entries", "Committed entries queued here and not applied yet.", s.apply_backlog)
        yield _gauge("proposals_pending", "Writes this node has proposed and awaits.", s.proposals_pending)
        yield _gauge("snapshot_size_bytes", "Size of this node's snapshot file.", s.snapshot_bytes)
        yield _gauge("is_voter", "1 if this node votes in the membership in force here, else 0.", int(s.is_voter))
        members = GaugeMetricFamily(PREFIX + "members", "Members in the membership in force here, by kind.",
                                    labels=["kind"])
        members.add_metric(["voter"], s.voters)
        members.add_metric(["non_voter"], s.non_voters)
        yield members
        match = GaugeMetricFamily(PREFIX + "peer_match_index", "Leader only: highest log index known replicated "
                                  "on each peer.", labels=["peer"])
        lag = GaugeMetricFamily(PREFIX + "peer_lag_entries", "Leader only: commit index minus the peer's match "
                                "index (0 when the peer has everything committed).", labels=["peer"])
        for peer, index in sorted(s.peer_match_index.items()):
            match.add_metric([peer], index)
            lag.add_metric([peer], max(0, s.commit_index - index))
        yield match
        yield lag
        yield _fsync_family(s.journal_fsync)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _fsync_family(state: dict[str, Any]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + "journal_fsync_duration_seconds",
                                   "fsync calls of the Raft journal (entries, term and vote, compaction).")
    bounds = state.get("bounds_s") or list(FSYNC_BUCKETS_S)
    cumulative = state.get("cumulative") or [0] * len(bounds)
    buckets = [(_le(b), c) for b, c in zip(bounds, cumulative)] + [("+Inf", state.get("count", 0))]
    family.add_metric([], buckets, sum_value=state.get("sum_s", 0.0))
    return family


def _le(bound: float) -> str:
    return repr(float(bound))


class NodeMetrics:
    """One node's registry and instruments. Event methods are thread-safe (prometheus_client's are)."""

    def __init__(self, sample: Callable[[], RaftSample]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._committed = Counter(PREFIX + "proposals_committed", "Proposals this node made that committed and "
                                  "were applied here, by kind (write).", ["kind"], registry=r)
        self._failed = Counter(PREFIX + "proposals_failed", "Proposals this node answered with an error, by kind "
                               "and error (NoQuorum: definite; WriteOutcomeUnknown: may have committed).",
                               ["kind", "error"], registry=r)
        self._apply = Histogram(PREFIX + "apply_duration_seconds", "Time to apply one committed log entry to the "
                                "store.", registry=r, buckets=APPLY_BUCKETS_S)
        self._snapshot = Histogram(PREFIX + "snapshot_duration_seconds", "Time to write a snapshot of the store, "
                                   "or to install one.", ["kind"], registry=r, buckets=SNAPSHOT_BUCKETS_S)
        self._barrier = Histogram(PREFIX + "read_barrier_wait_seconds", "Time a linearizable read waited for its "
                                  "read index and for this node to apply it.", registry=r, buckets=WAIT_BUCKETS_S)
        self._requests = Counter(PREFIX + "http_requests", "HTTP requests by method, route (the route's pattern, "
                                 "not the URL) and status.", ["method", "route", "status"], registry=r)
        self._latency = Histogram(PREFIX + "http_request_duration_seconds", "HTTP request latency by method and "
                                  "route.", ["method", "route"], registry=r, buckets=WAIT_BUCKETS_S)
        for kind in ("write",):  # present from the start, so a rate() has a first point
            self._committed.labels(kind)
        r.register(_RaftCollector(sample))

    def proposal_committed(self, kind: str) -> None:
        self._committed.labels(kind).inc()

    def proposal_failed(self, kind: str, error: str) -> None:
        self._failed.labels(kind, error).inc()

    def applied(self, duration_s: float) -> None:
        self._apply.observe(duration_s)

    def snapshot(self, kind: str, duration_s: float) -> None:
        self._snapshot.labels(kind).observe(duration_s)

    def barrier_waited(self, duration_s: float) -> None:
        self._barrier.observe(duration_s)

    def http_request(self, method: str, route: str | None, status: int, duration_s: float) -> None:
        method = method if method in HTTP_METHODS else "other"
        route = route or UNMATCHED_ROUTE
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route).observe(duration_s)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of `GET /metrics`."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


