"""Raft's append rule on a real node: a real `Replication` (PySyncObj, our journal, a real socket on
127.0.0.1) follows a leader that the test plays over that socket, on raftchroma's wire (entries in the old pickled-call format, which still replay), so
that duplicated, reordered and stale append_entries arrive exactly when the test says.

Negative control: the same script with the rule switched off (PySyncObj's own handling) truncates
entries the node had acknowledged and applied, and the same check fails.
"""

from __future__ import annotations

import logging
import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from raftchroma.config import ClusterConfig, NodeConfig, RaftTuning
from raftchroma.journal import DurableJournal
from raftchroma.replication import JOURNAL_FILE_NAME, SETTINGS_HELLO, Replication
from tests.harness import free_ports, wait_for
from tests.raft_peer import WirePeer

NO_OP = b"\x01"  # PySyncObj's no-op entry, index 1 term 0 in a new log
REPLY_TIMEOUT_S = 20.0  # generous: other clusters share the 2 cores under `pytest -n auto`
Entry = tuple[bytes, int, int]


def command(data: bytes) -> bytes:
    """PySyncObj's encoding of a call of the node's only replicated method (id 0), `apply_entry(data)`."""
    return b"\x00" + pickle.dumps((0, (data,)))


def entries(first_index: int, *terms: int) -> list[Entry]:
    return [(command(f"e{first_index + i}t{term}".encode()), first_index + i, term) for i, term in enumerate(terms)]


def append(prev: tuple[int, int], batch: list[Entry], commit: int, term: int) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "commit_index": commit, "entries": batch,
            "prevLogIdx": prev[0], "prevLogTerm": prev[1]}


class ScriptedLeader:
    """The test's end of one Raft connection, on raftchroma's wire: the hello (address, settings)
    as handshake, then PySyncObj's messages."""

    def __init__(self, own_address: str, node_port: int, settings_fingerprint: str) -> None:
        self._peer = WirePeer(node_port, b"", timeout_s=REPLY_TIMEOUT_S)
        self._send((SETTINGS_HELLO, own_address, settings_fingerprint))

    def _send(self, message: Any) -> None:
        self._peer.send(message)

    def _receive(self) -> Any:
        return self._peer.receive()

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one append_entries and return the node's answer to it (next_node_idx)."""
        self._send(message)
        while True:
            reply = self._receive()
            if isinstance(reply, dict) and reply.get("type") == "next_node_idx":
                return reply

    def send_only(self, message: dict[str, Any]) -> None:
        self._send(message)

    def close(self) -> None:
        self._peer.close()


@dataclass
class Follower:
    replication: Replication
    leader: ScriptedLeader
    data_dir: Path
    applied: list[tuple[int, bytes]] = field(default_factory=list)  # (index, data) as apply_entry saw them

    def wait_applied(self, index: int) -> None:
        wait_for(lambda: self.replication.status().last_applied >= index, REPLY_TIMEOUT_S, f"applied index {index}")

    def wait_applied_up_to_commit(self) -> None:
        def caught_up() -> bool:
            status = self.replication.status()
            return status.last_applied >= status.commit_index
        wait_for(caught_up, REPLY_TIMEOUT_S, "applied index to reach the commit index")

    def journal_entries(self) -> list[Entry]:
        """The log as it is on disk (read after the node stopped)."""
        return [(bytes(c), i, t) for c, i, t in DurableJournal(self.data_dir / JOURNAL_FILE_NAME)[:]]


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Follower]:
    # The node's address must sort below the leader's, so the node never dials the leader
    # (PySyncObj: the greater address dials) and the test's connection is the only one.
    node_address, leader_address = sorted(f"127.0.0.1:{port}" for port in free_ports(2))
    node = NodeConfig("n1", "127.0.0.1", int(node_address.rsplit(":")[1]), "127.0.0.1", 0, tmp_path / "n1")
    peer = NodeConfig("leader", "127.0.0.1", int(leader_address.rsplit(":")[1]), "127.0.0.1", 0, tmp_path / "peer")
    # Long election timeouts: the node must not start elections of its own during the script.
    tuning = RaftTuning(election_timeout_min_s=60.0, election_timeout_max_s=90.0, connection_timeout_s=120.0)
    config = ClusterConfig(nodes=(node, peer), secret=None, raft=tuning)
    applied: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def on_entry(index: int, data: bytes) -> None:
        with lock:
            applied.append((index, data))

    replication = Replication(config, node, on_entry, fault_injection=True)
    leader = None
    try:
        leader = ScriptedLeader(leader_address, node.raft_port, config.settings_fingerprint)
        yield Follower(replication, leader, node.data_dir, applied)
    finally:
        if leader is not None:
            leader.close()
        replication.stop()


# ---------------------------------------------------------------- duplicated, reordered, stale

TERM = 5
A1 = append((1, 0), entries(2, TERM, TERM, TERM), commit=1, term=TERM)
A2 = append((4, TERM), entries(5, TERM, TERM, TERM), commit=4, term=TERM)
A3 = append((7, TERM), entries(8, TERM, TERM), commit=7, term=TERM)
A4 = append((9, TERM), entries(10, TERM), commit=7, term=TERM)
A5 = append((10, TERM), entries(11, TERM), commit=7, term=TERM)
HEARTBEAT = append((11, TERM), [], commit=11, term=TERM)
LEADER_LOG = [(NO_OP, 1, 0)] + entries(2, *[TERM] * 10)  # indexes 1-11


@dataclass
class Run:
    replies: list[tuple[str, dict[str, Any]]]
    applied: list[tuple[int, bytes]]
    journal: list[Entry]
    truncated_applied_entries: int


def run_script(f: Follower) -> Run:
    replies = []

    def send(name: str, message: dict[str, Any]) -> None:
        replies.append((name, f.leader.request(message)))

    send("A1", A1)
    send("A2", A2)
    send("A3", A3)
    f.wait_applied(7)  # A3 carried commit 7: entries 2-7 are applied before the duplicate arrives
    send("A2 duplicated", A2)
    send("A5 before A4", A5)
    send("A4", A4)
    send("A5", A5)
    send("A1 stale", A1)
    send("heartbeat", HEARTBEAT)
    send("heartbeat again", HEARTBEAT)  # answered after the first one's commit index is taken
    f.wait_applied_up_to_commit()
    status = f.replication.status()
    f.replication.stop()  # idempotent in the fixture's teardown
    return Run(replies, list(f.applied), f.journal_entries(), status.truncated_applied_entries)


def assert_whole(run: Run) -> None:
    """Every entry the node acknowledged is in its log, once, in order, as the leader sent it; the
    entries it applied are those, each once, in index order; nothing applied was truncated."""
    acknowledged = max(r["next_node_idx"] - 1 for _, r in run.replies if r["success"])
    assert run.journal[:acknowledged] == LEADER_LOG[:acknowledged], "an acknowledged entry is missing or changed"
    assert run.journal == LEADER_LOG
    expected_applied = [(index, pickle.loads(cmd[1:])[1][0]) for cmd, index, _ in LEADER_LOG[1:]]
    assert run.applied == expected_applied, "applied entries are not 2..11, each once, in order"
    assert run.truncated_applied_entries == 0


def test_duplicated_reordered_and_stale_appends_keep_the_log_whole(follower: Follower) -> None:
    run = run_script(follower)
    assert_whole(run)
    replies = dict(run.replies)
    # A stale or duplicated append is answered for exactly what it carries, and never with a
    # reset, so the leader's match index and next index do not move back.
    assert replies["A2 duplicated"] == {"type": "next_node_idx", "next_node_idx": 8, "reset": False, "success": True}
    assert replies["A1 stale"] == {"type": "next_node_idx", "next_node_idx": 5, "reset": False, "success": True}
    # A message that arrives before the one it follows is rejected; resending it works.
    assert replies["A5 before A4"]["success"] is False
    assert replies["A5"]["next_node_idx"] == 12 and replies["A5"]["success"]


def test_negative_control_without_the_rule_applied_entries_are_truncated(follower: Follower) -> None:
    """PySyncObj's own handling: the duplicated A2 deletes 5-9 (5-7 applied, 8-9 acknowledged)
    and re-adds only 5-7; the stale A1 later deletes everything after 4."""
    follower.replication.set_append_rule(False)
    run = run_script(follower)
    with pytest.raises(AssertionError):
        assert_whole(run)
    assert run.truncated_applied_entries > 0
    assert max(index for _, index, _ in run.journal) < 11  # acknowledged entries are gone from the log


# ---------------------------------------------------------------- conflicts

def test_conflicting_suffix_is_deleted_from_the_first_conflict_and_never_below_commit(
        follower: Follower, caplog: pytest.LogCaptureFixture) -> None:
    """Rule 3, on a real node: a leader of a later term overwrites an uncommitted suffix from the
    first conflicting entry only; a conflict at or below the commit index is refused."""
    caplog.set_level(logging.INFO, logger="raftchroma.replication")
    leader = follower.leader
    leader.request(append((1, 0), entries(2, 5, 5, 5, 5, 5), commit=3, term=5))  # 2-6 in term 5
    follower.wait_applied(3)
    overwrite = entries(2, 5, 5, 5) + entries(5, 6, 6, 6)  # 2-4 match; 5 is the first conflict
    reply = leader.request(append((1, 0), overwrite, commit=3, term=6))
    assert reply["success"] and reply["next_node_idx"] == 8
    status = follower.replication.status()
    assert (status.log_truncations, status.truncated_entries, status.truncated_applied_entries) == (1, 2, 0)
    leader.send_only(append((1, 0), entries(2, 5) + entries(3, 6), commit=3, term=6))  # conflicts at 3 <= commit
    reply = leader.request(append((7, 6), [], commit=7, term=6))  # answered only after the refused one was handled
    assert reply["success"] and reply["next_node_idx"] == 8
    follower.wait_applied(7)
    assert follower.replication.status().log_truncations == 1
    assert follower.replication.status().leader_changes == 2  # the leader of term 5, then of term 6
    follower.replication.stop()
    expected = [(NO_OP, 1, 0)] + entries(2, 5, 5, 5) + entries(5, 6, 6, 6)
    assert follower.journal_entries() == expected
    assert [index for index, _ in follower.applied] == [2, 3, 4, 5, 6, 7]
    assert [data for _, data in follower.applied][3:] == [b"e5t6", b"e6t6", b"e7t6"]
    text = caplog.text
    assert "raft log truncated from index 5: 2 entries (terms [5]) dropped, 0 of them already applied" in text
    assert "refusing append_entries" in text and "its entry 3 (term 6) conflicts with ours (term 5)" in text
    assert "raft leader changed" in text
