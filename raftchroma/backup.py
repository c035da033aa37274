"""Backups of the whole replicated store: taking one on a node, the archive format, and restoring
an archive as the data of a NEW cluster.

Owns: the archive format; `BackupTaker`, which makes a consistent copy on a running node; the
verification of an archive; `restore`, which lays an archive out as each node's snapshot file.
Must not: hold the applier while an archive streams (only the local copy pauses it), serve HTTP
(http/app.py streams what this module produces), or touch a running node's Raft log or snapshot.

**Consistency.** A backup first passes a linearizable read's barrier (node.py): a read index from
the leader, confirmed by a quorum after the request began, then applied on this node. Every write
acknowledged before the backup began is at or below that index (the argument is the linearizable
read's, docs/ARCHITECTURE.md). The applier then copies the store between two entries
(`Node.run_in_applier`), exactly as it writes a compaction snapshot, at its applied index L, which
is at least the barrier's: the archive holds every entry up to L and nothing after it.

**What pauses, and for how long.** Only the applier of the node that takes the backup, for one
local copy of the store's files (no fsync: the copy is streamed away, not kept). Raft goes on
meanwhile (it runs in its own process), so writes commit and every other node applies and
answers them; writes answered by this node wait for the copy. The pause is measured and recorded
in the archive (`applier_pause_s`); streaming holds nothing. The copy needs as much free disk as
the store on that node, and is deleted once streamed (or at the next backup after a crash).

**Archive layout** (format 1), one file:

    b"RCBACKUP 1\\n"
    metadata, one line of JSON, then b"\\n"
    the node's snapshot file of the copy (snapshot.py format), `snapshot_bytes` long
    b"sha256 " + 64 hex digits + b"\\n": SHA-256 of every byte before this line

Metadata: `format`, `index` (L), `term` (this node's Raft term when the copy was made, at least
the term of entry L), `barrier_index`, `settings_fingerprint` (ClusterConfig's), `source_node`,
`created_unix_s`, `snapshot_bytes`, `store_bytes`, `applier_pause_s`, `applier_pause_bound`.

**Restore.** A new cluster starts from the archive's copy as every node's `raft.snapshot`, with
PySyncObj bookkeeping for a fresh log at L (`replication.restored_raft_meta`) and no journal:
each node installs the snapshot at start, is applied at L, and the first leader's entries follow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from raftchroma import snapshot
from raftchroma.config import ClusterConfig, NodeConfig
from raftchroma.errors import ApiError

log = logging.getLogger(__name__)

ARCHIVE_MAGIC = b"RCBACKUP 1\n"
FORMAT_VERSION = 1
TRAILER_PREFIX = b"sha256 "
TRAILER_BYTES = len(TRAILER_PREFIX) + 64 + 1
MAX_METADATA_BYTES = 64 * 1024
STREAM_CHUNK_BYTES = 1 << 20
BACKUP_PATH = "/raftchroma/backup"
DOWNLOAD_TIMEOUT_S = 600.0  # per socket operation: the node copies its store before the first byte
COPY_PREFIX = "backup-"  # the node's local copies, in its data_dir
APPLIER_PAUSE_BOUND = ("one local copy of the store's files without fsync, the copy a compaction snapshot makes "
                       "(proportional to the store's size); only on the node that takes the backup")

# What a data_dir holds that raftchroma wrote (journal, snapshot, clean marker, store, copies):
# restore --force removes these, and only these.
_OWN_NAMES = ("raft.log", "raft.log.tmp", "store.state", "store.state.tmp", "store.probe", "chroma",
              "chroma.sqlite3.fresh", "raft-secret", "membership.json", "membership.json.tmp")
_OWN_PREFIXES = ("raft.snapshot", COPY_PREFIX)


class BackupCorrupt(Exception):
    """The archive is not a complete, undamaged raftchroma backup; the message is one line."""


class RestoreRefused(Exception):
    """Restoring would overwrite data, or the target is unusable; the message is one line."""


class BackupInProgress(ApiError):
    """Definite: this node is already taking a backup; nothing was started."""

    status = 503
    name = "BackupInProgress"


class BackupFailed(ApiError):
    status = 503
    name = "BackupFailed"


# ------------------------------------------------------------------ on the node


@dataclass(frozen=True)
class LocalCopy:
    """A consistent copy of one node's store, written for one backup; `release` deletes it."""

    path: Path
    metadata: dict[str, Any]
    release: Callable[[], None]


class BackupTaker:
    """Takes backups on one node, one at a time (from the barrier until the copy is released)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._busy = False

    async def take(self, timeout_s: float) -> LocalCopy:
        """Barrier, then a copy by the applier between two entries. Raises an ApiError."""
        if self._busy:
            raise BackupInProgress("This node is already taking a backup; retry when it is done")
        self._busy = True
        try:
            self._sweep()
            barrier_index = await self._node.read_barrier(timeout_s)
            return await self._copy(barrier_index)
        except BaseException:
            self._busy = False
            raise

    def _release(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._busy = False

    async def _copy(self, barrier_index: int) -> LocalCopy:
        node = self._node
        path = Path(node.node.data_dir) / f"{COPY_PREFIX}{uuid.uuid4().hex}.snapshot"

        def copy(store: Any, applied_index: int) -> tuple[int, int, float]:  # in the applier thread
            started = time.monotonic()
            term = node.replication.status().term
            store.write_snapshot(path, {"index": applied_index, "term": term}, durable=False)
            return applied_index, term, time.monotonic() - started

        copied = node.run_in_applier(copy)
        try:
            index, term, pause_s = await asyncio.shield(copied)
        except asyncio.CancelledError:  # the client went away: drop the copy once it is written
            copied.add_done_callback(lambda _: path.unlink(missing_ok=True))
            raise
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise BackupFailed(f"Could not copy the store for the backup (disk full?): {exc}") from None
        header = snapshot.read_header(path, verify=False)
        log.info("backup: store copied at index %d (barrier %d) in %.3fs; the applier paused that long",
                 index, barrier_index, pause_s)
        metadata = {
            "format": FORMAT_VERSION, "index": index, "term": term, "barrier_index": barrier_index,
            "settings_fingerprint": node.config.settings_fingerprint, "source_node": node.node.id,
            "created_unix_s": round(time.time(), 3), "snapshot_bytes": path.stat().st_size,
            "store_bytes": header["tar_bytes"], "applier_pause_s": round(pause_s, 6),
            "applier_pause_bound": APPLIER_PAUSE_BOUND,
        }
        return LocalCopy(path, metadata, lambda: self._release(path))

    def _sweep(self) -> None:
        """Copies left by a node that stopped while streaming one (one backup runs at a time, so
        any copy present now is a leftover)."""
        for leftover in Path(self._node.node.data_dir).glob(COPY_PREFIX + "*"):
            leftover.unlink(missing_ok=True)


class ArchiveStream:
    """The archive of a local copy, as chunks; hashes as it reads, so the trailer comes last."""

    def __init__(self, copy: LocalCopy) -> None:
        self._copy = copy
        self._prefix = ARCHIVE_MAGIC + json.dumps(copy.metadata, sort_keys=True).encode() + b"\n"
        self.size_bytes = len(self._prefix) + copy.metadata["snapshot_bytes"] + TRAILER_BYTES

    def chunks(self) -> Iterator[bytes]:
        """Blocking reads: run each step in an executor."""
        digest = hashlib.sha256(self._prefix)
        yield self._prefix
        with open(self._copy.path, "rb") as f:
            while chunk := f.read(STREAM_CHUNK_BYTES):
                digest.update(chunk)
                yield chunk
        yield TRAILER_PREFIX + digest.hexdigest().encode() + b"\n"


async def stream_chunks(stream: ArchiveStream) -> Any:
    """The archive's chunks, each read (and hashed) in the default executor."""
    loop = asyncio.get_running_loop()
    chunks = stream.chunks()
    while (chunk := await loop.run_in_executor(None, next, chunks, None)) is not None:
        yield chunk


# ------------------------------------------------------------------ reading an archive


@dataclass(frozen=True)
class ArchiveInfo:
    metadata: dict[str, Any]
    snapshot_start: int  # offset of the snapshot file inside the archive
    snapshot_header: dict[str, Any]
    sha256: str


def verify_archive(path: Path) -> ArchiveInfo:
    """Check the whole archive against its SHA-256 and its structure; BackupCorrupt if anything is off."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            metadata, start = _read_metadata(f, path)
            if start + metadata["snapshot_bytes"] + TRAILER_BYTES != size:
                raise BackupCorrupt(f"{path}: damaged or truncated backup (its size does not match its metadata)")
            sha256 = _check_sum(f, size, path)
            header = snapshot.read_embedded_header(f, start, metadata["snapshot_bytes"], str(path))
    except OSError as exc:
        raise BackupCorrupt(f"{path}: cannot read the backup: {exc}") from None
    except snapshot.SnapshotCorrupt as exc:
        raise BackupCorrupt(f"damaged backup: {exc}") from None
    if header.get("index") != metadata["index"]:
        raise BackupCorrupt(f"{path}: damaged backup (its store copy is not at the index its metadata names)")
    return ArchiveInfo(metadata, start, header, sha256)


def _read_metadata(f: BinaryIO, path: Path) -> tuple[dict[str, Any], int]:
    if f.read(len(ARCHIVE_MAGIC)) != ARCHIVE_MAGIC:
        raise BackupCorrupt(f"{path}: not a raftchroma backup archive (format {FORMAT_VERSION})")
    line = f.readline(MAX_METADATA_BYTES)
    try:
        metadata = json.loads(line)
        valid = (isinstance(metadata, dict) and metadata.get("format") == FORMAT_VERSION
                 and all(isinstance(metadata.get(k), int) and metadata[k] > 0 for k in ("index", "snapshot_bytes")))
    except ValueError:
        valid = False
    if not valid or not line.endswith(b"\n"):
        raise BackupCorrupt(f"{path}: damaged backup (unreadable metadata)")
    return metadata, f.tell()


def _check_sum(f: BinaryIO, size: int, path: Path) -> str:
    f.seek(0)
    digest = hashlib.sha256()
    for chunk in snapshot.read_chunks(f, size - TRAILER_BYTES, STREAM_CHUNK_BYTES,
                                      on_short=lambda _missing: BackupCorrupt(f"{path}: truncated backup")):
        digest.update(chunk)
    trailer = f.read(TRAILER_BYTES)
    expected = TRAILER_PREFIX + digest.hexdigest().encode() + b"\n"
    if trailer != expected:
        raise BackupCorrupt(f"{path}: checksum mismatch: the backup is damaged (sha256 of its contents is "
                            f"{digest.hexdigest()}, its trailer says {trailer[len(TRAILER_PREFIX):-1].decode(errors='replace')})")
    return digest.hexdigest()


# ------------------------------------------------------------------ downloading one


class DownloadFailed(Exception):
    """The node refused the backup or the transfer broke; the message is one line."""


def download(url: str, dest: Path, on_start: Callable[[int], None] = lambda total: None,
             on_bytes: Callable[[int], None] = lambda n: None, timeout_s: float = DOWNLOAD_TIMEOUT_S,
             token: str | None = None, ssl_context: Any = None) -> ArchiveInfo:
    """Fetch a backup from the node at `url` into `dest`: received into `dest.partial`, verified
    whole, then renamed, so `dest` only ever holds a complete, checked archive."""
    partial = dest.with_name(dest.name + ".partial")
    try:
        request = urllib.request.Request(url.rstrip("/") + BACKUP_PATH,
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(request, timeout=timeout_s, context=ssl_context) as response, \
                open(partial, "wb") as out:
            on_start(int(response.headers.get("Content-Length", 0)))
            while chunk := response.read(STREAM_CHUNK_BYTES):
                out.write(chunk)
                on_bytes(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        info = verify_archive(partial)
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise DownloadFailed(f"{url} refused the backup: {exc.code} {_error_text(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise DownloadFailed(f"backup from {url} failed: {getattr(exc, 'reason', exc)}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, dest)
    return info


def _error_text(body: bytes) -> str:
    try:
        parsed = json.loads(body)
        return f"{parsed['error']}: {parsed['message']}"
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200]


# ------------------------------------------------------------------ restore


@dataclass(frozen=True)
class Restored:
    archive: ArchiveInfo
    snapshots: dict[str, Path]  # node id -> the snapshot file written for it


def restore(archive: Path, config: ClusterConfig, node_ids: tuple[str, ...] = (), force: bool = False) -> Restored:
    """Verify `archive`, then write it as the snapshot of each node (all of `config`, or `node_ids`),
    so that the nodes start as a new cluster at the archive's index. Nothing is changed unless the
    archive is sound and every target data_dir is empty (or, with `force`, holds only raftchroma's
    own files, which are removed)."""
    from raftchroma.replication import SNAPSHOT_FILE_NAME, membership_of_config, restored_raft_meta  # PySyncObj

    info = verify_archive(archive)
    targets = [config.node(i) for i in node_ids] if node_ids else [n for n in config.nodes if not n.join]
    for node in targets:
        _check_target(node, force)
    raft_meta = restored_raft_meta(info.metadata["index"], membership_of_config(config))
    header = {k: v for k, v in info.snapshot_header.items() if k not in ("term", "format")}
    header.update(raft=raft_meta, restored_from={"sha256": info.sha256, "index": info.metadata["index"],
                                                 "term": info.metadata["term"],
                                                 "created_unix_s": info.metadata.get("created_unix_s")})
    done = {}
    for node in targets:
        data_dir = Path(node.data_dir)
        if force:
            _remove_own_files(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        target = data_dir / SNAPSHOT_FILE_NAME
        with open(archive, "rb") as f:
            f.seek(info.snapshot_start)
            snapshot.write_from_stream(target, f, header)
        done[node.id] = target
    return Restored(info, done)


def _check_target(node: NodeConfig, force: bool) -> None:
    data_dir = Path(node.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise RestoreRefused(f"node {node.id}: data_dir {data_dir} is not a directory")
    present = sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []
    if not present:
        return
    if not force:
        raise RestoreRefused(f"node {node.id}: data_dir {data_dir} is not empty ({', '.join(present[:5])}); "
                             "restore only into empty data dirs, or pass --force to replace a node's data")
    foreign = [name for name in present if not _is_own(name)]
    if foreign:
        raise RestoreRefused(f"node {node.id}: data_dir {data_dir} holds files raftchroma did not write "
                             f"({', '.join(foreign[:5])}); move them away first")


def _is_own(name: str) -> bool:
    return name in _OWN_NAMES or name.startswith(_OWN_PREFIXES)


def _remove_own_files(data_dir: Path) -> None:
    if not data_dir.exists():
        return
    for child in data_dir.iterdir():
        if not _is_own(child.name):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()

