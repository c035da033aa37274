"""Crash, don't limp: PySyncObj logs and swallows exceptions from its tick and from loading a
snapshot; in the Raft process such a log record stops the process (unless the machine is the
cause, where PySyncObj's retry is right)."""

from __future__ import annotations

import errno
import logging

from raftchroma.replication import CrashOnPySyncObjFailure


def record_for(message: str, exc: BaseException | None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("pysyncobj.syncobj", logging.ERROR, __file__, 1, message, (), exc_info)


def test_an_unexpected_tick_failure_or_a_failed_snapshot_load_stops_the_raft_process() -> None:
    reasons: list[str] = []
    handler = CrashOnPySyncObjFailure(reasons.append)
    handler.emit(record_for("failed _onTick in _autoTickThread", ValueError("I/O operation on closed file")))
    handler.emit(record_for("failed to load full dump", KeyError("raft")))
    assert len(reasons) == 2 and "closed file" in reasons[0] and "KeyError" in reasons[1]


def test_a_full_disk_is_left_to_pysyncobjs_retry_and_other_messages_are_ignored() -> None:
    reasons: list[str] = []
    handler = CrashOnPySyncObjFailure(reasons.append)
    handler.emit(record_for("failed _onTick in _autoTickThread", OSError(errno.ENOSPC, "No space left on device")))
    handler.emit(record_for("failed _onTick in _autoTickThread", OSError(errno.EIO, "Input/output error")))
    handler.emit(record_for("some other error", RuntimeError("boom")))
    assert reasons == []
