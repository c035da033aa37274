"""Backup and restore (backup.py): a backup taken under writes is a linearizable cut of the log, its
restore is a new cluster equal to the source at the backup's index, and a damaged archive is
refused without changing anything."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from raftchroma import backup
from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}
DIM = 256
PRELOAD_RECORDS = 12_000  # ~12 MB of vectors: the archive is larger than loopback's socket buffers
PRELOAD_BATCH = 1_000


def vector(i: int) -> list[float]:
    return np.random.default_rng(i).standard_normal(DIM, dtype=np.float32).tolist()


def add(url: str, collection_id: str, ids: list[str], first: int) -> tuple[int, dict[str, str], Any]:
    body = {"ids": ids, "embeddings": [vector(first + k) for k in range(len(ids))],
            "metadatas": [{"i": first + k} for k in range(len(ids))],
            "documents": [f"doc {first + k}" for k in range(len(ids))]}
    return http("POST", f"{url}{SCOPE}/collections/{collection_id}/add", body, timeout_s=60)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftchroma", *args], capture_output=True, text=True, timeout=300)


@dataclass
class Writer:
    """Adds one record at a time through one node, recording each acknowledged write's index."""

    url: str
    collection_id: str
    acked: list[tuple[str, int, float]] = field(default_factory=list)  # (id, index, monotonic time acked)
    unknown: list[str] = field(default_factory=list)  # outcome not known: may or may not be there
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            record_id = f"w{i}"
            try:
                status, headers, _ = add(self.url, self.collection_id, [record_id], 1_000_000 + i)
            except OSError:
                status, headers = 0, {}
            if status == 201:
                self.acked.append((record_id, int(headers["X-Raftchroma-Index"]), time.monotonic()))
            else:
                self.unknown.append(record_id)
            i += 1


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    cluster = make_cluster(Path(tmp_path_factory.mktemp("source")))
    try:
        leader = start_cluster(cluster)
        status, _, body = http("POST", cluster.node(leader).url + SCOPE + "/collections", {"name": "kept"})
        assert status == 200, body
        for first in range(0, PRELOAD_RECORDS, PRELOAD_BATCH):
            ids = [f"p{first + k}" for k in range(PRELOAD_BATCH)]
            status, _, reply = add(cluster.node(leader).url, body["id"], ids, first)
            assert status == 201, reply
        yield cluster, body["id"]
    finally:
        cluster.stop_all()


def all_records(url: str, collection_id: str) -> dict[str, tuple[bytes, Any, Any]]:
    status, _, body = http("POST", f"{url}{SCOPE}/collections/{collection_id}/get",
                           {"include": ["embeddings", "metadatas", "documents"]}, headers=LIN, timeout_s=120)
    assert status == 200, body
    return {rid: (np.asarray(e, dtype="<f4").tobytes(), m, d)
            for rid, e, m, d in zip(body["ids"], body["embeddings"], body["metadatas"], body["documents"])}


def expected_record(record_id: str) -> tuple[bytes, Any, Any]:
    i = int(record_id[1:]) + (1_000_000 if record_id.startswith("w") else 0)
    return np.asarray(vector(i), dtype="<f4").tobytes(), {"i": i}, f"doc {i}"


def digests(cluster: Cluster, min_index: int) -> list[Any]:
    views = []
    for node in cluster.nodes.values():
        status, _, body = http("GET", node.url + "/raftchroma/digest",
                               headers={**LIN, "X-Raftchroma-Min-Index": str(min_index)}, timeout_s=120)
        assert status == 200, body
        views.append(body["collections"])
    return views


@pytest.mark.slow
def test_backup_under_writes_restores_as_a_new_cluster_equal_at_its_index(
        source: tuple[Cluster, str], tmp_path: Path) -> None:
    cluster, collection_id = source
    leader = cluster.leader()
    writer_node, backup_node = sorted(n for n in cluster.nodes if n != leader)  # the backup pauses no leader
    writer = Writer(cluster.node(writer_node).url, collection_id)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= 5, 60, "the writer's first acknowledged writes")
        started = time.monotonic()
        acked_before = [index for _, index, at in list(writer.acked) if at < started]
        archive = tmp_path / "cluster.backup"
        during: dict[str, Any] = {}

        def on_bytes(n: int) -> None:
            # Mid-stream (the archive is larger than the socket buffers, so the node is blocked
            # writing it): the streaming node itself still applies and answers a write, and the
            # writer through the other node keeps being acknowledged.
            if during:
                return
            acks_at_first_chunk = len(writer.acked)
            during["own"] = add(cluster.node(backup_node).url, collection_id, ["mid-stream"], 2_000_000)
            during["second"] = http("GET", cluster.node(backup_node).url + "/raftchroma/backup")
            wait_for(lambda: len(writer.acked) > acks_at_first_chunk, 60, "a write acknowledged mid-stream")
            during["writer_acks"] = len(writer.acked) - acks_at_first_chunk

        info = backup.download(cluster.node(backup_node).url, archive, on_bytes=on_bytes)
        finished = time.monotonic()
    finally:
        writer.stop.set()
        thread.join(timeout=120)
    meta = info.metadata
    print(f"\nbackup: index {meta['index']}, {meta['snapshot_bytes']} bytes in {finished - started:.2f} s, applier "
          f"paused {meta['applier_pause_s']:.3f} s; {sum(started < at < finished for _, _, at in writer.acked)} writes "
          f"acknowledged through {writer_node} during the backup")

    # A linearizable cut: every write acknowledged before the backup began is at or below its index.
    assert max(acked_before) <= meta["barrier_index"] <= meta["index"]
    assert meta["source_node"] == backup_node and meta["snapshot_bytes"] > 8 * 1024 * 1024
    assert meta["settings_fingerprint"] == cluster.node(leader).answered_status()["settings_fingerprint"]
    assert meta["applier_pause_s"] < 30.0  # stated in docs/OPERATIONS.md: one local copy of the store
    own_status, own_headers, own_body = during["own"]
    assert own_status == 201, own_body
    assert int(own_headers["X-Raftchroma-Index"]) > meta["index"]  # applied after the copy, not in it
    assert during["writer_acks"] >= 1
    second_status, _, second_body = during["second"]
    assert (second_status, second_body["error"]) == (503, "BackupInProgress")
    data_dir = cluster.root / "data" / backup_node
    wait_for(lambda: not list(data_dir.glob("backup-*")), 30, "the node to delete its local copy")

    # Restore into a NEW cluster: new ports, new data dirs.
    (tmp_path / "restored").mkdir()
    target = make_cluster(tmp_path / "restored")
    done = run_cli("restore", str(archive), "--config", str(target.config_path))
    assert done.returncode == 0, done.stderr
    assert f"restored index {meta['index']}" in done.stdout
    try:
        start_cluster(target)
        wait_for(lambda: all((n.status() or {}).get("applied_index", 0) >= meta["index"] for n in target.nodes.values()),
                 120, "every restored node to be applied at the backup's index")
        got = all_records(target.node("n1").url, collection_id)
        expected_ids = {f"p{i}" for i in range(PRELOAD_RECORDS)}
        expected_ids |= {rid for rid, index, _ in writer.acked if index <= meta["index"]}
        later_ids = {rid for rid, index, _ in writer.acked if index > meta["index"]} | {"mid-stream"}
        assert later_ids.isdisjoint(got)
        assert expected_ids <= set(got)
        assert set(got) - expected_ids <= set(writer.unknown)  # only writes whose outcome the writer never learnt
        for rid in expected_ids:
            assert got[rid] == expected_record(rid), rid
        views = digests(target, meta["index"])
        assert views[0] == views[1] == views[2] and collection_id in views[0]

        # The new cluster takes writes, after the restored index, and its replicas stay equal.
        status, headers, body = add(target.node("n2").url, collection_id, ["after-restore"], 3_000_000)
        assert status == 201, body
        after = int(headers["X-Raftchroma-Index"])
        assert after > meta["index"]
        views = digests(target, after)
        assert views[0] == views[1] == views[2]
        assert len(all_records(target.node("n3").url, collection_id)) == len(got) + 1
    finally:
        target.stop_all()


@pytest.fixture(scope="module")
def archive(source: tuple[Cluster, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backup made with the command, as a user runs it."""
    cluster, _ = source
    path = Path(tmp_path_factory.mktemp("archive")) / "cli.backup"
    done = run_cli("backup", "--to", str(path), "--config", str(cluster.config_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backup at index ") and str(path) in done.stdout
    return path


@pytest.mark.slow
@pytest.mark.parametrize("where", ["magic", "metadata", "store", "trailer"])
def test_a_damaged_archive_is_refused_and_nothing_is_changed(archive: Path, tmp_path: Path, where: str) -> None:
    data = bytearray(archive.read_bytes())
    metadata_end = data.index(b"\n", len(backup.ARCHIVE_MAGIC))
    position = {"magic": 2, "metadata": metadata_end - 5, "store": len(data) // 2, "trailer": len(data) - 10}[where]
    data[position] ^= 0x01
    damaged = tmp_path / "damaged.backup"
    damaged.write_bytes(bytes(data))
    (tmp_path / "target").mkdir()
    target = make_cluster(tmp_path / "target")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    done = run_cli("restore", str(damaged), "--config", str(target.config_path))

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raftchroma: restore refused, nothing was changed: "), done.stderr
    assert "damaged" in lines[0] or "not a raftchroma backup" in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not any(n.log_path.parent.joinpath("data").exists() for n in target.nodes.values())


@pytest.mark.slow
def test_restore_refuses_a_data_dir_in_use_unless_forced(archive: Path, tmp_path: Path) -> None:
    target = make_cluster(tmp_path)
    used = tmp_path / "data" / "n2"
    used.mkdir(parents=True)
    (used / "raft.log").write_bytes(b"an old journal")

    refused = run_cli("restore", str(archive), "--config", str(target.config_path))
    assert refused.returncode == 2 and "n2" in refused.stderr and "--force" in refused.stderr
    assert not (tmp_path / "data" / "n1").exists() and (used / "raft.log").read_bytes() == b"an old journal"

    one = run_cli("restore", str(archive), "--config", str(target.config_path), "--node", "n2", "--force")
    assert one.returncode == 0, one.stderr
    assert sorted(p.name for p in used.iterdir()) == ["raft.snapshot"]
    assert not (tmp_path / "data" / "n1").exists()

    (used / "notes.txt").write_text("not raftchroma's")
    foreign = run_cli("restore", str(archive), "--config", str(target.config_path), "--node", "n2", "--force")
    assert foreign.returncode == 2 and "notes.txt" in foreign.stderr
    meta = json.loads(archive.read_bytes().split(b"\n", 2)[1])
    assert backup.verify_archive(archive).metadata == meta
