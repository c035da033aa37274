"""Group commit: writes that arrive at a node close together share one log entry, so one append,
one fsync per node and one apply pass, instead of one each.

Owns: the batching policy (event-loop thread only). A write joins the open group; the group is
proposed as one entry
- at once, when this node has no entry of its own in flight (a lone writer pays no wait);
- when it reaches `max_count` writes or `max_bytes` of encoded proposals;
- after `window_s`, or as soon as the last entry in flight commits, whichever comes first.
A proposal whose entry alone is at least `max_bytes` (a big batch) goes alone, already encoded.

Each write keeps its own proposal inside the entry, so it is applied and answered on its own
(state_machine.apply per proposal): one write's error never fails its neighbours, and each
write is still acknowledged only after its entry is committed and applied here. If the entry
cannot be proposed or its outcome is unknown, every write in it is told so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from raftchroma.command import Proposal, encode_entry

ProposeFn = Callable[[bytes, Callable[[object, int], None]], None]  # replication.propose
OnProposed = Callable[[int], None]  # PySyncObj's error code for this write's entry


@dataclass
class _Pending:
    proposal: Proposal
    on_proposed: OnProposed


class GroupCommit:
    def __init__(self, loop: asyncio.AbstractEventLoop, propose: ProposeFn, call_in_loop: Callable[..., None],
                 max_count: int = 256, max_bytes: int = 1024 * 1024, window_s: float = 0.002) -> None:
        self._loop = loop
        self._propose = propose
        self._call_in_loop = call_in_loop
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._window_s = window_s
        self._group: list[_Pending] = []
        self._group_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False
        self.in_flight = 0  # entries of this node proposed and not yet answered
        self.entries_proposed = 0
        self.writes_proposed = 0

    def submit(self, proposal: Proposal, entry: bytes, on_proposed: OnProposed) -> None:
        """Propose `proposal` (whose entry alone is `entry`) in this node's next entry."""
        if len(entry) >= self._max_bytes:
            self._send(entry, [_Pending(proposal, on_proposed)])
            return
        if self._group and self._group_bytes + len(entry) > self._max_bytes:
            self.flush()  # the group's entry stays within max_bytes (and so within max_entry_bytes)
        self._group.append(_Pending(proposal, on_proposed))
        self._group_bytes += len(entry)
        if len(self._group) >= self._max_count or self._group_bytes >= self._max_bytes:
            self.flush()
        elif self.in_flight == 0:
            if not self._flush_scheduled:  # after this loop iteration: writes parsed together join
                self._flush_scheduled = True
                self._loop.call_soon(self.flush)
        elif self._timer is None:
            self._timer = self._loop.call_later(self._window_s, self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._group:
            return
        group, self._group, self._group_bytes = self._group, [], 0
        entry = encode_entry([pending.proposal for pending in group])
        self._send(entry, group)

    def _send(self, entry: bytes, group: list[_Pending]) -> None:
        self.in_flight += 1
        self.entries_proposed += 1
        self.writes_proposed += len(group)
        self._propose(entry, lambda _result, err: self._call_in_loop(self._answered, group, err))

    def _answered(self, group: list[_Pending], err: int) -> None:
        self.in_flight -= 1
        for pending in group:
            pending.on_proposed(err)
        if self.in_flight == 0 and self._group:
            self.flush()
