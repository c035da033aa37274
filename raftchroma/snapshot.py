"""Snapshot files: one self-checking file holding a copy of the Chroma store at a log index.

Owns: the file format. Layout: `[tar of the store directory][header JSON][u32 header length]
[MAGIC]`. The header carries the log index and term the snapshot stands for, PySyncObj's
bookkeeping (opaque here), the store's id maps, and the SHA-256 and size of the tar part,
so a truncated or damaged file is detected before anything is installed from it.

One file, because PySyncObj renames and streams the snapshot as a single file. Uncompressed,
because float32 vectors do not compress. Written to a temp file, fsynced, then renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

MAGIC = b"RCSNAP01"
FORMAT_VERSION = 1
_LEN = struct.Struct("<I")
_HASH_CHUNK_BYTES = 1 << 20


class SnapshotCorrupt(Exception):
    """The snapshot file is damaged; the message names the file."""


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def write_snapshot(path: Path, store_dir: Path, header: dict[str, Any], fsync: Any = os.fsync) -> None:
    """Write `store_dir` and `header` as one snapshot file at `path`, atomically."""
    tmp = path.with_name(path.name + ".writing")
    try:
        _write_file(tmp, store_dir, header, fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    _fsync_dir(path.parent, fsync)


def promote(candidate: Path, final: Path, fsync: Any = os.fsync) -> bool:
    """Make the locally written snapshot `candidate` the node's snapshot at `final`, unless `final`
    already holds one at least as new (one received from the leader meanwhile): then drop the
    candidate. Call only from the thread that also writes received snapshots (PySyncObj's tick
    thread), so that exactly one writer ever replaces `final`."""
    if final.exists():
        try:
            if read_header(final, verify=False)["index"] >= read_header(candidate, verify=False)["index"]:
                candidate.unlink(missing_ok=True)
                return False
        except SnapshotCorrupt:
            pass  # a damaged final file is replaced
    os.replace(candidate, final)
    _fsync_dir(final.parent, fsync)
    return True


def _write_file(tmp: Path, store_dir: Path, header: dict[str, Any], fsync: Any) -> None:
    with open(tmp, "wb") as out:
        writer = _HashingWriter(out)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for child in sorted(store_dir.iterdir()):
                tar.add(child, arcname=child.name)
        full_header = dict(header, format=FORMAT_VERSION, tar_bytes=writer.size, tar_sha256=writer.sha256.hexdigest())
        encoded = json.dumps(full_header, sort_keys=True).encode()
        out.write(encoded + _LEN.pack(len(encoded)) + MAGIC)
        out.flush()
        fsync(out.fileno())


def read_header(path: Path, verify: bool = True) -> dict[str, Any]:
    """The header of the snapshot at `path`; with `verify`, the tar part's checksum is checked too."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = _read_trailer(f, size, path)
            if verify:
                _verify_tar(f, header, path)
    except OSError as exc:
        raise SnapshotCorrupt(f"{path}: cannot read snapshot: {exc}") from None
    return header


def read_embedded_header(f: BinaryIO, start: int, size: int, name: str) -> dict[str, Any]:
    """The header of a snapshot held in `f` at bytes [start, start + size), e.g. in a backup archive."""
    return _read_trailer(f, size, name, start)


def _read_trailer(f: BinaryIO, size: int, path: Path | str, start: int = 0) -> dict[str, Any]:
    tail = len(MAGIC) + _LEN.size
    if size < tail:
        raise SnapshotCorrupt(f"{path}: truncated snapshot ({size} bytes)")
    f.seek(start + size - tail)
    length_bytes, magic = f.read(_LEN.size), f.read(len(MAGIC))
    if magic != MAGIC:
        raise SnapshotCorrupt(f"{path}: not a complete raftchroma snapshot (bad trailer)")
    (length,) = _LEN.unpack(length_bytes)
    if length > size - tail:
        raise SnapshotCorrupt(f"{path}: truncated snapshot header")
    f.seek(start + size - tail - length)
    try:
        header = json.loads(f.read(length))
    except ValueError:
        raise SnapshotCorrupt(f"{path}: unreadable snapshot header") from None
    if header.get("format") != FORMAT_VERSION or header.get("tar_bytes") != size - tail - length:
        raise SnapshotCorrupt(f"{path}: snapshot size does not match its header")
    return header


def _verify_tar(f: BinaryIO, header: dict[str, Any], path: Path) -> None:
    f.seek(0)
    digest = hashlib.sha256()
    for chunk in read_chunks(f, header["tar_bytes"]):  # a short file fails the checksum
        digest.update(chunk)
    if digest.hexdigest() != header["tar_sha256"]:
        raise SnapshotCorrupt(f"{path}: checksum mismatch (the snapshot is damaged)")


def write_from_stream(path: Path, source: BinaryIO, header: dict[str, Any], fsync: Any = os.fsync) -> None:
    """Write a snapshot file at `path` whose store part is the next `header["tar_bytes"]` bytes of
    `source`, checked against `header["tar_sha256"]`, under `header` (which may differ from the
    source's, e.g. new Raft bookkeeping): how a restore makes each node's snapshot from a backup.
    Atomic like write_snapshot; a checksum mismatch raises SnapshotCorrupt and writes nothing."""
    tmp = path.with_name(path.name + ".writing")
    try:
        with open(tmp, "wb") as out:
            writer = _HashingWriter(out)
            _copy_exactly(source, writer, header["tar_bytes"], path)
            if writer.sha256.hexdigest() != header["tar_sha256"]:
                raise SnapshotCorrupt(f"{path}: the store copy does not match its checksum")
            full_header = dict(header, format=FORMAT_VERSION, tar_bytes=writer.size, tar_sha256=header["tar_sha256"])
            encoded = json.dumps(full_header, sort_keys=True).encode()
            out.write(encoded + _LEN.pack(len(encoded)) + MAGIC)
            out.flush()
            fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    _fsync_dir(path.parent, fsync)


def _copy_exactly(source: BinaryIO, writer: _HashingWriter, count: int, path: Path) -> None:
    def short(remaining: int) -> Exception:
        return SnapshotCorrupt(f"{path}: the source ended {remaining} bytes early")
    for chunk in read_chunks(source, count, on_short=short):
        writer.write(chunk)


def read_chunks(source: BinaryIO, count: int, chunk_bytes: int = _HASH_CHUNK_BYTES,
                on_short: Callable[[int], Exception] | None = None) -> Iterator[bytes]:
    """The next `count` bytes of `source`, in chunks of at most `chunk_bytes`. If the source ends
    first: raise `on_short(bytes still missing)`, or without it just stop."""
    remaining = count
    while remaining > 0:
        chunk = source.read(min(chunk_bytes, remaining))
        if not chunk:
            if on_short is not None:
                raise on_short(remaining)
            return
        yield chunk
        remaining -= len(chunk)


def extract(path: Path, header: dict[str, Any], dest_dir: Path) -> None:
    """Unpack the store part of a verified snapshot into the empty directory `dest_dir`."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as f:
        with tarfile.open(fileobj=_Bounded(f, header["tar_bytes"]), mode="r|") as tar:  # type: ignore[call-overload]
            tar.extractall(dest_dir, filter="data")


class _Bounded:
    """Read at most `limit` bytes of `f` (the tar part, not the trailer)."""

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self._f, self._left = f, limit

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        return data


def write_json_atomically(path: Path, value: Any) -> None:
    """`value` as JSON at `path`: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as out:
        json.dump(value, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent, os.fsync)


def _fsync_dir(directory: Path, fsync: Any) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)
