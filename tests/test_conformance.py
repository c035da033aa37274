"""Differential conformance: one scripted session of raw HTTP requests, good and bad, sent to the
real single-node `chroma run` (1.5.9) and to a FOLLOWER of a 3-node raftchroma cluster (so every
write is forwarded to the leader), compared step by step: status, error name and the normalised
body (see tests/differential.py). Also: every successful mutation answers `X-Raftchroma-Index`,
and after the session the three replicas hold identical digests.

Everything is compared exactly except, each marked where it occurs:
- `mode="status_name"`: a message Chroma itself renders differently from run to run;
- `mode="by_name"`: listings of collections, ordered by collection id, which both servers pick
  at random (each listing is also checked to be in id order on both servers);
- `mode="query"`: nearest neighbours at equal distances may come back in either order;
- EMPTY_LISTS: Chroma's collection schema gains an index for an empty-list metadata key, ours does not.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from tests.differential import IdMap, Reply, canonical_query, differences, error_name, normalise_reply, send
from tests.harness import ChromaRun, Cluster, make_cluster, start_cluster

LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}
INDEX_HEADER = "x-raftchroma-index"

V1 = "/api/v1"
V2 = "/api/v2"
DB = V2 + "/tenants/default_tenant/databases/default_database"
COLS = DB + "/collections"
CONF_DB = V2 + "/tenants/conf_tenant/databases/conf_db"
MISSING_ID = "ff2a7781-f25a-4698-842d-924ff9b5be76"
MUTATING_SUFFIXES = ("/tenants", "/databases", "/collections", "/add", "/upsert", "/update", "/delete", "/reset")


def b64(vector: list[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


@dataclass(frozen=True)
class Step:
    """One request of the script. `path` may name saved ids as {key}; `save` keeps body["id"]."""

    label: str
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    content_type: str | None = "application/json"
    mode: str = "exact"  # exact | status_name | query | by_name
    save: str | None = None

    def payload(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        return None if self.body is None else json.dumps(self.body).encode()

    @property
    def mutation(self) -> bool:
        path = self.path.split("?")[0]
        return self.method in ("PUT", "DELETE") or (self.method == "POST" and path.endswith(MUTATING_SUFFIXES))


def get(label: str, path: str, **kw: Any) -> Step:
    return Step(label, "GET", path, **kw)


def post(label: str, path: str, body: Any = None, **kw: Any) -> Step:
    return Step(label, "POST", path, body, **kw)


def put(label: str, path: str, body: Any, **kw: Any) -> Step:
    return Step(label, "PUT", path, body, **kw)


def delete(label: str, path: str, **kw: Any) -> Step:
    return Step(label, "DELETE", path, **kw)


SYSTEM = [
    get("identity", V2 + "/auth/identity"),
    get("heartbeat", V2 + "/heartbeat"),
    get("version", V2 + "/version"),
    get("healthcheck", V2 + "/healthcheck"),
    get("pre-flight-checks", V2 + "/pre-flight-checks"),
]

TENANTS_AND_DATABASES = [
    post("create tenant", V2 + "/tenants", {"name": "conf_tenant"}),
    get("get tenant", V2 + "/tenants/conf_tenant"),
    get("get default tenant", V2 + "/tenants/default_tenant"),
    # Chroma prints this message from a Rust HashMap whose key order changes from run to run.
    post("tenant name too short", V2 + "/tenants", {"name": "ab"}, mode="status_name"),
    post("duplicate tenant", V2 + "/tenants", {"name": "conf_tenant"}),
    post("tenant without name", V2 + "/tenants", {}),
    get("missing tenant", V2 + "/tenants/nope_tenant"),
    post("create database", V2 + "/tenants/conf_tenant/databases", {"name": "conf_db"}),
    get("get database", CONF_DB),
    get("get default database", DB),
    post("create second database", V2 + "/tenants/conf_tenant/databases", {"name": "doomed_db"}),
    get("get second database", V2 + "/tenants/conf_tenant/databases/doomed_db"),
    get("list databases", V2 + "/tenants/conf_tenant/databases"),
    get("list databases paged", V2 + "/tenants/conf_tenant/databases?limit=1&offset=1"),
    get("list databases limit 0", V2 + "/tenants/conf_tenant/databases?limit=0"),
    get("list databases of missing tenant", V2 + "/tenants/nope_tenant/databases"),
    get("list databases bad limit", V2 + "/tenants/conf_tenant/databases?limit=abc"),
    post("duplicate database", V2 + "/tenants/conf_tenant/databases", {"name": "conf_db"}),
    post("database without name", V2 + "/tenants/conf_tenant/databases", {}),
    post("database in missing tenant", V2 + "/tenants/no_such_tenant/databases", {"name": "dbx"}),
    get("missing database", V2 + "/tenants/conf_tenant/databases/nope_db"),
    get("database name too short to look up", V2 + "/tenants/nope_tenant/databases/x"),
    post("invalid database name", V2 + "/tenants/conf_tenant/databases", {"name": "ab"}),
    post("database name with bad characters", V2 + "/tenants/conf_tenant/databases", {"name": "bad name!"}),
    Step("update tenant", "PATCH", V2 + "/tenants/conf_tenant", {"resource_name": "conf"}),
    Step("update tenant without resource_name", "PATCH", V2 + "/tenants/conf_tenant", {}),
    delete("delete database", V2 + "/tenants/conf_tenant/databases/doomed_db"),
    get("deleted database", V2 + "/tenants/conf_tenant/databases/doomed_db"),
    delete("delete missing database", V2 + "/tenants/conf_tenant/databases/doomed_db"),
    get("list databases after delete", V2 + "/tenants/conf_tenant/databases"),
]

CREATE_ALPHA = {"name": "alpha", "metadata": {"topic": "demo", "n": 1, "f": 0.5, "b": True},
                "configuration": {"hnsw": {"space": "cosine", "ef_search": 50}}}

COLLECTIONS = [
    post("create collection with metadata and configuration", DB + "/collections", CREATE_ALPHA, save="alpha"),
    post("get_or_create existing", DB + "/collections", {"name": "alpha", "get_or_create": True, "metadata": {"x": 1}}),
    post("duplicate collection", DB + "/collections", {"name": "alpha"}),
    post("invalid collection name", DB + "/collections", {"name": "a"}),
    post("invalid collection name characters", DB + "/collections", {"name": "-bad name-"}),
    post("missing collection name", DB + "/collections", {}),
    post("collection name not a string", DB + "/collections", {"name": 5}),
    post("metadata not a map", DB + "/collections", {"name": "badmeta", "metadata": [1]}),
    post("empty metadata", DB + "/collections", {"name": "badmeta", "metadata": {}}),
    post("null metadata value", DB + "/collections", {"name": "badmeta", "metadata": {"a": None}}),
    post("nested metadata value", DB + "/collections", {"name": "badmeta", "metadata": {"a": {"b": 1}}}),
    post("configuration not a map", DB + "/collections", {"name": "badconf", "configuration": 5}),
    post("schema not a map", DB + "/collections", {"name": "badconf", "schema": 5}),
    post("get_or_create null", DB + "/collections", {"name": "badconf", "get_or_create": None}),
    post("duplicate field", DB + "/collections", raw=b'{"name": "dup1", "bogus": 1, "name": "dup2"}'),
    post("create plain collection", DB + "/collections", {"name": "beta"}, save="beta"),
    post("get_or_create new", DB + "/collections", {"name": "gamma", "metadata": {"k": "v"}, "get_or_create": True},
         save="gamma"),
    get("get by name", COLS + "/alpha"),
    get("get by id", COLS + "/by-id/{alpha}"),
    get("get missing by id", COLS + "/by-id/" + MISSING_ID),
    get("get by id not a uuid", COLS + "/by-id/not-a-uuid"),
    get("get by id upper-case uuid", COLS + "/by-id/" + MISSING_ID.upper()),
    get("get missing by name", COLS + "/nope_missing"),
    # Chroma orders the listing by collection id, and ids are random on both servers.
    get("list collections", COLS, mode="by_name"),
    get("list collections limit only", COLS + "?limit=10", mode="by_name"),
    get("collections_count", DB + "/collections_count"),
    get("list bad limit", COLS + "?limit=-1"),
    get("list empty limit", COLS + "?limit="),
    get("list huge limit", COLS + "?limit=99999999999"),
    get("list repeated limit", COLS + "?limit=1&limit=2"),
    get("list limit 0", COLS + "?limit=0"),
    get("list unknown parameter", COLS + "?bogus=1", mode="by_name"),
    post("create collection in missing database", V2 + "/tenants/default_tenant/databases/no_such_db/collections",
         {"name": "abc"}),
    get("list collections in missing database", V2 + "/tenants/default_tenant/databases/no_such_db/collections"),
    post("create solo collection", CONF_DB + "/collections", {"name": "solo"}, save="solo"),
    get("list one-collection database paged", CONF_DB + "/collections?limit=1&offset=0"),
    get("list page past the end", CONF_DB + "/collections?limit=1&offset=1"),
    get("list offset only", CONF_DB + "/collections?offset=5"),
    put("rename and new metadata", COLS + "/{gamma}", {"new_name": "gamma2", "new_metadata": {"k": "v2"}}),
    get("get renamed", COLS + "/gamma2"),
    get("old name gone", COLS + "/gamma"),
    put("modify configuration", COLS + "/{gamma}", {"new_configuration": {"hnsw": {"ef_search": 42}}}),
    get("get after configuration change", COLS + "/by-id/{gamma}"),
    put("rename to existing", COLS + "/{gamma}", {"new_name": "beta"}),
    put("modify missing collection", COLS + "/" + MISSING_ID, {"new_name": "whatever"}),
    put("modify with bad new_name type", COLS + "/{gamma}", {"new_name": 3}),
    put("modify with invalid name", COLS + "/{gamma}", {"new_name": "x"}),
    put("modify with empty metadata", COLS + "/{gamma}", {"new_metadata": {}}),
    put("modify metadata with a null value", COLS + "/{gamma}", {"new_metadata": {"k": None, "j": 1}}),
    get("after null metadata value", COLS + "/by-id/{gamma}"),
    put("modify nothing", COLS + "/{gamma}", {}),
    put("modify not a uuid", COLS + "/not-a-uuid", {}),
]

BETA = COLS + "/{beta}"

ALL_INCLUDE = ["embeddings", "metadatas", "documents", "uris"]

RECORD_WRITES = [
    post("add plain floats", BETA + "/add", {
        "ids": ["r1", "r2", "r3"], "embeddings": [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3]],
        "metadatas": [{"kind": "fruit", "n": 1}, {"kind": "veg", "n": 2, "f": 1.5}, {"kind": "fruit", "n": 3}],
        "documents": ["apple pie", "beet soup", "cherry tart"]}),
    post("add base64 float32", BETA + "/add", {
        "ids": ["r4", "r5"], "embeddings": [b64([0.5, 0.25, 0.125]), b64([-1.0, 0.1, 0.7])],
        "metadatas": [{"kind": "nut", "tags": ["a", "b"]}, None], "documents": ["date loaf", None],
        "uris": ["s3://r4", None]}),
    get("count after adds", BETA + "/count"),
    get("dimension after add", COLS + "/by-id/{beta}"),
    post("add wrong dimension", BETA + "/add", {"ids": ["w"], "embeddings": [[1.0, 2.0]]}),
    post("add length mismatch", BETA + "/add", {"ids": ["w1", "w2"], "embeddings": [[1.0, 2.0, 3.0]]}),
    post("add metadatas length mismatch", BETA + "/add", {"ids": ["w1"], "embeddings": [[1, 2, 3]], "metadatas": [{}, {}]}),
    post("add missing ids", BETA + "/add", {"embeddings": [[1.0, 2.0, 3.0]]}),
    post("add without embeddings", BETA + "/add", {"ids": ["w"], "documents": ["hello"]}),
    post("add null embeddings", BETA + "/add", {"ids": ["w"], "embeddings": None, "documents": ["hello"]}),
    post("add ids not a list", BETA + "/add", {"ids": "w", "embeddings": [[1, 2, 3]]}),
    post("add nested metadata", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]], "metadatas": [{"a": {"b": 1}}]}),
    post("add empty", BETA + "/add", {"ids": [], "embeddings": []}),
    post("add ids without embeddings rows", BETA + "/add", {"ids": ["w"], "embeddings": []}),
    post("add empty embedding", BETA + "/add", {"ids": ["w"], "embeddings": [[]]}),
    post("add infinite embedding", BETA + "/add", {"ids": ["w"], "embeddings": [[1e40, 1, 1]]}),
    post("add empty beats infinite", BETA + "/add", {"ids": ["w", "v"], "embeddings": [[1e40, 1, 1], []]}),
    post("add inconsistent dimensions", BETA + "/add", {"ids": ["w", "v"], "embeddings": [[1, 2, 3], [1, 2]]}),
    post("add bad base64 padding", BETA + "/add", {"ids": ["w"], "embeddings": ["AAA"]}),
    post("add bad base64 symbol", BETA + "/add", {"ids": ["w"], "embeddings": ["!!!!"]}),
    post("add base64 odd byte count", BETA + "/add", {"ids": ["w"], "embeddings": ["AAAAAAA="]}),
    post("add empty base64", BETA + "/add", {"ids": ["w"], "embeddings": [""]}),
    post("add mixed floats and base64", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3], "AAAA"]}),
    post("add string in float embedding", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, "x"]]}),
    post("add wrong dimension beats length", BETA + "/add", {"ids": ["w"], "embeddings": [b64([1.0])],
                                                              "metadatas": [{}, {}]}),
    post("add length mismatch on missing collection", COLS + "/" + MISSING_ID + "/add",
         {"ids": ["w", "v"], "embeddings": [[1, 2, 3]]}),
    post("add bad base64 on missing collection", COLS + "/" + MISSING_ID + "/add", {"ids": ["w"], "embeddings": ["AAA"]}),
    post("add documents wrong type", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]], "documents": [5]}),
    post("add uris wrong type", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]], "uris": "x"}),
    post("add id not a string", BETA + "/add", {"ids": [5], "embeddings": [[1, 2, 3]]}),
    post("add metadata null value", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]], "metadatas": [{"a": None}]}),
    post("add metadata mixed list", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]],
                                                    "metadatas": [{"a": [True, 1]}]}),
    post("add metadata not a map", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]], "metadatas": [5]}),
    post("add sparse vector metadata", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]],
                                                       "metadatas": [{"s": {"indices": [1], "values": [0.5]}}]}),
    post("add unsorted sparse vector", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]],
                                                       "metadatas": [{"s": {"indices": [2, 1], "values": [1, 2]}}]}),
    post("add sparse vector without values", BETA + "/add", {"ids": ["w"], "embeddings": [[1, 2, 3]],
                                                             "metadatas": [{"s": {"indices": [1]}}]}),
    post("update sparse vector metadata", BETA + "/update", {"ids": ["zz"], "metadatas": [{"s": {"indices": [1],
                                                                                                 "values": [0.5]}}]}),
    post("add unknown field", BETA + "/add", {"ids": ["r8"], "embeddings": [[8, 8, 8]], "bogus": 1,
                                              "metadatas": [{"fl": [1, 2.5], "i": 2 ** 63}]}),
    post("add existing id", BETA + "/add", {"ids": ["r1"], "embeddings": [[9.0, 9.0, 9.0]]}),
    post("malformed JSON", BETA + "/add", raw=b'{"ids": ["a",'),
    post("malformed JSON key", DB + "/collections", raw=b"{nope"),
    post("empty body", BETA + "/add", raw=b""),
    post("wrong content type", BETA + "/get", raw=b"{}", content_type="text/plain"),
    post("no content type", BETA + "/get", raw=b'{"ids": ["r2"]}', content_type=None),
    post("body is not an object", BETA + "/get", raw=b"[1, 2]"),
    post("add to missing collection", COLS + "/" + MISSING_ID + "/add", {"ids": ["z"], "embeddings": [[1, 2, 3]]}),
    post("non-uuid collection id", COLS + "/not-a-uuid/add", {"ids": ["z"], "embeddings": [[1, 2, 3]]}),
    post("collection id without hyphens", COLS + "/" + MISSING_ID.replace("-", "") + "/get", {}),
    post("collection id in braces", COLS + "/{{" + MISSING_ID + "}}/get", {}),
    post("collection id as a urn", COLS + "/urn:uuid:" + MISSING_ID + "/get", {}),
    post("collection id with misplaced hyphens", COLS + "/" + MISSING_ID.replace("-", "")[:10] + "-"
         + MISSING_ID.replace("-", "")[10:] + "/get", {}),
    post("upsert", BETA + "/upsert", {
        "ids": ["r3", "r6"], "embeddings": [[0.0, 0.5, 3.0], [0.3, 0.3, 0.3]],
        "metadatas": [{"kind": "fruit", "n": 30}, {"kind": "veg", "n": 6}], "documents": ["cherry cake", "eggplant"]}),
    post("upsert base64", BETA + "/upsert", {"ids": ["r7"], "embeddings": [b64([2.0, 2.0, 2.0])], "documents": ["fig"]}),
    post("update metadata only", BETA + "/update", {"ids": ["r1"], "metadatas": [{"kind": "fruit", "n": 10, "ok": True}]}),
    post("update document and embedding", BETA + "/update", {"ids": ["r2"], "embeddings": [[0.0, 2.5, 0.0]],
                                                                "documents": ["beet borscht"]}),
    post("update nonexistent id", BETA + "/update", {"ids": ["zzz"], "metadatas": [{"x": 5}]}),
    post("update with null embeddings", BETA + "/update", {"ids": ["r8"], "embeddings": [None], "documents": ["hat"]}),
    post("update mixing null and non-null embeddings", BETA + "/update", {
        "ids": ["r4", "r5", "zzz"], "embeddings": [None, [0.9, 0.8, 0.7], None], "documents": ["date bread", None, "z"]}),
    post("get after the mixed update", BETA + "/get", {"ids": ["r4", "r5"], "include": ALL_INCLUDE}),
    post("update mixing null and wrong dimension", BETA + "/update", {"ids": ["r4", "r5"], "embeddings": [None, [1.0]]}),
    post("update removing a metadata key", BETA + "/update", {"ids": ["r8"], "metadatas": [{"i": None, "k": "v"}]}),
    post("update empty embedding", BETA + "/update", {"ids": ["r8"], "embeddings": [[]]}),
    post("update nothing", BETA + "/update", {"ids": []}),
    post("upsert removing a metadata key", BETA + "/upsert", {"ids": ["r8"], "embeddings": [[8, 8, 8]],
                                                              "metadatas": [{"k": None, "z": 1}]}),
    post("update wrong dimension", BETA + "/update", {"ids": ["r1"], "embeddings": [[1.0, 2.0]]}),
    post("upsert wrong dimension", BETA + "/upsert", {"ids": ["r1"], "embeddings": [[1.0, 2.0]]}),
]

EMPTIES = COLS + "/{empties}"

# A deliberate difference, kept in a collection of its own that is dropped before anything lists
# collections: Chroma stores an empty-list metadata value as no value (an update removes the key)
# and its collection schema gains a bool index for the key. The embedded bindings refuse empty
# lists, so raftchroma rewrites them to the same effect on records, but its schema gains no index.
EMPTY_LISTS = [
    post("create collection for empty lists", COLS, {"name": "empties"}, save="empties"),
    post("add empty-list metadata values", EMPTIES + "/add", {
        "ids": ["a", "b"], "embeddings": [[1.0], [2.0]], "metadatas": [{"e": [], "x": 1}, {"e": []}]}),
    post("update to an empty list", EMPTIES + "/update", {"ids": ["a"], "metadatas": [{"x": [], "y": 2}]}),
    post("upsert an empty list", EMPTIES + "/upsert", {"ids": ["b", "c"], "embeddings": [[2.0], [3.0]],
                                                       "metadatas": [{"y": [], "z": 1}, {"e": [], "z": 2}]}),
    post("get empty-list records", EMPTIES + "/get", {}),
    delete("drop the empty-list collection", COLS + "/empties"),
]


RECORD_READS = [
    post("get all", BETA + "/get", {}),
    post("get ids with full include", BETA + "/get", {"ids": ["r1", "r4", "nope"], "include": ALL_INCLUDE}),
    post("get where equality", BETA + "/get", {"where": {"kind": "fruit"}}),
    post("get where $and/$gte/$in", BETA + "/get",
         {"where": {"$and": [{"n": {"$gte": 2}}, {"kind": {"$in": ["fruit", "veg"]}}]}, "include": ["metadatas"]}),
    post("get where $contains on list", BETA + "/get", {"where": {"tags": {"$contains": "a"}}}),
    post("get where_document", BETA + "/get", {"where_document": {"$contains": "tart"}, "include": ["documents"]}),
    post("get where_document cake", BETA + "/get", {"where_document": {"$contains": "cake"}, "include": ["documents"]}),
    post("get limit and offset", BETA + "/get", {"limit": 2, "offset": 1, "include": []}),
    post("get offset only", BETA + "/get", {"offset": 5}),
    post("get empty where", BETA + "/get", {"where": {}}),
    post("get empty where_document", BETA + "/get", {"where_document": {}}),
    post("get empty ids", BETA + "/get", {"ids": []}),
    post("get limit 0", BETA + "/get", {"limit": 0}),
    post("get include empty", BETA + "/get", {"include": []}),
    post("get include null", BETA + "/get", {"include": None}),
    post("get include a number", BETA + "/get", {"include": [1]}),
    post("get limit too large", BETA + "/get", {"limit": 99999999999}),
    post("get limit beyond u64", BETA + "/get", raw=b'{"limit": 99999999999999999999999}'),
    post("get limit string", BETA + "/get", {"limit": "1"}),
    post("get limit bool", BETA + "/get", {"limit": True}),
    post("get duplicate field", BETA + "/get", raw=b'{"ids": ["r1"], "ids": ["r2"]}'),
    post("get body a string", BETA + "/get", raw=b'"x"'),
    post("get body null", BETA + "/get", raw=b"null"),
    post("get body a number", BETA + "/get", raw=b"5"),
    post("get where on missing collection", COLS + "/" + MISSING_ID + "/get", {"where": {"$foo": 1}}),
    post("get with nulls", BETA + "/get", {"ids": None, "where": None, "limit": None, "offset": None,
                                           "where_document": None, "include": ["uris"]}),
    post("get invalid where operator", BETA + "/get", {"where": {"n": {"$foo": 1}}}),
    post("get invalid where top-level", BETA + "/get", {"where": {"$bogus": [{"n": 1}]}}),
    post("get where $gt string", BETA + "/get", {"where": {"n": {"$gt": "s"}}}),
    post("get where not an object", BETA + "/get", {"where": "x"}),
    post("get invalid where_document", BETA + "/get", {"where_document": {"$foo": "a"}}),
    post("get include bogus", BETA + "/get", {"include": ["bogus"]}),
    post("get include not a list", BETA + "/get", {"include": "documents"}),
    post("get limit -1", BETA + "/get", {"limit": -1}),
    post("get limit float", BETA + "/get", {"limit": 1.5}),
    post("get on missing collection", COLS + "/" + MISSING_ID + "/get", {}),
    post("query with where", BETA + "/query", {"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 2,
                                               "where": {"kind": "fruit"}}, mode="query"),
    post("query two vectors", BETA + "/query", {"query_embeddings": [[0.0, 2.0, 0.0], [0.0, 0.0, 3.0]],
                                                "n_results": 1, "include": ["documents", "distances"]}, mode="query"),
    post("query n_results 0", BETA + "/query", {"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 0}, mode="query"),
    post("query n_results > count", BETA + "/query", {"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 100,
                                                      "include": ALL_INCLUDE + ["distances"]}, mode="query"),
    post("query base64", BETA + "/query", {"query_embeddings": [b64([2.0, 2.0, 2.0])], "n_results": 1}, mode="query"),
    post("query where_document", BETA + "/query", {"query_embeddings": [[1.0, 0.0, 0.0]],
                                                   "where_document": {"$contains": "pie"}}, mode="query"),
    post("query by ids", BETA + "/query", {"query_embeddings": [[1.0, 0.0, 0.0]], "ids": ["r2", "r3"]}, mode="query"),
    post("query wrong dimension", BETA + "/query", {"query_embeddings": [[1.0, 0.0]], "n_results": 1}),
    post("query missing query_embeddings", BETA + "/query", {"n_results": 1}),
    post("query n_results negative", BETA + "/query", {"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": -1}),
    post("query missing collection", COLS + "/" + MISSING_ID + "/query", {"query_embeddings": [[1, 0, 0]]}),
    post("query inconsistent dimensions", BETA + "/query", {"query_embeddings": [[1, 0, 0], [1, 0]]}),
    post("query no vectors", BETA + "/query", {"query_embeddings": []}, mode="query"),
    post("query empty vector", BETA + "/query", {"query_embeddings": [[]]}),
    post("query string in vector", BETA + "/query", {"query_embeddings": [[1, "x", 0]]}),
    post("query n_results null", BETA + "/query", {"query_embeddings": [[1, 0, 0]], "n_results": None}, mode="query"),
    post("query empty where", BETA + "/query", {"query_embeddings": [[1, 0, 0]], "where": {}}),
    post("query limit in the query string", BETA + "/query?limit=abc", {"query_embeddings": [[1, 0, 0]], "n_results": 1},
         mode="query"),
    get("count", BETA + "/count"),
    get("count missing collection", COLS + "/" + MISSING_ID + "/count"),
    get("count with read_level", BETA + "/count?read_level=index_only"),
    get("count with bad read_level", BETA + "/count?read_level=bogus"),
    get("count not a uuid", COLS + "/not-a-uuid/count"),
]

DELETES_AND_EXTRAS = [
    post("delete by ids", BETA + "/delete", {"ids": ["r4"]}),
    post("delete by where", BETA + "/delete", {"where": {"kind": "veg"}}),
    post("delete by where_document", BETA + "/delete", {"where_document": {"$contains": "fig"}}),
    post("delete matching nothing", BETA + "/delete", {"ids": ["nope"]}),
    post("delete invalid where", BETA + "/delete", {"where": {"n": {"$foo": 1}}}),
    post("delete empty where", BETA + "/delete", {"where": {}}),
    post("delete with empty body", BETA + "/delete", {}),
    post("delete empty ids", BETA + "/delete", {"ids": []}),
    post("delete limit without where", BETA + "/delete", {"ids": ["r1"], "limit": 1}),
    post("delete with limit and where", BETA + "/delete", {"where": {"kind": "nut"}, "limit": 1}),
    post("delete on missing collection", COLS + "/" + MISSING_ID + "/delete", {"ids": ["a"]}),
    post("get after deletes", BETA + "/get", {"include": ALL_INCLUDE}),
    get("count after deletes", BETA + "/count"),
    post("search", BETA + "/search", {"searches": []}),
    post("search without searches", BETA + "/search", {}),
    post("search missing collection", COLS + "/" + MISSING_ID + "/search", {"searches": []}),
    post("fork", BETA + "/fork", {"new_name": "forked"}),
    post("fork without new_name", BETA + "/fork", {}),
    post("fork missing collection", COLS + "/" + MISSING_ID + "/fork", {"new_name": "forked"}),
    get("fork_count", BETA + "/fork_count"),
    get("fork_count missing collection", COLS + "/" + MISSING_ID + "/fork_count"),
    get("indexing_status", BETA + "/indexing_status"),
    get("indexing_status missing collection", COLS + "/" + MISSING_ID + "/indexing_status"),
    delete("delete collection", COLS + "/gamma2"),
    delete("delete collection again", COLS + "/gamma2"),
    delete("delete missing collection", COLS + "/nope_missing"),
    get("collections_count after delete", DB + "/collections_count"),
    get("list after delete", COLS, mode="by_name"),
    delete("delete database holding a collection", CONF_DB),
    get("collection of deleted database", CONF_DB + "/collections/solo"),
    get("unknown route", V2 + "/nonexistent"),
    get("wrong method", BETA + "/add"),
    delete("wrong method on tenants", V2 + "/tenants"),
    get("v1 API", V1 + "/collections"),
    get("v1 API deep path", V1 + "/x/y/z"),
    put("v1 API put", V1 + "/x", {}),
    post("v1 API post", V1 + "/heartbeat", {}),
    get("v1 root", V1),
    get("v2 root", V2),
    post("post to heartbeat", V2 + "/heartbeat", {}),
    get("crn not well formed", V2 + "/collections/abc"),
    post("reset when disabled", V2 + "/reset"),
]

SYNTAX = [  # serde_json's messages and serde_path_to_error's paths, for bodies that are not JSON
    post("EOF in a list", BETA + "/get", raw=b'{"ids": ['),
    post("EOF in a string", BETA + "/get", raw=b'{"ids": ["a'),
    post("EOF after a key", BETA + "/get", raw=b'{"ids" '),
    post("EOF in an object", BETA + "/get", raw=b"{"),
    post("trailing comma in an object", BETA + "/get", raw=b'{"ids": ["r1"],}'),
    post("trailing comma in a list", BETA + "/get", raw=b'{"ids": ["r1",]}'),
    post("missing comma in an object", BETA + "/get", raw=b'{"ids": ["r1"] "x": 1}'),
    post("missing comma in a list", BETA + "/get", raw=b'{"ids": ["a" "b"]}'),
    post("trailing characters", BETA + "/get", raw=b"{} x"),
    post("trailing characters after a bad payload", BETA + "/add", raw=b"{} x"),
    post("bad ident", BETA + "/get", raw=b'{"limit": tru}'),
    post("leading zero", BETA + "/get", raw=b'{"limit": 01}'),
    post("bad exponent", BETA + "/get", raw=b'{"limit": 1e}'),
    post("NaN literal", BETA + "/get", raw=b'{"limit": NaN}'),
    post("bad value in unknown flattened field", BETA + "/get", raw=b'{"foo": [1, }'),
    post("bad value in unknown field", DB + "/collections", raw=b'{"foo": {"bar": [1, '),
    post("EOF in a where key", BETA + "/get", raw=b'{"where": {"x": 1, '),
    post("missing colon in a where", BETA + "/get", raw=b'{"where": {"x" 1'),
    post("EOF in metadata", BETA + "/add", raw=b'{"ids": ["a"], "embeddings": [[1, 2, 3]], "metadatas": [{"a": '),
    post("EOF in embeddings", BETA + "/add", raw=b'{"ids": ["a"], "embeddings": [[1, 2, '),
    post("type error before EOF", BETA + "/get", raw=b'{"ids": "a", "include": ['),
    post("element type error before EOF", BETA + "/get", raw=b'{"ids": ["a", 5, '),
    post("invalid escape", BETA + "/get", raw=b'{"ids": ["\\q"]}'),
    post("control character", BETA + "/get", raw=b'{"ids": ["a\tb"]}'),
    post("invalid utf-8", BETA + "/get", raw=b'{"ids": ["\xff"]}'),
    post("lone surrogate", BETA + "/get", raw=b'{"ids": ["\\ud800"]}'),
    post("lone trailing surrogate", BETA + "/get", raw=b'{"ids": ["\\udc00"]}'),
    post("escaped surrogate pair", BETA + "/get", raw=b'{"ids": ["\\ud83d\\ude00"]}'),
    post("whitespace only", BETA + "/get", raw=b"   "),
    post("key not a string", DB + "/collections", raw=b'{"name": "x", 5'),
    post("NaN in an embedding", BETA + "/add", raw=b'{"ids": ["w"], "embeddings": [[1.0, NaN, 3.0]]}'),
    post("float beyond f64", BETA + "/get", raw=b'{"limit": 1e400}'),
    post("integer of 5000 digits", BETA + "/get", raw=b'{"limit": ' + b"1" * 5000 + b"}"),
    post("query vector beyond f64", BETA + "/query", raw=b'{"query_embeddings": [[1e400, 0, 0]]}'),
    post("nesting beyond serde's limit", BETA + "/get", raw=b'{"where": ' + b"[" * 200),
    post("nesting at serde's limit", BETA + "/get", raw=b'{"where": ' + b"[" * 126 + b"]" * 126 + b"}"),
]

SCRIPT = SYSTEM + TENANTS_AND_DATABASES + COLLECTIONS + RECORD_WRITES + EMPTY_LISTS + RECORD_READS + SYNTAX + DELETES_AND_EXTRAS


# ----------------------------------------------------------------- servers


@dataclass
class Servers:
    chroma_url: str
    raft_url: str
    cluster: Cluster


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    chroma = ChromaRun(Path(tmp_path_factory.mktemp("chroma")))
    cluster = make_cluster(Path(tmp_path_factory.mktemp("raftchroma")), allow_reset=False)
    try:
        chroma.start()  # starts while the cluster elects a leader
        leader = start_cluster(cluster)
        follower = next(node_id for node_id in cluster.nodes if node_id != leader)
        chroma.wait_ready()
        yield Servers(chroma.url, cluster.node(follower).url, cluster)
    finally:
        cluster.stop_all()
        chroma.stop()


# ----------------------------------------------------------------- session


@dataclass
class Side:
    """One server as the script sees it: its base URL, its ids, and its saved collection ids."""

    url: str
    ids: IdMap = field(default_factory=IdMap)
    saved: dict[str, str] = field(default_factory=dict)

    def run(self, step: Step) -> Reply:
        path = step.path.format_map(self.saved)
        reply = send(step.method, self.url + path, step.payload(), step.content_type if step.payload() is not None
                     else None)
        if step.save and reply.status == 200:
            self.saved[step.save] = reply.body["id"]
        return reply


def comparable(step: Step, reply: Reply, side: Side) -> Any:
    """What the step compares, by its mode."""
    body = reply.body
    if step.mode == "status_name":
        return reply.status, error_name(body)
    if step.mode == "by_name" and isinstance(body, list):
        body = sorted(body, key=lambda c: c["name"])
    status, normalised = normalise_reply(Reply(reply.status, reply.headers, body), side.ids)
    if step.mode == "query":  # exact on these tiny collections, but ties may come in either order
        n_results = step.body.get("n_results")
        normalised = canonical_query(normalised, 10 if n_results is None else n_results)
    return status, normalised


def step_problems(step: Step, chroma: Reply, raft: Reply, expected: Any, actual: Any) -> list[str]:
    problems = []
    if expected != actual:
        detail = "\n    ".join(differences(expected, actual))
        problems.append(f"{step.label}: {step.method} {step.path} (chroma != raftchroma)\n    {detail}")
    if step.mode == "by_name" and isinstance(raft.body, list):
        for name, reply in (("chroma", chroma), ("raftchroma", raft)):
            listed = [c["id"] for c in reply.body]
            if listed != sorted(listed):
                problems.append(f"{step.label}: {name} does not list collections in id order")
    if step.mutation and raft.status < 400 and not raft.headers.get(INDEX_HEADER, "").isdigit():
        problems.append(f"{step.label}: mutation answered {raft.status} without an integer {INDEX_HEADER}")
    return problems


def run_session(chroma: Side, raft: Side) -> list[str]:
    problems: list[str] = []
    for step in SCRIPT:
        chroma_reply, raft_reply = chroma.run(step), raft.run(step)
        expected, actual = comparable(step, chroma_reply, chroma), comparable(step, raft_reply, raft)
        problems += step_problems(step, chroma_reply, raft_reply, expected, actual)
    return problems


def digest_problems(cluster: Cluster) -> list[str]:
    """The replicas' digests. `applied_index` is left out: each linearizable read commits its own
    barrier entry, so the three reads are necessarily answered at three different indexes."""
    bodies = {}
    for node_id, node in cluster.nodes.items():
        reply = send("GET", node.url + "/raftchroma/digest", headers=LIN)
        assert reply.status == 200, reply
        bodies[node_id] = {key: value for key, value in reply.body.items() if key != "applied_index"}
    first = next(iter(bodies.values()))
    if not first["collections"]:
        return ["digest lists no collections after the session"]
    return [f"digest of {node_id} differs: {body} != {first}" for node_id, body in bodies.items() if body != first]


def test_raftchroma_answers_like_chroma(servers: Servers) -> None:
    problems = run_session(Side(servers.chroma_url), Side(servers.raft_url))
    problems += digest_problems(servers.cluster)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems)
