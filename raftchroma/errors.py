"""Error types of raftchroma, each definite or indefinite, and their Chroma HTTP shape.

Owns: the mapping from a failure to `(status, {"error": NAME, "message": TEXT})`, the body
shape Chroma 1.5.9 uses. A *definite* error means the request certainly changed nothing;
an *indefinite* one means it may have committed (Jepsen's `info`), and is never reported
as a plain failure.
"""

from __future__ import annotations

import logging
import os
from typing import Any, NoReturn

from raftchroma.result import error_body

# Exit codes of `raftchroma serve`, read by `raftchroma up` (restart or not) and by operators.
EXIT_USAGE = 2  # bad command line or cluster file: restarting cannot help
EXIT_CORRUPT = 3  # a damaged journal or snapshot: restarting cannot help
EXIT_CORRUPT_LOG = 70  # a committed entry cannot be decoded: restarting replays it again
EXIT_INSTALL_FAILED = 71  # a snapshot install failed (may be the disk): restarting may help
EXIT_INTERNAL = 73  # an unexpected exception in the applier (a bug): restarting may help, report it
EXIT_RAFT_PROCESS = 74  # the node's Raft process died: restarting helps
EXIT_APPLY_FAULT = 72  # Chroma failed on a committed entry and the machine looks healthy: see OPERATIONS.md


def exit_now(code: int) -> NoReturn:
    """Stop the whole process at once with `code` (crash, don't limp): from any thread, without
    running cleanups that could hang, after the log has been flushed."""
    logging.shutdown()
    os._exit(code)


class ApiError(Exception):
    """An error with a Chroma-shaped HTTP rendering."""

    status = 400
    name = "ChromaError"
    definite = True
    close_connection = False  # True: close the connection after answering (a body left unread)
    headers: dict[str, str] = {}  # extra response headers

    def __init__(self, message: str, *, status: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if name is not None:
            self.name = name

    def body(self) -> dict[str, Any]:
        return error_body(self.name, self.message)


class InvalidArgument(ApiError):
    status = 400
    name = "InvalidArgumentError"


class NotFound(ApiError):
    status = 404
    name = "NotFoundError"


class AlreadyExists(ApiError):
    status = 409
    name = "ChromaError"


class Unprocessable(ApiError):
    """Chroma's 422: the JSON body does not deserialize into the request type."""

    status = 422
    name = "ChromaError"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Failed to deserialize the JSON body into the target type: {detail}")


class NoQuorum(ApiError):
    """Definite: the request was not proposed (or a read could not be confirmed)."""

    status = 503
    name = "NoQuorum"


class NotReady(ApiError):
    """Definite: this node has not caught up to the requested index in time."""

    status = 503
    name = "NotReady"


class NotLeader(ApiError):
    """Definite: an operation only the leader performs was sent to another node."""

    status = 409
    name = "NotLeader"


class TransferRefused(ApiError):
    """Definite: the leader did not hand over leadership (no such peer, or its log is behind)."""

    status = 409
    name = "TransferRefused"


class MembershipChangeRefused(ApiError):
    """Definite: the leader will not make this membership change now (membership.plan_change says why)."""

    status = 409
    name = "MembershipChangeRefused"


class WriteOutcomeUnknown(ApiError):
    """Indefinite: the write was proposed and may still commit; the client must check."""

    status = 504
    name = "WriteOutcomeUnknown"
    definite = False


def result_error(status: int, name: str, message: str) -> ApiError:
    """An ApiError rebuilt from an error Result."""
    return ApiError(message, status=status, name=name)
