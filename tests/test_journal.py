"""The durable journal: fsync before returning, checksums, clear refusal of damage."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from raftchroma.journal import DurableJournal, JournalCorrupt


class FsyncCounter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int) -> None:
        import os
        os.fsync(fd)
        self.calls += 1


def test_every_entry_term_and_truncation_is_fsynced_before_returning(tmp_path: Path) -> None:
    fsync = FsyncCounter()
    journal = DurableJournal(tmp_path / "raft.log", fsync=fsync)
    created = fsync.calls
    journal.add(b"one", 1, 1)
    assert fsync.calls == created + 1
    journal.add(b"two", 2, 1)
    journal.setCurrentTerm(2, "127.0.0.1:7001")
    journal.deleteEntriesFrom(1)
    journal.clear()
    assert fsync.calls == created + 5
    journal.setRaftCommitIndex(7)
    size = journal.size_bytes
    journal.onOneSecondTimer()
    assert journal.size_bytes == size, "PySyncObj's one-second call, right before its election check, writes nothing"
    journal.save_commit_hint()
    assert journal.size_bytes > size and fsync.calls == created + 5, "the commit index is a hint, written without fsync"


def test_reopen_restores_entries_term_vote_and_commit_index(tmp_path: Path) -> None:
    path = tmp_path / "raft.log"
    journal = DurableJournal(path)
    for i in range(1, 6):
        journal.add(f"cmd{i}".encode(), i, 1)
    journal.deleteEntriesFrom(3)
    journal.add(b"cmd4'", 4, 2)
    journal.setCurrentTerm(2, "127.0.0.1:7002")
    journal.setRaftCommitIndex(4)
    journal._destroy()
    reopened = DurableJournal(path)
    assert list(reopened[:]) == [(b"cmd1", 1, 1), (b"cmd2", 2, 1), (b"cmd3", 3, 1), (b"cmd4'", 4, 2)]
    assert (reopened.getCurrentTerm(), reopened.getVotedForNodeId()) == (2, "127.0.0.1:7002")
    assert reopened.getRaftCommitIndex() == 4


def test_compaction_rewrites_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "raft.log"
    journal = DurableJournal(path)
    for i in range(1, 101):
        journal.add(b"x" * 100, i, 1)
    journal.setCurrentTerm(3, None)
    size_before = path.stat().st_size
    journal.deleteEntriesTo(98)
    assert [e[1] for e in journal[:]] == [99, 100]
    assert path.stat().st_size < size_before / 10
    journal.add(b"y", 101, 3)
    journal._destroy()
    reopened = DurableJournal(path)
    assert [e[1] for e in reopened[:]] == [99, 100, 101] and reopened.getCurrentTerm() == 3
    assert not (tmp_path / "raft.log.tmp").exists()


def _journal_with_entries(path: Path) -> None:
    journal = DurableJournal(path)
    for i in range(1, 4):
        journal.add(b"payload-%d" % i, i, 1)
    journal._destroy()


def test_truncated_journal_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "raft.log"
    _journal_with_entries(path)
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(JournalCorrupt, match=r"raft\.log: truncated record at offset \d+"):
        DurableJournal(path)


def test_flipped_byte_is_refused_by_checksum(tmp_path: Path) -> None:
    path = tmp_path / "raft.log"
    _journal_with_entries(path)
    data = bytearray(path.read_bytes())
    data[data.index(b"payload-2")] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="checksum mismatch"):
        DurableJournal(path)


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.log"
    path.write_bytes(b"not a journal at all")
    with pytest.raises(JournalCorrupt, match="bad magic"):
        DurableJournal(path)


def test_a_failed_compaction_leaves_the_journal_whole_and_usable(tmp_path: Path) -> None:
    """Disk full while compaction writes the new file: the journal keeps every entry, stays open,
    takes new entries, and reopens with all of them. (Before, it was left closed.)"""
    path = tmp_path / "raft.log"
    full = {"on": False}

    def fsync(fd: int) -> None:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.fsync(fd)

    journal = DurableJournal(path, fsync=fsync)
    for i in range(1, 6):
        journal.add(b"c%d" % i, i, 1)
    full["on"] = True
    journal.deleteEntriesTo(3)
    full["on"] = False
    assert [e[1] for e in journal[:]] == [1, 2, 3, 4, 5]
    assert not path.with_name(path.name + ".tmp").exists()
    journal.add(b"c6", 6, 1)
    journal._destroy()
    assert [e[1] for e in DurableJournal(path)[:]] == [1, 2, 3, 4, 5, 6]


def test_a_journal_longer_than_the_snapshot_keeps_the_entries_after_it(tmp_path: Path) -> None:
    """After a failed compaction the journal still starts before the snapshot; PySyncObj would then
    clear it down to the snapshot's two entries at start, dropping 6..10. Aligned, it keeps them."""
    import base64

    from raftchroma import snapshot
    from raftchroma.replication import _align_journal_to_snapshot

    journal = DurableJournal(tmp_path / "raft.log")
    for i in range(1, 11):
        journal.add(b"c%d" % i, i, 1)
    store_dir = tmp_path / "store"
    store_dir.mkdir()

    def entry(i: int, term: int = 1) -> list:
        return [base64.b64encode(b"c%d" % i).decode(), i, term]
    path = tmp_path / "raft.snapshot"
    snapshot.write_snapshot(path, store_dir, {"index": 5, "raft": {"prev": entry(4), "last": entry(5, 2)}})
    _align_journal_to_snapshot(journal, path)
    assert [e[1] for e in journal[:]] == list(range(1, 11)), "a term that differs: not the same entries, untouched"
    snapshot.write_snapshot(path, store_dir, {"index": 5, "raft": {"prev": entry(4), "last": entry(5)}})
    _align_journal_to_snapshot(journal, path)
    assert [e[1] for e in journal[:]] == list(range(4, 11))
    journal._destroy()
    assert [e[1] for e in DurableJournal(tmp_path / "raft.log")[:]] == list(range(4, 11))
