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
- snapshots go through PySyncObj's serializer / deserializer / serializeChecker hooks
  (no fork, no pickle of this object), but the work is done by the node's applier thread,
  not in the tick thread: the serializer only queues a request and returns, and the
  checker reports when the file is written. A leader defers compaction while a connected
  follower is only slightly behind. The transport keeps a snapshot transfer alive.
- the Raft port speaks raftchroma's own wire (raftchroma/wire.py), not PySyncObj's: frames are
  authenticated with the cluster secret before anything is decoded, decoded with msgpack (no
  pickle), and capped at the largest legal message. Append messages are built to fit that cap,
  and PySyncObj's chunked-entry path (which unpickles) is never sent and refused on receipt.
- a follower follows Raft's append rule (Figure 2, AppendEntries receiver rules 3-5): PySyncObj
  deletes every entry after `prevLogIdx` on any overlapping append, so a duplicated or stale
  append truncated entries the follower had acknowledged, even applied ones. `plan_append`
  decides what an append may change; `_StateMachine` feeds PySyncObj only messages for which
  its own code then does exactly that. Leader changes and truncations are logged and counted.

- membership (raftchroma/membership.py decides): voters are PySyncObj's `otherNodes`, non-voters
  its `readonlyNodes`, set from the membership entry in force whenever the journal changes; a
  non-voter never campaigns or votes. PySyncObj's own dynamic membership (pickled nodes, no
  one-change-at-a-time rule) is not used: of its hooks only `__changeCluster` runs our check.

The log itself (entries, term, vote) lives in our DurableJournal (raftchroma/journal.py:
checksummed, fsynced), installed through PySyncObj's module-level `createJournal` seam,
because PySyncObj's own journal never fsyncs.
"""

from __future__ import annotations

import base64
import errno
import functools
import io
import json
import pickle
import logging
import random
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

_inet_ntop = socket.inet_ntop  # PySyncObj replaces it, on every OS, with a Windows-only one (win_inet_pton.py)
import pysyncobj.syncobj as _pysyncobj_core  # noqa: E402
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.journal import MemoryJournal
from pysyncobj.node import TCPNode
from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.transport import TCPTransport

from raftchroma import membership, read_index, snapshot, wire
from raftchroma.config import ClusterConfig, FaultKnobs, NodeConfig, RaftTuning
from raftchroma.journal import DurableJournal
from raftchroma.membership import Member, Membership, MembershipLog
from raftchroma.result import is_machine_failure

socket.inet_ntop = _inet_ntop  # undo PySyncObj's: psutil and anything else in this process use it

log = logging.getLogger(__name__)

EntryHandler = Callable[[int, bytes], None]
SNAPSHOT_FILE_NAME = "raft.snapshot"
ProposeCallback = Callable[[Any, int], None]

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
    leader_changes: int = 0  # new (leader, term) pairs this node has seen since it started
    log_truncations: int = 0  # times this node deleted a suffix of its log (conflicts with a leader)
    truncated_entries: int = 0  # entries deleted by those truncations
    truncated_applied_entries: int = 0  # of those, entries already applied here: must stay 0
    peer_match_index: dict[str, int] = field(default_factory=dict)  # leader only: peer id -> PySyncObj's match index
    members: list[dict[str, Any]] = field(default_factory=list)  # the membership in force (membership.Member.to_json)
    voter: bool = True  # this node votes (false: a non-voter, or not a member at all)
    member: bool = True  # this node is in the membership in force (false: not yet added, or removed)
    membership_index: int = 0  # the log index of the membership entry in force (0: the bootstrap's)
    late_ticks: int = 0  # Raft ticks that ran more than a heartbeat period late (slow disk, starved CPU)
    longest_tick_overrun_s: float = 0.0  # the latest any tick ran, since start


def _snapshot_chunk(message: Any) -> Any:
    """The (data, is_first, is_last) chunk of a snapshot transfer message, else None (PySyncObj
    sends None or False in `serialized` when it has no chunk, e.g. after a read error)."""
    if isinstance(message, dict) and message.get("type") == "append_entries":
        chunk = message.get("serialized")
        return chunk if isinstance(chunk, tuple) else None
    return None


# ------------------------------------------------------------------ Raft's append rule
#
# PySyncObj 0.3.17 (syncobj.py, `__onMessageReceived`, 'append_entries') checks prevLogIdx and
# prevLogTerm correctly, but then deletes *every* entry after prevLogIdx whenever its log is
# longer, and sets the commit index to min(leader's commit, end of its log). Raft (§5.3, Figure 2,
# AppendEntries receiver rules 3-5) deletes only from the first entry whose term conflicts with
# the leader's, keeps entries that match, and commits no further than the last entry the message
# proves. A duplicated, reordered or stale append (TCP reconnects, a leader resending after a
# reset) therefore made a follower drop entries it had acknowledged, even applied ones.
#
# `plan_append` is the rule, as a pure function of the follower's log and commit index. The
# follower then hands PySyncObj a message its own code handles exactly as Raft says (see
# `_StateMachine._SyncObj__onMessageReceived`), so its term, leader, election-timer, membership
# and reply logic is reused, not copied.

APPEND_REJECT = "reject"  # prevLogIdx is not in our log, or its term differs: PySyncObj refuses it
APPEND_ENTRIES = "append"  # add `entries` after `prev_index`, deleting from `truncate_from` if set
APPEND_ACK = "ack"  # we already hold everything the message carries: change nothing, answer success
APPEND_REFUSE = "refuse"  # obeying would delete committed entries (or the message is malformed): drop it

LogEntry = tuple[Any, int, int]  # PySyncObj's (command bytes, index, term)
_RAFT_LEADER = _pysyncobj_core._RAFT_STATE.LEADER


@dataclass(frozen=True)
class AppendPlan:
    """What a follower does with one append_entries."""

    action: str
    prev_index: int = 0  # APPEND_ENTRIES: the entry `entries` follow (matches the leader's)
    prev_term: int = 0
    entries: tuple[LogEntry, ...] = ()
    truncate_from: int | None = None  # APPEND_ENTRIES: the first index whose term conflicts
    match_index: int = 0  # APPEND_ENTRIES, APPEND_ACK: the last index the message proves we hold
    reason: str = ""  # APPEND_REFUSE: why, for the log


def plan_append(log: Sequence[LogEntry], commit_index: int, prev_index: int, prev_term: int,
                entries: Sequence[LogEntry]) -> AppendPlan:
    """Raft's AppendEntries receiver rules 2-4 for a follower whose log is `log` (PySyncObj's: the
    first element is the oldest entry kept, at or below the commit index after a compaction).
    Rule 5 follows from `match_index`: the commit index may not pass it."""
    first, last = log[0][1], log[-1][1]
    if not first <= prev_index <= last or log[prev_index - first][2] != prev_term:
        return AppendPlan(APPEND_REJECT)
    match_index = prev_index + len(entries)
    for offset, entry in enumerate(entries):
        index = prev_index + 1 + offset
        if entry[1] != index:
            return AppendPlan(APPEND_REFUSE, reason=f"entry {offset} has index {entry[1]}, expected {index}")
        if index > last:
            return _append_after(log, index - 1, entries[offset:], None, match_index)
        ours = log[index - first][2]
        if ours != entry[2]:
            if index <= commit_index:
                return AppendPlan(APPEND_REFUSE, reason=(
                    f"its entry {index} (term {entry[2]}) conflicts with ours (term {ours}) at or below "
                    f"our commit index {commit_index}"))
            return _append_after(log, index - 1, entries[offset:], index, match_index)
    if match_index == last:
        return _append_after(log, last, (), None, match_index)
    return AppendPlan(APPEND_ACK, match_index=match_index)


def _append_after(log: Sequence[LogEntry], prev_index: int, entries: Sequence[LogEntry], truncate_from: int | None,
                  match_index: int) -> AppendPlan:
    prev_term = log[prev_index - log[0][1]][2]
    return AppendPlan(APPEND_ENTRIES, prev_index, prev_term, tuple(entries), truncate_from, match_index)


def _is_log_append(message: Any) -> bool:
    """A regular append_entries (entries or a heartbeat), not a snapshot chunk. PySyncObj's chunked
    path for one large entry ('transmission') is never taken here (see build_conf) and is excluded."""
    return (isinstance(message, dict) and message.get("type") == "append_entries" and "prevLogIdx" in message
            and "transmission" not in message)


class _AppendDisorder:
    """TEST ONLY: duplicates, holds back (reorders) and replays old (stale) append_entries messages
    received by one node, from a seeded random source, so a run can be replayed."""

    history_max = 64

    def __init__(self, seed: int, duplicate_p: float = 0.2, hold_p: float = 0.2, replay_p: float = 0.3) -> None:
        self._random = random.Random(seed)
        self._duplicate_p, self._hold_p, self._replay_p = duplicate_p, hold_p, replay_p
        self._history: deque[tuple[Any, Any]] = deque(maxlen=self.history_max)
        self._held: tuple[Any, Any] | None = None

    def deliveries(self, node: Any, message: Any) -> list[tuple[Any, Any]]:
        """The (sender, message) pairs to hand on now, in order, for one message received."""
        if self._held is None and self._random.random() < self._hold_p:
            self._held = (node, message)
            return []
        out = [(node, message)]
        if self._held is not None:
            out.append(self._held)  # arrives after a later message
            self._held = None
        if self._random.random() < self._duplicate_p:
            out.append((node, message))
        if self._history and self._random.random() < self._replay_p:
            out.append(self._random.choice(self._history))
        self._history.append((node, message))
        return out


SETTINGS_HELLO = "raftchroma-hello"  # first message on a connection: (HELLO, address, settings fingerprint)
SETTINGS_REFUSED = "raftchroma-settings-refused"  # the answer to a hello whose fingerprint differs


class RaftchromaTransport(TCPTransport):
    """EXTENSION of PySyncObj 0.3.17's TCP transport: while a follower receives a snapshot it
    answers nothing until the last chunk, so the leader dropped the connection after
    `connectionTimeout` and restarted the transfer from zero, forever for large snapshots.
    The follower now answers every chunk with a keepalive (a message type PySyncObj ignores),
    which keeps the leader's side of the connection alive. It also counts, per peer address,
    the snapshot transfers this node started sending (a restarted transfer counts again)."""

    snapshot_keepalive = True  # only tests turn it off, to show the hazard it closes
    snapshot_sends: Counter[str]  # set per node on the per-node subclass (see Replication)
    settings_fingerprint = ""  # set per node: see ClusterConfig.cluster_settings
    settings_mismatches: dict[str, str]  # peer address -> its differing fingerprint (per node)
    wire_secret = b""  # set per node: the cluster secret (raftchroma/wire.py)
    max_frame_bytes = 0  # set per node: the largest legal message plus overhead
    wire_refusals: Counter[str]  # per node: peer host -> connections dropped by the wire
    wrong_direction_hellos: Counter[str]  # per node: member address -> hellos refused (it is ours to dial)

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803 (PySyncObj's names)
        super().__init__(syncObj, selfNode, otherNodes)
        for node in syncObj._SyncObj__readonlyNodes:  # non-voters in force at start (see _StateMachine)
            self.addNode(node)

    # The wire: raftchroma/wire.py's connection and server replace PySyncObj's pickling ones.

    def _new_connection(self, sock: Any = None) -> wire.WireConnection:
        conf = self._syncObj.conf
        return wire.WireConnection(self._syncObj._poller, self.wire_secret, self.max_frame_bytes, sock=sock,
                                   timeout_s=conf.connectionTimeout, send_buffer_bytes=conf.sendBufferSize,
                                   recv_buffer_bytes=conf.recvBufferSize, on_refused=self._note_refusal)

    def _createServer(self) -> None:  # noqa: N802 (PySyncObj's name)
        host, port = self._syncObj.conf.bindAddress.rsplit(":", 1)
        self._server = wire.WireServer(self._syncObj._poller, globalDnsResolver().resolve(host) or host, int(port),
                                       self._onNewIncomingConnection, self._new_connection)

    def addNode(self, node: Any) -> None:  # noqa: N802 (PySyncObj's name; its body, with our connection)
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            conn = self._new_connection()
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802 (PySyncObj's name)
        if len(self._unknownConnections) >= wire.MAX_UNAUTHENTICATED:
            # Full: drop the one waiting longest, not the newcomer, so that a flood of connections
            # that never authenticate cannot keep a member's reconnect out (a member needs ms).
            oldest = min(self._unknownConnections, key=lambda c: c.started_s)
            self._drop(oldest)
        super()._onNewIncomingConnection(conn)

    def _onTick(self) -> None:  # noqa: N802 (PySyncObj's name)
        super()._onTick()
        for conn in list(self._unknownConnections) + list(self._connections.values()):
            conn.check_handshake_timeout()

    def _note_refusal(self, peer: str, reason: str) -> None:
        host = peer.rsplit(":", 1)[0]
        if self.wire_refusals[host] % 100 == 0:  # the first, then every 100th: a flood cannot fill the log
            log.warning("Raft connection with %s dropped: %s (%d so far from this host)", peer, reason,
                        self.wire_refusals[host] + 1)
        self.wire_refusals[host] += 1

    # The hello: a peer names itself together with its cluster-wide settings fingerprint, and a
    # peer whose settings differ is refused (and told so) before it can send or receive an
    # entry, so a misconfigured node never applies anything (etcd refuses a peer with another
    # cluster id the same way). Both sides log the refusal once and report it in status.

    def _sendSelfAddress(self, conn: Any) -> None:  # noqa: N802 (PySyncObj's name)
        conn.send((SETTINGS_HELLO, self._selfNode.address, self.settings_fingerprint))

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802
        if not (isinstance(message, tuple) and len(message) == 3 and message[0] == SETTINGS_HELLO
                and isinstance(message[1], str) and message[1] in self._nodeAddrToNode):
            # Not a member's hello: an older member's bare address, a 'readonly' or utility
            # connection (syncobj_admin), or garbage. Members only.
            if isinstance(message, str) and message in self._nodeAddrToNode:
                self._note_mismatch(message, "none")
            self._drop(conn)
            return
        _, address, fingerprint = message
        if self._shouldConnect(self._nodeAddrToNode[address]):
            self._refuse_wrong_direction(conn, address)
            return
        if fingerprint != self.settings_fingerprint:
            self._note_mismatch(address, str(fingerprint)[:64])
            conn.send((SETTINGS_REFUSED, self.settings_fingerprint))
            self._drop(conn)
            return
        self.settings_mismatches.pop(address, None)
        super()._onIncomingMessageReceived(conn, address)

    def _refuse_wrong_direction(self, conn: Any, address: str) -> None:
        """PySyncObj dials by address order (the higher address dials the lower), and this node
        dials `address` itself: a hello from it on an incoming connection is someone else holding
        the secret, or a peer configured with other addresses. Accepted, it would replace this
        node's outgoing connection in PySyncObj's table; that object's reconnects never send a
        hello, so the member would drop every one and the link would churn for good."""
        if self.wrong_direction_hellos[address] % 100 == 0:
            log.warning("refusing an incoming Raft connection that claims to be %s: this node dials %s itself "
                        "(%d so far)", address, address, self.wrong_direction_hellos[address] + 1)
        self.wrong_direction_hellos[address] += 1
        self._drop(conn)

    def _drop(self, conn: Any) -> None:
        conn.disconnect()
        self._unknownConnections.discard(conn)

    def _note_mismatch(self, address: str, fingerprint: str) -> None:
        if self.settings_mismatches.get(address) != fingerprint:
            log.error("refusing Raft peer %s: its cluster-wide settings (fingerprint %s) differ from this node's (%s); "
                      "make [cluster] the same in every node's cluster.toml", address, fingerprint,
                      self.settings_fingerprint)
        self.settings_mismatches[address] = fingerprint

    def send(self, node: Any, message: Any) -> bool:
        chunk = _snapshot_chunk(message)
        if chunk is not None and chunk[1]:  # is_first: a transfer starts (or starts over)
            self.snapshot_sends[node.address] += 1
        return super().send(node, message)

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 (PySyncObj's name)
        if isinstance(message, tuple) and len(message) == 2 and message[0] == SETTINGS_REFUSED:
            self._note_mismatch(node.address, str(message[1])[:64])
            return
        super()._onMessageReceived(node, message)
        if self.snapshot_keepalive and _snapshot_chunk(message) is not None:
            self.send(node, {"type": "raftchroma_keepalive"})


class FaultInjectingTransport(RaftchromaTransport):
    """TEST ONLY (enabled by `raftchroma serve --fault-injection`): PySyncObj's TCP transport,
    plus a set of blocked peer addresses whose messages are dropped in both directions. This
    is how jepsen-lite partitions a cluster on one machine without root: PySyncObj identifies
    peers by configured address and only one side of a pair dials, so a TCP proxy per link
    cannot cut a link cleanly, but dropping at the message layer can. It can also delay the
    sending of each snapshot chunk (a slow link), which makes a transfer outlast
    `connectionTimeout` in a test-sized cluster. And it can disorder the append_entries this node
    receives (duplicate, reorder, replay stale ones), which PySyncObj's append handling mishandled."""

    blocked: frozenset[str] = frozenset()
    deaf_to: frozenset[str] = frozenset()  # peers whose messages are dropped on receipt only
    snapshot_chunk_delay_s = 0.0
    append_disorder: _AppendDisorder | None = None

    def send(self, node: Any, message: Any) -> bool:
        if node.address in self.blocked:
            return False
        if self.snapshot_chunk_delay_s and _snapshot_chunk(message) is not None:
            time.sleep(self.snapshot_chunk_delay_s)  # PySyncObj sends at most one chunk per 0.1 s tick then
        return super().send(node, message)

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 (PySyncObj's name)
        if node.address in self.blocked or node.address in self.deaf_to:
            return
        if self.append_disorder is not None and _is_log_append(message):
            for sender, delivered in self.append_disorder.deliveries(node, message):
                super()._onMessageReceived(sender, delivered)
            return
        super()._onMessageReceived(node, message)


class _StateMachine(SyncObj):
    """The SyncObj subclass: one replicated method that only enqueues; Raft's append rule in front
    of PySyncObj's append handling; leader changes and log truncations logged and counted.

    The overrides below are named `_SyncObj__...` because PySyncObj's are name-mangled private
    methods: SyncObj registers `self.__onMessageReceived` with the transport and calls
    `self.__deleteEntriesFrom`, and both look the mangled name up on the instance, so these
    replace them. They run in PySyncObj's tick thread, like everything they touch."""

    append_rule = True  # only tests turn it off (per instance), to show the hazard it closes

    def __init__(self, self_address: str, peers: list[str], conf: SyncObjConf, on_entry: EntryHandler,
                 transport_class: type = TCPTransport, names: dict[str, str] | None = None,
                 on_fatal: Callable[[str], None] | None = None, base_membership: Membership | None = None,
                 base_index: int = 0) -> None:
        # Set before SyncObj.__init__, which starts the tick thread that reads them.
        self._on_entry = on_entry
        self.on_fatal = on_fatal
        self._names = dict(names or {})
        self._self_address = self_address
        self.voter = self.member = True  # until the membership says otherwise (see _on_membership_change)
        self.membership = MembershipLog(base_membership or Membership.of(
            Member(a, a, a) for a in [self_address, *peers]), self._on_membership_change, base_index)
        self._membership_requests: deque[tuple[dict[str, Any], Callable[[dict[str, Any]], None]]] = deque()
        self._membership_queued: tuple[int, int, float] | None = None  # (term, base index, when): handed to
        # PySyncObj and not yet in the log; forgotten after MEMBERSHIP_QUEUE_S (it was lost: an append failed)
        if conf.journalFile:
            _membership_logs[conf.journalFile] = self.membership  # _create_journal feeds it the journal
        self._leader_seen: tuple[str, int] | None = None  # (address, term) of the last leader seen
        self._leader_lost = False
        self.leader_changes = 0
        self.log_truncations = 0
        self.truncated_entries = 0
        self.truncated_applied_entries = 0
        self.reads = read_index.ReadIndex(round_timeout_s=conf.raftMaxTimeout)
        self.late_ticks = 0  # ticks that ended more than a heartbeat period later than they could have
        self.longest_tick_overrun_s = 0.0
        self._last_tick_end: float | None = None
        self._commit_hint_saved_s = 0.0
        self.injected_tick_stall_s = 0.0  # TEST ONLY (fault injection): the next tick first stalls this long
        self._transfers: deque[tuple[str | None, Callable[[int], None]]] = deque()
        self._read_view = _ReadView(self)
        super().__init__(self_address, peers, conf, transportClass=transport_class)

    def request_transfer(self, target: str | None, callback: Callable[[int], None]) -> None:
        """Any thread: hand leadership to `target` (a Raft address; None: the most caught-up
        follower) with Raft's TimeoutNow; `callback(FAIL_REASON)` on the tick thread (SUCCESS only
        means it was sent: PySyncObj refuses a target whose log is behind)."""
        self._transfers.append((target, callback))
        self._wake()

    def request_read_index(self, callback: read_index.ReadCallback) -> None:
        """Any thread: a read index for a linearizable read (read_index.py); wakes the tick thread."""
        self.reads.request(callback)
        self._wake()

    def request_membership_change(self, change: dict[str, Any], callback: Callable[[dict[str, Any]], None]) -> None:
        """Any thread: propose `change` ({"op": add|promote|remove, "id", ...}) if this node leads and
        membership.plan_change allows it. `callback(result)` on the tick thread, once: result has
        "outcome" ("committed", "refused", "not_leader", or "failed" with PySyncObj's reason, which
        may be indefinite), "message", and when committed "index" and "members"."""
        self._membership_requests.append((change, callback))
        self._wake()

    def _wake(self) -> None:
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()

    @replicated
    def apply_entry(self, data: bytes) -> int:
        """The entry format before the wire stopped pickling: PySyncObj's pickled call of this
        method. Journals written then still replay through it (checked by `_pickle_is_inert`)."""
        return self._apply_raw(data)

    def _apply_raw(self, data: bytes) -> int:
        index = self.raftLastApplied + 1
        self._on_entry(index, data)
        return index

    def propose(self, entry: bytes, callback: ProposeCallback) -> None:
        """Queue `entry` for the log as it is: a REGULAR command whose payload is our msgpack entry,
        not PySyncObj's pickle of a method call, so nothing in the log needs unpickling."""
        self._applyCommand(entry, callback, _COMMAND_REGULAR)

    # ------------------------------------------------------------ no pickle from the log

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:  # noqa: N802 (PySyncObj's name)
        """Apply one committed command. Ours (REGULAR, not a pickle) go straight to the node.
        PySyncObj's own kinds, and entries of the old format, are unpickled by PySyncObj only after
        an unpickler that can build no object but plain data has read them; anything else is
        skipped, identically on every replica (the check reads only the entry)."""
        if command[:1] == _REGULAR_BYTE and command[1:2] != _PICKLE_START:
            return self._apply_raw(command[1:])
        if command[:1] == _MEMBERSHIP_BYTE and command[1:2] != _PICKLE_START:
            # Ours (membership.py): in force since it entered the log; applying it only moves the index.
            self._apply_raw(b"")
            return None
        if not _pickle_is_inert(command[1:]):
            log.error("raft: skipping a log entry of kind %d that would unpickle objects", command[0])
            self._apply_raw(b"")  # the node only moves its applied index
            return None
        result = super()._SyncObj__doApplyCommand(command)  # type: ignore[misc]
        if command[:1] != _REGULAR_BYTE:  # a no-op or PySyncObj's own: the node only moves its applied index
            self._apply_raw(b"")
        return result

    # PySyncObj's dynamic membership hooks (dynamicMembershipChange is on only so that the leader
    # calls `__changeCluster` right before it appends a membership entry): its own membership
    # bookkeeping is replaced by membership.py, so the other three hooks do nothing.

    def _SyncObj__parseChangeClusterRequest(self, command: bytes) -> Any:  # noqa: N802 (PySyncObj's name)
        """Ours: (term, base index) it was planned at. PySyncObj's own (pickled) membership entries
        were never written by raftchroma and are ignored; any other kind is not a membership change."""
        if command[:1] != _MEMBERSHIP_BYTE:
            return None
        return membership.planned_from(bytes(command))

    def _SyncObj__changeCluster(self, request: tuple[int, int]) -> bool:  # noqa: N802 (PySyncObj's name)
        """The leader, right before appending a planned membership entry: still the term it was
        planned in, no other membership entry since its base, the previous change committed and an
        entry of this term committed. Else PySyncObj answers REQUEST_DENIED and appends nothing."""
        term, base_index = request
        commit = int(self._SyncObj__raftCommitIndex)  # type: ignore[attr-defined]
        return (self._isLeader() and term == self._getTerm() and base_index == self.membership.last_change_index
                and self.membership.last_change_index <= commit and self._read_view.committed_in_term())

    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:  # noqa: N802
        return True  # the journal already told membership.py (MembershipLog), truncations included

    def _SyncObj__updateClusterConfiguration(self, newNodes: Any) -> None:  # noqa: N802,N803
        pass  # a loaded snapshot's membership is set by Replication._deserialize

    def _SyncObj__getEntries(self, fromIDx: int, count: int | None = None,  # noqa: N802,N803 (PySyncObj's names)
                             maxSizeBytes: int | None = None) -> list[Any]:  # noqa: N803
        """PySyncObj's, but a byte budget is never exceeded (PySyncObj adds the entry that crosses
        it), so an append message always fits the wire's frame limit. At least one entry."""
        entries = super()._SyncObj__getEntries(fromIDx, count)  # type: ignore[misc]
        if maxSizeBytes is None:
            return entries
        total = 0
        for taken, entry in enumerate(entries):
            total += len(entry[0]) + ENTRY_OVERHEAD_BYTES
            if total > maxSizeBytes and taken > 0:
                return entries[:taken]
        return entries


    # ------------------------------------------------------------ the append rule

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 (PySyncObj's name)
        if isinstance(message, dict) and not self._may_take_part(node, message):
            return
        if isinstance(message, dict) and message.get("type") in read_index.MESSAGE_TYPES:
            self.reads.on_message(self._read_view, node, message)
            return
        if not isinstance(message, dict) or "transmission" in message:
            # Not a PySyncObj message, or its chunked entry (whose pieces it would unpickle); our
            # leaders never send one (see append_budget_bytes).
            log.error("raft: dropping a malformed message from %s", self._describe(node.address))
            return
        if self.append_rule and _is_log_append(message) and message["term"] >= self._getTerm():
            message = self._follow_append_rule(node, message)
        if message is not None:
            super()._SyncObj__onMessageReceived(node, message)  # type: ignore[misc]
        self._observe_leader()

    def _follow_append_rule(self, node: Any, message: dict[str, Any]) -> dict[str, Any] | None:
        """The message to hand PySyncObj instead (None: it is fully handled here). PySyncObj deletes
        after prevLogIdx only when its log goes further, so a message rewritten to start just
        before the first conflict (or at our last entry) deletes exactly the conflicting suffix;
        its reply then names the message's last index, and its commit index stops there."""
        plan = plan_append(self._SyncObj__raftLog, self._SyncObj__raftCommitIndex,  # type: ignore[attr-defined]
                           message["prevLogIdx"], message["prevLogTerm"], message.get("entries") or ())
        if plan.action == APPEND_REJECT:
            return message  # PySyncObj refuses it (reset=True) and deletes nothing
        if plan.action == APPEND_REFUSE:
            log.error("raft: refusing append_entries from leader %s (term %d): %s; a committed entry would "
                      "be lost", self._describe(node.address), message["term"], plan.reason)
            return None
        if plan.action == APPEND_ENTRIES:
            if plan.prev_index == message["prevLogIdx"]:
                return message  # already a message PySyncObj handles as Raft says
            return {**message, "prevLogIdx": plan.prev_index, "prevLogTerm": plan.prev_term,
                    "entries": list(plan.entries)}
        self._acknowledge(node, message, plan.match_index)
        return None

    def _acknowledge(self, node: Any, message: dict[str, Any], match_index: int) -> None:
        """APPEND_ACK: everything in the message is already in our log, which goes further. Hand
        PySyncObj the message without its log part (term, leader, election timer, and a commit
        index capped at what the message proves), then answer success for exactly that much. The
        leader only raises its match index on success, so a stale answer cannot move it back."""
        bookkeeping = {"type": "append_entries", "term": message["term"],
                       "commit_index": min(message["commit_index"], match_index)}
        super()._SyncObj__onMessageReceived(node, bookkeeping)  # type: ignore[misc]
        self._SyncObj__leaderCommitIndex = message["commit_index"]  # as PySyncObj records it (status, onReady)
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=match_index + 1, success=True)  # type: ignore[attr-defined]

    def _SyncObj__deleteEntriesFrom(self, fromIDx: int) -> None:  # noqa: N802,N803 (PySyncObj's names)
        """Every truncation of the log goes through here: log and count it, then delete."""
        raft_log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        first = raft_log[0][1]
        dropped = raft_log[fromIDx - first:] if fromIDx >= first else []  # below `first` PySyncObj deletes nothing
        if dropped:
            applied = min(len(dropped), max(0, self.raftLastApplied - fromIDx + 1))
            self.log_truncations += 1
            self.truncated_entries += len(dropped)
            self.truncated_applied_entries += applied
            leader = self._getLeader()
            commit_index = self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
            log.log(logging.ERROR if applied else logging.WARNING,
                    "raft log truncated from index %d: %d entries (terms %s) dropped, %d of them already applied; "
                    "commit index %d, leader %s, term %d", fromIDx, len(dropped), sorted({e[2] for e in dropped}),
                    applied, commit_index, self._describe(leader.address if leader is not None else None),
                    self._getTerm())
        super()._SyncObj__deleteEntriesFrom(fromIDx)  # type: ignore[misc]

    # ------------------------------------------------------------ late ticks
    #
    # Heartbeats, votes and appends all wait for the tick thread: a tick that runs late (a slow
    # fsync of the journal, a write the kernel holds up, a CPU not given to this process) delays
    # them all. Late ticks are counted and the worst is logged, as etcd warns of heartbeats sent
    # late. PySyncObj's tick checks the election deadline first and reads the sockets last, so a
    # follower held up between two ticks for longer than its election timeout would campaign on
    # waking with the leader's heartbeats already in its socket buffer: an election with no fault
    # (seen in CI: a follower 0.68 s late, then a new term). Raft's timer is about hearing from the
    # leader, and those messages have arrived; so a follower or candidate whose deadline has passed
    # reads what is waiting first, and a heartbeat among it resets the deadline. (A stall while the
    # wire reads a message is harmless: it reads on until the socket is empty.)

    def _before_tick(self) -> None:
        stall_s, self.injected_tick_stall_s = self.injected_tick_stall_s, 0.0
        if stall_s:
            time.sleep(stall_s)
        self._save_commit_hint()
        if (self._SyncObj__raftState != _RAFT_LEADER  # type: ignore[attr-defined]
                and self._SyncObj__raftElectionDeadline < time.monotonic()  # type: ignore[attr-defined]
                and self._SyncObj__transport.ready):  # type: ignore[attr-defined]
            self._poller.poll(0)

    def _save_commit_hint(self) -> None:
        """The journal's commit index hint, once a second (see DurableJournal.onOneSecondTimer)."""
        now = time.monotonic()
        if now - self._commit_hint_saved_s >= 1.0:
            self._commit_hint_saved_s = now
            save = getattr(self._SyncObj__raftLog, "save_commit_hint", None)  # type: ignore[attr-defined]
            if save is not None:
                save()

    def _note_tick_end(self, wait_s: float) -> None:
        """A tick may wait up to `wait_s` for messages; whatever it took beyond that since the last
        tick ended (its own work, or a thread not scheduled) delayed heartbeats and votes."""
        now = time.monotonic()
        if self._last_tick_end is not None:
            overrun_s = now - self._last_tick_end - wait_s
            if overrun_s > self.conf.appendEntriesPeriod:
                self.late_ticks += 1
                if overrun_s > self.longest_tick_overrun_s:
                    log.warning("raft: a tick ran %.3f s late (heartbeats and votes wait for it): a slow disk "
                                "or a starved CPU; the longest so far", overrun_s)
            self.longest_tick_overrun_s = max(self.longest_tick_overrun_s, overrun_s)
        self._last_tick_end = now

    # ------------------------------------------------------------ leader changes

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802,N803 (PySyncObj's names)
        """Also crash, don't limp: PySyncObj's tick thread logs an exception and runs the same tick
        again, forever. Anything but a failing machine (disk full, I/O error: there the retry is
        right) goes to `on_fatal`, which the Raft process uses to stop."""
        if not self.voter:  # a non-voter never campaigns: its election deadline never comes
            self._SyncObj__raftElectionDeadline = max(  # type: ignore[has-type]
                self._SyncObj__raftElectionDeadline, time.monotonic() + self.conf.raftMaxTimeout)  # type: ignore[has-type]
        try:
            self._before_tick()
            super()._onTick(timeToWait)
        except Exception as exc:
            if self.on_fatal is not None and not is_machine_failure(exc):
                self.on_fatal(f"the Raft tick failed: {exc!r}")
            raise
        self._note_tick_end(timeToWait)
        self._observe_leader()  # elections and leader fallback happen in the tick, not in a message
        self.reads.tick(self._read_view)
        while self._transfers:
            target, callback = self._transfers.popleft()
            self.transferLeadership(target, lambda _result, err, callback=callback: callback(err))
        if self._membership_requests:  # one per tick: the next one sees this one queued
            change, membership_callback = self._membership_requests.popleft()
            self._propose_membership(change, membership_callback)

    # ------------------------------------------------------------ membership (membership.py)

    def _may_take_part(self, node: Any, message: dict[str, Any]) -> bool:
        """Votes are between voters only: a non-voter neither votes nor campaigns (nor takes a
        TimeoutNow), and nobody counts a vote from, or grants one to, a node that is not a voter
        in the membership it has in force. A forwarded proposal must be a regular entry."""
        kind = message.get("type")
        voters = self._SyncObj__otherNodes  # type: ignore[attr-defined]
        if kind in ("request_vote", "timeout_now") and not self.voter:
            return False
        if kind == "apply_command" and not _forwardable(message):
            log.error("raft: refusing a forwarded proposal from %s that is not a regular entry", self._describe(
                getattr(node, "address", None)))
            if "request_id" in message:  # a definite answer, so the sender does not wait out its timeout
                self._SyncObj__transport.send(node, {"type": "apply_command_response",  # type: ignore[attr-defined]
                                                     "request_id": message["request_id"],
                                                     "error": FAIL_REASON.REQUEST_DENIED})
            return False
        return not (kind in ("request_vote", "response_vote") and node not in voters)

    def _on_membership_change(self, old: Membership, new: Membership) -> None:
        """Put the membership in force into PySyncObj: voters are its `otherNodes` (elections,
        quorums, commit), non-voters its `readonlyNodes` (which a leader replicates to and counts
        for nothing); connections follow. Runs when an entry enters or leaves the log, a snapshot
        is installed, and once in the constructor (before PySyncObj's transport exists)."""
        me = self._self_address
        voters = {TCPNode(m.raft) for m in new.voters if m.raft != me}
        followers = {TCPNode(m.raft) for m in new.non_voters if m.raft != me}
        others, readonly = self._SyncObj__otherNodes, self._SyncObj__readonlyNodes  # type: ignore[attr-defined]
        before = others | readonly
        others.clear()
        others.update(voters)
        readonly.clear()
        readonly.update(followers)
        mine = new.by_raft(me)
        self.member, self.voter = mine is not None, mine is not None and mine.voter
        self._names.update({m.raft: m.id for m in new.members})
        self._membership_queued = None
        if old != new:
            log.info("raft membership now: %s (this node: %s)", ", ".join(
                f"{m.id}{'' if m.voter else ' (non-voter)'}" for m in new.members),
                "voter" if self.voter else "non-voter" if self.member else "not a member")
        transport = self.__dict__.get("_SyncObj__transport")
        if transport is not None:
            self._connect_members(transport, voters | followers, before)

    def _connect_members(self, transport: Any, after: set[Any], before: set[Any]) -> None:
        next_index = self._SyncObj__raftNextIndex  # type: ignore[attr-defined]
        match_index = self._SyncObj__raftMatchIndex  # type: ignore[attr-defined]
        last_index = self._SyncObj__raftLog[-1][1]  # type: ignore[attr-defined]
        for node in after - before:
            transport.addNode(node)
            next_index[node], match_index[node] = last_index + 1, 0
            self._SyncObj__lastResponseTime[node] = time.monotonic()  # type: ignore[attr-defined]
        for node in before - after:
            transport.dropNode(node)
            next_index.pop(node, None)
            match_index.pop(node, None)
            self._SyncObj__connectedNodes.discard(node)  # type: ignore[attr-defined]

    def _propose_membership(self, change: dict[str, Any], callback: Callable[[dict[str, Any]], None]) -> None:
        if not self._isLeader():
            leader = self._getLeader()
            callback({"outcome": "not_leader", "leader": leader.address if leader is not None else None,
                      "message": "this node is not the leader"})
            return
        try:
            new = membership.plan_change(self.membership.current, change, self._leader_view())
        except membership.MembershipRefused as exc:
            callback({"outcome": "refused", "message": str(exc)})
            return
        term, base_index = self._getTerm(), self.membership.last_change_index
        self._membership_queued = (term, base_index, time.monotonic())

        def done(_result: Any, err: int) -> None:
            self._membership_queued = None
            if err == SUCCESS:
                callback({"outcome": "committed", "index": self.membership.last_change_index,
                          "members": new.to_json(), "message": ""})
            elif err == FAIL_REASON.REQUEST_DENIED:  # __changeCluster: leadership or the membership moved
                callback({"outcome": "refused", "message": "the leadership or the membership changed before the "
                          "change was written; nothing was changed, retry"})
            else:
                callback({"outcome": "failed", "reason": int(err), "message": FAIL_REASON_NAMES.get(err, str(err))})

        self._applyCommand(membership.encode_entry(new, change, term, base_index)[1:], done, _COMMAND_MEMBERSHIP)

    def _change_queued(self) -> bool:
        """A planned change not yet in the log, in this term (a lost one is forgotten after
        MEMBERSHIP_QUEUE_S; `__changeCluster` refuses a stale plan anyway)."""
        queued = self._membership_queued
        if queued is None:
            return False
        term, base_index, at = queued
        if term != self._getTerm() or base_index != self.membership.last_change_index \
                or time.monotonic() - at > MEMBERSHIP_QUEUE_S:
            self._membership_queued = None
            return False
        return True

    def _leader_view(self) -> membership.LeaderView:
        current = self.membership.current
        commit = int(self._SyncObj__raftCommitIndex)  # type: ignore[attr-defined]
        match = self._SyncObj__raftMatchIndex  # type: ignore[attr-defined]
        connected = self._SyncObj__connectedNodes  # type: ignore[attr-defined]
        by_address = {m.raft: m.id for m in current.members}
        return membership.LeaderView(
            self_id=by_address.get(self._self_address, self._self_address), commit_index=commit,
            committed_in_term=self._read_view.committed_in_term(),
            change_pending=self._change_queued() or self.membership.last_change_index > commit,
            match_index={by_address[n.address]: int(i) for n, i in list(match.items()) if n.address in by_address},
            connected=frozenset(by_address[n.address] for n in list(connected) if n.address in by_address))

    def _observe_leader(self) -> None:
        leader, term = self._getLeader(), self._getTerm()
        if leader is None:
            if self._leader_seen is not None and not self._leader_lost:
                self._leader_lost = True
                log.info("raft: no leader (last: %s at term %d); term now %d",
                         self._describe(self._leader_seen[0]), self._leader_seen[1], term)
            return
        self._leader_lost = False
        seen = (leader.address, term)
        if seen == self._leader_seen:
            return
        previous, self._leader_seen = self._leader_seen, seen
        self.leader_changes += 1
        log.info("raft leader changed: %s -> %s, term %d",
                 f"{self._describe(previous[0])} (term {previous[1]})" if previous else "none",
                 self._describe(leader.address), term)

    def _describe(self, address: str | None) -> str:
        if address is None:
            return "none"
        name = self._names.get(address)
        return f"{name} ({address})" if name else address


JOURNAL_FILE_NAME = "raft.log"
_TICK_THREAD_SNAPSHOT_WAIT_S = 120.0  # test-only knob: bounded, so a lost snapshot_done cannot hang a node
_opened_journals: dict[str, DurableJournal] = {}
_membership_logs: dict[str, MembershipLog] = {}  # journal file -> the MembershipLog that follows it


class _ReadView:
    """The read index's view of a `_StateMachine` (read_index.RaftView); tick thread only."""

    def __init__(self, raft: _StateMachine) -> None:
        self._raft = raft

    def is_leader(self) -> bool:
        return bool(self._raft._isLeader())

    def term(self) -> int:
        return int(self._raft._getTerm())

    def commit_index(self) -> int:
        return int(self._raft._SyncObj__raftCommitIndex)  # type: ignore[attr-defined]

    def committed_in_term(self) -> bool:
        raft_log = self._raft._SyncObj__raftLog  # type: ignore[attr-defined]
        first, commit = raft_log[0][1], self.commit_index()
        return commit >= first and raft_log[commit - first][2] == self.term()

    def leader(self) -> Any:
        leader = self._raft._getLeader()
        return leader if leader in self._raft._SyncObj__connectedNodes else None  # type: ignore[attr-defined]

    def members(self) -> list[Any]:
        return list(self._raft._SyncObj__otherNodes)  # type: ignore[attr-defined]

    def send(self, node: Any, message: dict[str, Any]) -> None:
        self._raft._SyncObj__transport.send(node, message)  # type: ignore[attr-defined]


_COMMAND_REGULAR = 0  # PySyncObj's _COMMAND_TYPE values (the first byte of a log entry)
_COMMAND_MEMBERSHIP = 2
MEMBERSHIP_QUEUE_S = 5.0  # a planned membership change not in the log after this long was lost
_REGULAR_BYTE = b"\x00"
_MEMBERSHIP_BYTE = b"\x02"
_PICKLE_START = b"\x80"  # every pickle of protocol 2 or later; our msgpack entries start with a map


def _forwardable(message: dict[str, Any]) -> bool:
    """A follower's forwarded proposal is one of ours: a REGULAR command. Any other kind, a
    membership change above all, is only proposed by the leader itself after
    membership.plan_change, and PySyncObj would append whatever a peer forwards."""
    command = message.get("command")
    return isinstance(command, bytes) and command[:1] == _REGULAR_BYTE


class _InertUnpickler(pickle.Unpickler):
    """Finds no class: what it can load is plain data (tuples, lists, dicts, str, bytes, numbers),
    which is all a legitimate PySyncObj command holds, and nothing it loads runs code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _pickle_is_inert(data: bytes) -> bool:
    if not data:
        return True
    try:
        _InertUnpickler(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001 (any failure: not inert data)
        return False
    return True


def _create_journal(journal_file: str | None = None) -> object:
    """EXTENSION of PySyncObj 0.3.17: replaces `pysyncobj.syncobj.createJournal`, which
    SyncObj.__init__ calls with `conf.journalFile`, so that the log is fsynced and checksummed."""
    if journal_file is None:
        return MemoryJournal()
    journal = DurableJournal(journal_file)
    _align_journal_to_snapshot(journal, Path(journal_file).with_name(SNAPSHOT_FILE_NAME))
    _opened_journals[journal_file] = journal
    membership_log = _membership_logs.pop(journal_file, None)
    if membership_log is not None:
        membership_log.load(journal[:])  # the membership in force before PySyncObj's transport exists
        journal.observer = membership_log
    return journal


def _align_journal_to_snapshot(journal: DurableJournal, snapshot_path: Path) -> None:
    """At start, PySyncObj keeps the journal only if its first two entries are the snapshot's
    (prev, last); otherwise it clears it down to those two, dropping every entry after the
    snapshot, acknowledged ones included. The journal still holds older entries when compaction
    failed (disk full) or the process died between the snapshot and the journal rewrite: cut
    them here, so the entries after the snapshot survive."""
    if not snapshot_path.exists() or len(journal) < 2:
        return
    meta = snapshot.read_header(snapshot_path, verify=False)["raft"]
    prev, last = _entry_from_json(meta["prev"]), _entry_from_json(meta["last"])
    first_index = journal[0][1]
    position = prev[1] - first_index
    if position <= 0 or position + 1 >= len(journal):
        return
    held_prev, held_last = journal[position], journal[position + 1]
    if (bytes(held_prev[0]), held_prev[1], held_prev[2]) == prev and (bytes(held_last[0]), held_last[1], held_last[2]) == last:
        log.warning("the journal still held %d entries older than the snapshot at index %d; cutting them", position,
                    last[1])
        journal.deleteEntriesTo(position)


_pysyncobj_core.createJournal = _create_journal


ENTRY_OVERHEAD_BYTES = 64  # counted per entry in an append's budget: msgpack framing, index, term


def append_budget_bytes(tuning: RaftTuning) -> int:
    """The most entry bytes one append message carries (PySyncObj's appendEntriesBatchSizeBytes).
    Above the largest legal entry, so PySyncObj never takes its chunked path (which pickles)."""
    return tuning.max_entry_bytes + 1024


def max_frame_bytes(tuning: RaftTuning) -> int:
    """The largest frame a member can legally send: an append at its budget, or a snapshot chunk."""
    return max(append_budget_bytes(tuning), tuning.snapshot_chunk_bytes) + wire.FRAME_OVERHEAD_BYTES


def build_conf(config: ClusterConfig, node: NodeConfig, hooks: dict[str, Any] | None = None) -> SyncObjConf:
    tuning = config.raft
    return SyncObjConf(
        **(hooks or {}),
        password=None,  # raftchroma/wire.py authenticates and encrypts instead
        autoTick=True,
        appendEntriesUseBatch=False,
        appendEntriesBatchSizeBytes=append_budget_bytes(tuning),
        sendBufferSize=2 ** 20,
        recvBufferSize=2 ** 20,
        raftMinTimeout=tuning.election_timeout_min_s,
        raftMaxTimeout=tuning.election_timeout_max_s,
        appendEntriesPeriod=tuning.heartbeat_period_s,
        connectionTimeout=tuning.connection_timeout_s,
        connectionRetryTime=0.5,
        leaderFallbackTimeout=tuning.election_timeout_max_s * 2,
        commandsWaitLeader=False,
        logCompactionMinEntries=tuning.snapshot_min_entries,
        logCompactionMinTime=tuning.snapshot_interval_s,
        logCompactionBatchSize=tuning.snapshot_chunk_bytes,
        fullDumpFile=str(Path(node.data_dir) / SNAPSHOT_FILE_NAME),
        useFork=False,
        journalFile=str(Path(node.data_dir) / JOURNAL_FILE_NAME),
        bindAddress=node.raft_bind_address,  # `raft_listen`, else only the advertised address's interface
        dnsCacheTime=5.0,  # containers come back with new addresses
        dnsFailCacheTime=1.0,
        dynamicMembershipChange=True,  # only for the leader's __changeCluster check: see _StateMachine
    )


class SnapshotHooks(Protocol):
    """What the node provides for snapshots (see node.py)."""

    def request_snapshot(self, final_path: Path, raft_meta: dict[str, Any]) -> None:
        """Queue a snapshot of the store as of `raft_meta["index"]`; call `snapshot_done` later."""

    def install_snapshot(self, path: Path) -> dict[str, Any]:
        """Verify the snapshot at `path`, queue its install, and return its raft meta."""


class Replication:
    """A node's Raft participant. Thread-safe; callbacks arrive on PySyncObj's tick thread."""

    def __init__(self, config: ClusterConfig, node: NodeConfig, on_entry: EntryHandler,
                 fault_injection: bool = False, snapshots: SnapshotHooks | None = None,
                 faults: FaultKnobs = FaultKnobs(), on_fatal: Callable[[str], None] | None = None,
                 join: bool = False) -> None:
        self._config = config
        self._transport_class: type = type(
            "NodeTransport", (FaultInjectingTransport if fault_injection else RaftchromaTransport,),
            {"snapshot_sends": Counter(), "settings_fingerprint": config.settings_fingerprint,
             "settings_mismatches": {}, "wire_secret": (config.secret or "").encode(),
             "max_frame_bytes": max_frame_bytes(config.raft), "wire_refusals": Counter(),
             "wrong_direction_hellos": Counter()})
        self._fault_injection = fault_injection
        if faults.any and not fault_injection:
            raise RuntimeError("fault knobs need fault injection")
        self._transport_class.snapshot_chunk_delay_s = faults.snapshot_chunk_delay_s
        self._transport_class.snapshot_keepalive = faults.snapshot_keepalive
        self._snapshot_in_tick_thread = faults.snapshot_in_tick_thread
        self._snapshot_finished = threading.Event()
        self._node = node
        self._snapshots = snapshots
        self._snapshot_state = SERIALIZER_STATE.NOT_SERIALIZING
        self._snapshot_written: Path | None = None
        self._snapshot_lock = threading.Lock()
        self._min_entries = config.raft.snapshot_min_entries
        self._status_lock = threading.Lock()
        self._members_json_cache: list[dict[str, Any]] = []
        self._members_json_of: Any = None  # the Membership that _members_json_cache renders
        Path(node.data_dir).mkdir(parents=True, exist_ok=True)
        if config.secret is None:
            log.warning("no cluster secret set: any local process that can reach %s can act as a cluster member "
                        "(allowed only because every Raft address is loopback)", node.raft_address)
        self.snapshot_path = Path(node.data_dir) / SNAPSHOT_FILE_NAME
        base, base_index = bootstrap_membership(config, node, join), 0
        if self.snapshot_path.exists():
            header = snapshot.read_header(self.snapshot_path, verify=True)  # refuse to start on a damaged one
            base, base_index = membership_of_snapshot(header["raft"], config), int(header["raft"].get("membership_index", 0))
        conf = build_conf(config, node, self._snapshot_conf() if snapshots is not None else None)
        peers = [m.raft for m in base.voters if m.raft != node.raft_address]
        self._on_fatal = on_fatal
        self._raft = _StateMachine(node.raft_address, peers, conf, on_entry, self._transport_class,
                                   {m.raft: m.id for m in base.members}, on_fatal, base, base_index)
        self._journal = _opened_journals.pop(conf.journalFile)

    @property
    def _id_to_address(self) -> dict[str, str]:
        """Member id -> Raft address: the membership in force, then cluster.toml for the rest."""
        ids = {n.id: n.raft_address for n in self._config.nodes}
        ids.update({m.id: m.raft for m in self._raft.membership.current.members})
        return ids

    @property
    def _address_to_id(self) -> dict[str, str]:
        return {address: node_id for node_id, address in self._id_to_address.items()}

    def change_membership(self, change: dict[str, Any], callback: Callable[[dict[str, Any]], None]) -> None:
        """See _StateMachine.request_membership_change."""
        self._raft.request_membership_change(change, callback)

    # ---------------------------------------------------------- snapshots

    def _snapshot_conf(self) -> dict[str, Any]:
        return {"serializer": self._serialize, "deserializer": self._deserialize,
                "serializeChecker": self._check_snapshot}

    def _serialize(self, tmp_path: str, raft_data: tuple[Any, Any, Any]) -> None:
        """PySyncObj's serializer hook (tick thread): only queue the work, never do it here."""
        last, prev, cluster = raft_data
        if self._defer_compaction(prev[1]):
            self._set_snapshot_state(SERIALIZER_STATE.FAILED)
            return
        self._set_snapshot_state(SERIALIZER_STATE.SERIALIZING)
        meta = {"index": last[1], "term": last[2], "last": _entry_to_json(last), "prev": _entry_to_json(prev),
                "cluster": self._raft.membership.at(last[1]).to_json(),
                "membership_index": self._raft.membership.change_index_at(last[1])}
        final_path = Path(tmp_path[: -len(".tmp")] if tmp_path.endswith(".tmp") else tmp_path)
        self._snapshot_finished.clear()
        self._snapshots.request_snapshot(final_path, meta)
        if self._snapshot_in_tick_thread:  # TEST ONLY: block heartbeats as PySyncObj's own serializer does
            self._snapshot_finished.wait(timeout=_TICK_THREAD_SNAPSHOT_WAIT_S)

    def snapshot_done(self, ok: bool, written: Path | None = None) -> None:
        """The applier finished the requested snapshot; `written` is where, if not yet in place."""
        with self._snapshot_lock:
            self._snapshot_written = written if ok else None
        self._set_snapshot_state(SERIALIZER_STATE.SUCCESS if ok else SERIALIZER_STATE.FAILED)
        self._snapshot_finished.set()

    def _set_snapshot_state(self, state: int) -> None:
        with self._snapshot_lock:
            self._snapshot_state = state

    def _check_snapshot(self) -> int:
        """PySyncObj's serializeChecker hook (tick thread): report a finished snapshot once, then
        idle. A snapshot written elsewhere is moved into place here, in the thread that also
        writes received snapshots, and only if no newer one arrived meanwhile."""
        with self._snapshot_lock:
            state, written = self._snapshot_state, self._snapshot_written
            if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
                self._snapshot_state, self._snapshot_written = SERIALIZER_STATE.NOT_SERIALIZING, None
        if state == SERIALIZER_STATE.SUCCESS and written is not None and not self._promote(written):
            return SERIALIZER_STATE.FAILED
        return state

    def _promote(self, written: Path) -> bool:
        try:
            promoted = snapshot.promote(written, self.snapshot_path)
        except OSError:
            log.exception("moving the snapshot %s into place failed", written)
            written.unlink(missing_ok=True)
            return False
        if not promoted:
            log.info("dropped the local snapshot %s: a newer one was received meanwhile", written.name)
        return promoted

    def _defer_compaction(self, compact_to_index: int) -> bool:
        """A leader does not compact past a connected follower that is merely a little behind,
        so that an in-sync follower is never pushed into a full snapshot install (hazard 7)."""
        raft = self._raft
        if not raft._isLeader() or len(raft._SyncObj__raftLog) >= 4 * self._min_entries:  # type: ignore[attr-defined]
            return False
        connected = raft._SyncObj__connectedNodes  # type: ignore[attr-defined]
        match = raft._SyncObj__raftMatchIndex  # type: ignore[attr-defined]
        # Tick thread: voters and non-voters alike (getStatus reports non-voters under other keys).
        return any(node in connected and match.get(node, 0) < compact_to_index
                   for node in raft._SyncObj__otherNodes | raft._SyncObj__readonlyNodes)  # type: ignore[attr-defined]

    def _deserialize(self, path: str) -> tuple[Any, Any, Any]:
        """PySyncObj's deserializer hook (tick thread): verify and queue; the applier installs.
        PySyncObj only logs a failure here and goes on without the snapshot: stop instead (a
        restart then refuses a damaged snapshot file with exit code 3)."""
        try:
            meta = self._snapshots.install_snapshot(Path(path))
            self._raft.membership.set_base(membership_of_snapshot(meta, self._config), int(meta["index"]),
                                           int(meta.get("membership_index", 0)))
        except Exception as exc:
            if self._on_fatal is not None:
                self._on_fatal(f"the snapshot {path} could not be installed: {exc!r}")
            raise
        # PySyncObj hands the third element to __updateClusterConfiguration, a no-op: membership.py decides.
        return _entry_from_json(meta["last"]), _entry_from_json(meta["prev"]), set()

    def force_snapshot(self) -> None:
        """Ask PySyncObj to compact at its next tick, whatever its entry-count threshold says."""
        self._raft.forceLogCompaction()

    @property
    def journal_bytes(self) -> int:
        return self._journal.size_bytes

    def propose(self, entry: bytes, callback: ProposeCallback) -> None:
        """Queue `entry` for the log; `callback(index_or_None, fail_reason)` fires on the tick thread."""
        self._raft.propose(entry, callback)

    def read_index(self, callback: read_index.ReadCallback) -> None:
        """A read index (or None: no leader, no quorum); `callback` fires on the tick thread."""
        self._raft.request_read_index(callback)

    def transfer_leadership(self, target_id: str | None, callback: Callable[[int], None]) -> None:
        """Ask this node, if leader, to hand leadership to `target_id` (None: the most caught-up peer)."""
        self._raft.request_transfer(None if target_id is None else self._id_to_address[target_id], callback)

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
            leader_changes=self._raft.leader_changes,
            log_truncations=self._raft.log_truncations,
            truncated_entries=self._raft.truncated_entries,
            truncated_applied_entries=self._raft.truncated_applied_entries,
            peer_match_index=self._match_indexes() if role == "leader" else {},
            members=self._members_json(),
            voter=self._raft.voter,
            member=self._raft.member,
            membership_index=self._raft.membership.last_change_index,
            late_ticks=self._raft.late_ticks,
            longest_tick_overrun_s=round(self._raft.longest_tick_overrun_s, 4),
        )

    def _members_json(self) -> list[dict[str, Any]]:
        """The membership in force as JSON, rebuilt only when it changes (status reads it often)."""
        current = self._raft.membership.current
        if self._members_json_of is not current:
            self._members_json_cache, self._members_json_of = current.to_json(), current
        return self._members_json_cache

    def _match_indexes(self) -> dict[str, int]:
        """The leader's `__raftMatchIndex` for every other member, voters and non-voters."""
        for _ in range(10):  # the tick thread changes the dict; retry the rare collision
            try:
                by_address = {n.address: int(i) for n, i in list(self._raft._SyncObj__raftMatchIndex.items())}
                break
            except RuntimeError:
                continue
        else:
            by_address = {}
        return {m.id: by_address.get(m.raft, 0) for m in self._raft.membership.current.members
                if m.raft != self._node.raft_address}

    def journal_fsync_seconds(self) -> dict[str, Any]:
        """The journal's fsync durations, as `metrics.BucketCounts.state()`."""
        return self._journal.fsync_seconds.state()

    def _raw_status(self) -> dict[str, Any]:
        """The part of PySyncObj's getStatus() that `status` reads, without the per-peer entries
        getStatus builds (status is read every STATUS_PERIOD_S). hasQuorum iterates a set the tick
        thread mutates; retry the rare collision."""
        raft = self._raft
        with self._status_lock:
            for _ in range(10):
                try:
                    return {"state": raft._SyncObj__raftState, "leader": raft._SyncObj__raftLeader,  # type: ignore[attr-defined]
                            "has_quorum": raft.hasQuorum, "log_len": len(raft._SyncObj__raftLog),  # type: ignore[attr-defined]
                            "last_applied": raft.raftLastApplied, "commit_idx": raft.raftCommitIndex,
                            "raft_term": raft.raftCurrentTerm}
                except RuntimeError:
                    continue
        return {}

    def block_peers(self, node_ids: list[str], inbound_only: bool = False) -> None:
        """TEST ONLY: drop all Raft traffic with these peers, or with `inbound_only` only what they
        send to this node (a one-way partition: this node still sends). Replaces the previous set."""
        if not self._fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        unknown = [n for n in node_ids if n not in self._id_to_address]
        if unknown:
            raise ValueError(f"unknown node ids: {unknown}")
        addresses = frozenset(self._id_to_address[n] for n in node_ids)
        self._transport_class.blocked = frozenset() if inbound_only else addresses
        self._transport_class.deaf_to = addresses if inbound_only else frozenset()

    def set_append_rule(self, enabled: bool) -> None:
        """TEST ONLY: switch Raft's append rule off (PySyncObj's own handling) to show the hazard."""
        if not self._fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        self._raft.append_rule = enabled

    def disorder_appends(self, seed: int | None) -> None:
        """TEST ONLY: duplicate, reorder and replay the append_entries this node receives (None: stop)."""
        if not self._fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        self._transport_class.append_disorder = _AppendDisorder(seed) if seed is not None else None

    def snapshot_sends(self) -> dict[str, int]:
        """Per peer id: snapshot transfers this node started sending (restarts included)."""
        sends = self._transport_class.snapshot_sends
        return {node_id: sends.get(address, 0) for node_id, address in sorted(self._id_to_address.items())
                if address != self._node.raft_address}

    def inject_disk_full(self, on: bool) -> None:
        """TEST ONLY: every journal append fails with ENOSPC while `on` (jepsen-lite's disk-full nemesis)."""
        if not self._fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        self._journal.injected_failure = OSError(errno.ENOSPC, "No space left on device (injected)") if on else None

    def stall(self, seconds: float, at: str) -> None:
        """TEST ONLY: hold the tick thread up once for `seconds`: in the journal's next fsync (`at`
        "fsync": a slow disk, while the wire reads a message) or before the next tick ("tick":
        between two ticks, as a write the kernel holds up or a starved CPU would)."""
        if not self._fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        if at == "fsync":
            self._journal.injected_fsync_stall_s = seconds
        else:
            self._raft.injected_tick_stall_s = seconds

    def settings_mismatches(self) -> dict[str, str]:
        """Per peer id: the fingerprint of a peer refused because its cluster-wide settings differ."""
        mismatches = dict(self._transport_class.settings_mismatches)
        return {self._address_to_id.get(a, a): fp for a, fp in sorted(mismatches.items())}

    def blocked_peers(self) -> list[str]:
        if not self._fault_injection:
            return []
        cls = self._transport_class
        return sorted(self._address_to_id[a] for a in cls.blocked | cls.deaf_to)

    def node_id_of(self, raft_address: str | None) -> str | None:
        return self._address_to_id.get(raft_address) if raft_address else None

    def stop(self) -> None:
        self._raft.destroy_synchronous()


FAIL_REASON_NAMES = {
    value: name for name, value in vars(FAIL_REASON).items() if name.isupper() and isinstance(value, int)
}


MEMBERSHIP_FILE_NAME = "membership.json"


def bootstrap_membership(config: ClusterConfig, node: NodeConfig, join: bool = False) -> Membership:
    """The membership before any membership entry: cluster.toml's nodes as of this node's first
    start (persisted in `data_dir/membership.json`, so that later edits of cluster.toml change
    nothing: from then on the log decides). A node started with `join` (or marked `join = true`) is
    not in it: it waits to be added by a member (`raftchroma cluster add`) and neither votes nor
    campaigns until promoted."""
    path = Path(node.data_dir) / MEMBERSHIP_FILE_NAME
    if path.exists():
        return Membership.from_json(json.loads(path.read_text()))
    joining = join or node.join
    members = membership_of_config(config, without=node.id if joining else None, joiners_as_non_voters=joining)
    snapshot.write_json_atomically(path, members.to_json())
    return members


def membership_of_config(config: ClusterConfig, without: str | None = None,
                         joiners_as_non_voters: bool = False) -> Membership:
    """cluster.toml's nodes as members, but those marked `join` (`without`: nor that one). A node
    that joins itself counts the other `join` nodes as non-voters instead: they may have joined
    (and lead) by now, and it accepts Raft connections only from nodes it knows; the log it
    receives then says who the members really are."""
    return Membership.of(Member(n.id, n.raft_address, f"{n.http_host}:{n.http_port}", n.voter and not n.join)
                         for n in config.nodes if n.id != without and (joiners_as_non_voters or not n.join))


def membership_of_snapshot(raft_meta: dict[str, Any], config: ClusterConfig) -> Membership:
    """The membership a snapshot recorded: members (this version), or bare Raft addresses (older
    snapshots, and PySyncObj's: every one a voter, named from cluster.toml)."""
    cluster = raft_meta.get("cluster") or []
    if all(isinstance(item, dict) for item in cluster):
        return Membership.from_json(cluster)
    by_address = {n.raft_address: n for n in config.nodes}
    return Membership.of(
        Member(by_address[a].id, a, f"{by_address[a].http_host}:{by_address[a].http_port}") if a in by_address
        else Member(a, a, a) for a in cluster)


def restored_raft_meta(index: int, members: Membership) -> dict[str, Any]:
    """PySyncObj's bookkeeping for a snapshot that starts a NEW cluster at `index` (a restored
    backup): the two boundary entries are no-ops of term 0. PySyncObj computes its current term
    from the (empty) journal before it loads the snapshot, so keeping the source's terms would
    leave entries of a higher term than the node's own; with term 0 every new leader's term is
    above them, as Raft requires. The entries are never applied: the node starts applied at `index`."""
    no_op = bytes([_pysyncobj_core._COMMAND_TYPE.NO_OP])
    return {"index": index, "term": 0, "last": _entry_to_json((no_op, index, 0)),
            "prev": _entry_to_json((no_op, index - 1, 0)), "cluster": members.to_json()}


def _entry_to_json(entry: tuple[bytes, int, int]) -> list[Any]:
    return [base64.b64encode(bytes(entry[0])).decode(), entry[1], entry[2]]


def _entry_from_json(raw: list[Any]) -> tuple[bytes, int, int]:
    return base64.b64decode(raw[0]), int(raw[1]), int(raw[2])


class _QuietDeferredCompaction(logging.Filter):
    """A deferred compaction is reported to PySyncObj as a failed one; don't log it as a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Failed to store full dump"


logging.getLogger("pysyncobj.syncobj").addFilter(_QuietDeferredCompaction())
