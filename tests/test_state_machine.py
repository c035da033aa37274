"""The state machine against a fake store (pure code): outcomes are decided by structure, never by
the text of a name or a message; environmental and unclassifiable failures are never recorded as
results; a repeated client request id applies once. The fake stands in for the store, never for
the state machine under test."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from raftchroma import state_machine
from raftchroma.command import (
    CreateCollection, CreateDatabase, CreateTenant, DeleteRecords, Proposal, Reset, UpdateCollection, WriteRecords,
    pack_embeddings,
)
from raftchroma.result import Refused, Result, StoreFault, StoreUnavailable, not_found_collection

T, D = "default_tenant", "default_database"
# Texts a client may put in a name: Chroma's own error texts and the OS's.
HOSTILE_NAMES = [
    "disk is full", "database or disk is full", "no space left on device", "I/O error", "disk I/O error",
    "database is locked", "attempt to write a readonly database", "too many open files", "out of memory",
    "already exists", "Tenant [x] already exists", "does not exist", "not found", "UNIQUE constraint failed",
    "error in compaction", "purging logs", "failed to apply logs", "InternalError", "NotFoundError",
] + [os.strerror(code) for code in (errno.ENOSPC, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENOMEM)]


@dataclass
class Col:
    api_id: str
    name: str
    dimension: int | None = None
    records: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None


class FakeStore:
    """Dicts in place of Chroma; `fail_with` makes the next change raise that exception."""

    def __init__(self) -> None:
        self.tenants = {T}
        self.databases = {(T, D)}
        self.collections: dict[tuple[str, str, str], Col] = {}
        self.outcomes: dict[str, state_machine.Remembered] = {}
        self.order: list[str] = []
        self.changes = 0
        self.fail_with: Exception | None = None

    def _change(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.changes += 1

    def tenant_exists(self, name: str) -> bool:
        return name in self.tenants

    def database_exists(self, tenant: str, name: str) -> bool:
        return (tenant, name) in self.databases

    def collection(self, tenant: str, database: str, api_id: str) -> Col | None:
        return next((c for (t, d, _), c in self.collections.items() if (t, d, c.api_id) == (tenant, database, api_id)), None)

    def collection_named(self, tenant: str, database: str, name: str) -> Col | None:
        return self.collections.get((tenant, database, name))

    def recall(self, request_id: str) -> state_machine.Remembered | None:
        return self.outcomes.get(request_id)

    def remember(self, request_id: str, remembered: state_machine.Remembered, window: int) -> None:
        self.outcomes[request_id] = remembered
        self.order.append(request_id)
        while len(self.order) > window:
            del self.outcomes[self.order.pop(0)]

    def rendered_collection(self, tenant: str, database: str, api_id: str) -> dict[str, Any] | None:
        col = self.collection(tenant, database, api_id)
        return None if col is None else {"id": col.api_id, "name": col.name, "metadata": col.metadata}

    def create_tenant(self, name: str) -> None:
        self._change()
        self.tenants.add(name)

    def create_database(self, tenant: str, name: str, database_id: str) -> None:
        self._change()
        self.databases.add((tenant, name))

    def delete_database(self, tenant: str, name: str) -> None:
        self._change()
        self.databases.discard((tenant, name))

    def create_collection(self, op: CreateCollection) -> dict[str, Any]:
        self._change()
        if (op.tenant, op.database) not in self.databases:
            raise Refused(Result.error(400, "InvalidArgumentError", f"Database [{op.database}] does not exist"))
        col = self.collections.setdefault((op.tenant, op.database, op.name),
                                          Col(op.collection_id, op.name, metadata=op.metadata))
        return {"id": col.api_id, "name": col.name, **({"metadata": col.metadata} if col.metadata else {})}

    def update_collection(self, op: UpdateCollection) -> None:
        self._change()
        col = self.collection(op.tenant, op.database, op.collection_id)
        if op.new_name is not None:
            del self.collections[(op.tenant, op.database, col.name)]
            col.name = op.new_name
            self.collections[(op.tenant, op.database, col.name)] = col

    def delete_collection(self, tenant: str, database: str, name: str) -> None:
        self._change()
        if self.collections.pop((tenant, database, name), None) is None:
            raise Refused(Result.error(404, "NotFoundError", f"Collection [{name}] does not exist"))

    def write_records(self, op: WriteRecords) -> None:
        self._change()
        col = self.collection(op.tenant, op.database, op.collection_id)
        if op.embeddings is not None and op.embeddings["n"]:
            col.dimension = op.embeddings["dim"]
        col.records.update(dict.fromkeys(op.ids, op.kind))

    def delete_records(self, op: DeleteRecords) -> int:
        self._change()
        col = self.collection(op.tenant, op.database, op.collection_id)
        return sum(col.records.pop(i, None) is not None for i in op.ids or [])

    def reset(self) -> None:
        self._change()
        outcomes, order = self.outcomes, self.order
        self.__init__()
        self.outcomes, self.order = outcomes, order  # as the real store: bookkeeping, not data


def run(store: FakeStore, op: Any, request_id: str | None = None, index: int = 1) -> state_machine.Outcome:
    return state_machine.apply(store, Proposal(op, request_id=request_id), index)


def add(ids: list[str], dim: int = 2, kind: str = "add") -> WriteRecords:
    return WriteRecords(kind=kind, tenant=T, database=D, collection_id="c-1", ids=ids,
                        embeddings=pack_embeddings([[0.5] * dim for _ in ids]))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_duplicate_tenant_is_409_whatever_its_name_says(name: str) -> None:
    store = FakeStore()
    assert run(store, CreateTenant(name)).result == Result(200, {})
    second = run(store, CreateTenant(name), index=2)
    assert second == state_machine.Outcome(2, Result.error(409, "ChromaError", f"Tenant [{name}] already exists"))
    assert store.changes == 1


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_duplicate_databases_and_collections_are_409_whatever_their_names_say(name: str) -> None:
    store = FakeStore()
    assert run(store, CreateDatabase(T, name, "db-1")).result.status == 200
    assert run(store, CreateDatabase(T, name, "db-2")).result == Result.error(
        409, "ChromaError", f"Database [{name}] already exists")
    create = CreateCollection(tenant=T, database=D, name=name, collection_id="c-1")
    assert run(store, create).result == Result(200, {"id": "c-1", "name": name})
    assert run(store, CreateCollection(tenant=T, database=D, name=name, collection_id="c-2")).result == Result.error(
        409, "ChromaError", f"Collection [{name}] already exists")
    again = CreateCollection(tenant=T, database=D, name=name, collection_id="c-3", get_or_create=True)
    assert run(store, again).result == Result(200, {"id": "c-1", "name": name})
    assert store.changes == 3


def test_chromas_typed_answer_is_the_result() -> None:
    store = FakeStore()
    outcome = run(store, CreateCollection(tenant=T, database="missing", name="abc", collection_id="c-1"))
    assert outcome.result == Result.error(400, "InvalidArgumentError", "Database [missing] does not exist")


@pytest.mark.parametrize("failure", [StoreUnavailable("create_tenant: disk is full"), StoreFault("create_tenant: ?")])
def test_environmental_and_unclassifiable_failures_are_never_results(failure: Exception) -> None:
    store = FakeStore()
    store.fail_with = failure
    with pytest.raises(type(failure)):
        run(store, CreateTenant("abc"), request_id="r-1")
    assert store.recall("r-1") is None and "abc" not in store.tenants
    store.fail_with = None  # the node retries the same op once the machine recovers
    assert run(store, CreateTenant("abc"), request_id="r-1").result == Result(200, {})


def test_a_rename_onto_a_taken_name_is_refused_before_chroma_is_called() -> None:
    store = FakeStore()
    run(store, CreateCollection(tenant=T, database=D, name="one", collection_id="c-1"))
    run(store, CreateCollection(tenant=T, database=D, name="two", collection_id="c-2"))
    outcome = run(store, UpdateCollection(tenant=T, database=D, collection_id="c-1", new_name="two"))
    assert outcome.result == Result.error(500, "InternalError", state_machine.UNIQUE_NAME_MESSAGE)
    assert store.changes == 2
    assert run(store, UpdateCollection(tenant=T, database=D, collection_id="c-1", new_name="one")).result.ok


def test_records_on_a_missing_collection_and_a_wrong_dimension() -> None:
    store = FakeStore()
    assert run(store, add(["a"])).result == not_found_collection("c-1")
    run(store, CreateCollection(tenant=T, database=D, name="abc", collection_id="c-1"))
    assert run(store, add(["a"], dim=3)).result == Result(201, {})
    assert run(store, add(["b"], dim=2)).result == Result.error(
        400, "InvalidArgumentError", "Collection expecting embedding with dimension of 3, got 2")
    deleted = run(store, DeleteRecords(tenant=T, database=D, collection_id="c-1", ids=["a", "zz"]))
    assert deleted.result == Result(200, {"deleted": 1})
    assert store.changes == 3


def test_a_repeated_request_id_answers_the_first_outcome_and_applies_nothing() -> None:
    store = FakeStore()
    run(store, CreateCollection(tenant=T, database=D, name="abc", collection_id="c-1"))
    first = run(store, add(["a"]), request_id="req-1", index=7)
    assert first == state_machine.Outcome(7, Result(201, {}))
    changes = store.changes
    assert run(store, add(["a"]), request_id="req-1", index=9) == first
    assert store.changes == changes
    refused = run(store, CreateTenant(T), request_id="req-2", index=11)
    assert refused.result.status == 409
    assert run(store, CreateTenant(T), request_id="req-2", index=12) == refused  # a refusal is an outcome too


def test_the_request_id_window_forgets_the_oldest() -> None:
    store = FakeStore()
    for i in range(state_machine.OUTCOME_WINDOW + 1):
        run(store, CreateTenant(f"tenant-{i}"), request_id=f"req-{i}", index=i + 1)
    assert store.recall("req-0") is None
    assert store.recall("req-1").index == 2 and store.recall("req-1").status == 200


def test_reset_reads_no_configuration() -> None:
    store = FakeStore()
    run(store, CreateTenant("abc"))
    assert run(store, Reset()).result == Result(200, True)
    assert store.tenants == {T}


def test_an_id_reused_for_another_request_is_refused_and_applies_nothing() -> None:
    store = FakeStore()
    first = run(store, CreateTenant("one"), request_id="req-1", index=1)
    reused = run(store, CreateTenant("other"), request_id="req-1", index=2)
    assert reused == state_machine.Outcome(2, Result.error(
        400, "InvalidArgumentError", "X-Raftchroma-Request-Id was already used for a different request"))
    assert "other" not in store.tenants and store.changes == 1
    assert run(store, CreateTenant("one"), request_id="req-1", index=3) == first


def test_a_retried_create_matches_although_the_proposer_chose_new_ids() -> None:
    store = FakeStore()
    first = run(store, CreateCollection(tenant=T, database=D, name="abc", collection_id="c-1", hnsw_num_threads=2),
                request_id="req-1", index=4)
    again = run(store, CreateCollection(tenant=T, database=D, name="abc", collection_id="c-9", hnsw_num_threads=8),
                request_id="req-1", index=5)
    assert again == first and first.result.body["id"] == "c-1"


def test_a_large_answer_is_remembered_by_reference_so_the_window_stays_small() -> None:
    store = FakeStore()
    metadata = {"text": "x" * 10_000}
    op = CreateCollection(tenant=T, database=D, name="big", collection_id="c-1", metadata=metadata)
    first = run(store, op, request_id="req-1", index=3)
    kept = store.recall("req-1")
    assert kept.body is None and kept.collection == "c-1"
    assert run(store, op, request_id="req-1", index=9) == first  # rendered again from the store


def test_remembered_outcomes_survive_a_reset() -> None:
    store = FakeStore()
    first = run(store, CreateTenant("abc"), request_id="req-1", index=1)
    run(store, Reset(), index=2)
    assert run(store, CreateTenant("abc"), request_id="req-1", index=3) == first
    assert "abc" not in store.tenants
