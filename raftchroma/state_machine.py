"""The replicated state machine: `apply(store, proposal, index) -> Outcome`, pure and typed.

Owns: what every committed op does to the store and what it answers. Every deterministic
answer (already exists, not found, a rename onto a taken name) is decided here by asking the
store *before* changing it, in the order `chroma run` checks; the rest of Chroma's answers
come from the store as `Refused`, decided by Chroma's error type. The outcome depends only on
the op and the store: no node configuration, no clock, no randomness, no message text.

It must not catch `StoreUnavailable` (the machine failed: the node retries the same op) or
`StoreFault` (unclassifiable: the node stops): recording either as a result would make this
replica differ from the others. See STATE_MACHINE.md beside this file for why it is shaped so.

Exactly-once: a proposal that carries a client request id whose outcome is remembered answers
that first outcome and changes nothing. The store keeps the last OUTCOME_WINDOW ids; the window
is part of the replicated state (snapshots, restarts), so every replica forgets the same ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from raftchroma.command import (
    Barrier, CreateCollection, CreateDatabase, CreateTenant, DeleteCollection, DeleteDatabase, DeleteRecords,
    Op, Proposal, Reset, UpdateCollection, WriteRecords, request_digest,
)
from raftchroma.config import CHROMA_MAX_BATCH_SIZE
from raftchroma.result import Refused, Result, error_body, not_found_collection

OUTCOME_WINDOW = 4096  # client request ids whose first outcome is remembered
MAX_REMEMBERED_BODY_BYTES = 2048  # a larger answer is kept by reference (a collection) or cut (a message)
UNIQUE_NAME_MESSAGE = ("Database error: error returned from database: (code: 2067) UNIQUE constraint failed: "
                       "collections.name, collections.database_id")  # what `chroma run` answers a rename onto a taken name


class StateStore(Protocol):
    """What apply needs from a store (raftchroma.store.Store; a fake in the unit tests).
    Changes raise `Refused` for Chroma's typed answers, and may raise `StoreUnavailable`
    or `StoreFault`, which apply lets through."""

    def tenant_exists(self, name: str) -> bool: ...
    def database_exists(self, tenant: str, name: str) -> bool: ...
    def collection(self, tenant: str, database: str, api_id: str) -> Any: ...  # .name, .dimension or None
    def collection_named(self, tenant: str, database: str, name: str) -> Any: ...  # .api_id or None
    def recall(self, request_id: str) -> Remembered | None: ...
    def remember(self, request_id: str, remembered: Remembered, window: int) -> None: ...
    def rendered_collection(self, tenant: str, database: str, api_id: str) -> dict[str, Any] | None: ...
    def create_tenant(self, name: str) -> None: ...
    def create_database(self, tenant: str, name: str, database_id: str) -> None: ...
    def delete_database(self, tenant: str, name: str) -> None: ...
    def create_collection(self, op: CreateCollection) -> dict[str, Any]: ...
    def update_collection(self, op: UpdateCollection) -> None: ...
    def delete_collection(self, tenant: str, database: str, name: str) -> None: ...
    def write_records(self, op: WriteRecords) -> None: ...
    def delete_records(self, op: DeleteRecords) -> int: ...
    def reset(self) -> None: ...


@dataclass(frozen=True)
class Remembered:
    """The first outcome of a client request id, as the replicated state keeps it: small, so the
    window is bounded in bytes too. A new collection's answer is kept as its id and rendered again
    when asked (`collection`); a long error message is cut."""

    index: int
    status: int
    body: Any
    digest: str | None  # request_digest of the first request (None: kept by an older version)
    collection: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A proposal's answer and the index it was first applied at (earlier than this entry's
    index when it repeats a request id)."""

    index: int
    result: Result


def apply(store: StateStore, proposal: Proposal, index: int) -> Outcome:
    """Apply one committed proposal at log `index`."""
    request_id = proposal.request_id
    if request_id is None:
        return Outcome(index, apply_op(store, proposal.op))
    digest = request_digest(proposal.op)
    remembered = store.recall(request_id)
    if remembered is not None:
        return repeat(store, proposal.op, digest, remembered, index)
    result = apply_op(store, proposal.op)
    store.remember(request_id, _remembered(proposal.op, result, index, digest), OUTCOME_WINDOW)
    return Outcome(index, result)


def repeat(store: StateStore, op: Op, digest: str, remembered: Remembered, index: int) -> Outcome:
    """The answer to a request id seen before: its first outcome, or a refusal if the id was
    first used for another request (a client bug, or a guessed id: never someone else's answer)."""
    if remembered.digest is not None and remembered.digest != digest:
        return Outcome(index, Result.error(400, "InvalidArgumentError",
                                           "X-Raftchroma-Request-Id was already used for a different request"))
    body = remembered.body
    if remembered.collection is not None and isinstance(op, CreateCollection):
        body = store.rendered_collection(op.tenant, op.database, remembered.collection) or {"id": remembered.collection}
    return Outcome(remembered.index, Result(remembered.status, body))


def _remembered(op: Op, result: Result, index: int, digest: str) -> Remembered:
    if len(json.dumps(result.body, default=str)) <= MAX_REMEMBERED_BODY_BYTES:
        return Remembered(index, result.status, result.body, digest)
    if isinstance(op, CreateCollection) and result.ok:
        return Remembered(index, result.status, None, digest, collection=result.body["id"])
    if not result.ok:
        cut = error_body(result.body["error"], result.body["message"][:MAX_REMEMBERED_BODY_BYTES // 2] + "...")
        return Remembered(index, result.status, cut, digest)
    return Remembered(index, result.status, None, digest)


def apply_op(store: StateStore, op: Op) -> Result:
    try:
        return _HANDLERS[type(op)](store, op)
    except Refused as refused:
        return refused.result


def _create_tenant(store: StateStore, op: CreateTenant) -> Result:
    if store.tenant_exists(op.name):
        return Result.error(409, "ChromaError", f"Tenant [{op.name}] already exists")
    store.create_tenant(op.name)
    return Result(200, {})


def _create_database(store: StateStore, op: CreateDatabase) -> Result:
    if store.database_exists(op.tenant, op.name):  # made by an op before this one (see Store.database_exists)
        return Result.error(409, "ChromaError", f"Database [{op.name}] already exists")
    store.create_database(op.tenant, op.name, op.database_id)
    return Result(200, {})


def _delete_database(store: StateStore, op: DeleteDatabase) -> Result:
    store.delete_database(op.tenant, op.name)
    return Result(200, {})


def _create_collection(store: StateStore, op: CreateCollection) -> Result:
    if not op.get_or_create and store.database_exists(op.tenant, op.database):
        existing = store.collection_named(op.tenant, op.database, op.name)
        if existing is not None and existing.api_id != op.collection_id:  # not this op's own earlier try
            return Result.error(409, "ChromaError", f"Collection [{op.name}] already exists")
    return Result(200, store.create_collection(op))


def _update_collection(store: StateStore, op: UpdateCollection) -> Result:
    current = store.collection(op.tenant, op.database, op.collection_id)
    if current is None:
        return not_found_collection(op.collection_id)
    if op.new_name is not None and op.new_name != current.name:
        taken = store.collection_named(op.tenant, op.database, op.new_name)
        if taken is not None:
            return Result.error(500, "InternalError", UNIQUE_NAME_MESSAGE)
    store.update_collection(op)
    return Result(200, {})


def _delete_collection(store: StateStore, op: DeleteCollection) -> Result:
    store.delete_collection(op.tenant, op.database, op.name)
    return Result(200, {})


def _write_records(store: StateStore, op: WriteRecords) -> Result:
    current = store.collection(op.tenant, op.database, op.collection_id)
    if current is None:
        return not_found_collection(op.collection_id)
    dimension = op.embeddings["dim"] if op.embeddings is not None and op.embeddings["n"] else None
    if dimension is not None and current.dimension is not None and dimension != current.dimension:
        return Result.error(400, "InvalidArgumentError",
                            f"Collection expecting embedding with dimension of {current.dimension}, got {dimension}")
    store.write_records(op)
    return Result(201 if op.kind == "add" else 200, {})


def _delete_records(store: StateStore, op: DeleteRecords) -> Result:
    if store.collection(op.tenant, op.database, op.collection_id) is None:
        return not_found_collection(op.collection_id)
    return Result(200, {"deleted": store.delete_records(op)})


def _reset(store: StateStore, op: Reset) -> Result:
    store.reset()  # whether resets are allowed is the cluster's setting, checked before proposing
    return Result(200, True)


def _barrier(store: StateStore, op: Barrier) -> Result:
    return Result(200, None)


_HANDLERS: dict[type, Callable[[StateStore, Any], Result]] = {
    CreateTenant: _create_tenant, CreateDatabase: _create_database, DeleteDatabase: _delete_database,
    CreateCollection: _create_collection, UpdateCollection: _update_collection,
    DeleteCollection: _delete_collection, WriteRecords: _write_records, DeleteRecords: _delete_records,
    Reset: _reset, Barrier: _barrier,
}


# ---------------------------------------------------------------- proposals in steps
#
# Group commit (group_commit.py) puts concurrent writes into one entry. Each keeps its own
# proposal and answer, but a run of record writes to one collection (adds, or upserts) can be
# given to Chroma as one call, which costs far less than one call per write (a Chroma call has a
# fixed cost of several ms, a record in it well under one). A step is what the node applies (and
# retries while the machine fails) as a unit: one proposal, or such a run. The node gives `steps`
# the proposals of one entry, or of several consecutive entries when its applier is behind: a run
# may span entries, because merging never changes an outcome (see `_joins`), so how the
# proposals are cut decides only how many Chroma calls they take.


MAX_RECORDS_PER_CALL = CHROMA_MAX_BATCH_SIZE  # a larger merged call would be refused: every replica would stop


def steps(proposals: list[Proposal]) -> list[list[Proposal]]:
    """The proposals in log order, cut into steps; a run is merged only when merging cannot
    change any write's outcome (see `_joins`)."""
    result: list[list[Proposal]] = []
    run_ids: set[str] = set()
    for proposal in proposals:
        current = result[-1] if result else None
        if (current is not None and _joins(current[0], proposal, run_ids)
                and len(run_ids) + len(proposal.op.ids) <= MAX_RECORDS_PER_CALL):
            current.append(proposal)
            run_ids.update(proposal.op.ids)
        else:
            result.append([proposal])
            run_ids = set(proposal.op.ids) if _mergeable(proposal) else set()
    return result


def _mergeable(proposal: Proposal) -> bool:
    """Adds and upserts with vectors, no request id (so nothing to remember or repeat), and no id
    twice (Chroma refuses that batch, and must refuse it alone)."""
    op = proposal.op
    return (isinstance(op, WriteRecords) and op.kind in ("add", "upsert") and proposal.request_id is None
            and not op.keep_rows and bool(op.ids) and op.embeddings is not None and op.embeddings["n"] == len(op.ids)
            and len(set(op.ids)) == len(op.ids))


def _joins(first: Proposal, proposal: Proposal, run_ids: set[str]) -> bool:
    if not (_mergeable(first) and _mergeable(proposal)):
        return False
    a, b = first.op, proposal.op
    return ((a.kind, a.tenant, a.database, a.collection_id, a.embeddings["dim"])
            == (b.kind, b.tenant, b.database, b.collection_id, b.embeddings["dim"])
            and all((getattr(a, name) is None) == (getattr(b, name) is None) for name in ("metadatas", "documents", "uris"))
            and run_ids.isdisjoint(b.ids))


def apply_step(store: StateStore, step: list[Proposal], index: int | Sequence[int]) -> list[Outcome]:
    """Apply one step: a single proposal as `apply` does; a run as one Chroma call when every write
    in it would be accepted, each answered as it would be alone. If Chroma refuses the merged call
    (it changed nothing), each write is applied on its own, so each gets its own answer.
    `index` is the log index of the step's entry, or one per proposal when the step spans entries."""
    indexes = [index] * len(step) if isinstance(index, int) else list(index)
    if len(step) == 1:
        return [apply(store, step[0], indexes[0])]
    first = step[0].op
    current = store.collection(first.tenant, first.database, first.collection_id)
    if current is None or current.dimension not in (None, first.embeddings["dim"]):
        return [apply(store, proposal, at) for proposal, at in zip(step, indexes)]  # each gets the same refusal
    try:
        store.write_records(_merged([proposal.op for proposal in step]))
    except Refused:
        return [apply(store, proposal, at) for proposal, at in zip(step, indexes)]
    status = 201 if first.kind == "add" else 200
    return [Outcome(at, Result(status, {})) for at in indexes]


def _merged(ops: list[WriteRecords]) -> WriteRecords:
    first = ops[0]

    def joined(name: str) -> list[Any] | None:
        return None if getattr(first, name) is None else [value for op in ops for value in getattr(op, name)]

    vectors = b"".join(op.embeddings["f32"] for op in ops)
    embeddings = {"n": sum(op.embeddings["n"] for op in ops), "dim": first.embeddings["dim"], "f32": vectors}
    return WriteRecords(first.kind, first.tenant, first.database, first.collection_id,
                        ids=[i for op in ops for i in op.ids], embeddings=embeddings,
                        metadatas=joined("metadatas"), documents=joined("documents"), uris=joined("uris"))
