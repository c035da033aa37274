"""Pure tests of request validation against hostile and edge-case input (raftchroma/http/parse.py).

Rule under test: nothing that Chroma refuses, or that breaks Chroma, enters the Raft log. Every
expected answer below marked "chroma" is what `chroma run` 1.5.9 answered to the same body (the
property test tests/test_differential_property.py keeps checking them against a live server);
those marked "refused" are raftchroma's deliberate 400s for inputs that `chroma run` accepts and
then breaks on. No server is started here.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

import numpy as np
import pytest

from raftchroma.errors import ApiError
from raftchroma.http import parse

E3 = [[1.0, 2.0, 3.0]]
INVALID_WHERE = (400, "InvalidArgumentError", "Invalid where clause")
INVALID_WHERE_DOCUMENT = (400, "InvalidArgumentError", "Invalid where document clause")


def answer(spec: parse.Struct, body: Any, stage3: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """"ok", or (status, error name, message) as raftchroma would answer before proposing."""
    try:
        out = parse.payload(json.dumps(body).encode(), spec)
        if stage3 is not None:
            stage3(out)
        return "ok"
    except ApiError as exc:
        return exc.status, exc.name, exc.message


def records_answer(kind: str, body: Any) -> Any:
    spec = {"add": parse.ADD, "upsert": parse.UPSERT, "update": parse.UPDATE}[kind]
    return answer(spec, body, lambda out: parse.records(out, kind))


def b64(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


# ------------------------------------------------------------- records: reserved keys


@pytest.mark.parametrize("kind", ["add", "upsert", "update"])
@pytest.mark.parametrize("value", [5, "text", True, 1.5, ["a"], None])
def test_reserved_chroma_keys_never_reach_the_log(kind: str, value: Any) -> None:
    """chroma run 1.5.9: {"chroma:document": 5} (also 1.5, true, a list, and null in an update)
    panics its compactor and every later request on the server answers 500; a string becomes the
    record's document, and other chroma: keys are dropped. raftchroma refuses them all."""
    if value is None and kind != "update":
        pytest.skip("null metadata values exist only in updates")
    body = {"ids": ["a"], "metadatas": [{"ok": 1, "chroma:document": value}]}
    if kind != "update":
        body["embeddings"] = E3
    status, name, message = records_answer(kind, body)
    assert (status, name) == (400, "InvalidArgumentError")
    assert "Invalid metadata at index 0: the key 'chroma:document' is reserved" in message


def test_any_chroma_prefixed_key_is_refused_and_named() -> None:
    for key in ("chroma:uri", "chroma:", "chroma:anything"):
        _, _, message = records_answer("add", {"ids": ["a", "b"], "embeddings": E3 * 2,
                                               "metadatas": [None, {key: "x"}]})
        assert f"index 1: the key '{key}' is reserved" in message


@pytest.mark.parametrize("key", ["CHROMA:document", "a:chroma:", "chroma", "document"])
def test_keys_that_merely_resemble_reserved_ones_pass(key: str) -> None:
    assert records_answer("add", {"ids": ["a"], "embeddings": E3, "metadatas": [{key: 1}]}) == "ok"


def test_reserved_key_refusal_waits_for_the_dimension_check() -> None:
    """Chroma reports a wrong dimension before anything after its validators, so the refusal is
    a LengthMismatch: the caller checks the collection's dimension first (app.checked)."""
    body = {"ids": ["a"], "embeddings": [[1.0, 2.0]], "metadatas": [{"chroma:document": 1}]}
    with pytest.raises(parse.LengthMismatch) as caught:
        parse.records(parse.payload(json.dumps(body).encode(), parse.ADD), "add")
    assert caught.value.dimension == 2


def test_chroma_errors_come_before_the_reserved_key_refusal() -> None:
    body = {"ids": ["a", "b"], "embeddings": E3, "metadatas": [{"chroma:document": 1}]}
    assert records_answer("add", body) == (400, "InvalidArgumentError", parse.LENGTH_MISMATCH_MESSAGE)
    body = {"ids": [""], "embeddings": E3, "metadatas": [{"chroma:document": 1}]}
    assert records_answer("add", body) == (400, "InvalidArgumentError", parse.EMPTY_ID_MESSAGE)


# -------------------------------------------------------- records: Chroma's own checks


@pytest.mark.parametrize("kind", ["add", "upsert", "update"])
@pytest.mark.parametrize("key", ["", "#document", "#x", "$and", "$x"])
def test_bad_metadata_keys_are_chromas_validation_error(kind: str, key: str) -> None:
    body = {"ids": ["a", "b"], "metadatas": [{"fine": 1}, {key: None if kind == "update" else 1}]}
    if kind != "update":
        body["embeddings"] = E3 * 2
    assert records_answer(kind, body) == (400, "InvalidArgumentError",
                                          "Validation error: metadatas: Invalid metadata at index 1")


def test_validator_errors_are_reported_together() -> None:
    """chroma: "Validation error: embeddings: ...\\nmetadatas: Invalid metadata at index 0"."""
    body = {"ids": ["a"], "embeddings": [[1e39, 1.0, 1.0]], "metadatas": [{"#x": 1}]}
    assert records_answer("add", body) == (
        400, "InvalidArgumentError",
        "Validation error: embeddings: Embeddings must not contain NaN or Infinity values\n"
        "metadatas: Invalid metadata at index 0")


def test_bad_metadata_key_beats_length_and_empty_id() -> None:
    body = {"ids": ["", "b"], "embeddings": E3, "metadatas": [{"#x": 1}]}
    assert records_answer("add", body)[2] == "Validation error: metadatas: Invalid metadata at index 0"


@pytest.mark.parametrize("kind", ["add", "upsert", "update"])
def test_empty_id_is_refused_after_the_length_check(kind: str) -> None:
    body = {"ids": [""]} if kind == "update" else {"ids": [""], "embeddings": E3}
    assert records_answer(kind, body) == (400, "InvalidArgumentError", parse.EMPTY_ID_MESSAGE)
    body = {"ids": ["", "b"], "documents": ["x"]}
    if kind != "update":
        body["embeddings"] = E3 * 2
    assert records_answer(kind, body)[2] == parse.LENGTH_MISMATCH_MESSAGE


@pytest.mark.parametrize("values, expected", [
    ([1.0, float("nan")], "Non-finite float value at embedding index 1: NaN"),
    ([float("inf")], "Non-finite float value at embedding index 0: inf"),
    ([float("-inf"), 1.0], "Non-finite float value at embedding index 0: -inf"),
])
@pytest.mark.parametrize("kind", ["add", "upsert", "update"])
def test_non_finite_base64_embeddings_are_refused_while_decoding(kind: str, values: list[float],
                                                                  expected: str) -> None:
    body = {"ids": ["a"], "embeddings": [b64(values)], "metadatas": [{"#x": 1}]}
    assert records_answer(kind, body) == (400, "InvalidArgumentError", expected)


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38])
def test_float_embeddings_beyond_float32_are_non_finite(value: float) -> None:
    assert records_answer("add", {"ids": ["a"], "embeddings": [[value, 0.0]]})[2] == (
        "Validation error: embeddings: Embeddings must not contain NaN or Infinity values")


@pytest.mark.parametrize("raw", [b'[NaN]', b'[Infinity]', b'[-Infinity]', b'[1e400]', b'[-1e400]'])
def test_non_finite_literals_never_parse(raw: bytes) -> None:
    body = b'{"ids": ["a"], "embeddings": [' + raw + b']}'
    with pytest.raises(ApiError) as caught:
        parse.payload(body, parse.ADD)
    assert (caught.value.status, caught.value.name) == (400, "InvalidArgumentError")
    assert caught.value.message.startswith("Failed to parse the request body as JSON")


@pytest.mark.parametrize("raw, path", [
    (b'{"ids":["a"],"embeddings":[[1,2,3]],"metadatas":[{"a":[1e400]}]}', "metadatas[0].a[0]"),
    (b'{"ids":["a"],"embeddings":[[1,2,3]],"metadatas":[{"a":[0.5, -1E+0400]}]}', "metadatas[0].a[1]"),
    (b'{"ids":["a"],"embeddings":[[1,2,3]],"metadatas":[{"a":[' + b"9" * 400 + b'.0]}]}', "metadatas[0].a[0]"),
    (b'{"ids":["a"],"embeddings":[[1e400,2,3]]}', "embeddings[0][0]"),
    (b'{"ids":["a"],"embeddings":[[1,2,3]],"metadatas":[{"s":{"indices":[1],"values":[1e400]}}]}',
     "metadatas[0].s.values[0]"),
])
def test_floats_beyond_f64_inside_arrays_are_syntax_errors(raw: bytes, path: str) -> None:
    """Python reads 1e400 as infinity, even deep inside a list; serde_json refuses it, and chroma
    run answers as below. Before this was checked, an infinite metadata list value was proposed."""
    with pytest.raises(ApiError) as caught:
        parse.payload(raw, parse.ADD)
    assert caught.value.message == f"Failed to parse the request body as JSON: {path}: number out of range"


def test_floats_near_the_f64_limit_still_take_the_fast_path() -> None:
    body = parse.payload(b'{"ids":["a"],"embeddings":[[1,2,3]],"metadatas":[{"a":[1e308, -1e308, 1e-400]}]}',
                         parse.ADD)
    assert body["metadatas"] == [{"a": [1e308, -1e308, 0.0]}]


@pytest.mark.parametrize("metadata", [
    {"big": 2 ** 63}, {"huge": 10 ** 30}, {"f": 1e39}, {"fl": [1e39, -1e39]}, {"mixed": [1, 2.5]},
    {"nul\x00key": "v\x00"}, {"e": ""}, {"s": ["", "x"]},
])
def test_metadata_values_chroma_stores_faithfully_pass(metadata: dict[str, Any]) -> None:
    """Metadata numbers are f64 in Chroma: 1e39 is finite there; integers beyond i64 become f64."""
    assert records_answer("add", {"ids": ["a"], "embeddings": E3, "metadatas": [metadata]}) == "ok"


# ---------------------------------------------------------------------------- where


VALID_WHERE = [
    {"a": "x"}, {"a": True}, {"a": 1}, {"a": 1.5}, {"a": 2 ** 64}, {"$and": []}, {"$or": []},
    {"$and": [{"a": 1}, {"b": {"$ne": "x"}}]}, {"a": {"$in": [1, 2]}}, {"a": {"$in": [2.5, 1]}},
    {"a": {"$nin": ["x", ""]}}, {"a": {"$in": [True]}}, {"l": {"$contains": 1}}, {"l": {"$not_contains": "x"}},
    {"a": {"$gt": 1e39}}, {"a": {"$lte": -3}}, {"#document": {"$contains": "x"}}, {"#document": {"$regex": "abc"}},
    {"chroma:document": "x"}, {"": 1}, {"a\x00": 1}, {"a": {"$eq": False}},
]
INVALID_WHERE_CLAUSES = [
    {}, {"a": 1, "b": 2}, {"$and": {"a": 1}}, {"$and": [{}]}, {"$not": [{"a": 1}]}, {"$contains": "x"},
    {"a": None}, {"a": [1]}, {"a": 2 ** 63}, {"a": {}}, {"a": {"$eq": 1, "$ne": 2}}, {"a": {"$in": []}},
    {"a": {"$nin": []}}, {"a": {"$in": [1, "x"]}}, {"a": {"$in": [1, 2.5]}}, {"a": {"$in": [2 ** 63]}},
    {"a": {"$in": [None]}}, {"a": {"$eq": None}}, {"a": {"$eq": [1]}}, {"a": {"$gt": True}}, {"a": {"$gt": "s"}},
    {"a": {"$gt": 2 ** 63}}, {"a": {"$foo": 1}}, {"a": {"$regex": "x"}}, {"#document": {"$contains": 1}},
    {"#document": {"$not_contains": True}}, {"a": {"$eq": {"b": 1}}}, "x", 5, [{"a": 1}],
]


@pytest.mark.parametrize("where", VALID_WHERE, ids=repr)
def test_valid_where_clauses_pass(where: Any) -> None:
    assert answer(parse.GET, {"where": where}, parse.get_request) == "ok"


@pytest.mark.parametrize("where", INVALID_WHERE_CLAUSES, ids=repr)
@pytest.mark.parametrize("spec, stage3", [(parse.GET, parse.get_request), (parse.DELETE, parse.delete_request)],
                         ids=["get", "delete"])
def test_invalid_where_clauses_are_refused_before_proposing(where: Any, spec: parse.Struct, stage3: Any) -> None:
    assert answer(spec, {"where": where}, stage3) == INVALID_WHERE


@pytest.mark.parametrize("where_document", [
    {}, {"$contains": 5}, {"$foo": "x"}, {"$contains": "a", "$regex": "a"}, {"$and": "x"}, {"$or": [{}]},
    {"$and": [{"$contains": "a"}, {"$not_contains": None}]}, "x",
], ids=repr)
def test_invalid_where_documents_are_refused(where_document: Any) -> None:
    assert answer(parse.DELETE, {"where_document": where_document}, parse.delete_request) == INVALID_WHERE_DOCUMENT


def test_where_is_judged_before_where_document() -> None:
    body = {"where": {"a": {}}, "where_document": {"$foo": "x"}}
    assert answer(parse.GET, body, parse.get_request) == INVALID_WHERE


@pytest.mark.parametrize("body", [
    {"where_document": {"$regex": "("}}, {"where_document": {"$not_regex": "["}},
    {"where": {"#document": {"$regex": "a+("}}},
    # Chroma reports a bad regex where it meets it, before any later error; left to the store whole.
    {"where_document": {"$and": [{"$regex": "(a|b)"}, {"$foo": 1}]}},
])
def test_regular_expressions_other_than_literals_are_left_to_the_store(body: dict[str, Any]) -> None:
    assert answer(parse.DELETE, body, parse.delete_request) == "ok"


def test_a_literal_regex_does_not_stop_validation() -> None:
    body = {"where_document": {"$and": [{"$regex": "plain words"}, {"$foo": 1}]}}
    assert answer(parse.DELETE, body, parse.delete_request) == INVALID_WHERE_DOCUMENT


def test_delete_needs_a_filter_for_empty_ids_or_a_limit() -> None:
    assert answer(parse.DELETE, {"ids": []}, parse.delete_request)[2] == (
        "Validation error: ids, where: Either ids or where must be specified")
    assert answer(parse.DELETE, {"ids": ["a"], "limit": 1}, parse.delete_request)[2] == (
        "Validation error: limit, where: limit can only be specified when a where clause is provided")
    assert answer(parse.DELETE, {"ids": [], "where_document": {"$contains": "a"}, "limit": 1},
                  parse.delete_request) == "ok"


# ------------------------------------------------------------ collections: Chroma's checks


def create(**body: Any) -> Any:
    return answer(parse.CREATE_COLLECTION, {"name": "coll", **body})


NAME_RULE = ("Validation error: name: Expected a name containing 3-512 characters from [a-zA-Z0-9._-], starting "
             "and ending with a character in [a-zA-Z0-9]. Got: ")


@pytest.mark.parametrize("name, expected", [
    ("abc", "ok"), ("a" * 512, "ok"), ("a.b-c_d", "ok"), ("abc+def", "ok"), ("1.2.3", "ok"), ("256.1.1.1", "ok"),
    ("ab", NAME_RULE + "ab"), ("a" * 513, NAME_RULE + "a" * 513), ("abé", NAME_RULE + "abé"), ("", NAME_RULE),
    ("abc\n", NAME_RULE + "abc\n"), ("-abc", NAME_RULE + "-abc"), ("ab\x00c", NAME_RULE + "ab\x00c"),
    ("a..b", "Validation error: name: Expected a name that does not contains two consecutive periods (..). Got a..b"),
    ("127.0.0.1", "Validation error: name: Expected a name that is not a valid ip address. Got 127.0.0.1"),
    ("abc+d", NAME_RULE + "d"),
    ("a+b+c", "Validation error: name: Expected a name to contain at most one topology:  Got two `+` characters."),
])
def test_collection_names(name: str, expected: str) -> None:
    result = create(name=name)
    assert result == "ok" if expected == "ok" else result == (400, "InvalidArgumentError", expected)


@pytest.mark.parametrize("metadata, expected", [
    ({}, "Validation error: metadata: Metadata cannot be empty"),
    ({"": 1}, "Validation error: metadata: Metadata key cannot be empty"),
    ({"#x": 1}, "Validation error: metadata: Metadata key cannot start with '#' or '$': #x"),
    ({"ok": 1, "$x": 1}, "Validation error: metadata: Metadata key cannot start with '#' or '$': $x"),
    ({"hnsw:batch_size": 1}, "Failed to parse hnsw parameters from segment metadata"),
    ({"hnsw:sync_threshold": 0}, "Failed to parse hnsw parameters from segment metadata"),
    ({"hnsw:M": -1}, "Failed to parse hnsw parameters from segment metadata"),
    ({"hnsw:M": 5.0}, "Failed to parse hnsw parameters from segment metadata"),
    ({"hnsw:space": "bogus"}, "Failed to parse hnsw parameters from segment metadata"),
    ({"hnsw:bogus": 1}, "Failed to parse hnsw parameters from segment metadata"),
    ({"hnsw:batch_size": 2 ** 63}, "Failed to parse hnsw parameters from segment metadata"),
])
def test_collection_metadata_chroma_refuses(metadata: dict[str, Any], expected: str) -> None:
    assert create(metadata=metadata) == (400, "InvalidArgumentError", expected)


@pytest.mark.parametrize("metadata", [
    {"chroma:document": 5}, {"chroma:foo": "x"}, {"hnsw:space": "ip", "hnsw:resize_factor": 5},
    {"hnsw:M": 1, "hnsw:construction_ef": 0, "hnsw:search_ef": 0, "hnsw:batch_size": 2}, {"f": 1e39},
])
def test_collection_metadata_chroma_accepts(metadata: dict[str, Any]) -> None:
    """Reserved keys do no harm in collection metadata: Chroma keeps them as sent."""
    assert create(metadata=metadata) == "ok"


def test_name_and_metadata_errors_are_reported_together() -> None:
    assert create(name="a", metadata={"#a": 1}) == (
        400, "InvalidArgumentError",
        NAME_RULE + "a\nmetadata: Metadata key cannot start with '#' or '$': #a")


def test_configuration_errors_come_before_name_errors() -> None:
    assert create(name="a", metadata={"hnsw:batch_size": 1})[2] == "Failed to parse hnsw parameters from segment metadata"
    assert create(name="a", configuration={"hnsw": {}, "spann": {}})[2] == "Multiple vector index configurations provided"


def test_hnsw_metadata_is_ignored_next_to_a_spann_configuration() -> None:
    assert create(configuration={"spann": {}}, metadata={"hnsw:batch_size": 1}) == "ok"
    assert create(configuration={"hnsw": {"ef_search": 5}}, metadata={"hnsw:batch_size": 1})[2] == (
        "Failed to parse hnsw parameters from segment metadata")


UNPROCESSABLE = "Failed to deserialize the JSON body into the target type: "
HNSW_FIELDS = ("`space`, `ef_construction`, `ef_search`, `max_neighbors`, `num_threads`, `resize_factor`, "
               "`sync_threshold`, `batch_size`")


@pytest.mark.parametrize("configuration, expected", [
    ({"hnsw": {"bogus": 1}}, f"configuration.hnsw.bogus: unknown field `bogus`, expected one of {HNSW_FIELDS}"),
    ({"hnsw": 5}, "configuration.hnsw: invalid type: integer `5`, expected struct HnswConfiguration"),
    ({"hnsw": {"ef_search": -1}}, "configuration.hnsw.ef_search: invalid value: integer `-1`, expected usize"),
    ({"hnsw": {"ef_search": 1.5}}, "configuration.hnsw.ef_search: invalid type: floating point `1.5`, expected usize"),
    ({"hnsw": {"ef_search": True}}, "configuration.hnsw.ef_search: invalid type: boolean `true`, expected usize"),
    ({"hnsw": {"ef_search": 2 ** 64}},
     "configuration.hnsw.ef_search: invalid type: floating point `1.8446744073709552e+19`, expected usize"),
    ({"hnsw": {"resize_factor": "x"}}, 'configuration.hnsw.resize_factor: invalid type: string "x", expected f64'),
    ({"hnsw": {"space": "bogus"}},
     "configuration.hnsw.space: unknown variant `bogus`, expected one of `l2`, `cosine`, `ip`"),
    ({"spann": {"search_nprobe": 2 ** 32}},
     "configuration.spann.search_nprobe: invalid value: integer `4294967296`, expected u32"),
    ({"embedding_function": 5}, "configuration.embedding_function: invalid type: integer `5`, expected internally "
                                "tagged enum EmbeddingFunctionConfiguration"),
    ({"embedding_function": {}}, "configuration.embedding_function: missing field `type`"),
    ({"embedding_function": {"type": 5}},
     "configuration.embedding_function.type: invalid type: integer `5`, expected variant identifier"),
    ({"embedding_function": {"type": "bogus"}}, "configuration.embedding_function.type: unknown variant `bogus`, "
                                                "expected one of `legacy`, `known`, `unknown`"),
    ({"embedding_function": {"type": "known", "name": "x"}}, "configuration.embedding_function: missing field `config`"),
    ({"embedding_function": {"type": "known", "name": 5, "config": {}}},
     "configuration.embedding_function: invalid type: integer `5`, expected a string"),
])
def test_configuration_is_deserialized_as_chroma_types_it(configuration: Any, expected: str) -> None:
    assert create(configuration=configuration) == (422, "ChromaError", UNPROCESSABLE + expected)


@pytest.mark.parametrize("configuration", [
    {"bogus": 1}, {}, {"hnsw": None}, {"hnsw": {"space": None}}, {"hnsw": {"space": {"l2": None}}},
    {"hnsw": {"ef_search": 0, "sync_threshold": 0, "batch_size": 0, "resize_factor": -5}},
    {"spann": {"space": "ip", "search_nprobe": 0}}, {"embedding_function": {"type": "legacy", "x": 1}},
    {"embedding_function": {"name": "n", "config": 1, "type": "known"}},
])
def test_configurations_chroma_accepts(configuration: Any) -> None:
    assert create(configuration=configuration) == "ok"


def test_a_space_that_is_not_a_string_is_a_syntax_error() -> None:
    assert create(configuration={"hnsw": {"space": 5}}) == (
        400, "InvalidArgumentError", "Failed to parse the request body as JSON: configuration.hnsw.space: expected value")


@pytest.mark.parametrize("new_configuration, expected", [
    ({"hnsw": {"space": "l2"}}, "new_configuration.hnsw.space: unknown field `space`, expected one of `ef_search`, "
                                "`max_neighbors`, `num_threads`, `resize_factor`, `sync_threshold`, `batch_size`"),
    ({"spann": {"space": "l2"}}, "new_configuration.spann.space: unknown field `space`, expected `search_nprobe` or "
                                 "`ef_search`"),
    ({"hnsw": {"ef_search": 1.0}}, "new_configuration.hnsw.ef_search: invalid type: floating point `1.0`, "
                                   "expected usize"),
    (5, "new_configuration: invalid type: integer `5`, expected struct UpdateCollectionConfiguration"),
])
def test_update_configuration_is_deserialized_as_chroma_types_it(new_configuration: Any, expected: str) -> None:
    assert answer(parse.UPDATE_COLLECTION, {"new_configuration": new_configuration}) == (
        422, "ChromaError", UNPROCESSABLE + expected)


@pytest.mark.parametrize("body", [
    {"new_name": "a"}, {"new_metadata": {}}, {"new_metadata": {"#x": 1}},
    {"new_configuration": {"hnsw": {}, "spann": {}}},
])
def test_update_checks_chroma_makes_after_its_lookup_stay_in_the_store(body: dict[str, Any]) -> None:
    """chroma run answers 404 for these when the collection is missing, which only the store knows."""
    assert answer(parse.UPDATE_COLLECTION, body) == "ok"


# ---------------------------------------------------------- collections: refused by raftchroma


@pytest.mark.parametrize("value, kind", [([1], "a list"), (["a"], "a list"), ([], "a list"), ([True], "a list"),
                                         ({"indices": [0], "values": [1.0]}, "a sparse vector")])
@pytest.mark.parametrize("spec, field", [(parse.CREATE_COLLECTION, "metadata"),
                                         (parse.UPDATE_COLLECTION, "new_metadata")], ids=["create", "update"])
def test_lists_and_sparse_vectors_in_collection_metadata_are_refused(spec: parse.Struct, field: str, value: Any,
                                                                      kind: str) -> None:
    """chroma run 1.5.9 drops the connection (a panic in its sqlite layer); the embedded bindings
    panic in apply, which kills raftchroma's applier thread on every replica."""
    body = {"name": "coll", field: {"ok": 1, "l": value}} if field == "metadata" else {field: {"l": value}}
    status, name, message = answer(spec, body)
    assert (status, name) == (400, "InvalidArgumentError")
    assert message.startswith(f"Invalid collection metadata: the value of 'l' is {kind}")


@pytest.mark.parametrize("value", [0, parse.HNSW_MAX_NEIGHBORS_MAX + 1, 2 ** 31 - 1, 2 ** 64 - 1])
def test_max_neighbors_out_of_range_is_refused(value: int) -> None:
    """chroma run 1.5.9: 0 crashes the process once the collection holds two records; 2**31-1
    makes the first add fail with "Error in compaction" (which raftchroma's apply takes for a
    disk failure and retries forever), 10**7 makes it hang."""
    for result in (create(configuration={"hnsw": {"max_neighbors": value}}),
                   answer(parse.UPDATE_COLLECTION, {"new_configuration": {"hnsw": {"max_neighbors": value}}})):
        assert result[:2] == (400, "InvalidArgumentError")
        assert f"max_neighbors must be between 1 and 10000, got {value}" in result[2]
    if value <= parse.I64_MAX:
        assert f"hnsw:M must be between 1 and 10000, got {value}" in create(metadata={"hnsw:M": value})[2]


def schema_with(max_neighbors: Any, where: str = "keys", value_types: str = "float_list",
                index: str = "vector_index") -> dict[str, Any]:
    hnsw = {"ef_construction": 100, "max_neighbors": max_neighbors}
    types = {value_types: {index: {"enabled": True, "config": {"space": "l2", "hnsw": hnsw}}}}
    return {"defaults": types, "keys": {}} if where == "defaults" else {"defaults": {}, where: {"#embedding": types}}


@pytest.mark.parametrize("schema", [
    schema_with(0), schema_with(2 ** 31 - 1), schema_with(0, where="defaults"), schema_with(0, where="key_overrides"),
    schema_with(0, value_types="#float_list", index="$vector_index"),
], ids=["keys", "huge", "defaults", "alias-keys", "alias-types"])
def test_max_neighbors_out_of_range_in_a_schema_is_refused(schema: dict[str, Any]) -> None:
    """chroma run 1.5.9: a schema whose #embedding vector index has max_neighbors 0 kills the
    process at the second record, as the configuration does; 2**31 breaks the collection."""
    status, name, message = create(schema=schema)
    assert (status, name) == (400, "InvalidArgumentError")
    assert message.startswith("Invalid HNSW configuration: schema.")


@pytest.mark.parametrize("schema", [schema_with(16), schema_with(None), {"defaults": {}, "keys": {"#embedding": {}}},
                                    {"defaults": 5}, {"defaults": {}, "keys": {"k": 5}}], ids=repr)
def test_other_schemas_are_left_to_the_store(schema: Any) -> None:
    assert create(schema=schema) == "ok"


@pytest.mark.parametrize("value", [1, 16, parse.HNSW_MAX_NEIGHBORS_MAX])
def test_max_neighbors_in_range_passes(value: int) -> None:
    assert create(configuration={"hnsw": {"max_neighbors": value}}) == "ok"
    assert create(metadata={"hnsw:M": value}) == "ok"


def test_chroma_errors_come_before_collection_refusals() -> None:
    assert create(name="a", metadata={"l": [1]})[2] == NAME_RULE + "a"
    assert create(metadata={"l": [1], "hnsw:batch_size": 1})[2] == "Failed to parse hnsw parameters from segment metadata"


# ------------------------------------------------------------- serde's reading, details


@pytest.mark.parametrize("spec, raw, expected", [
    (parse.CREATE_COLLECTION, b'{"name": "abc", "configuration": []}',
     (422, UNPROCESSABLE + "configuration: invalid length 0, expected struct CollectionConfiguration with 3 elements")),
    (parse.CREATE_COLLECTION, b'{"name": "abc", "configuration": [null, null, null, 5]}',
     (400, "Failed to parse the request body as JSON: configuration: trailing characters")),
    (parse.CREATE_COLLECTION, b'{"name": "abc", "configuration": [[1], null, null]}',
     (400, "Failed to parse the request body as JSON: configuration[0][0]: expected value")),
    (parse.CREATE_COLLECTION, b'["abc"]',
     (422, UNPROCESSABLE + "invalid length 1, expected struct CreateCollectionPayload with 5 elements")),
    (parse.CREATE_COLLECTION, b'["abc", null, null, {"a": 1}, true, 5]',
     (400, "Failed to parse the request body as JSON: trailing characters")),
    (parse.UPDATE_COLLECTION, b'[null, {"a": 1}, {"hnsw": [5]}]',
     (422, UNPROCESSABLE + "[2].hnsw: invalid length 1, expected struct UpdateHnswConfiguration with 6 elements")),
])
def test_structs_are_read_from_arrays_as_serde_reads_them(spec: parse.Struct, raw: bytes, expected: Any) -> None:
    """serde reads a struct from a JSON array too, its fields in declaration order (chroma run's answers)."""
    with pytest.raises(ApiError) as caught:
        parse.payload(raw, spec)
    assert (caught.value.status, caught.value.message) == expected


def test_a_struct_from_an_array_names_its_fields() -> None:
    body = parse.payload(b'["abc", null, [{"ef_search": 5}, null, null], {"a": 1}]', parse.CREATE_COLLECTION)
    assert (body["name"], body["metadata"], body["get_or_create"]) == ("abc", {"a": 1}, False)
    assert body["configuration"]["hnsw"]["ef_search"] == 5


@pytest.mark.parametrize("spec, path", [(parse.UPSERT, "metadatas[0].a"), (parse.UPDATE, "metadatas[0].a")])
def test_update_metadata_values_are_chromas_update_metadata_value(spec: parse.Struct, path: str) -> None:
    body = {"ids": ["a"], "embeddings": E3, "metadatas": [{"a": {"b": 1}}]}
    assert answer(spec, body) == (422, "ChromaError", UNPROCESSABLE + f"{path}: data did not match any variant of "
                                                                      "untagged enum UpdateMetadataValue")
    body = {"new_metadata": {"a": [1, "x"]}}
    assert answer(parse.UPDATE_COLLECTION, body)[2].endswith("untagged enum UpdateMetadataValue")


def _well_formed_base64_symbols(data: bytes) -> bool:
    """The rule Chroma's decoder applies to symbols: alphabet characters, then at most two '='."""
    body = data.rstrip(b"=")
    alphabet = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    return len(data) - len(body) <= 2 and all(byte in alphabet for byte in body)


def test_the_base64_symbol_check_accepts_exactly_the_well_formed_strings() -> None:
    """_check_base64_symbols reads a well-formed string in C and falls back to its byte loop (which
    words Chroma's error) only for a malformed one; both must agree with the rule."""
    rng = np.random.default_rng(5)
    symbols = np.frombuffer(b"AZaz09+/=-_ \n\xff", dtype=np.uint8)
    for _ in range(20_000):
        data = rng.choice(symbols, size=int(rng.integers(0, 9))).tobytes()
        try:
            parse._check_base64_symbols(data)
            accepted = True
        except ApiError:
            accepted = False
        assert accepted == _well_formed_base64_symbols(data), data
    big = base64.b64encode(np.ones(500 * 384, dtype="<f4").tobytes())
    parse._check_base64_symbols(big)
    with pytest.raises(ApiError, match=r"Invalid symbol 33, offset 1024\."):
        parse._check_base64_symbols(big[:1024] + b"!" + big[1025:])
