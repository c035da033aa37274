"""The outcome of an apply or a read, and the one place Chroma's error body is shaped.

Owns: `Result` (an HTTP status and a JSON-able body), `error_body`, the
`{"error": NAME, "message": TEXT}` shape Chroma 1.5.9 answers with, and the three ways a store
change can end other than success: `Refused` (a deterministic answer, recorded as the result),
`StoreUnavailable` (the machine failed: retry the op) and `StoreFault` (cannot be classified: stop).
Pure data: no I/O.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any


def error_body(name: str, message: str) -> dict[str, str]:
    """Chroma's error body; every error raftchroma answers is built here."""
    return {"error": name, "message": message}


@dataclass(frozen=True)
class Result:
    """The outcome of an apply or a read: an HTTP status and a JSON-able body."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status < 400

    @classmethod
    def error(cls, status: int, name: str, message: str) -> Result:
        return cls(status, error_body(name, message))


def not_found_collection(collection_id: str, dot: bool = True) -> Result:
    return Result.error(404, "NotFoundError", f"Collection [{collection_id}] does not exist{'.' if dot else ''}")


class Refused(Exception):
    """Chroma's deterministic, typed answer to an op (not found, invalid argument...)."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.body["message"])
        self.result = result


class StoreUnavailable(Exception):
    """The machine failed (disk full, I/O error, read-only file system, no descriptors or memory):
    the op changed nothing lasting and must be retried, never recorded as a result."""


class StoreFault(Exception):
    """Chroma failed on an op and the machine looks healthy: the outcome cannot be classified.
    The node must stop rather than record a result the other replicas may not have."""


ENVIRONMENTAL_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EFBIG,
})


def is_machine_failure(exc: BaseException) -> bool:
    """Whether an exception says the machine failed (disk full, I/O error...), not the code."""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in ENVIRONMENTAL_ERRNOS)
