"""Property-based differential test: generated invalid and edge-case requests, each sent to a real
`chroma run` 1.5.9 and to a raftchroma node, answers compared.

Rule under test: nothing that Chroma refuses, or that breaks Chroma, enters the log; and where
Chroma answers an error, raftchroma answers the same (status and error name exactly; the message
and every success body normalised as tests/test_conformance.py does).

Each generated request is sent to raftchroma first. If raftchroma deliberately refuses it
(400 InvalidArgumentError for an input that `chroma run` accepts and then breaks on, listed in
README.md), the request must be one of those inputs (`breaks_chroma`, an independent statement of
the findings), and it is not sent to Chroma, which it would break. Otherwise it goes to Chroma too
and the answers must agree. After every request both servers take a normal write, which must
succeed, so a request that wedges raftchroma (or breaks Chroma unnoticed) fails the example that
sent it; a collection the request created or modified is exercised (add, query) and dropped on
both sides. At the end the target collection must hold the same records on both sides.
`test_refused_inputs_really_break_chroma_run` is the negative control: without the refusals,
these inputs do break `chroma run`.

Bounded and reproducible: hypothesis with `derandomize=True` (a fixed seed from the test's name),
a fixed number of examples and no shrinking (the servers keep state between examples, so a
shrunk replay would not mean the same thing; the failing request is printed instead). One node
suffices, since every check here is made before proposing (test_conformance.py covers forwarding
from a follower).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, note, seed, settings
from hypothesis import strategies as st

from tests.differential import IdMap, Reply, canonical_query, differences, error_name, normalise_reply, send
from tests.harness import ChromaRun, Cluster, make_cluster, start_cluster

# Besides the FINDINGS; about 0.2 s each on a loaded 2-core machine. A longer hunt, reproducible:
# RAFTCHROMA_PROPERTY_SEED=7 RAFTCHROMA_PROPERTY_EXAMPLES=1000 pytest tests/test_differential_property.py
MAX_EXAMPLES = int(os.environ.get("RAFTCHROMA_PROPERTY_EXAMPLES", "100"))
SEED = os.environ.get("RAFTCHROMA_PROPERTY_SEED")  # unset: hypothesis's derandomized seed
WRITE_DEADLINE_S = 20.0  # a normal write slower than this means a wedged node
CLUSTER_KEYS = "write_timeout_s = 15.0\nread_timeout_s = 15.0"
DB = "/api/v2/tenants/default_tenant/databases/default_database"
COLS = DB + "/collections"
TARGET = COLS + "/{target}"
SCRATCH = COLS + "/{scratch}"
DIMENSION = 3
SEED_RECORDS = {"ids": ["s1", "s2", "s3"], "embeddings": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]],
                "metadatas": [{"k": "a", "n": 1, "tags": ["x", "y"]}, {"k": "b", "n": 2.5, "ok": True}, None],
                "documents": ["apple tart", "beet soup", None]}
DELIBERATE_REFUSAL_RE = re.compile(
    r"Invalid metadata at index \d+: the key .* is reserved|Invalid collection metadata: |Invalid HNSW configuration: ")
RESERVED_PREFIX = "chroma:"
MAX_NEIGHBORS_RANGE = range(1, 10_001)
VALIDATION_PREFIX = "Validation error: "
F32_MAX = float(np.finfo(np.float32).max)
DROPPED = 599  # the status recorded for a dropped connection or a timeout


@dataclass(frozen=True)
class Request:
    """One generated request. `path` names the target or scratch collection as {target}/{scratch}.
    `exact` is False where Chroma's answer is not a function of the request: a message naming one
    of several bad metadata keys in hash-map order, or the neighbours of a query vector that is
    infinite in float32 (every distance is NaN, shown as null): then status and error name count."""

    kind: str
    method: str
    path: str
    body: Any
    exact: bool = True

    def payload(self) -> bytes:
        return json.dumps(self.body).encode()


@dataclass
class Side:
    """One server: its URL, its ids as placeholders, and its target and scratch collection ids."""

    name: str
    url: str
    ids: IdMap = field(default_factory=IdMap)
    saved: dict[str, str] = field(default_factory=dict)

    def send(self, method: str, path: str, body: Any = None, timeout_s: float = 30.0) -> Reply:
        raw = None if body is None else json.dumps(body).encode()
        try:
            return send(method, self.url + path.format_map(self.saved), raw,
                        "application/json" if raw is not None else None, timeout_s=timeout_s)
        except (OSError, http.client.HTTPException) as exc:  # a dropped connection, a timeout
            return Reply(DROPPED, {}, {"error": "connection", "message": repr(exc)})


@dataclass
class Pair:
    chroma: Side
    raft: Side
    cluster: Cluster
    written: int = 0  # normal writes so far, for their ids
    outcomes: Counter[str] = field(default_factory=Counter)  # kind and answer, printed at the end
    failure: BaseException | None = None  # the first failing example's error


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    chroma = ChromaRun(Path(tmp_path_factory.mktemp("chroma")))
    cluster = make_cluster(Path(tmp_path_factory.mktemp("raftchroma")), size=1, cluster_keys=CLUSTER_KEYS,
                           allow_reset=False)
    try:
        chroma.start()
        leader = start_cluster(cluster)
        chroma.wait_ready()
        sides = Pair(Side("chroma", chroma.url), Side("raftchroma", cluster.node(leader).url), cluster)
        for side in (sides.chroma, sides.raft):
            created = side.send("POST", COLS, {"name": "target"})
            assert created.status == 200, created
            side.saved["target"] = created.body["id"]
            side.ids.placeholder(created.body["id"])
            assert side.send("POST", TARGET + "/add", SEED_RECORDS).status == 201
        yield sides
    finally:
        cluster.stop_all()
        chroma.stop()


# ------------------------------------------------------------------------ strategies

@st.composite
def mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], odds: int = 3) -> Any:
    """`good` `odds` times as often as `hostile`: most requests are nearly valid, so that the one
    hostile part in them is what the servers judge. (`one_of` would weigh them evenly.)"""
    return draw(hostile if draw(st.integers(0, odds)) == 0 else good)


IDS = mostly(st.sampled_from(["a", "b", "c", "d", "s1"]),
             st.sampled_from(["", "\x00", "é", "id " * 40, "chroma:document"]), odds=5)
RESERVED_KEYS = st.sampled_from(["chroma:document", "chroma:document", "chroma:uri", "chroma:x"])
RECORD_KEYS = mostly(st.sampled_from(["k", "n", "tags", "ok"]), st.one_of(
    RESERVED_KEYS, st.sampled_from(["", "#x", "$x", "#document", "CHROMA:document", "a:chroma:", "nul\x00"])))
SCALARS = st.one_of(
    st.integers(-3, 3), st.sampled_from([0.5, -1.5]), st.booleans(), st.sampled_from(["", "a", "x\x00y", "tart", "é"]))
ODD_NUMBERS = st.sampled_from([2 ** 63, -2 ** 63 - 1, 10 ** 30, 1e39, -1e39, 1e308, 5e-324])
LISTS = st.one_of(st.lists(st.integers(-2, 2), min_size=1, max_size=3), st.lists(st.sampled_from(["a", "x"]), min_size=1,
                                                                                  max_size=2))
ODD_LISTS = st.sampled_from([[], [""], [True, False], [0.5, 1e39], [-1e39], [1, 2.5], [1, "x"], [[1]], [None], [True, 1],
                             [2 ** 63]])
SPARSE = st.sampled_from([{"indices": [0, 2], "values": [1.0, 0.5]}, {"indices": [2, 1], "values": [1, 1]},
                          {"indices": [1]}, {"indices": [0], "values": [1e39]}])
METADATA_VALUES = mostly(st.one_of(SCALARS, LISTS), st.one_of(ODD_NUMBERS, ODD_LISTS, SPARSE, st.none()))
FLOATS = st.floats(-2, 2, allow_nan=False, width=32)


def b64(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


FLOAT_ROWS = mostly(st.lists(FLOATS, min_size=DIMENSION, max_size=DIMENSION), st.one_of(
    st.lists(FLOATS, min_size=1, max_size=2), st.just([]), st.sampled_from([[1e39, 0, 0], [0.5, -1e39, 1], [1, 2, "x"]])),
    odds=6)
BASE64_ROWS = mostly(st.lists(FLOATS, min_size=DIMENSION, max_size=DIMENSION).map(b64), st.sampled_from(
    [b64([float("nan"), 1, 1]), b64([1, float("inf"), 1]), "AAA", b64([1.0]), "", "!!!!"]), odds=6)
ROWS = mostly(FLOAT_ROWS, BASE64_ROWS, odds=2)  # a body mixing the two is a 422; see `embeddings`


def embeddings(draw: st.DrawFn, n: int, nullable: bool) -> list[Any]:
    """One encoding per body, as clients send (floats, or base64 float32), rarely mixed."""
    rows = draw(st.sampled_from([FLOAT_ROWS, FLOAT_ROWS, FLOAT_ROWS, BASE64_ROWS, BASE64_ROWS, ROWS]))
    return columns(draw, n, mostly(rows, st.none(), odds=5) if nullable else rows)


def columns(draw: st.DrawFn, n: int, strategy: st.SearchStrategy[Any]) -> list[Any]:
    """A column of a records body: usually one entry per id, sometimes not."""
    size = n if draw(st.integers(0, 7)) else draw(st.integers(0, 3))
    return draw(st.lists(strategy, min_size=size, max_size=size))


@st.composite
def records_writes(draw: st.DrawFn) -> Request:
    kind = draw(st.sampled_from(["add", "upsert", "update"]))
    ids = draw(st.lists(IDS, min_size=1, max_size=3))
    body: dict[str, Any] = {"ids": ids}
    if kind != "update" or draw(st.booleans()):
        body["embeddings"] = embeddings(draw, len(ids), nullable=kind == "update")
    if draw(st.integers(0, 3)):
        metadata = mostly(st.dictionaries(RECORD_KEYS, METADATA_VALUES, min_size=1, max_size=3), st.none())
        body["metadatas"] = columns(draw, len(ids), metadata)
    if draw(st.booleans()):
        body["documents"] = columns(draw, len(ids), st.one_of(st.none(), st.sampled_from(["tart", "", "\x00", "é"])))
    # Chroma's 501 for sparse vectors names one key of a metadata, in hash-map order.
    several_sparse = any(isinstance(m, dict) and sum(isinstance(v, dict) for v in m.values()) > 1
                         for m in body.get("metadatas") or [])
    return Request(kind, "POST", TARGET + "/" + kind, body, exact=not several_sparse)


WHERE_KEYS = st.sampled_from(["k", "n", "tags", "ok", "#document", "", "$x", "chroma:document", "$contains"])
OPERATORS = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains", "$not_contains",
                             "$regex", "$not_regex", "$foo"])
OPERANDS = st.one_of(SCALARS, ODD_NUMBERS, st.none(), LISTS, ODD_LISTS, st.just({"a": 1}),
                     st.sampled_from(["ap.*", "(", "tart", "a|b"]))
GOOD_WHERE = st.sampled_from([{"k": "a"}, {"n": {"$gt": 1}}, {"n": {"$in": [1, 2]}}, {"tags": {"$contains": "x"}},
                              {"ok": True}, {"#document": {"$contains": "tart"}}, {"k": {"$nin": ["a"]}},
                              {"n": {"$lte": 2.5}}, {"#document": {"$regex": "ap+le"}}])
WHERE_LEAVES = mostly(GOOD_WHERE, st.one_of(
    st.dictionaries(WHERE_KEYS, st.one_of(SCALARS, ODD_NUMBERS, st.none(), LISTS), min_size=1, max_size=1),
    st.builds(lambda key, op, operand: {key: {op: operand}}, WHERE_KEYS, OPERATORS, OPERANDS),
    st.sampled_from([{}, {"k": "a", "n": 1}, {"k": {}}, {"k": {"$eq": "a", "$ne": "b"}}, "x", 5, [{"k": "a"}]])), odds=2)
WHERE = st.recursive(WHERE_LEAVES, lambda children: st.builds(
    lambda op, items: {op: items}, st.sampled_from(["$and", "$or", "$not"]), st.lists(children, max_size=3)),
    max_leaves=4)
DOCUMENT_LEAVES = mostly(
    st.sampled_from([{"$contains": "tart"}, {"$not_contains": "soup"}, {"$regex": "ap+le"}, {"$not_regex": "^b"}]),
    st.one_of(st.builds(lambda op, value: {op: value},
                        st.sampled_from(["$contains", "$not_contains", "$regex", "$not_regex", "$foo"]),
                        st.sampled_from(["", "a", "\x00", "(", "[", "\\", 5, None])),
              st.sampled_from([{}, {"$contains": "a", "$regex": "a"}, "x"])), odds=2)
WHERE_DOCUMENT = st.recursive(DOCUMENT_LEAVES, lambda children: st.builds(
    lambda op, items: {op: items}, st.sampled_from(["$and", "$or"]), st.lists(children, max_size=3)), max_leaves=4)


def optional(draw: st.DrawFn, body: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        body[key] = draw(strategy)


LIMITS = st.one_of(st.none(), st.integers(0, 3), st.sampled_from([-1, 2 ** 32, 1.5]))


@st.composite
def filtered_requests(draw: st.DrawFn) -> Request:
    """delete, get and query on the target collection, with filters."""
    kind = draw(st.sampled_from(["delete", "get", "query"]))
    body: dict[str, Any] = {}
    optional(draw, body, "ids", st.lists(IDS, max_size=2))
    optional(draw, body, "where", WHERE)
    optional(draw, body, "where_document", WHERE_DOCUMENT)
    if kind == "query":
        body["query_embeddings"] = draw(st.lists(mostly(FLOAT_ROWS, BASE64_ROWS, odds=8), max_size=2))
        optional(draw, body, "n_results", LIMITS)
    else:
        optional(draw, body, "limit", LIMITS)
    if kind != "delete":
        optional(draw, body, "include", st.lists(st.sampled_from(["documents", "metadatas", "uris", "distances",
                                                                   "bogus"]), max_size=2))
    return Request(kind, "POST", TARGET + "/" + kind, body, exact=not _infinite_in_f32(body.get("query_embeddings")))


def _infinite_in_f32(rows: Any) -> bool:
    return any(isinstance(x, float) and abs(x) > F32_MAX for row in rows or [] if isinstance(row, list) for x in row)


COLLECTION_KEYS = mostly(st.sampled_from(["k", "m"]), st.sampled_from([
    "", "#x", "$x", "chroma:document", "hnsw:M", "hnsw:space", "hnsw:batch_size", "hnsw:sync_threshold",
    "hnsw:construction_ef", "hnsw:resize_factor", "hnsw:bogus"]), odds=2)
COLLECTION_VALUES = mostly(SCALARS, st.one_of(
    st.sampled_from([0, 1, 2, 16, -1, 5.0, 10_001, 2 ** 63, "ip", "cosine", "bogus"]), ODD_NUMBERS, LISTS, ODD_LISTS,
    SPARSE))
NAMES = mostly(st.sampled_from(["gen-one", "gen.two", "gen_three", "abc+def", "target"]),
               st.sampled_from(["ab", "a..b", "127.0.0.1", "a+b+c", "-bad", "x" * 513, "abé", "abc\n"]))
USIZES = mostly(st.sampled_from([1, 2, 16, 100]), st.sampled_from([0, -1, 1.5, "8", True, None, 2 ** 64, 10_001]))


def tuning(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
    spaces = mostly(st.sampled_from(["l2", "cosine", "ip"]), st.sampled_from(["bogus", 5, None]))
    return {key: draw(spaces if key == "space" else USIZES) for key in keys}


HNSW_FIELDS = ["space", "ef_construction", "ef_search", "max_neighbors", "num_threads", "resize_factor",
               "sync_threshold", "batch_size", "bogus"]
UPDATE_HNSW_FIELDS = ["ef_search", "max_neighbors", "num_threads", "resize_factor", "sync_threshold", "batch_size",
                      "space"]
EMBEDDING_FUNCTIONS = st.sampled_from([None, {"type": "legacy"}, {"type": "known", "name": "default", "config": {}},
                                       {"type": "known", "name": 5, "config": {}}, {"type": "bogus"}, {}, 5])


@st.composite
def configurations(draw: st.DrawFn, update: bool) -> Any:
    if not draw(st.integers(0, 8)):
        return draw(st.sampled_from([5, [], {"bogus": 1}, {}]))
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["hnsw"] = tuning(draw, UPDATE_HNSW_FIELDS if update else HNSW_FIELDS) if draw(st.integers(0, 5)) else None
    if not draw(st.integers(0, 3)):
        out["spann"] = tuning(draw, ["search_nprobe", "ef_search", "space"])
    if not draw(st.integers(0, 3)):
        out["embedding_function"] = draw(EMBEDDING_FUNCTIONS)
    return out


def collection_metadata(nullable: bool) -> st.SearchStrategy[dict[str, Any]]:
    values = st.one_of(COLLECTION_VALUES, st.none()) if nullable else COLLECTION_VALUES
    return st.dictionaries(COLLECTION_KEYS, values, max_size=3)


def several_bad_keys(metadata: Any) -> bool:
    """Chroma visits collection metadata in hash-map order: of several bad keys it names any one."""
    bad = [key for key, value in (metadata or {}).items()
           if not key or key[0] in "#$" or (isinstance(value, dict) and not _sorted_sparse(value))]
    return len(bad) > 1


def _sorted_sparse(value: dict[str, Any]) -> bool:
    indices = value.get("indices", [])
    return len(indices) == len(value.get("values", [])) and indices == sorted(set(indices))


@st.composite
def collection_creates(draw: st.DrawFn) -> Request:
    body: dict[str, Any] = {"name": draw(NAMES)}
    optional(draw, body, "metadata", collection_metadata(nullable=False))
    optional(draw, body, "configuration", configurations(update=False))
    optional(draw, body, "get_or_create", st.booleans())
    return Request("create", "POST", COLS, body, exact=not several_bad_keys(body.get("metadata")))


@st.composite
def collection_updates(draw: st.DrawFn) -> Request:
    body: dict[str, Any] = {}
    optional(draw, body, "new_name", st.one_of(NAMES, st.none()))
    optional(draw, body, "new_metadata", collection_metadata(nullable=True))
    optional(draw, body, "new_configuration", configurations(update=True))
    return Request("modify", "PUT", SCRATCH, body, exact=not several_bad_keys(body.get("new_metadata")))


REQUESTS = st.one_of(records_writes(), filtered_requests(), collection_creates(), collection_updates())


def _records(kind: str, metadata: Any, **extra: Any) -> Request:
    body = {"ids": ["e1"], "metadatas": [metadata], **extra}
    if kind != "update":
        body.setdefault("embeddings", [[0.5, 0.5, 0.5]])
    return Request(kind, "POST", TARGET + "/" + kind, body)


# Every finding of README.md's list, and inputs that used to be refused only in apply: run first,
# as hypothesis's explicit examples, so that each is checked whatever the generator draws.
FINDINGS = [
    _records("add", {"chroma:document": 5}), _records("upsert", {"chroma:document": True}),
    _records("update", {"chroma:document": None}), _records("add", {"chroma:document": "text", "k": 1}),
    _records("add", {"chroma:uri": "u"}), _records("upsert", {"chroma:x": [1]}),
    _records("add", {"chroma:document": 5}, embeddings=[[0.5, 0.5]]),  # the wrong dimension is reported first
    _records("add", {"#x": 1}), _records("update", {"": None}), _records("add", {"ok": 1}, ids=[""]),
    _records("add", {"fl": [0.5, -1e39, 1e39], "big": 2 ** 64}),
    _records("upsert", None, embeddings=[b64([float("nan"), 1.0, 1.0])]),
    Request("create", "POST", COLS, {"name": "gen-one", "metadata": {"l": [1, 2]}}),
    Request("create", "POST", COLS, {"name": "gen-one", "metadata": {"l": []}}),
    Request("create", "POST", COLS, {"name": "gen-one", "metadata": {"s": {"indices": [0], "values": [1.0]}}}),
    Request("create", "POST", COLS, {"name": "target", "get_or_create": True, "metadata": {"l": ["a"]}}),
    Request("create", "POST", COLS, {"name": "gen-one", "configuration": {"hnsw": {"max_neighbors": 0}}}),
    Request("create", "POST", COLS, {"name": "gen-one", "configuration": {"hnsw": {"max_neighbors": 2 ** 31 - 1}}}),
    Request("create", "POST", COLS, {"name": "gen-one", "metadata": {"hnsw:M": 0}}),
    Request("create", "POST", COLS, {"name": "gen-one", "schema": {"defaults": {}, "keys": {"#embedding": {
        "float_list": {"vector_index": {"enabled": True, "config": {"space": "l2", "hnsw": {"max_neighbors": 0}}}}}}}}),
    Request("create", "POST", COLS, {"name": "gen-one", "schema": {"defaults": {}, "keys": {"#embedding": {
        "float_list": {"vector_index": {"enabled": True, "config": {"space": "ip", "hnsw": {"max_neighbors": 8}}}}}}}}),
    Request("create", "POST", COLS, {"name": "gen-one", "metadata": {"hnsw:M": 1, "chroma:document": 5}}),
    Request("create", "POST", COLS, {"name": "gen-one", "configuration": {"hnsw": {"sync_threshold": 0, "batch_size": 0,
                                                                                   "resize_factor": -5, "ef_search": 0}}}),
    Request("create", "POST", COLS, {"name": "a..b", "metadata": {"#x": 1}}),
    Request("create", "POST", COLS, {"name": "gen-one", "configuration": {"hnsw": {"space": "ip", "bogus": 1}}}),
    Request("create", "POST", COLS, {"name": "gen-one", "metadata": {"hnsw:batch_size": 1}}),
    Request("modify", "PUT", SCRATCH, {"new_metadata": {"l": [1]}}),
    Request("modify", "PUT", SCRATCH, {"new_metadata": {"s": {"indices": [0], "values": [1.0]}}}),
    Request("modify", "PUT", SCRATCH, {"new_configuration": {"hnsw": {"max_neighbors": 0}}}),
    Request("modify", "PUT", SCRATCH, {"new_configuration": {"hnsw": {"space": "ip"}}}),
    Request("modify", "PUT", SCRATCH, {"new_name": "a..b", "new_metadata": {"#x": 1}}),
    Request("delete", "POST", TARGET + "/delete", {"where": {"k": {"$in": []}}}),
    Request("delete", "POST", TARGET + "/delete", {"where_document": {"$regex": "("}}),
    Request("delete", "POST", TARGET + "/delete", {"ids": ["s1"], "limit": 1}),
    Request("get", "POST", TARGET + "/get", {"where": {"n": {"$in": [2.5, 1]}}}),
    Request("query", "POST", TARGET + "/query", {"query_embeddings": [[1e39, 0, 0]], "n_results": 2}, exact=False),
]


# ------------------------------------------------------------- the oracle of the findings


def breaks_chroma(request: Request) -> bool:
    """Whether the request holds an input that chroma run 1.5.9 accepts and then breaks on
    (README.md, "Differences from a single Chroma server"); stated independently of parse.py."""
    body = request.body
    if request.kind in ("add", "upsert", "update"):
        return any(isinstance(m, dict) and any(k.startswith(RESERVED_PREFIX) for k in m)
                   for m in body.get("metadatas") or [])
    if request.kind in ("create", "modify"):
        metadata = body.get("metadata" if request.kind == "create" else "new_metadata") or {}
        configuration = body.get("configuration" if request.kind == "create" else "new_configuration")
        hnsw = configuration.get("hnsw") if isinstance(configuration, dict) else None
        neighbors = [hnsw.get("max_neighbors") if isinstance(hnsw, dict) else None, metadata.get("hnsw:M"),
                     *_schema_neighbors(body.get("schema"))]
        return (any(isinstance(v, (list, dict)) for v in metadata.values())
                or any(type(n) is int and n not in MAX_NEIGHBORS_RANGE for n in neighbors))
    return False


def _schema_neighbors(schema: Any) -> list[Any]:
    if not isinstance(schema, dict):
        return []
    types = [schema.get("defaults"), *(schema.get("keys") or {}).values()]
    return [t["float_list"]["vector_index"]["config"]["hnsw"].get("max_neighbors") for t in types
            if isinstance(t, dict) and "hnsw" in t.get("float_list", {}).get("vector_index", {}).get("config", {})]


def deliberately_refused(reply: Reply) -> bool:
    return (reply.status == 400 and error_name(reply.body) == "InvalidArgumentError"
            and DELIBERATE_REFUSAL_RE.match(str(reply.body.get("message", ""))) is not None)


# ---------------------------------------------------------------------- comparing


def comparable(request: Request, reply: Reply, side: Side) -> Any:
    status, body = normalise_reply(reply, side.ids)
    if not request.exact and status == 200:
        return status
    if isinstance(body, dict) and set(body) == {"error", "message"}:
        message = body["message"]
        if message.startswith(VALIDATION_PREFIX):  # validator errors come in hash-map order
            message = VALIDATION_PREFIX + "\n".join(sorted(message[len(VALIDATION_PREFIX):].split("\n")))
        return status, {"error": body["error"], "message": message if request.exact else "<varies>"}
    if request.kind == "query" and status == 200:
        n_results = request.body.get("n_results")
        return status, canonical_query(body, 10 if not isinstance(n_results, int) else n_results)
    return status, body


def check_same(label: str, request: Request, chroma: Reply, raft: Reply, pair: Pair) -> None:
    expected, actual = comparable(request, chroma, pair.chroma), comparable(request, raft, pair.raft)
    detail = "\n    ".join(differences(expected, actual))
    assert expected == actual, f"{label}: chroma run and raftchroma differ\n    {detail}"


def normal_write(pair: Pair, path: str, label: str) -> None:
    """A plain add on both sides: it must succeed on raftchroma within the deadline (no wedge) and
    on chroma run (a request that broke it unnoticed would show here)."""
    pair.written += 1
    body = {"ids": [f"h{pair.written}"], "embeddings": [[0.1, 0.2, 0.3]], "metadatas": [{"k": "h"}],
            "documents": ["healthy"]}
    raft = pair.raft.send("POST", path + "/add", body, timeout_s=WRITE_DEADLINE_S)
    assert raft.status == 201, f"raftchroma no longer takes a normal write after {label}: {raft}"
    chroma = pair.chroma.send("POST", path + "/add", body)
    assert chroma.status == 201, f"chroma run broke after {label} and raftchroma did not refuse it: {chroma}"


def exercise_and_drop(pair: Pair, request: Request, key: str) -> None:
    """A collection the request created or changed: written, queried, read back, dropped."""
    normal_write(pair, COLS + "/{" + key + "}", f"{request.kind} {request.body!r}")
    query = Request("query", "POST", COLS + "/{" + key + "}/query", {"query_embeddings": [[0.1, 0.2, 0.3]],
                                                                     "n_results": 1})
    replies = [side.send("POST", query.path, query.body) for side in (pair.chroma, pair.raft)]
    check_same("query after " + request.kind, query, *replies, pair)
    read = Request("read", "GET", COLS + "/by-id/{" + key + "}", None)
    replies = [side.send("GET", read.path) for side in (pair.chroma, pair.raft)]
    check_same("collection after " + request.kind, read, *replies, pair)
    for side, reply in zip((pair.chroma, pair.raft), replies):
        dropped = side.send("DELETE", COLS + "/" + reply.body["name"])
        assert dropped.status == 200, (side.name, dropped)
        side.saved.pop(key)


def make_scratch(pair: Pair) -> None:
    for side in (pair.chroma, pair.raft):
        created = side.send("POST", COLS, {"name": "scratch"})
        assert created.status == 200, (side.name, created)
        side.saved["scratch"] = created.body["id"]
        side.ids.placeholder(created.body["id"])


def run_example(pair: Pair, request: Request) -> None:
    note(f"request: {request.method} {request.path} {request.body!r}")
    if request.kind == "modify":
        make_scratch(pair)
    raft = pair.raft.send(request.method, request.path, request.body)
    note(f"raftchroma: {raft.status} {raft.body!r}")
    if deliberately_refused(raft):
        pair.outcomes[f"{request.kind}: refused, as it breaks chroma run"] += 1
        assert breaks_chroma(request), f"raftchroma refused an input chroma run handles: {raft.body}"
    else:
        pair.outcomes[f"{request.kind}: {raft.status}"] += 1
        assert raft.status != DROPPED, f"raftchroma dropped the connection or timed out: {raft.body}"
        chroma = pair.chroma.send(request.method, request.path, request.body)
        note(f"chroma run: {chroma.status} {chroma.body!r}")
        assert chroma.status != DROPPED, f"chroma run broke on an input raftchroma did not refuse: {chroma.body}"
        check_same(request.kind, request, chroma, raft, pair)
        if request.kind == "create" and raft.status == 200 and request.body["name"] != "target":
            for side, reply in zip((pair.chroma, pair.raft), (chroma, raft)):
                side.saved["created"] = reply.body["id"]
            exercise_and_drop(pair, request, "created")  # its first write is the normal write
            return
    if request.kind == "modify":
        exercise_and_drop(pair, request, "scratch")
    else:
        normal_write(pair, TARGET, f"{request.kind} {request.body!r}")


def final_state(pair: Pair) -> None:
    read = Request("get", "POST", TARGET + "/get", {"include": ["documents", "metadatas", "embeddings", "uris"]})
    replies = [side.send("POST", read.path, read.body) for side in (pair.chroma, pair.raft)]
    check_same("target collection at the end", read, *replies, pair)


def test_generated_requests_answer_like_chroma(pair: Pair) -> None:
    @seed(int(SEED or 0))
    @settings(derandomize=SEED is None, max_examples=MAX_EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(request=REQUESTS)
    def one_request(request: Request) -> None:
        if pair.failure is not None:  # hypothesis replays a failing example: the state has moved on
            raise pair.failure
        try:
            run_example(pair, request)
        except BaseException as exc:
            pair.failure = exc
            raise

    for finding in reversed(FINDINGS):  # explicit examples run in the order they are listed
        one_request = example(request=finding)(one_request)
    one_request()
    print("raftchroma's answers to the generated requests:", dict(sorted(pair.outcomes.items())))
    final_state(pair)


# ------------------------------------------------------------------ negative control


def test_refused_inputs_really_break_chroma_run(tmp_path: Path) -> None:
    """Without raftchroma's refusals: a list in collection metadata makes chroma run drop the
    connection; a non-string 'chroma:document' in record metadata makes every later request on
    the server answer 500; max_neighbors 0 kills the process once the collection holds two records."""
    chroma = ChromaRun(tmp_path)
    side = Side("chroma", chroma.url)
    try:
        chroma.start()
        chroma.wait_ready()
        assert side.send("POST", COLS, {"name": "listed", "metadata": {"l": [1]}}).status == DROPPED
        side.saved["c"] = side.send("POST", COLS, {"name": "plain"}).body["id"]
        side.send("POST", COLS + "/{c}/add", {"ids": ["a"], "embeddings": [[1.0]], "metadatas": [{"chroma:document": 5}]})
        other = side.send("POST", COLS, {"name": "other"}).body["id"]
        later = side.send("POST", f"{COLS}/{other}/add", {"ids": ["b"], "embeddings": [[1.0]]})
        assert later.status == 500, later
        chroma.stop()
        chroma.root = tmp_path / "second"
        chroma.root.mkdir()
        chroma.start()
        chroma.wait_ready()
        side.saved["m"] = side.send("POST", COLS, {"name": "zero", "configuration": {"hnsw": {"max_neighbors": 0}}}
                                    ).body["id"]
        assert side.send("POST", COLS + "/{m}/add", {"ids": ["a", "b"], "embeddings": [[1.0], [2.0]]}).status == DROPPED
        chroma.process.wait(timeout=30)
        assert not chroma.alive()
    finally:
        chroma.stop()
