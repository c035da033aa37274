"""Store.reset after the first one puts a copy of Chroma's fresh database in place instead of
running Chroma's reset (which re-runs every migration): the two must leave the same store, byte
for byte in Chroma's tables, and the store must work after it (create, add, read, reset again).
Negative control: a store that still holds data dumps differently, so the comparison can fail.
Not compared: the rows of `acquire_write`, Chroma's internal write-lock table, which gains a row
every time Chroma opens an existing database (also when a node restarts with the store it kept);
no API reads it."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from raftchroma import state_machine
from raftchroma.command import CreateCollection, CreateTenant, Proposal, Reset, WriteRecords, pack_embeddings
from raftchroma.store import CHROMA_DB_FILE_NAME, DEFAULT_DATABASE, DEFAULT_TENANT, Store


def _dump(store: Store) -> list[str]:
    connection = sqlite3.connect(f"file:{store._chroma_dir / CHROMA_DB_FILE_NAME}?mode=ro", uri=True)
    try:
        return [line for line in connection.iterdump() if not line.startswith('INSERT INTO "acquire_write"')]
    finally:
        connection.close()


def _fill(store: Store, name: str) -> str:
    collection_id = str(uuid.uuid4())
    for op in (CreateTenant(name=f"tenant-{name}"),
               CreateCollection(tenant=DEFAULT_TENANT, database=DEFAULT_DATABASE, name=name,
                                collection_id=collection_id, hnsw_num_threads=1),
               WriteRecords("add", DEFAULT_TENANT, DEFAULT_DATABASE, collection_id, ["a", "b"],
                            pack_embeddings([[1.0, 2.0], [3.0, 4.0]]))):
        result = state_machine.apply(store, Proposal(op), 1).result
        assert result.status in (200, 201), result.body
    return collection_id


def _reset(store: Store) -> None:
    assert state_machine.apply(store, Proposal(Reset()), 1).result.status == 200


def test_a_copied_fresh_database_equals_chromas_own_reset(tmp_path: Path) -> None:
    chromas = Store(tmp_path / "chromas")
    _fill(chromas, "first")
    _reset(chromas)  # Chroma's own reset (the first one)
    expected = _dump(chromas)

    store = Store(tmp_path / "copied")
    _fill(store, "first")
    _reset(store)
    _fill(store, "second")
    assert _dump(store) != expected  # the control: data shows in the dump
    _reset(store)  # the copy
    assert _dump(store) == expected
    assert sorted(p.name for p in store._chroma_dir.iterdir()) == [CHROMA_DB_FILE_NAME]
    assert not store.tenant_exists("tenant-second")
    assert store.collection_named(DEFAULT_TENANT, DEFAULT_DATABASE, "second") is None


def test_the_store_works_after_a_copied_reset(tmp_path: Path) -> None:
    store = Store(tmp_path / "node")
    for round_ in range(3):
        collection_id = _fill(store, f"col{round_}")
        assert store.count(DEFAULT_TENANT, DEFAULT_DATABASE, collection_id).body == 2
        _reset(store)
        assert store.count_collections(DEFAULT_TENANT, DEFAULT_DATABASE).body == 0
