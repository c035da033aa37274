"""Raft replication: the only module that imports `pysyncobj`.

Owns: one PySyncObj `SyncObj` per node, its tuning, and the hazards recorded in
`shared/reference/pysyncobj-0.3.17-notes.md`:

- apply runs in PySyncObj's tick thread, which also sends heartbeats. Our replicated
  method therefore does no Chroma work: it hands `(index, entry bytes)` to a callback
  that queues it for the node's applier thread, and returns the index. It cannot raise.
- `appendEntriesBatchSizeBytes` is set above the largest entry we accept, so an entry is
  never sent through PySyncObj's chunked path (whose `finish` marker is miscomputed).
- `appendEntriesUseBatch` is off, so a single write is sent at once instead of waiting
  for the 100 ms batching tick.
- log compaction is off until snapshots of the Chroma store exist (PySyncObj would
  otherwise fork and pickle this object).
- the Raft port is protected by `password` (PySyncObj unpickles what peers send).

The log itself (entries, term, vote) lives in our DurableJournal (raftchroma/journal.py:
checksummed, fsynced), installed through PySyncObj's module-level `createJournal` seam,
because PySyncObj's own journal never fsyncs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pysyncobj.syncobj as _pysyncobj_core
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import MemoryJournal
from pysyncobj.transport import TCPTransport

from raftchroma.config import ClusterConfig, NodeConfig
from raftchroma.journal import DurableJournal

log = logging.getLogger(__name__)

EntryHandler = Callable[[int, bytes], None]
ProposeCallback = Callable[[Any, int], None]

_NEVER = 10 ** 12  # entries / seconds: "do not compact" until snapshots exist

# PySyncObj's failure codes, split by what they tell the client.
DEFINITE_FAILURES = frozenset({
    FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.DISCARDED,
    FAIL_REASON.NOT_LEADER, FAIL_REASON.REQUEST_DENIED,
})
SUCCESS = FAIL_REASON.SUCCESS


@dataclass(frozen=True)
class RaftStatus:
    role: str
    term: int
    leader: str | None  # raft address
    commit_index: int
    last_applied: int
    log_len: int
    has_quorum: bool
    leader_connected: bool  # a follower cannot forward to a leader it is not connected to


class FaultInjectingTransport(TCPTransport):
    """TEST ONLY (enabled by `raftchroma serve --fault-injection`): PySyncObj's TCP transport,
    plus a set of blocked peer addresses whose messages are dropped in both directions. This
    is how jepsen-lite partitions a cluster on one machine without root: PySyncObj identifies
    peers by configured address and only one side of a pair dials, so a TCP proxy per link
    cannot cut a link cleanly, but dropping at the message layer can."""

    blocked: frozenset[str] = frozenset()

    def send(self, node: Any, message: Any) -> bool:
        if node.address in self.blocked:
            return False
        return super().send(node, message)

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 (PySyncObj's name)
        if node.address in self.blocked:
            return
        super()._onMessageReceived(node, message)


class _StateMachine(SyncObj):
    """The SyncObj subclass: one replicated method that only enqueues."""

    def __init__(self, self_address: str, peers: list[str], conf: SyncObjConf, on_entry: EntryHandler,
                 transport_class: type = TCPTransport) -> None:
        self._on_entry = on_entry
        super().__init__(self_address, peers, conf, transportClass=transport_class)

    @replicated
    def apply_entry(self, data: bytes) -> int:
        index = self.raftLastApplied + 1
        self._on_entry(index, data)
        return index


JOURNAL_FILE_NAME = "raft.log"
_opened_journals: dict[str, DurableJournal] = {}


def _create_journal(journal_file: str | None = None) -> object:
    """EXTENSION of PySyncObj 0.3.17: replaces `pysyncobj.syncobj.createJournal`, which
    SyncObj.__init__ calls with `conf.journalFile`, so that the log is fsynced and checksummed."""
    if journal_file is None:
        return MemoryJournal()
    journal = DurableJournal(journal_file)
    _opened_journals[journal_file] = journal
    return journal


_pysyncobj_core.createJournal = _create_journal


def build_conf(config: ClusterConfig, node: NodeConfig) -> SyncObjConf:
    tuning = config.raft
    return SyncObjConf(
        password=config.password,
        autoTick=True,
        appendEntriesUseBatch=False,
        appendEntriesBatchSizeBytes=tuning.max_entry_bytes * 2 + 1024 * 1024,
        sendBufferSize=2 ** 20,
        recvBufferSize=2 ** 20,
        raftMinTimeout=tuning.election_timeout_min_s,
        raftMaxTimeout=tuning.election_timeout_max_s,
        appendEntriesPeriod=tuning.heartbeat_period_s,
        connectionTimeout=tuning.connection_timeout_s,
        connectionRetryTime=0.5,
        leaderFallbackTimeout=tuning.election_timeout_max_s * 2,
        commandsWaitLeader=False,
        logCompactionMinEntries=_NEVER,
        logCompactionMinTime=_NEVER,
        journalFile=str(Path(node.data_dir) / JOURNAL_FILE_NAME),
        dynamicMembershipChange=False,
    )


class Replication:
    """A node's Raft participant. Thread-safe; callbacks arrive on PySyncObj's tick thread."""

    def __init__(self, config: ClusterConfig, node: NodeConfig, on_entry: EntryHandler,
                 fault_injection: bool = False) -> None:
        self._address_to_id = {n.raft_address: n.id for n in config.nodes}
        self._id_to_address = {n.id: n.raft_address for n in config.nodes}
        self._transport_class = type("NodeTransport", (FaultInjectingTransport,), {}) if fault_injection else None
        self._node = node
        peers = [n.raft_address for n in config.peers_of(node.id)]
        Path(node.data_dir).mkdir(parents=True, exist_ok=True)
        if config.password is None:
            log.warning("no Raft password set: anyone who can reach %s can act as a cluster member; "
                        "set [cluster] password or RAFTCHROMA_PASSWORD and keep the port private", node.raft_address)
        conf = build_conf(config, node)
        self._raft = _StateMachine(node.raft_address, peers, conf, on_entry,
                                   self._transport_class or TCPTransport)
        self._journal = _opened_journals.pop(conf.journalFile)
        self._status_lock = threading.Lock()

    @property
    def journal_bytes(self) -> int:
        return self._journal.size_bytes

    def propose(self, entry: bytes, callback: ProposeCallback) -> None:
        """Queue `entry` for the log; `callback(index_or_None, fail_reason)` fires on the tick thread."""
        self._raft.apply_entry(entry, callback=callback)

    def status(self) -> RaftStatus:
        raw = self._raw_status()
        leader = raw.get("leader")
        role = {0: "follower", 1: "candidate", 2: "leader"}.get(raw.get("state"), "unknown")
        return RaftStatus(
            role=role,
            term=int(raw.get("raft_term", 0)),
            leader=str(leader.address) if leader is not None else None,
            commit_index=int(raw.get("commit_idx", 0)),
            last_applied=int(raw.get("last_applied", 0)),
            log_len=int(raw.get("log_len", 0)),
            has_quorum=bool(raw.get("has_quorum")),
            leader_connected=leader is not None and (role == "leader" or self._raft.isNodeConnected(leader)),
        )

    def _raw_status(self) -> dict[str, Any]:
        # getStatus iterates dicts the tick thread mutates; retry the rare collision.
        with self._status_lock:
            for _ in range(10):
                try:
                    return self._raft.getStatus()
                except RuntimeError:
                    continue
        return {}

    def block_peers(self, node_ids: list[str]) -> None:
        """TEST ONLY: drop all Raft traffic with these peers (replaces the previous set)."""
        if self._transport_class is None:
            raise RuntimeError("fault injection is not enabled on this node")
        unknown = [n for n in node_ids if n not in self._id_to_address]
        if unknown:
            raise ValueError(f"unknown node ids: {unknown}")
        self._transport_class.blocked = frozenset(self._id_to_address[n] for n in node_ids)

    def blocked_peers(self) -> list[str]:
        if self._transport_class is None:
            return []
        return sorted(self._address_to_id[a] for a in self._transport_class.blocked)

    def node_id_of(self, raft_address: str | None) -> str | None:
        return self._address_to_id.get(raft_address) if raft_address else None

    def stop(self) -> None:
        self._raft.destroy_synchronous()


FAIL_REASON_NAMES = {
    value: name for name, value in vars(FAIL_REASON).items() if name.isupper() and isinstance(value, int)
}
