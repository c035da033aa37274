"""Log entries: the explicit, versioned msgpack encoding of replicated commands.

Owns: the byte format of every Raft log entry. An entry carries one or more operations
(so that concurrent small writes can later share one entry); each operation carries a
request id chosen by the proposer, and everything the apply path needs that is random or
time-based (collection and database ids) is chosen before proposing and travels here.
Embeddings travel as little-endian float32 bytes, never as lists of floats. An `update`
whose embeddings are null for some rows carries zeros there and lists those rows in
`keep_rows`; such an entry is version 2, so that a node too old to know the field stops on it
(CorruptEntry) instead of writing the zeros. Every other entry is still version 1.
Old versions keep decoding: `tests/test_command.py` holds golden bytes.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
import numpy as np

ENTRY_VERSION = 1
KEEP_ROWS_VERSION = 2  # the first version whose readers know an update's `keep_rows`
READABLE_VERSIONS = frozenset({ENTRY_VERSION, KEEP_ROWS_VERSION})

OP_KINDS = frozenset({
    "create_tenant", "create_database", "delete_database",
    "create_collection", "update_collection", "delete_collection",
    "add", "upsert", "update", "delete_records", "reset", "barrier",
})


class CorruptEntry(Exception):
    """A log entry that cannot be decoded: corruption, the node must stop."""


def new_request_id() -> bytes:
    return os.urandom(16)


def pack_embeddings(vectors: Any) -> dict[str, Any] | None:
    """Embeddings (list of lists or 2-d array) as {"n", "dim", "f32"}; None stays None."""
    if vectors is None:
        return None
    array = np.asarray(vectors, dtype="<f4")
    if array.ndim != 2:
        raise ValueError("embeddings must be a list of vectors of one dimension")
    return {"n": int(array.shape[0]), "dim": int(array.shape[1]), "f32": array.tobytes()}


def unpack_embeddings(packed: dict[str, Any] | None) -> np.ndarray | None:
    if packed is None:
        return None
    flat = np.frombuffer(packed["f32"], dtype="<f4")
    return flat.reshape(packed["n"], packed["dim"])


def encode_entry(ops: list[dict[str, Any]]) -> bytes:
    """One log entry holding `ops`, each a dict with at least "kind" and "rid"."""
    for op in ops:
        if op.get("kind") not in OP_KINDS:
            raise ValueError(f"unknown op kind {op.get('kind')!r}")
    version = KEEP_ROWS_VERSION if any(op.get("keep_rows") for op in ops) else ENTRY_VERSION
    return msgpack.packb({"v": version, "ops": ops}, use_bin_type=True)


def decode_entry(data: bytes) -> list[dict[str, Any]]:
    """The ops of an entry; raises CorruptEntry for anything not produced by encode_entry."""
    try:
        entry = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types
        raise CorruptEntry(f"undecodable entry: {exc}") from exc
    if not isinstance(entry, dict) or entry.get("v") not in READABLE_VERSIONS:
        raise CorruptEntry(f"unknown entry version: {entry.get('v') if isinstance(entry, dict) else type(entry)}")
    ops = entry.get("ops")
    if not isinstance(ops, list) or not all(isinstance(op, dict) and op.get("kind") in OP_KINDS for op in ops):
        raise CorruptEntry("entry without a valid op list")
    return ops
