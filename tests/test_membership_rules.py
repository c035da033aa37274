"""membership.py without Raft: the rules a leader checks before it proposes a change
(`plan_change`), the membership entry's format, and `MembershipLog`, which says which membership
is in force as entries enter, leave and are compacted out of the log."""

from __future__ import annotations

import pickle

import msgpack
import pytest

from raftchroma.membership import (
    ENTRY_VERSION, MEMBERSHIP_COMMAND_BYTE, LeaderView, Member, Membership, MembershipLog, MembershipRefused,
    decode_entry, describe_change, encode_entry, plan_change, planned_from,
)


def member(node_id: str, voter: bool = True) -> Member:
    n = int(node_id[1:])
    return Member(node_id, f"127.0.0.1:{7000 + n}", f"127.0.0.1:{8000 + n}", voter)


THREE = Membership.of([member("n1"), member("n2"), member("n3")])


def view(commit_index: int = 100, connected: tuple[str, ...] = ("n2", "n3"), match: dict[str, int] | None = None,
         committed_in_term: bool = True, change_pending: bool = False, self_id: str = "n1") -> LeaderView:
    return LeaderView(self_id=self_id, commit_index=commit_index, committed_in_term=committed_in_term,
                      change_pending=change_pending, match_index=dict(match or {}), connected=frozenset(connected))


def add(node_id: str = "n4", **overrides: str) -> dict[str, str]:
    m = member(node_id)
    return {"op": "add", "id": node_id, "raft": m.raft, "http": m.http, **overrides}


def refusal(current: Membership, change: dict, leader: LeaderView) -> str:
    with pytest.raises(MembershipRefused) as info:
        plan_change(current, change, leader)
    return str(info.value)


# ------------------------------------------------------------------ plan_change


def test_add_makes_a_non_voter_and_changes_nothing_else() -> None:
    new = plan_change(THREE, add(), view())
    assert new == Membership.of([*THREE.members, member("n4", voter=False)])
    assert [m.id for m in new.voters] == ["n1", "n2", "n3"] and [m.id for m in new.non_voters] == ["n4"]


def test_no_change_before_the_leader_committed_in_its_term_or_while_one_is_pending() -> None:
    assert "not yet committed an entry of its term" in refusal(THREE, add(), view(committed_in_term=False))
    assert "one change at a time" in refusal(THREE, add(), view(change_pending=True))


@pytest.mark.parametrize(("change", "reason"), [
    ({"op": "add", "raft": "127.0.0.1:7004", "http": "127.0.0.1:8004"}, "needs the member's id"),
    ({**add(), "id": ""}, "needs the member's id"),
    ({**add(), "id": 4}, "needs the member's id"),
    ({**add(), "op": "rename"}, "unknown membership change 'rename'"),
    (add(raft="127.0.0.1"), "needs its Raft and HTTP addresses"),
    (add(http="127.0.0.1:0"), "needs its Raft and HTTP addresses"),
    (add(raft="127.0.0.1:65536"), "needs its Raft and HTTP addresses"),
    (add(http=":8004"), "needs its Raft and HTTP addresses"),
    ({**add(), "id": "n 4"}, "letters, digits"),
    ({**add(), "id": "n2"}, "n2 is already a member"),
    (add(raft=member("n2").raft), "n2 already uses that address"),
    (add(http=member("n3").http), "n3 already uses that address"),
])
def test_add_refusals(change: dict, reason: str) -> None:
    assert reason in refusal(THREE, change, view())


def test_promote_at_exactly_ninety_percent_of_the_commit_index_and_not_one_entry_below() -> None:
    current = Membership.of([*THREE.members, member("n4", voter=False)])
    connected = ("n2", "n3", "n4")
    promoted = plan_change(current, {"op": "promote", "id": "n4"}, view(1000, connected, {"n4": 900}))
    assert promoted.member("n4") == member("n4", voter=True) and len(promoted.voters) == 4
    reason = refusal(current, {"op": "promote", "id": "n4"}, view(1000, connected, {"n4": 899}))
    assert reason == ("n4 is behind (it holds the log up to 899, the leader has committed 1000); "
                      "promote it once it has caught up")


def test_promote_refusals() -> None:
    current = Membership.of([*THREE.members, member("n4", voter=False)])
    promote = {"op": "promote", "id": "n4"}
    assert "n4 is not connected to the leader" in refusal(current, promote, view(match={"n4": 100}))
    assert "n5 is not a member; add it first" in refusal(current, {"op": "promote", "id": "n5"}, view())
    assert "n2 is already a voter" in refusal(current, {"op": "promote", "id": "n2"}, view())
    assert "is behind" in refusal(current, promote, view(connected=("n2", "n3", "n4")))  # no match index yet


def test_promote_refused_when_the_new_voters_would_have_no_quorum_the_leader_reaches() -> None:
    current = Membership.of([*THREE.members, member("n4", voter=False)])
    # Connected to n4 only: after the change 2 of 4 voters (n1, n4) are reachable, not a majority.
    reason = refusal(current, {"op": "promote", "id": "n4"}, view(10, ("n4",), {"n4": 10}))
    assert reason == "after this change the leader would reach 2 of 4 voters, not a quorum; bring members back first"
    # Connected to n2 and n4: 3 of 4.
    assert len(plan_change(current, {"op": "promote", "id": "n4"}, view(10, ("n2", "n4"), {"n4": 10})).voters) == 4


def test_remove_refusals_and_the_quorum_check() -> None:
    assert "n9 is not a member" in refusal(THREE, {"op": "remove", "id": "n9"}, view())
    assert refusal(THREE, {"op": "remove", "id": "n1"}, view()) == \
        "n1 is the leader; transfer leadership first, then remove it"
    # Leader alone: removing n3 leaves n1, n2 of which it reaches only itself (1 of 2).
    assert "would reach 1 of 2 voters, not a quorum" in refusal(THREE, {"op": "remove", "id": "n3"}, view(connected=()))
    # A dead n3 can be removed while n2 is connected.
    assert plan_change(THREE, {"op": "remove", "id": "n3"}, view(connected=("n2",))) == \
        Membership.of([member("n1"), member("n2")])
    lone = Membership.of([member("n1"), member("n2", voter=False)])
    assert refusal(lone, {"op": "remove", "id": "n1"}, view(self_id="x", connected=("n1",))) == \
        "the cluster would have no voter left"


def test_adding_a_non_voter_is_refused_while_the_leader_reaches_no_quorum() -> None:
    assert "would reach 1 of 3 voters" in refusal(THREE, add(), view(connected=("n4",)))


# ------------------------------------------------------------------ the entry


def test_encode_decode_round_trip_and_describe_change() -> None:
    membership = Membership.of([*THREE.members, member("n4", voter=False)])
    change = add()
    entry = encode_entry(membership, change)
    assert entry[:1] == MEMBERSHIP_COMMAND_BYTE
    assert msgpack.unpackb(entry[1:], raw=False) == {"v": ENTRY_VERSION, "members": membership.to_json(),
                                                     "change": change, "term": 0, "base": 0}
    assert decode_entry(entry) == membership
    assert describe_change(entry) == change


def _raw(payload: object) -> bytes:
    return MEMBERSHIP_COMMAND_BYTE + msgpack.packb(payload, use_bin_type=True)


@pytest.mark.parametrize("command", [
    b"\x01" + encode_entry(THREE, {})[1:],  # a REGULAR entry's kind byte
    MEMBERSHIP_COMMAND_BYTE + pickle.dumps(["127.0.0.1:7004"]),  # PySyncObj's own (pickled) change
    MEMBERSHIP_COMMAND_BYTE + b"\xc1",  # msgpack's never-used byte
    MEMBERSHIP_COMMAND_BYTE,
    _raw(["not", "a", "dict"]),
    _raw({"v": ENTRY_VERSION + 1, "members": THREE.to_json()}),
    _raw({"members": THREE.to_json()}),
    _raw({"v": ENTRY_VERSION, "members": {"n1": "x"}}),
    _raw({"v": ENTRY_VERSION, "members": [{"id": "n1", "raft": "a:1"}]}),
    _raw({"v": ENTRY_VERSION, "members": [{**member("n1").to_json(), "voter": "yes"}]}),
    _raw({"v": ENTRY_VERSION, "members": [member("n1").to_json(), {**member("n2").to_json(), "id": "n1"}]}),
    _raw({"v": ENTRY_VERSION, "members": [member("n1").to_json(),
                                          {**member("n2").to_json(), "raft": member("n1").raft}]}),
    _raw({"v": ENTRY_VERSION, "members": [member("n1", voter=False).to_json()]}),  # no voter at all
    _raw({"v": ENTRY_VERSION, "members": []}),
])
def test_decode_rejects_anything_but_a_valid_membership_of_this_version(command: bytes) -> None:
    assert decode_entry(command) is None


def test_decode_never_unpickles() -> None:
    class Boom:
        def __reduce__(self) -> tuple:
            return (pytest.fail, ("decode_entry unpickled its payload",))

    assert decode_entry(MEMBERSHIP_COMMAND_BYTE + pickle.dumps(Boom())) is None


# ------------------------------------------------------------------ MembershipLog

FOUR = Membership.of([*THREE.members, member("n4", voter=False)])
FOUR_VOTERS = Membership.of([*THREE.members, member("n4")])


def regular(index: int) -> tuple[bytes, int, int]:
    return (b"\x01payload", index, 1)


def config(membership: Membership, index: int) -> tuple[bytes, int, int]:
    return (encode_entry(membership, {}), index, 1)


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[Membership, Membership]] = []

    def __call__(self, old: Membership, new: Membership) -> None:
        self.changes.append((old, new))


def test_load_takes_the_last_membership_entry_and_reports_even_the_base() -> None:
    seen = Recorder()
    log = MembershipLog(THREE, seen)
    log.load([])
    assert (log.current, log.last_change_index, seen.changes) == (THREE, 0, [(THREE, THREE)])
    log.load([regular(1), config(FOUR, 2), regular(3), config(FOUR_VOTERS, 4), regular(5),
              (MEMBERSHIP_COMMAND_BYTE + pickle.dumps([]), 6, 1)])  # PySyncObj's own: not ours, skipped
    assert (log.current, log.last_change_index) == (FOUR_VOTERS, 4)
    assert seen.changes[-1] == (THREE, FOUR_VOTERS)


def test_on_add_puts_a_membership_in_force_at_once_and_ignores_other_entries() -> None:
    seen = Recorder()
    log = MembershipLog(THREE, seen)
    log.on_add(b"\x01payload", 1)
    log.on_add(MEMBERSHIP_COMMAND_BYTE + b"\xc1", 2)  # malformed: skipped
    assert (log.current, seen.changes) == (THREE, [])
    log.on_add(config(FOUR, 3)[0], 3)
    assert (log.current, log.last_change_index, seen.changes) == (FOUR, 3, [(THREE, FOUR)])
    log.on_add(config(FOUR, 5)[0], 5)  # the same membership again: no report
    assert (log.last_change_index, len(seen.changes)) == (5, 1)


def test_on_truncate_restores_the_previous_membership() -> None:
    seen = Recorder()
    log = MembershipLog(THREE, seen)
    log.load([config(FOUR, 2), regular(3), config(FOUR_VOTERS, 4)])
    log.on_truncate(5)  # below nothing of ours: no change
    assert (log.current, len(seen.changes)) == (FOUR_VOTERS, 1)
    log.on_truncate(4)
    assert (log.current, log.last_change_index, seen.changes[-1]) == (FOUR, 2, (FOUR_VOTERS, FOUR))
    log.on_truncate(1)
    assert (log.current, log.last_change_index, seen.changes[-1]) == (THREE, 0, (FOUR, THREE))


def test_an_entry_added_at_an_index_replaces_the_later_ones() -> None:
    log = MembershipLog(THREE)
    log.load([config(FOUR, 2), config(FOUR_VOTERS, 4)])
    log.on_add(config(THREE, 3)[0], 3)  # a new leader's entry at 3 (PySyncObj truncated first, or not)
    assert (log.current, log.last_change_index, log.at(10)) == (THREE, 3, THREE)


def test_on_compact_moves_the_base_without_changing_what_is_in_force() -> None:
    seen = Recorder()
    log = MembershipLog(THREE, seen)
    log.load([config(FOUR, 2), regular(3), config(FOUR_VOTERS, 4)])
    log.on_compact(3)
    assert (log.base, log.current, log.last_change_index, len(seen.changes)) == (FOUR, FOUR_VOTERS, 4, 1)
    log.on_truncate(4)  # the compacted-out entry's membership is now the base, with its index
    assert (log.current, log.last_change_index, log.base_index) == (FOUR, 2, 2)
    log.on_compact(2)  # nothing below 2 is left to move
    assert log.base == FOUR


def test_set_base_from_a_snapshot_keeps_only_later_entries() -> None:
    seen = Recorder()
    log = MembershipLog(THREE, seen)
    log.load([config(FOUR, 2), config(FOUR_VOTERS, 6)])
    log.set_base(FOUR, 5, change_index=2)
    assert (log.base, log.current, log.last_change_index, log.change_index_at(5)) == (FOUR, FOUR_VOTERS, 6, 2)
    log.set_base(THREE, 7)
    assert (log.base, log.current, log.last_change_index, seen.changes[-1]) == (THREE, THREE, 0, (FOUR_VOTERS, THREE))


def test_at_says_which_membership_was_in_force_at_an_index() -> None:
    log = MembershipLog(THREE)
    log.load([regular(1), config(FOUR, 3), regular(4), config(FOUR_VOTERS, 6)])
    assert [log.at(i) for i in (0, 2, 3, 5, 6, 100)] == [THREE, THREE, FOUR, FOUR, FOUR_VOTERS, FOUR_VOTERS]


def test_on_clear_falls_back_to_the_base() -> None:
    seen = Recorder()
    log = MembershipLog(THREE, seen)
    log.load([config(FOUR, 2)])
    log.on_clear()
    assert (log.current, log.last_change_index, seen.changes[-1]) == (THREE, 0, (FOUR, THREE))


def test_member_json_validation() -> None:
    assert Member.from_json({"id": "n1", "raft": "a:1", "http": "a:2"}) == Member("n1", "a:1", "a:2", True)
    for raw in ([], {"id": "n1", "raft": "a:1"}, {"id": "", "raft": "a:1", "http": "a:2"},
                {"id": "n1", "raft": "a:1", "http": "a:2", "voter": 1}):
        with pytest.raises(ValueError):
            Member.from_json(raw)
    with pytest.raises(ValueError, match="share a http"):
        Membership.from_json([member("n1").to_json(), {**member("n2").to_json(), "http": member("n1").http}])


def test_a_node_whose_raft_status_is_not_yet_known_claims_no_membership() -> None:
    from raftchroma.raft_process import UNKNOWN_STATUS

    assert (UNKNOWN_STATUS.role, UNKNOWN_STATUS.member, UNKNOWN_STATUS.voter, UNKNOWN_STATUS.members) == \
        ("unknown", False, False, [])


def test_an_entry_records_the_term_and_the_membership_it_was_planned_from() -> None:
    entry = encode_entry(FOUR, {"op": "add", "id": "n4"}, term=7, base_index=12)
    assert (decode_entry(entry), planned_from(entry)) == (FOUR, (7, 12))
    assert planned_from(b"\x00" + entry[1:]) is None  # a regular entry is not a membership change
    assert planned_from(entry[:-3]) is None  # nor is a truncated one
