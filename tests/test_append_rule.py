"""Raft's append rule (§5.3; Figure 2, AppendEntries receiver rules 2-5) as `plan_append` decides it:
pure code, no sockets. Entries are PySyncObj's (command, index, term) tuples."""

from __future__ import annotations

from raftchroma.replication import (APPEND_ACK, APPEND_ENTRIES, APPEND_REFUSE, APPEND_REJECT, AppendPlan,
                                    plan_append)


def entries(first_index: int, *terms: int) -> list[tuple[bytes, int, int]]:
    return [(f"c{first_index + i}t{term}".encode(), first_index + i, term) for i, term in enumerate(terms)]


# The follower: index 1 (term 0, PySyncObj's initial no-op), 2-4 in term 1, 5-7 in term 2.
LOG = entries(1, 0, 1, 1, 1, 2, 2, 2)


def test_matching_overlap_deletes_nothing() -> None:
    """Rule 3 deletes only on a conflict: a stale append whose entries we hold is acknowledged for
    exactly what it carries (PySyncObj deleted 5-7 here)."""
    plan = plan_append(LOG, commit_index=2, prev_index=1, prev_term=0, entries=entries(2, 1, 1, 1))
    assert plan == AppendPlan(APPEND_ACK, match_index=4)


def test_heartbeat_below_our_last_entry_deletes_nothing() -> None:
    plan = plan_append(LOG, commit_index=2, prev_index=3, prev_term=1, entries=[])
    assert plan == AppendPlan(APPEND_ACK, match_index=3)


def test_matching_overlap_then_new_entries_appends_only_the_new_ones() -> None:
    """Rule 4: append any new entries not already in the log, after our last one."""
    plan = plan_append(LOG, commit_index=2, prev_index=4, prev_term=1, entries=entries(5, 2, 2, 2, 3, 3))
    assert plan == AppendPlan(APPEND_ENTRIES, prev_index=7, prev_term=2, entries=tuple(entries(8, 3, 3)),
                              match_index=9)


def test_append_at_the_end_is_unchanged() -> None:
    plan = plan_append(LOG, commit_index=2, prev_index=7, prev_term=2, entries=entries(8, 2))
    assert plan == AppendPlan(APPEND_ENTRIES, prev_index=7, prev_term=2, entries=tuple(entries(8, 2)), match_index=8)


def test_conflict_in_the_middle_deletes_from_the_first_conflict() -> None:
    """Rule 3: 'If an existing entry conflicts with a new one (same index but different terms),
    delete the existing entry and all that follow it.' Entries 5 match; 6 is the first conflict."""
    plan = plan_append(LOG, commit_index=4, prev_index=4, prev_term=1, entries=entries(5, 2, 3, 3))
    assert plan == AppendPlan(APPEND_ENTRIES, prev_index=5, prev_term=2, entries=tuple(entries(6, 3, 3)),
                              truncate_from=6, match_index=7)


def test_shorter_conflicting_append_deletes_our_longer_suffix() -> None:
    plan = plan_append(LOG, commit_index=4, prev_index=4, prev_term=1, entries=entries(5, 3))
    assert plan == AppendPlan(APPEND_ENTRIES, prev_index=4, prev_term=1, entries=tuple(entries(5, 3)),
                              truncate_from=5, match_index=5)


def test_stale_append_entirely_below_commit_changes_nothing() -> None:
    plan = plan_append(LOG, commit_index=7, prev_index=1, prev_term=0, entries=entries(2, 1, 1))
    assert plan == AppendPlan(APPEND_ACK, match_index=3)


def test_conflict_at_or_below_the_commit_index_is_refused() -> None:
    """A committed entry is never deleted (Leader Completeness says a real leader cannot ask)."""
    plan = plan_append(LOG, commit_index=6, prev_index=4, prev_term=1, entries=entries(5, 2, 3))
    assert plan.action == APPEND_REFUSE
    assert "entry 6" in plan.reason and "commit index 6" in plan.reason


def test_prev_index_beyond_our_log_is_rejected() -> None:
    """Rule 2: reply false if the log does not contain an entry at prevLogIndex."""
    assert plan_append(LOG, 4, prev_index=9, prev_term=2, entries=entries(10, 2)).action == APPEND_REJECT


def test_prev_term_mismatch_is_rejected() -> None:
    """Rule 2: ... whose term matches prevLogTerm."""
    assert plan_append(LOG, 4, prev_index=6, prev_term=1, entries=entries(7, 3)).action == APPEND_REJECT


def test_prev_index_before_a_compacted_log_is_rejected() -> None:
    compacted = entries(5, 2, 2, 2)  # PySyncObj keeps the entry before the snapshot point first
    assert plan_append(compacted, 6, prev_index=3, prev_term=1, entries=entries(4, 1, 2)).action == APPEND_REJECT
    assert plan_append(compacted, 6, prev_index=5, prev_term=2, entries=entries(6, 2)) == AppendPlan(
        APPEND_ACK, match_index=6)


def test_entries_with_wrong_indexes_are_refused() -> None:
    plan = plan_append(LOG, 4, prev_index=7, prev_term=2, entries=[(b"x", 9, 2)])
    assert plan.action == APPEND_REFUSE
