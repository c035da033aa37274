"""A group-committed entry's record writes to one collection applied as one Chroma call
(state_machine.steps / apply_step), against real embedded Chroma stores: the same outcomes and the
same stored records as applying each write on its own, including when Chroma refuses one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.config import Settings

from raftchroma import state_machine
from raftchroma.command import CreateCollection, Proposal, WriteRecords, pack_embeddings
from raftchroma.store import Store

TENANT, DATABASE = "default_tenant", "default_database"
COLLECTION_ID = "2f0b6f1e-6d0c-4f8e-9a43-0c2d4b1e7a11"
OTHER_ID = "9b3d1c2e-1f0a-4c5b-8e7d-6a5f4e3d2c1b"


def write(kind: str, ids: list[str], dim: int = 4, collection: str = COLLECTION_ID, request_id: str | None = None,
          metadatas: list[Any] | None = None, seed: int = 0) -> Proposal:
    vectors = np.random.default_rng(seed).random((len(ids), dim), dtype=np.float32)
    op = WriteRecords(kind, TENANT, DATABASE, collection, ids=ids, embeddings=pack_embeddings(vectors),
                      metadatas=metadatas if metadatas is not None else [{"id": i} for i in ids],
                      documents=[f"doc {i}" for i in ids])
    return Proposal(op, request_id=request_id)


def store_with_collections(path: Path) -> Store:
    store = Store(path)
    for name, collection_id in (("merged", COLLECTION_ID), ("other", OTHER_ID)):
        op = CreateCollection(tenant=TENANT, database=DATABASE, name=name, collection_id=collection_id,
                              configuration_json=json.dumps({}))
        assert state_machine.apply(store, Proposal(op), 1).result.status == 200
    return store


def sizes(proposals: list[Proposal]) -> list[int]:
    return [len(step) for step in state_machine.steps(proposals)]


def test_runs_are_cut_where_merging_could_change_an_outcome() -> None:
    assert sizes([write("upsert", ["a"]), write("upsert", ["b"]), write("upsert", ["c"])]) == [3]
    assert sizes([write("add", ["a"]), write("upsert", ["b"])]) == [1, 1]  # another kind
    assert sizes([write("upsert", ["a"]), write("upsert", ["a"])]) == [1, 1]  # the same id again
    assert sizes([write("upsert", ["a"]), write("upsert", ["b"], dim=5)]) == [1, 1]  # another dimension
    assert sizes([write("upsert", ["a"]), write("upsert", ["b"], collection=OTHER_ID)]) == [1, 1]
    assert sizes([write("upsert", ["a"]), write("upsert", ["b"], request_id="r1")]) == [1, 1]  # remembered
    assert sizes([write("upsert", ["a", "a"]), write("upsert", ["b"])]) == [1, 1]  # Chroma refuses that one alone
    assert sizes([write("add", ["a"]), write("add", ["b"]), write("update", ["c"]), write("add", ["d"])]) == [2, 1, 1]
    # never more records in one Chroma call than Chroma takes (each write alone is legal)
    big = [write("upsert", [f"{n}-{i}" for i in range(2000)], dim=2, seed=n) for n in range(4)]
    assert sizes(big) == [2, 2] and state_machine.MAX_RECORDS_PER_CALL == 5461


def apply_each(store: Store, proposals: list[Proposal]) -> list[Any]:
    return [state_machine.apply(store, p, 2) for p in proposals]


def apply_steps(store: Store, proposals: list[Proposal]) -> list[Any]:
    return [o for step in state_machine.steps(proposals) for o in state_machine.apply_step(store, step, 2)]


def read_all(path: Path) -> dict[str, Any]:
    client = chromadb.PersistentClient(path=str(path / "chroma"), settings=Settings(anonymized_telemetry=False))
    got = client.get_collection("merged").get(include=["embeddings", "metadatas", "documents"])
    order = np.argsort(got["ids"])
    return {"ids": [got["ids"][i] for i in order], "embeddings": np.asarray(got["embeddings"])[order].tolist(),
            "metadatas": [got["metadatas"][i] for i in order], "documents": [got["documents"][i] for i in order]}


def both_ways(tmp_path: Path, proposals: list[Proposal]) -> tuple[list[Any], list[Any]]:
    alone, merged = store_with_collections(tmp_path / "alone"), store_with_collections(tmp_path / "merged")
    outcomes_alone = apply_each(alone, proposals)
    outcomes_merged = apply_steps(merged, proposals)
    alone.close(), merged.close()
    assert read_all(tmp_path / "alone") == read_all(tmp_path / "merged")
    return outcomes_alone, outcomes_merged


def test_a_merged_run_stores_and_answers_what_each_write_alone_would(tmp_path: Path) -> None:
    proposals = [write("upsert", [f"u{i}", f"v{i}"], seed=i) for i in range(6)]
    alone, merged = both_ways(tmp_path, proposals)
    assert [(o.index, o.result.status, o.result.body) for o in merged] == \
           [(o.index, o.result.status, o.result.body) for o in alone] == [(2, 200, {})] * 6


def test_a_write_chroma_refuses_fails_alone_and_its_neighbours_are_stored(tmp_path: Path) -> None:
    proposals = [write("add", ["a"], seed=1), write("add", ["b"], metadatas=[{"k": {"nested": 1}}], seed=2), write("add", ["c"], seed=3)]
    alone, merged = both_ways(tmp_path, proposals)
    assert [o.result.status for o in alone] == [201, 400, 201]
    assert [(o.result.status, o.result.body) for o in merged] == [(o.result.status, o.result.body) for o in alone]


def test_a_run_of_the_wrong_dimension_gets_each_writes_own_refusal(tmp_path: Path) -> None:
    first = [write("upsert", ["x"], dim=4)]
    proposals = [write("upsert", ["y"], dim=3, seed=1), write("upsert", ["z"], dim=3, seed=2)]
    alone, merged = both_ways(tmp_path, first + proposals)
    assert [o.result.status for o in alone] == [200, 400, 400]
    assert [(o.result.status, o.result.body) for o in merged] == [(o.result.status, o.result.body) for o in alone]
