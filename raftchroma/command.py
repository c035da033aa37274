"""Log entries: typed replicated operations and their explicit, versioned msgpack encoding.

Owns: the op types (one frozen dataclass per kind), their byte format in a Raft log entry, and
the validation of every decoded entry. An entry carries one or more proposals (so that
concurrent small writes can later share one entry); each proposal carries the proposer's
waiter id (`rid`), optionally the client's `X-Raftchroma-Request-Id`, and one op. Everything
the apply path needs that is random, time- or machine-based (collection and database ids,
Chroma's HNSW `num_threads`) is chosen before proposing and travels here.

An entry is decoded into typed ops or refused as a whole (CorruptEntry): a field of the wrong
type never reaches the state machine. Embeddings travel as little-endian float32 bytes. Versions:
1 is the original format; 2 adds an update's `keep_rows` (rows whose embeddings are null);
3 adds the client's `request_id` and a new collection's `hnsw_num_threads`. An entry is written at the lowest version that can hold it,
so that a node too old for a field stops on it (CorruptEntry) instead of ignoring it. Old
versions keep decoding: `tests/test_command.py` holds golden bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Union

import msgpack
import numpy as np

ENTRY_VERSION = 1
KEEP_ROWS_VERSION = 2  # the first version whose readers know an update's `keep_rows`
REQUEST_ID_VERSION = 3  # the first version whose readers know `request_id` and `hnsw_num_threads`
READABLE_VERSIONS = frozenset({ENTRY_VERSION, KEEP_ROWS_VERSION, REQUEST_ID_VERSION})
RECORD_KINDS = ("add", "upsert", "update")


class CorruptEntry(Exception):
    """A log entry that cannot be decoded: corruption, the node must stop."""


def new_request_id() -> bytes:
    return os.urandom(16)


# ------------------------------------------------------------------- the op types


@dataclass(frozen=True)
class CreateTenant:
    KIND: ClassVar[str] = "create_tenant"
    name: str


@dataclass(frozen=True)
class CreateDatabase:
    KIND: ClassVar[str] = "create_database"
    tenant: str
    name: str
    database_id: str


@dataclass(frozen=True)
class DeleteDatabase:
    KIND: ClassVar[str] = "delete_database"
    tenant: str
    name: str


@dataclass(frozen=True)
class CreateCollection:
    KIND: ClassVar[str] = "create_collection"
    tenant: str
    database: str
    name: str
    collection_id: str
    metadata: dict[str, Any] | None = None
    configuration_json: str | None = None
    schema_json: str | None = None
    get_or_create: bool = False
    hnsw_num_threads: int | None = None  # Chroma's default is the machine's CPU count: chosen by the proposer


@dataclass(frozen=True)
class UpdateCollection:
    KIND: ClassVar[str] = "update_collection"
    tenant: str
    database: str
    collection_id: str
    new_name: str | None = None
    new_metadata: dict[str, Any] | None = None
    new_configuration_json: str | None = None


@dataclass(frozen=True)
class DeleteCollection:
    KIND: ClassVar[str] = "delete_collection"
    tenant: str
    database: str
    name: str


@dataclass(frozen=True)
class WriteRecords:
    """add, upsert or update of a batch (`kind` says which); all or nothing."""

    KIND: ClassVar[str] = "records"
    kind: str
    tenant: str
    database: str
    collection_id: str
    ids: list[str]
    embeddings: dict[str, Any] | None = None  # pack_embeddings' form
    metadatas: list[Any] | None = None
    documents: list[Any] | None = None
    uris: list[Any] | None = None
    keep_rows: list[int] | None = None  # update only: rows whose stored vector is kept


@dataclass(frozen=True)
class DeleteRecords:
    KIND: ClassVar[str] = "delete_records"
    tenant: str
    database: str
    collection_id: str
    ids: list[str] | None = None
    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    limit: int | None = None


@dataclass(frozen=True)
class Reset:
    KIND: ClassVar[str] = "reset"


@dataclass(frozen=True)
class Barrier:
    """Changes nothing; committing one proves leadership for linearizable reads."""

    KIND: ClassVar[str] = "barrier"


Op = Union[CreateTenant, CreateDatabase, DeleteDatabase, CreateCollection, UpdateCollection, DeleteCollection,
           WriteRecords, DeleteRecords, Reset, Barrier]


@dataclass(frozen=True)
class Proposal:
    """One request inside a log entry: the op, the proposer's waiter id, the client's request id."""

    op: Op
    rid: bytes = field(default_factory=new_request_id)
    request_id: str | None = None  # X-Raftchroma-Request-Id: at most one apply per id


_OP_TYPES: dict[str, type] = {t.KIND: t for t in (CreateTenant, CreateDatabase, DeleteDatabase, CreateCollection,
                                                  UpdateCollection, DeleteCollection, DeleteRecords, Reset, Barrier)}
OP_KINDS = frozenset(_OP_TYPES) | frozenset(RECORD_KINDS)


# ------------------------------------------------------------------- embeddings


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


# ------------------------------------------------------------------- encoding


def op_to_wire(op: Op, rid: bytes) -> dict[str, Any]:
    """The op as the wire dict: "kind", "rid", then its fields (records use their own kind)."""
    wire: dict[str, Any] = {"kind": op.kind if isinstance(op, WriteRecords) else op.KIND, "rid": rid}
    for f in fields(op):
        if f.name == "kind" or (f.name in _OMITTED_WHEN_EMPTY and not getattr(op, f.name)):
            continue
        wire[f.name] = getattr(op, f.name)
    return wire


_OMITTED_WHEN_EMPTY = ("keep_rows", "hnsw_num_threads")  # written only when set, so older entries keep their bytes


_CHOSEN_BY_PROPOSER = {"create_collection": ("collection_id", "hnsw_num_threads"), "create_database": ("database_id",)}


def request_digest(op: Op) -> str:
    """What a client request asked for, without what the proposing node chose for it (new ids,
    num_threads): a retry of the same request has the same digest on any node."""
    wire = op_to_wire(op, b"")
    for name in _CHOSEN_BY_PROPOSER.get(wire["kind"], ()):
        wire.pop(name, None)
    return hashlib.sha256(msgpack.packb(wire, use_bin_type=True)).hexdigest()[:32]


def encode_entry(proposals: list[Proposal]) -> bytes:
    """One log entry holding `proposals`, at the lowest version that can carry them."""
    version = ENTRY_VERSION
    wires = []
    for proposal in proposals:
        wire = op_to_wire(proposal.op, proposal.rid)
        if wire.get("keep_rows"):
            version = max(version, KEEP_ROWS_VERSION)
        if wire.get("hnsw_num_threads") is not None:
            version = max(version, REQUEST_ID_VERSION)
        if proposal.request_id is not None:
            wire["request_id"] = proposal.request_id
            version = max(version, REQUEST_ID_VERSION)
        wires.append(wire)
    return msgpack.packb({"v": version, "ops": wires}, use_bin_type=True)


def decode_entry(data: bytes) -> list[Proposal]:
    """The proposals of an entry; raises CorruptEntry for anything encode_entry cannot produce."""
    try:
        entry = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types
        raise CorruptEntry(f"undecodable entry: {exc}") from exc
    if not isinstance(entry, dict) or entry.get("v") not in READABLE_VERSIONS:
        raise CorruptEntry(f"unknown entry version: {entry.get('v') if isinstance(entry, dict) else type(entry)}")
    wires = entry.get("ops")
    if not isinstance(wires, list) or not all(isinstance(w, dict) for w in wires):
        raise CorruptEntry("entry without a valid op list")
    return [_proposal_from_wire(w, entry["v"]) for w in wires]


def _proposal_from_wire(wire: dict[str, Any], version: int) -> Proposal:
    wire = dict(wire)
    rid = wire.pop("rid", None)
    request_id = wire.pop("request_id", None) if version >= REQUEST_ID_VERSION else None
    if not isinstance(rid, bytes) or not (request_id is None or isinstance(request_id, str)):
        raise CorruptEntry(f"bad proposal header in {wire.get('kind')!r}")
    if version < KEEP_ROWS_VERSION and "keep_rows" in wire:
        raise CorruptEntry("keep_rows in an entry older than version 2")
    if version < REQUEST_ID_VERSION and "hnsw_num_threads" in wire:
        raise CorruptEntry("hnsw_num_threads in an entry older than version 3")
    return Proposal(op=op_from_wire(wire), rid=rid, request_id=request_id)


def op_from_wire(wire: dict[str, Any]) -> Op:
    """A typed op from its wire dict, every field type-checked (see _FIELD_TYPES)."""
    kind = wire.get("kind")
    if kind in RECORD_KINDS:
        op_type, values = WriteRecords, {"kind": kind}
    elif kind in _OP_TYPES:
        op_type, values = _OP_TYPES[kind], {}
    else:
        raise CorruptEntry(f"unknown op kind {kind!r}")
    known = {f.name for f in fields(op_type)} | {"kind"}
    unknown = set(wire) - known
    if unknown:
        raise CorruptEntry(f"{kind}: unknown fields {sorted(unknown)}")
    for f in fields(op_type):
        if f.name == "kind" or (f.name not in wire and f.default is not MISSING):
            continue  # an optional field left out keeps its default
        value = wire.get(f.name)
        if not (value is None and f.default is None) and not _FIELD_CHECKS[f.name](value):
            raise CorruptEntry(f"{kind}: field {f.name!r} has an invalid value")
        values[f.name] = value
    op = op_type(**values)
    if isinstance(op, WriteRecords):
        _check_record_columns(op)
    return op


def _check_record_columns(op: WriteRecords) -> None:
    count = len(op.ids)
    packed = op.embeddings
    if packed is not None and (packed["n"] != count or len(packed["f32"]) != packed["n"] * packed["dim"] * 4):
        raise CorruptEntry(f"{op.kind}: embeddings do not match the ids")
    for column in (op.metadatas, op.documents, op.uris):
        if column is not None and len(column) != count:
            raise CorruptEntry(f"{op.kind}: a column does not match the ids")
    if op.keep_rows and (op.kind != "update" or any(not 0 <= i < count for i in op.keep_rows)):
        raise CorruptEntry(f"{op.kind}: keep_rows out of range")


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_packed(v: Any) -> bool:
    return (isinstance(v, dict) and set(v) == {"n", "dim", "f32"} and isinstance(v["f32"], bytes)
            and all(isinstance(v[k], int) and not isinstance(v[k], bool) and v[k] >= 0 for k in ("n", "dim")))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_FIELD_CHECKS: dict[str, Any] = {
    "name": _is_str, "tenant": _is_str, "database": _is_str, "database_id": _is_str, "collection_id": _is_str,
    "metadata": lambda v: isinstance(v, dict), "new_metadata": lambda v: isinstance(v, dict),
    "configuration_json": _is_str, "schema_json": _is_str, "new_configuration_json": _is_str,
    "new_name": _is_str, "get_or_create": lambda v: isinstance(v, bool),
    "ids": _is_str_list, "embeddings": _is_packed,
    "metadatas": lambda v: isinstance(v, list) and all(x is None or isinstance(x, dict) for x in v),
    "documents": lambda v: isinstance(v, list) and all(x is None or isinstance(x, str) for x in v),
    "uris": lambda v: isinstance(v, list) and all(x is None or isinstance(x, str) for x in v),
    "keep_rows": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
    "where": lambda v: isinstance(v, dict), "where_document": lambda v: isinstance(v, dict),
    "limit": lambda v: _is_int(v) and v >= 0, "hnsw_num_threads": lambda v: _is_int(v) and 0 < v <= 4096,
}
