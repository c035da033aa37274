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


def test_a_local_snapshot_never_replaces_a_newer_received_one(tmp_path: Path) -> None:
    """One writer for the snapshot file: the applier writes its snapshot beside it, and Raft's tick
    thread (which also writes received snapshots) moves it into place only if it is newer."""
    from raftchroma import snapshot

    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "data").write_bytes(b"x" * 100)
    final = tmp_path / "raft.snapshot"
    snapshot.write_snapshot(final, store_dir, {"index": 200})  # received from the leader meanwhile
    local = tmp_path / "raft.snapshot.local"
    snapshot.write_snapshot(local, store_dir, {"index": 100})
    assert snapshot.promote(local, final) is False
    assert snapshot.read_header(final)["index"] == 200 and not local.exists()
    snapshot.write_snapshot(local, store_dir, {"index": 300})
    assert snapshot.promote(local, final) is True
    assert snapshot.read_header(final)["index"] == 300 and not local.exists()
