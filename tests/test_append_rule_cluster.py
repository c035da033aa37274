"""Raft's append rule in a real cluster: three `Replication` nodes in this process (PySyncObj, our
journal, real sockets on 127.0.0.1) whose transports duplicate, hold back (reorder) and replay
old (stale) append_entries from a seeded random source. Every acknowledged entry must end up on
every node once, at its index, applied once and in order, with nothing applied ever truncated,
and the leader must keep making progress (a stale answer must not make it loop).

Negative control: the same run with the rule switched off truncates applied entries.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from raftchroma.config import ClusterConfig, NodeConfig, RaftTuning
from raftchroma.journal import DurableJournal
from raftchroma.replication import JOURNAL_FILE_NAME, SUCCESS, RaftStatus, Replication
from tests.harness import free_ports, wait_for

SEED = 9
BURSTS = 20
BURST_SIZE = 8
WAIT_S = 60.0  # generous: other clusters share the 2 cores under `pytest -n auto`


@dataclass
class Member:
    node: NodeConfig
    replication: Replication
    applied: list[tuple[int, bytes]] = field(default_factory=list)  # (index, data) as apply_entry saw them

    def on_entry(self, index: int, data: bytes) -> None:
        self.applied.append((index, data))  # tick thread; list.append is atomic


@dataclass
class Outcome:
    acknowledged: dict[bytes, int]  # data -> index, for every proposal whose callback said SUCCESS
    applied: dict[str, list[tuple[int, bytes]]]
    journals: dict[str, list[tuple[bytes, int, int]]]
    statuses: dict[str, RaftStatus]


class Proposals:
    """Callbacks arrive on PySyncObj's tick threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.results: dict[bytes, tuple[int | None, int]] = {}

    def callback(self, data: bytes) -> Callable[[int | None, int], None]:
        def done(result: int | None, err: int) -> None:
            with self._lock:
                self.results[data] = (result, err)
        return done

    def answered(self, count: int) -> bool:
        with self._lock:
            return len(self.results) >= count


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    ports = free_ports(3)
    nodes = tuple(NodeConfig(f"n{i + 1}", "127.0.0.1", port, "127.0.0.1", 0, tmp_path / f"n{i + 1}")
                  for i, port in enumerate(ports))
    tuning = RaftTuning(election_timeout_min_s=1.0, election_timeout_max_s=2.0)
    config = ClusterConfig(nodes=nodes, secret="test-secret", raft=tuning)
    started: list[Member] = []
    try:
        for node in nodes:
            member = Member(node, None)  # type: ignore[arg-type]
            member.replication = Replication(config, node, member.on_entry, fault_injection=True)
            started.append(member)
        yield started
    finally:
        for member in started:
            member.replication.stop()


def leader_of(members: list[Member]) -> Member:
    def agreed() -> Member | None:
        statuses = [m.replication.status() for m in members]
        leaders = [m for m, s in zip(members, statuses) if s.role == "leader" and s.has_quorum]
        return leaders[0] if len(leaders) == 1 else None
    return wait_for(agreed, WAIT_S, "a leader with a quorum")


def run_workload(members: list[Member], append_rule: bool) -> Outcome:
    for i, member in enumerate(members):
        member.replication.set_append_rule(append_rule)
        member.replication.disorder_appends(SEED + i)
    proposals = Proposals()
    for burst in range(BURSTS):
        leader = leader_of(members)
        for k in range(BURST_SIZE):
            data = f"b{burst}-{k}".encode()
            leader.replication.propose(data, proposals.callback(data))
        wait_for(lambda: proposals.answered((burst + 1) * BURST_SIZE), WAIT_S, f"answers to burst {burst}")
    acknowledged = {data: index for data, (index, err) in proposals.results.items() if err == SUCCESS}
    assert len(acknowledged) >= BURSTS * BURST_SIZE // 2, "the cluster stopped making progress"
    last = max(acknowledged.values())
    wait_for(lambda: all(m.replication.status().last_applied >= last for m in members), WAIT_S,
             f"every node to apply index {last}")
    statuses = {m.node.id: m.replication.status() for m in members}
    for member in members:
        member.replication.stop()
    journals = {m.node.id: [(bytes(c), i, t) for c, i, t in DurableJournal(m.node.data_dir / JOURNAL_FILE_NAME)[:]]
                for m in members}
    return Outcome(acknowledged, {m.node.id: list(m.applied) for m in members}, journals, statuses)


def assert_whole(outcome: Outcome) -> None:
    for node_id, status in outcome.statuses.items():
        assert status.truncated_applied_entries == 0, f"{node_id} truncated applied entries: {status}"
    for node_id, applied in outcome.applied.items():
        indexes = [index for index, _ in applied]
        assert indexes == sorted(set(indexes)), f"{node_id} applied an index twice or out of order"
        by_data = {}
        for index, data in applied:
            assert data not in by_data, f"{node_id} applied {data!r} twice"
            by_data[data] = index
        for data, index in outcome.acknowledged.items():
            assert by_data.get(data) == index, f"{node_id} did not apply acknowledged {data!r} at {index}"
    journals = list(outcome.journals.values())
    assert journals[0] == journals[1] == journals[2], "the nodes' logs differ"


PYSYNCOBJ_WARNING = "truncating already-applied log entries"  # PySyncObj's own log line


def test_disordered_appends_lose_no_acknowledged_entry(members: list[Member], caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    outcome = run_workload(members, append_rule=True)
    assert_whole(outcome)
    assert PYSYNCOBJ_WARNING not in caplog.text
    assert all(s.leader_changes >= 1 for s in outcome.statuses.values())
    if all(s.leader_changes == 1 for s in outcome.statuses.values()):
        # One leader throughout, so no entry ever conflicted: any truncation deleted matching entries.
        assert all(s.log_truncations == 0 for s in outcome.statuses.values())
    assert time.monotonic() - started < WAIT_S  # no livelock: stale answers did not set the leader back


def test_negative_control_without_the_rule_disordered_appends_truncate_applied_entries(
        members: list[Member], caplog: pytest.LogCaptureFixture) -> None:
    outcome = run_workload(members, append_rule=False)
    assert PYSYNCOBJ_WARNING in caplog.text
    assert any(s.truncated_applied_entries > 0 for s in outcome.statuses.values())
    with pytest.raises(AssertionError):
        assert_whole(outcome)
