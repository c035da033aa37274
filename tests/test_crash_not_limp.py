"""Crash, don't limp: PySyncObj's tick thread logs an exception and runs the same tick again,
forever. A real single-node PySyncObj whose journal raises: a bug-like exception reaches
`on_fatal` (the Raft process stops on it), a full disk is left to PySyncObj's retry."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from raftchroma.config import ClusterConfig, NodeConfig, RaftTuning
from raftchroma.replication import Replication
from raftchroma.result import is_machine_failure
from tests.harness import free_ports, wait_for


def single_node(tmp_path: Path, reasons: list[str]) -> Replication:
    (raft_port,) = free_ports(1)
    node = NodeConfig("n1", "127.0.0.1", raft_port, "127.0.0.1", 0, tmp_path / "n1")
    config = ClusterConfig(nodes=(node,), secret=None,
                           raft=RaftTuning(election_timeout_min_s=0.5, election_timeout_max_s=1.0))
    replication = Replication(config, node, lambda index, data: None, fault_injection=True, on_fatal=reasons.append)
    wait_for(lambda: replication.status().role == "leader", 10, "the single node to lead")
    return replication


@pytest.mark.parametrize("failure, fatal", [(ValueError("I/O operation on closed file"), True),
                                            (OSError(errno.ENOSPC, "No space left on device"), False)])
def test_a_failing_tick_is_fatal_unless_the_machine_failed(tmp_path: Path, failure: Exception, fatal: bool) -> None:
    reasons: list[str] = []
    replication = single_node(tmp_path, reasons)
    try:
        replication._journal.injected_failure = failure
        replication.propose(b"entry", lambda result, err: None)
        if fatal:
            wait_for(lambda: reasons, 10, "on_fatal to be called")
            assert "closed file" in reasons[0]
        else:
            wait_for(lambda: replication._journal.injected_failure is failure and replication.status().commit_index >= 1,
                     10, "the tick to keep running")  # the leader's own no-op entry committed before
            assert reasons == []
    finally:
        replication._journal.injected_failure = None
        replication.stop()


def test_machine_failures() -> None:
    assert is_machine_failure(OSError(errno.EIO, "x")) and is_machine_failure(MemoryError())
    assert not is_machine_failure(OSError(errno.EPERM, "x")) and not is_machine_failure(RuntimeError("x"))
