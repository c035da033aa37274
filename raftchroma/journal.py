"""The durable Raft journal behind PySyncObj's `createJournal` seam.

Owns: the on-disk Raft log, current term and vote. PySyncObj 0.3.17's own FileJournal
writes through an mmap and never fsyncs, and has no checksums (see
shared/reference/pysyncobj-0.3.17-notes.md, hazard 5). This journal is an append-only file
of checksummed records, and every change a Raft peer may act on is on stable storage
before the call returns:

- `add` (a log entry): written and fsynced before PySyncObj answers an append or counts
  the entry toward commit;
- `setCurrentTerm` (term and vote): fsynced before a vote or append answer is sent;
- `deleteEntriesFrom` / `clear`: fsynced;
- `deleteEntriesTo` (compaction): the file is rewritten to a temp file, fsynced, renamed,
  and the directory fsynced;
- the commit index is only a hint (Raft recomputes it) and is written once a second
  without fsync.

Opening a file with a bad checksum or a record cut short raises JournalCorrupt naming the
file and offset: the node refuses to start rather than run with silently missing entries.
Every fsync is timed into `fsync_seconds` (reported as a metric through the Raft process's status).
Duck-typed to pysyncobj.journal.Journal; this module does not import pysyncobj.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Protocol

import msgpack

from raftchroma.metrics import BucketCounts

MAGIC = b"RCJ1"
_HEADER = struct.Struct("<II")  # payload length, crc32 of payload
MAX_RECORD_BYTES = 1 << 30


log = logging.getLogger(__name__)


class JournalCorrupt(Exception):
    """The journal file is damaged; the message names the file and where."""


class JournalObserver(Protocol):
    """Told of every change to the log after it is made (membership.MembershipLog)."""

    def on_add(self, command: bytes, index: int) -> None: ...
    def on_truncate(self, first_deleted_index: int) -> None: ...
    def on_compact(self, first_kept_index: int) -> None: ...
    def on_clear(self) -> None: ...


class DurableJournal:
    """PySyncObj journal interface; entries are (command bytes, index, term) tuples."""

    observer: JournalObserver | None = None

    def __init__(self, path: str | os.PathLike[str], fsync: Callable[[int], None] = os.fsync) -> None:
        self._path = Path(path)
        self._fsync_call = fsync
        self.fsync_seconds = BucketCounts()
        self._entries: list[tuple[bytes, int, int]] = []
        self._term = 0
        self._voted_for: Any = None
        self._commit_index = 1
        self._commit_saved = 1
        self._load()
        self._file = open(self._path, "ab", buffering=0)

    # ------------------------------------------------------------- loading

    def _load(self) -> None:
        if not self._path.exists() or self._path.stat().st_size == 0:
            self._write_fresh(self._path, [])
            return
        data = self._path.read_bytes()
        if data[:4] != MAGIC:
            raise JournalCorrupt(f"{self._path}: not a raftchroma journal (bad magic)")
        offset = 4
        while offset < len(data):
            offset = self._load_record(data, offset)

    def _load_record(self, data: bytes, offset: int) -> int:
        if offset + _HEADER.size > len(data):
            raise JournalCorrupt(f"{self._path}: truncated record header at offset {offset}")
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if length > MAX_RECORD_BYTES or start + length > len(data):
            raise JournalCorrupt(f"{self._path}: truncated record at offset {offset} ({length} bytes declared)")
        payload = data[start:start + length]
        if zlib.crc32(payload) != crc:
            raise JournalCorrupt(f"{self._path}: checksum mismatch in record at offset {offset}")
        self._replay(msgpack.unpackb(payload, raw=False), offset)
        return start + length

    def _replay(self, record: list[Any], offset: int) -> None:
        kind = record[0]
        if kind == "a":
            self._entries.append((record[3], record[1], record[2]))
        elif kind == "f":
            del self._entries[record[1]:]
        elif kind == "c":
            self._entries = []
        elif kind == "v":
            self._term, self._voted_for = record[1], record[2]
        elif kind == "m":
            self._commit_index = self._commit_saved = record[1]
        else:
            raise JournalCorrupt(f"{self._path}: unknown record kind {kind!r} at offset {offset}")

    # ------------------------------------------------------------- writing

    injected_fsync_stall_s = 0.0  # TEST ONLY (fault injection): the next fsync first stalls this long

    def _fsync(self, fd: int) -> None:
        started = time.monotonic()
        stall_s, self.injected_fsync_stall_s = self.injected_fsync_stall_s, 0.0
        try:
            if stall_s:
                time.sleep(stall_s)  # a slow disk, in the tick thread as a real one would be
            self._fsync_call(fd)
        finally:
            self.fsync_seconds.observe(time.monotonic() - started)

    injected_failure: OSError | None = None  # TEST ONLY (fault injection): every append fails with it

    def _append(self, record: list[Any], durable: bool = True) -> None:
        """Append one record; on failure (disk full) cut the file back so no torn record stays."""
        if self.injected_failure is not None:
            raise self.injected_failure
        payload = msgpack.packb(record, use_bin_type=True)
        offset = self._file.tell()
        try:
            _write_all(self._file, _HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            if durable:
                self._fsync(self._file.fileno())
        except OSError:
            self._file.truncate(offset)
            self._file.seek(offset)
            raise

    def _write_fresh(self, path: Path, entries: list[tuple[bytes, int, int]]) -> None:
        """Write a complete journal to `path` atomically (temp file, fsync, rename, fsync dir).
        Raises OSError, with `path` untouched, if the temp file cannot be written."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(MAGIC)
                for record in self._state_records(entries):
                    payload = msgpack.packb(record, use_bin_type=True)
                    out.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
                out.flush()
                self._fsync(out.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                self._fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:  # the rename is done; only its durability is in doubt until the next fsync
            log.error("fsync of %s after compaction failed: %s", path.parent, exc)

    def _state_records(self, entries: list[tuple[bytes, int, int]]) -> list[list[Any]]:
        records: list[list[Any]] = [["v", self._term, self._voted_for], ["m", self._commit_index]]
        records += [["a", idx, term, bytes(command)] for command, idx, term in entries]
        return records

    # ------------------------------------------------- PySyncObj's interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._append(["a", idx, term, bytes(command)])
        self._entries.append((command, idx, term))
        if self.observer is not None:
            self.observer.on_add(command, idx)

    def clear(self) -> None:
        self._append(["c"])
        self._entries = []
        if self.observer is not None:
            self.observer.on_clear()

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802 (PySyncObj's name)
        self._append(["f", entryFrom])
        first_deleted = self._entries[entryFrom][1] if entryFrom < len(self._entries) else None
        del self._entries[entryFrom:]
        if self.observer is not None and first_deleted is not None:
            self.observer.on_truncate(first_deleted)

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802
        """Compaction. If the new file cannot be written (disk full), keep the whole journal, open
        and usable: PySyncObj reads the first index from the log itself, so a log that was not
        cut is still consistent, only longer."""
        remaining = self._entries[entryTo:]
        try:
            self._write_fresh(self._path, remaining)
        except OSError as exc:
            log.error("journal compaction failed, keeping the whole journal (%d entries): %s", len(self._entries), exc)
            return
        self._file.close()
        self._file = open(self._path, "ab", buffering=0)
        if self.observer is not None and remaining:
            self.observer.on_compact(remaining[0][1])
        self._entries = remaining

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.save_commit_hint()
        self._file.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802
        self._commit_index = raftCommitIndex

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return self._commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802
        self._append(["v", term, votedForNodeId])
        self._term, self._voted_for = term, votedForNodeId

    def getCurrentTerm(self) -> int:  # noqa: N802
        return self._term

    def getVotedForNodeId(self) -> Any:  # noqa: N802
        return self._voted_for

    def onOneSecondTimer(self) -> None:  # noqa: N802
        """Nothing: PySyncObj calls this in its tick right before the election check, where a write
        held up by the kernel (dirty pages being flushed) would make a healthy follower campaign.
        The Raft tick calls `save_commit_hint` instead, before it reads what peers sent."""

    def save_commit_hint(self) -> None:
        if self._commit_index != self._commit_saved and not self._file.closed:
            self._append(["m", self._commit_index], durable=False)
            self._commit_saved = self._commit_index

    # ---------------------------------------------------------- for status

    @property
    def size_bytes(self) -> int:
        return self._path.stat().st_size if self._path.exists() else 0


def _write_all(file: Any, data: bytes) -> None:
    """Write every byte to an unbuffered file. A raw write may write only part (a disk filling up
    returns a short count, not an error); the rest is written again, which then raises, so the
    caller cuts the file back instead of leaving a torn record behind a later one."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.ENOSPC, "short write to the Raft journal")
        view = view[written:]
