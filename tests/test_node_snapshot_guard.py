"""The applier refuses to label the store with an index it is already past (a kept store)."""

from __future__ import annotations

from pathlib import Path

from raftchroma.config import parse_config
from raftchroma.node import Node


class RecordingReplication:
    def __init__(self) -> None:
        self.done: list[bool] = []

    def snapshot_done(self, ok: bool) -> None:
        self.done.append(ok)


def make_node(tmp_path: Path) -> Node:
    raw = {"node": [{"id": "n1", "raft": "127.0.0.1:1", "http": "127.0.0.1:2", "data_dir": "d"}]}
    config = parse_config(raw, base_dir=tmp_path, environ={})
    return Node(config, config.node("n1"))


def test_snapshot_request_below_the_kept_store_index_is_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.replication = RecordingReplication()  # type: ignore[assignment]
    node._skip_through = 10  # the store was kept at index 10 and PySyncObj is still replaying
    node._write_snapshot(tmp_path / "raft.snapshot", {"index": 7}, node._install_generation)
    assert node.replication.done == [False]
    assert not (tmp_path / "raft.snapshot").exists()


def test_snapshot_request_after_a_newer_install_is_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.replication = RecordingReplication()  # type: ignore[assignment]
    node._write_snapshot(tmp_path / "raft.snapshot", {"index": 7}, node._install_generation - 1)
    assert node.replication.done == [False]
