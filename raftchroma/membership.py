"""Cluster membership: who votes, who only follows, and how that changes at runtime.

Owns: the `Membership` value (members with id, Raft address, HTTP address, voter or not), the
membership log entry's format, the rules a change must pass before a leader proposes it
(`plan_change`), and `MembershipLog`, which follows the Raft log to say which membership is in force.

Pure: no PySyncObj, no I/O. `replication.py` feeds `MembershipLog` every entry the journal takes in
and applies what it says to PySyncObj; it is unit-tested here without either.

Why shaped so (Raft thesis §4.1, single-server changes; etcd's learners):
- A membership entry carries the *whole* new membership, not a delta, so a node needs no history to
  know the membership: the last membership entry in its log (committed or not, as Raft requires),
  else the membership its snapshot recorded, else the bootstrap (`cluster.toml`, as persisted at
  the node's first start). Truncating the log brings back the previous one; nothing is undone by hand.
- One change at a time: a leader proposes a change only when the previous one is committed and it
  has committed an entry of its own term (PySyncObj 0.3.17 enforces neither).
- New members join as non-voters (they replicate and serve reads but never vote, never campaign and
  never count toward a quorum) and are promoted only once caught up: a voter that cannot catch up
  would cost the cluster its quorum (etcd refuses to promote a learner below 90% of the leader's log).
- A change is refused if the voters the leader is connected to would not be a quorum of the new
  voters (etcd's strict reconfiguration check), so a change never leaves the cluster unable to commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import msgpack

MEMBERSHIP_COMMAND_BYTE = b"\x02"  # PySyncObj's _COMMAND_TYPE.MEMBERSHIP: the first byte of our entry
ENTRY_VERSION = 1
PROMOTE_MIN_PROGRESS = 0.9  # a non-voter is promoted once its match index is >= 90% of the leader's commit index
ADD, PROMOTE, REMOVE = "add", "promote", "remove"


class MembershipRefused(Exception):
    """A change the leader will not propose (definite: nothing was written)."""


@dataclass(frozen=True)
class Member:
    id: str
    raft: str  # the advertised Raft address, host:port: how peers dial it and how PySyncObj names it
    http: str  # the advertised client API address, host:port
    voter: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "raft": self.raft, "http": self.http, "voter": self.voter}

    @classmethod
    def from_json(cls, raw: Any) -> "Member":
        if not isinstance(raw, dict):
            raise ValueError(f"a member must be a table, got {type(raw).__name__}")
        fields = (raw.get("id"), raw.get("raft"), raw.get("http"))
        if not all(isinstance(value, str) and value for value in fields) or not isinstance(raw.get("voter", True), bool):
            raise ValueError(f"a member needs string id, raft and http and a boolean voter: {raw!r}")
        return cls(raw["id"], raw["raft"], raw["http"], raw.get("voter", True))


@dataclass(frozen=True)
class Membership:
    members: tuple[Member, ...]  # sorted by id

    @classmethod
    def of(cls, members: Iterable[Member]) -> "Membership":
        return cls(tuple(sorted(members, key=lambda m: m.id)))

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.id == node_id), None)

    def by_raft(self, address: str) -> Member | None:
        return next((m for m in self.members if m.raft == address), None)

    @property
    def voters(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.voter)

    @property
    def non_voters(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.voter)

    def to_json(self) -> list[dict[str, Any]]:
        return [m.to_json() for m in self.members]

    @classmethod
    def from_json(cls, raw: Any) -> "Membership":
        if not isinstance(raw, list):
            raise ValueError("a membership must be a list of members")
        membership = cls.of(Member.from_json(m) for m in raw)
        _check_unique(membership.members)
        return membership


def _check_unique(members: Sequence[Member]) -> None:
    for key in ("id", "raft", "http"):
        values = [getattr(m, key) for m in members]
        if len(set(values)) != len(values):
            raise ValueError(f"two members share a {key}")


# ------------------------------------------------------------------ the log entry


def encode_entry(membership: Membership, change: dict[str, Any], term: int = 0, base_index: int = 0) -> bytes:
    """The log entry (PySyncObj's MEMBERSHIP kind, msgpack payload) that puts `membership` in force,
    planned by the leader of `term` from the membership put in force at `base_index`: the leader
    appends it only if both still hold (replication's `__changeCluster` check, `planned_from`)."""
    payload = {"v": ENTRY_VERSION, "members": membership.to_json(), "change": change, "term": term,
               "base": base_index}
    return MEMBERSHIP_COMMAND_BYTE + msgpack.packb(payload, use_bin_type=True)


def planned_from(command: bytes) -> tuple[int, int] | None:
    """(term, base index) a membership entry was planned at; None if it is not one of ours."""
    decoded = _decoded(command)
    if decoded is None:
        return None
    term, base = decoded[0].get("term"), decoded[0].get("base")
    return (term, base) if isinstance(term, int) and isinstance(base, int) else None


def decode_entry(command: bytes) -> Membership | None:
    """The membership a log entry puts in force; None if it is not one of ours (PySyncObj's own
    pickled membership entries, or anything malformed: skipped alike on every replica)."""
    decoded = _decoded(command)
    return None if decoded is None else decoded[1]


def describe_change(command: bytes) -> dict[str, Any]:
    decoded = _decoded(command)
    change = decoded[0].get("change") if decoded is not None else None
    return change if isinstance(change, dict) else {}


def _decoded(command: bytes) -> tuple[dict[str, Any], Membership] | None:
    """(payload, membership) of one of our membership entries, checked; else None."""
    if command[:1] != MEMBERSHIP_COMMAND_BYTE or command[1:2] == b"\x80":  # \x80 starts a pickle
        return None
    try:
        payload = msgpack.unpackb(command[1:], raw=False)
        if not isinstance(payload, dict) or payload.get("v") != ENTRY_VERSION:
            return None
        membership = Membership.from_json(payload.get("members"))
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    return (payload, membership) if membership.voters else None


# ------------------------------------------------------------------ what a leader may propose


@dataclass(frozen=True)
class LeaderView:
    """What the leader knows when it decides on a change."""

    self_id: str
    commit_index: int
    committed_in_term: bool  # it has committed an entry of its own term (its no-op)
    change_pending: bool  # a membership entry is in its log above the commit index, or queued
    match_index: dict[str, int]  # member id -> the leader's match index for it
    connected: frozenset[str]  # member ids the leader is connected to


def plan_change(current: Membership, change: dict[str, Any], view: LeaderView) -> Membership:
    """The membership after `change` ({"op": add|promote|remove, "id", ...}); MembershipRefused
    says why not."""
    if not view.committed_in_term:
        raise MembershipRefused("the leader has not yet committed an entry of its term; retry in a moment")
    if view.change_pending:
        raise MembershipRefused("another membership change is not yet committed; one change at a time")
    op, node_id = change.get("op"), change.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise MembershipRefused("a change needs the member's id")
    if op == ADD:
        new = _added(current, node_id, change)
    elif op == PROMOTE:
        new = _promoted(current, node_id, view)
    elif op == REMOVE:
        new = _removed(current, node_id, view)
    else:
        raise MembershipRefused(f"unknown membership change {op!r} (add, promote or remove)")
    _check_quorum_after(new, view)
    return new


def _added(current: Membership, node_id: str, change: dict[str, Any]) -> Membership:
    raft, http = change.get("raft"), change.get("http")
    if not (isinstance(raft, str) and _is_address(raft) and isinstance(http, str) and _is_address(http)):
        raise MembershipRefused("a new member needs its Raft and HTTP addresses as host:port")
    if not node_id.replace("-", "").replace("_", "").isalnum():
        raise MembershipRefused("a member id is letters, digits, '-' or '_'")
    for member in current.members:
        if member.id == node_id:
            raise MembershipRefused(f"{node_id} is already a member")
        if member.raft == raft or member.http == http:
            raise MembershipRefused(f"{member.id} already uses that address")
    return Membership.of((*current.members, Member(node_id, raft, http, voter=False)))


def _promoted(current: Membership, node_id: str, view: LeaderView) -> Membership:
    member = current.member(node_id)
    if member is None:
        raise MembershipRefused(f"{node_id} is not a member; add it first")
    if member.voter:
        raise MembershipRefused(f"{node_id} is already a voter")
    if node_id not in view.connected:
        raise MembershipRefused(f"{node_id} is not connected to the leader; it cannot be promoted")
    match = view.match_index.get(node_id, 0)
    if match < PROMOTE_MIN_PROGRESS * view.commit_index:
        raise MembershipRefused(f"{node_id} is behind (it holds the log up to {match}, the leader has committed "
                                f"{view.commit_index}); promote it once it has caught up")
    return Membership.of(dataclasses.replace(m, voter=True) if m.id == node_id else m for m in current.members)


def _removed(current: Membership, node_id: str, view: LeaderView) -> Membership:
    if current.member(node_id) is None:
        raise MembershipRefused(f"{node_id} is not a member")
    if node_id == view.self_id:
        raise MembershipRefused(f"{node_id} is the leader; transfer leadership first, then remove it")
    new = Membership.of(m for m in current.members if m.id != node_id)
    if not new.voters:
        raise MembershipRefused("the cluster would have no voter left")
    return new


def _check_quorum_after(new: Membership, view: LeaderView) -> None:
    voters = {m.id for m in new.voters}
    reachable = voters & (view.connected | {view.self_id})
    if len(reachable) <= len(voters) // 2:
        raise MembershipRefused(f"after this change the leader would reach {len(reachable)} of {len(voters)} voters, "
                                "not a quorum; bring members back first")


def _is_address(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


# ------------------------------------------------------------------ which membership is in force


class MembershipLog:
    """Follows the Raft log (fed by the journal) and says which membership is in force: the last
    membership entry in the log, else `base` (the snapshot's, else the bootstrap). `on_change(old,
    new)` runs whenever that changes. Single-threaded: PySyncObj's tick thread (and its constructor)."""

    def __init__(self, base: Membership, on_change: Callable[[Membership, Membership], None] | None = None,
                 base_index: int = 0) -> None:
        self.base = base
        self.base_index = base_index  # the index of the entry that put `base` in force (0: the bootstrap)
        self._configs: list[tuple[int, Membership]] = []  # (index, membership) of membership entries in the log
        self.on_change = on_change

    @property
    def current(self) -> Membership:
        return self._configs[-1][1] if self._configs else self.base

    @property
    def last_change_index(self) -> int:
        """The index of the membership entry in force (0: the bootstrap's)."""
        return self._configs[-1][0] if self._configs else self.base_index

    def change_index_at(self, index: int) -> int:
        """The index of the membership entry in force at `index` (0: the bootstrap's)."""
        return self._in_force_at(index)[0]

    def at(self, index: int) -> Membership:
        """The membership in force once the log up to `index` is applied."""
        return self._in_force_at(index)[1]

    def _in_force_at(self, index: int) -> tuple[int, Membership]:
        found = (self.base_index, self.base)
        for config in self._configs:
            if config[0] > index:
                break
            found = config
        return found

    def load(self, entries: Iterable[tuple[bytes, int, int]]) -> None:
        """The journal as read at start; reports the membership in force even if it is the base."""
        before = self.current
        self._configs = [(index, m) for command, index, _ in entries
                         if command[:1] == MEMBERSHIP_COMMAND_BYTE and (m := decode_entry(bytes(command))) is not None]
        if self.on_change is not None:
            self.on_change(before, self.current)

    def on_add(self, command: bytes, index: int) -> None:
        if command[:1] != MEMBERSHIP_COMMAND_BYTE:
            return
        membership = decode_entry(bytes(command))
        if membership is not None:
            with self._reporting():
                self._configs = [c for c in self._configs if c[0] < index] + [(index, membership)]

    def on_truncate(self, first_deleted_index: int) -> None:
        if self._configs and self._configs[-1][0] >= first_deleted_index:
            with self._reporting():
                self._configs = [c for c in self._configs if c[0] < first_deleted_index]

    def on_compact(self, first_kept_index: int) -> None:
        """Entries below `first_kept_index` left the log: their last membership becomes the base."""
        older = [c for c in self._configs if c[0] < first_kept_index]
        if older:
            self.base_index, self.base = older[-1]
            self._configs = self._configs[len(older):]

    def on_clear(self) -> None:
        with self._reporting():
            self._configs = []

    def set_base(self, membership: Membership, index: int, change_index: int = 0) -> None:
        """A snapshot at `index` was installed or loaded: `membership` was in force there, put in
        force by the entry at `change_index` (0: the bootstrap's)."""
        with self._reporting():
            self.base, self.base_index = membership, change_index
            self._configs = [c for c in self._configs if c[0] > index]

    @contextlib.contextmanager
    def _reporting(self) -> Iterator[None]:
        """Run `on_change` if the block changed the membership in force."""
        before = self.current
        yield
        if self.current != before and self.on_change is not None:
            self.on_change(before, self.current)
