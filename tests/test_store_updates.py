"""An update whose embeddings are null for some rows, applied to a real embedded Chroma store:
those records keep their stored vectors bit for bit (also in a cosine collection, where a vector
read back and rewritten would change), the others change, and a failure changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from raftchroma import state_machine
from raftchroma.command import KEEP_ROWS_VERSION, CreateCollection, Proposal, WriteRecords, decode_entry, encode_entry
from raftchroma.http.parse import records
from raftchroma.result import Result
from raftchroma.store import Store

TENANT, DATABASE = "default_tenant", "default_database"
COLLECTION_ID = "0b5a1c9e-2a51-4a7b-9d35-6f1b8c3d2e10"
DIM = 16


def apply(store: Store, proposal: Proposal) -> Result:
    return state_machine.apply(store, proposal, 1).result


def _store(tmp_path: Path, space: str) -> Store:
    store = Store(tmp_path / "node")
    op = CreateCollection(tenant=TENANT, database=DATABASE, name="keep", collection_id=COLLECTION_ID,
                          configuration_json=json.dumps({"hnsw": {"space": space}}))
    result = apply(store, Proposal(op))
    assert result.status == 200, result.body
    return store


def _records_op(kind: str, body: dict[str, Any]) -> Proposal:
    full = {"embeddings": None, "metadatas": None, "documents": None, "uris": None, **body}
    if full["embeddings"] is not None:
        full["embeddings"] = ("floats", full["embeddings"])
    op = WriteRecords(kind=kind, collection_id=COLLECTION_ID, tenant=TENANT, database=DATABASE, **records(full, kind))
    return decode_entry(encode_entry([Proposal(op)]))[0]  # exactly what a replica applies


def _get(store: Store, ids: list[str]) -> dict[str, Any]:
    result = store.get(TENANT, DATABASE, COLLECTION_ID, {"ids": ids, "include": ["embeddings", "documents"]})
    assert result.status == 200, result.body
    body = result.body
    return {id_: (np.asarray(vector, dtype="<f4").tobytes(), document)
            for id_, vector, document in zip(body["ids"], body["embeddings"], body["documents"])}


@pytest.mark.parametrize("space", ["cosine", "l2"])
@pytest.mark.parametrize("count", [6, 150])
def test_null_rows_keep_their_vectors_exactly(tmp_path: Path, space: str, count: int) -> None:
    store = _store(tmp_path, space)
    rng = np.random.default_rng(7)
    ids = [f"r{i}" for i in range(count)]
    added = apply(store, _records_op("add", {"ids": ids, "embeddings": rng.random((count, DIM)).tolist(),
                                            "documents": [f"old {i}" for i in range(count)]}))
    assert added.status == 201, added.body
    before = _get(store, ids)
    new_vectors = rng.random((count, DIM)).tolist()
    update_ids = ids + ["missing-1", "missing-2"]
    embeddings = [None if i % 2 == 0 else new_vectors[i] for i in range(count)] + [None, new_vectors[0]]
    op = _records_op("update", {"ids": update_ids, "embeddings": embeddings,
                                "documents": [f"new {i}" for i in range(count + 2)]})
    assert op.op.keep_rows == [i for i in range(count) if i % 2 == 0] + [count]
    assert apply(store, op).status == 200
    after = _get(store, ids)
    for i, id_ in enumerate(ids):
        expected_vector = before[id_][0] if i % 2 == 0 else np.asarray(new_vectors[i], dtype="<f4").tobytes()
        stored_vector = after[id_][0]
        if space == "l2" or i % 2 == 0:  # cosine vectors given anew are normalised by Chroma
            assert stored_vector == expected_vector, id_
        assert after[id_][1] == f"new {i}"
    assert _get(store, ["missing-1", "missing-2"]) == {}


def test_a_refused_update_changes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path, "l2")
    count = 105
    ids = [f"r{i}" for i in range(count)]
    apply(store, _records_op("add", {"ids": ids, "embeddings": np.ones((count, DIM)).tolist(),
                                    "documents": ["old"] * count}))
    before = _get(store, ids)
    wrong_dimension = [None if i % 2 == 0 else [1.0, 2.0] for i in range(count)]
    result = apply(store, _records_op("update", {"ids": ids, "embeddings": wrong_dimension,
                                                "documents": ["new"] * count}))
    assert result.status == 400 and result.body["error"] == "InvalidArgumentError", result.body
    assert _get(store, ids) == before


def test_only_entries_with_kept_rows_need_the_new_version() -> None:
    plain = Proposal(WriteRecords(kind="update", tenant=TENANT, database=DATABASE, collection_id=COLLECTION_ID,
                                  ids=["a"]), rid=b"r")
    assert decode_entry(encode_entry([plain])) == [plain]
    assert msgpack.unpackb(encode_entry([plain]))["v"] == 1
    kept = Proposal(WriteRecords(kind="update", tenant=TENANT, database=DATABASE, collection_id=COLLECTION_ID,
                                 ids=["a"], embeddings={"n": 1, "dim": 1, "f32": bytes(4)}, keep_rows=[0]), rid=b"r")
    assert msgpack.unpackb(encode_entry([kept]))["v"] == KEEP_ROWS_VERSION
