"""Linearizable reads without a log write: Raft's read index (Raft thesis §6.4; etcd's ReadIndex).

Owns: the read-index rounds of one node, driven from PySyncObj's tick thread (`tick`,
`on_message`), requested from any thread (`request`).

- The leader answers a read index only once it has committed an entry of its own term (PySyncObj
  appends a no-op when it wins): before that its commit index may lag what an earlier leader
  committed.
- It then records its commit index C and sends a probe carrying its term T to every other member,
  and counts acknowledgements to *that* probe (by sequence number). A member acknowledges while
  its own term is not above T. With a quorum (itself included), every read waiting on the round is
  answered C.
- Why a deposed leader cannot answer: another leader can only have committed an entry a read must
  see if a quorum had moved to a term above T. A quorum of acknowledgements to a probe sent after
  the read arrived overlaps that quorum in one member, which acknowledged before it moved on; so
  any such entry committed after the read arrived, and the read may be ordered before it. A leader
  cut off from a quorum gets no quorum and its reads fail after `round_timeout_s` (no clock is
  trusted for safety: time only bounds how long a read waits).
- Reads arriving while a round is in flight share the next round: one confirmation per batch.
- A follower forwards its requests to the leader and receives C; the caller then waits until it
  has applied C. A request that finds no leader, or whose round fails, is answered `None`, and the
  caller may retry until its own deadline.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Protocol

PROBE = "raftchroma_read_probe"
PROBE_ACK = "raftchroma_read_probe_ack"
FORWARD = "raftchroma_read_index"
REPLY = "raftchroma_read_index_reply"
MESSAGE_TYPES = frozenset({PROBE, PROBE_ACK, FORWARD, REPLY})

ReadCallback = Callable[[Any], None]  # called with the read index, or None when it could not be had


class RaftView(Protocol):
    """What the read index needs from the Raft node (the tick thread's view)."""

    def is_leader(self) -> bool: ...
    def term(self) -> int: ...
    def commit_index(self) -> int: ...
    def committed_in_term(self) -> bool: ...  # the leader has committed an entry of its current term
    def leader(self) -> Hashable | None: ...  # the leader's node, when known and connected
    def members(self) -> list[Hashable]: ...  # the other voting members
    def send(self, node: Hashable, message: dict[str, Any]) -> None: ...


@dataclass
class _Round:
    seq: int
    term: int
    commit_index: int
    started_s: float
    waiters: list[tuple[str, Any]]  # ("local", callback) or ("remote", (node, request id))
    acks: set[Hashable] = field(default_factory=set)


class ReadIndex:
    def __init__(self, round_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._round_timeout_s = round_timeout_s
        self._clock = clock
        self._incoming: deque[ReadCallback] = deque()  # from any thread; drained by the tick
        self._queued: list[tuple[str, Any]] = []  # leader: waiting for the next round
        self._round: _Round | None = None
        self._seqs = itertools.count(1)
        self._forwarded: dict[int, tuple[ReadCallback, float, Hashable]] = {}  # id -> (callback, sent, leader)
        # Ids start at random, so a leader's reply to the request of an earlier run of this
        # process (its round opened before we restarted) cannot answer a new request.
        self._ids = itertools.count(int.from_bytes(os.urandom(7), "big"))
        self._lock = threading.Lock()
        self.rounds_completed = 0
        self.rounds_failed = 0

    def request(self, callback: ReadCallback) -> None:
        """Any thread: ask for a read index; `callback` runs later on the tick thread."""
        with self._lock:
            self._incoming.append(callback)

    # ------------------------------------------------------------ the tick thread

    def tick(self, raft: RaftView) -> None:
        with self._lock:
            incoming, self._incoming = list(self._incoming), deque()
        if raft.is_leader():
            self._queued.extend(("local", callback) for callback in incoming)
            self._fail_forwarded()
            self._lead(raft)
        else:
            self._fail_round(raft)
            self._fail_queued()
            self._follow(raft, incoming)

    def on_message(self, raft: RaftView, node: Hashable, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == PROBE:
            term = message.get("term")
            if isinstance(term, int):
                raft.send(node, {"type": PROBE_ACK, "seq": message.get("seq"), "term": max(term, raft.term())})
        elif kind == PROBE_ACK:
            current = self._round
            if current is not None and message.get("seq") == current.seq and message.get("term") == current.term:
                current.acks.add(node)
                self._lead(raft)
        elif kind == FORWARD:
            if raft.is_leader():
                self._queued.append(("remote", (node, message.get("id"))))
                self._lead(raft)
            else:
                raft.send(node, {"type": REPLY, "id": message.get("id"), "index": None})
        elif kind == REPLY:
            request_id = message.get("id")
            pending = self._forwarded.get(request_id) if isinstance(request_id, int) else None
            if pending is not None and pending[2] == node:  # only the leader it was sent to answers it
                del self._forwarded[request_id]
                index = message.get("index")
                pending[0](index if isinstance(index, int) else None)

    # ------------------------------------------------------------ leader

    def _lead(self, raft: RaftView) -> None:
        current = self._round
        if current is not None:
            if current.term != raft.term():
                self._fail_round(raft)
            elif len(current.acks & set(voters := raft.members())) + 1 > (len(voters) + 1) // 2:
                # only voters in force now count: the membership may have changed during the round
                self._finish(raft, current, current.commit_index)
            elif self._clock() - current.started_s > self._round_timeout_s:
                self._fail_round(raft)
        if self._round is None and self._queued and raft.committed_in_term():
            self._start(raft)

    def _start(self, raft: RaftView) -> None:
        current = _Round(next(self._seqs), raft.term(), raft.commit_index(), self._clock(), self._queued)
        self._queued = []
        self._round = current
        for node in raft.members():
            raft.send(node, {"type": PROBE, "seq": current.seq, "term": current.term})
        self._lead(raft)  # a single-node cluster is its own quorum

    def _finish(self, raft: RaftView, current: _Round, index: int) -> None:
        self._round = None
        self.rounds_completed += 1
        for kind, target in current.waiters:
            if kind == "local":
                target(index)
            else:
                node, request_id = target
                raft.send(node, {"type": REPLY, "id": request_id, "index": index})

    def _fail_round(self, raft: RaftView | None = None) -> None:
        if self._round is not None:
            current, self._round = self._round, None
            self.rounds_failed += 1
            for kind, target in current.waiters:
                if kind == "local":
                    target(None)
                elif raft is not None:
                    raft.send(target[0], {"type": REPLY, "id": target[1], "index": None})

    def _fail_queued(self) -> None:
        queued, self._queued = self._queued, []
        for kind, target in queued:
            if kind == "local":
                target(None)  # remote ones time out at their follower

    # ------------------------------------------------------------ follower

    def _follow(self, raft: RaftView, incoming: list[ReadCallback]) -> None:
        leader = raft.leader()
        now = self._clock()
        for callback in incoming:
            if leader is None:
                callback(None)
                continue
            request_id = next(self._ids)
            self._forwarded[request_id] = (callback, now, leader)
            raft.send(leader, {"type": FORWARD, "id": request_id})
        for request_id, (callback, sent_s, _) in list(self._forwarded.items()):
            if now - sent_s > self._round_timeout_s:
                del self._forwarded[request_id]
                callback(None)

    def _fail_forwarded(self) -> None:
        forwarded, self._forwarded = self._forwarded, {}
        for callback, _, _ in forwarded.values():
            callback(None)
