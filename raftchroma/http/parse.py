"""Request validation for the Chroma v2 API, in the order and words of `chroma run` 1.5.9.

Owns: turning body bytes and query strings into validated Python values before anything is
proposed. Chroma checks a request in three stages, and so do we:

1. deserialization (serde): 415 for a wrong content type, 400 `InvalidArgumentError` "Failed to
   parse the request body as JSON: ..." for a syntax error, 422 `ChromaError` "Failed to
   deserialize the JSON body into the target type: ..." for JSON that does not fit the payload
   type. Errors come in document order, with serde_path_to_error's path ("ids[1]: ..."). Each
   payload is declared below as a `Struct` of typed fields, as in Chroma's Rust types.
2. the collection id in the path (400), then the collection lookup (404, done by the caller);
3. the payload's own validation (`records`, `query_embeddings`, `where_clauses`): 400
   `InvalidArgument`, raised only after the caller has confirmed the collection exists.

Serde's " at line L column C" suffix is not reproduced (the conformance test strips it).
Pure functions: no I/O, no aiohttp.

Nothing that Chroma refuses, or that breaks Chroma, should enter the Raft log: a refused write
that is proposed costs an entry, and one that breaks Chroma breaks every replica at once and
again at every restart (the entry is replayed). So the checks Chroma makes without its store
are made here, in its order; and what `chroma run` 1.5.9 *accepts* but then fails on (found by
exploring it, listed in README.md) is refused with `400 InvalidArgumentError` and a message
saying why: see "inputs that break Chroma" below. What needs the store stays there: whether a
collection, database or name exists, a collection's dimension, the checks Chroma makes of a
collection update only after looking the collection up, and regular expressions in filters
(compiled by Rust's `regex` crate, whose syntax this code does not reproduce).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from raftchroma.command import pack_embeddings
from raftchroma.errors import ApiError, InvalidArgument, Unprocessable
from raftchroma.http import jsonbody
from raftchroma.http.jsonbody import Path, SyntaxMark, find_mark, prefixed

INCLUDE_VALUES = ("distances", "documents", "embeddings", "metadatas", "uris")
GET_INCLUDE_DEFAULT = ("documents", "metadatas")
QUERY_INCLUDE_DEFAULT = ("documents", "metadatas", "distances")
U32_MAX = 2 ** 32 - 1
I64_MIN, I64_MAX, U64_MAX = -2 ** 63, 2 ** 63 - 1, 2 ** 64 - 1
_UUID_RE = re.compile(r"^(urn:uuid:)?(\{)?[0-9a-fA-F]{8}(-?)[0-9a-fA-F]{4}\3[0-9a-fA-F]{4}\3[0-9a-fA-F]{4}\3"
                      r"[0-9a-fA-F]{12}(?(2)\})$")


LENGTH_MISMATCH_MESSAGE = "Inconsistent number of IDs, embeddings, documents, URIs and metadatas"


class LengthMismatch(InvalidArgument):
    """A records error that Chroma reports only after its dimension check, which needs the
    collection and so is made by the caller when this is raised: a wrong dimension is reported
    first. Named for the first such error; also raised for an empty id and for raftchroma's
    refusal of reserved metadata keys, which come later still."""

    def __init__(self, dimension: int | None, message: str = LENGTH_MISMATCH_MESSAGE) -> None:
        super().__init__(message)
        self.dimension = dimension  # of the request's embeddings, for the caller's dimension check


def syntax_error(mark: SyntaxMark) -> ApiError:
    return InvalidArgument(f"Failed to parse the request body as JSON: {prefixed(mark.path, mark.message)}")


def data_error(path: Path, detail: str) -> ApiError:
    return Unprocessable(prefixed(path, detail))


def check_content_type(content_type: str | None) -> None:
    """Chroma accepts a missing Content-Type and rejects any other than JSON."""
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError("Expected request with `Content-Type: application/json`", status=415, name="ChromaError")


def collection_id(value: str, by_id_route: bool = False) -> str:
    """A collection id from a URL path (any form Rust's Uuid::parse_str takes), canonical."""
    if not _UUID_RE.match(value):
        if by_id_route:
            raise InvalidArgument("Validation error: collection_id: Invalid collection ID format, expected UUID")
        raise InvalidArgument("Collection ID is not a valid UUIDv4")
    return str(uuid.UUID(value))


# ------------------------------------------------------------ value types


def unexpected(value: Any) -> str:
    """serde's rendering of the value it did not expect."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        if I64_MIN <= value <= U64_MAX:
            return f"integer `{value}`"
        return f"floating point `{_f64(value, ())!r}`"  # serde_json reads such integers as f64
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {_rust_debug(value)}"
    return "sequence" if isinstance(value, list) else "map"


def _rust_debug(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    escaped = escaped.replace("\t", "\\t")
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{{{ord(m.group(0)):x}}}", escaped) + '"'


def _refuse_out_of_range(value: Any, path: Path) -> None:
    """Python reads a float literal beyond f64 (1e400) as infinity; serde_json refuses it."""
    if type(value) is float and math.isinf(value):
        raise syntax_error(SyntaxMark("number out of range", path))


def _f64(value: int | float, path: Path) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer literal beyond f64, which serde_json refuses to read
        raise syntax_error(SyntaxMark("number out of range", path)) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Node:
    """One serde type. `check` returns the value as the store wants it, or raises Chroma's error."""

    expecting = ""

    def check(self, value: Any, path: Path) -> Any:
        if isinstance(value, SyntaxMark):
            raise syntax_error(value)
        _refuse_out_of_range(value, path)
        return self.convert(value, path)

    def convert(self, value: Any, path: Path) -> Any:
        raise NotImplementedError

    def mismatch(self, value: Any, path: Path) -> ApiError:
        return data_error(path, f"invalid type: {unexpected(value)}, expected {self.expecting}")


class Str(Node):
    expecting = "a string"

    def convert(self, value: Any, path: Path) -> str:
        if not isinstance(value, str):
            raise self.mismatch(value, path)
        return value


class Bool(Node):
    expecting = "a boolean"

    def convert(self, value: Any, path: Path) -> bool:
        if not isinstance(value, bool):
            raise self.mismatch(value, path)
        return value


@dataclass(frozen=True)
class Unsigned(Node):
    """u32 or usize (u64 here): serde_json reads an integer beyond u64 as a float."""

    expecting: str = "u32"
    maximum: int = U32_MAX

    def convert(self, value: Any, path: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not I64_MIN <= value <= U64_MAX:
            raise self.mismatch(value, path)
        if not 0 <= value <= self.maximum:
            raise data_error(path, f"invalid value: integer `{value}`, expected {self.expecting}")
        return value


@dataclass(frozen=True)
class Float(Node):
    """f32 or f64: any JSON number."""

    expecting: str = "f32"

    def convert(self, value: Any, path: Path) -> float:
        if not _is_number(value):
            raise self.mismatch(value, path)
        return _f64(value, path)


def one_of(kind: str, names: tuple[str, ...]) -> str:
    """serde's list of what it expected: "expected `a`", "`a` or `b`", "one of `a`, `b`, `c`"."""
    quoted = [f"`{n}`" for n in names]
    if not quoted:
        return f"there are no {kind}s"
    if len(quoted) == 1:
        return f"expected {quoted[0]}"
    if len(quoted) == 2:
        return f"expected {quoted[0]} or {quoted[1]}"
    return "expected one of " + ", ".join(quoted)


@dataclass(frozen=True)
class UnitEnum(Node):
    """A Rust enum of unit variants (`Space`): serde_json reads it only from a string or a map."""

    variants: tuple[str, ...]

    def convert(self, value: Any, path: Path) -> str:
        if isinstance(value, dict) and len(value) == 1 and None in value.values():
            value = next(iter(value))  # the externally tagged form {"l2": null}
        if not isinstance(value, str):
            raise syntax_error(SyntaxMark("expected value", path))
        if value not in self.variants:
            raise data_error(path, f"unknown variant `{value}`, {one_of('variant', self.variants)}")
        return value


@dataclass(frozen=True)
class F32Rows(Node):
    """Vec<Vec<f32>>, checked a row at a time in bulk; element by element only to name an error."""

    expecting = "a sequence"

    def convert(self, value: Any, path: Path) -> list[list[float]]:
        if not isinstance(value, list):
            raise self.mismatch(value, path)
        return [row if _plain_float_row(row) else Seq(Float()).check(row, path + (i,)) for i, row in enumerate(value)]


def _plain_float_row(row: Any) -> bool:
    if not isinstance(row, list) or not _all_numbers(row):
        return False
    try:
        return not np.isinf(np.asarray(row, dtype=np.float64)).any()
    except OverflowError:
        return False


@dataclass(frozen=True)
class Opt(Node):
    inner: Node

    def convert(self, value: Any, path: Path) -> Any:
        return None if value is None else self.inner.check(value, path)


@dataclass(frozen=True)
class Seq(Node):
    item: Node
    expecting = "a sequence"

    def convert(self, value: Any, path: Path) -> list[Any]:
        if not isinstance(value, list):
            raise self.mismatch(value, path)
        return [self.item.check(x, path + (i,)) for i, x in enumerate(value)]


class AnyJson(Node):
    """A value Chroma keeps as raw JSON (where clauses, search payloads)."""

    def convert(self, value: Any, path: Path) -> Any:
        mark = find_mark(value)
        if mark is not None:
            raise syntax_error(mark)
        return value


@dataclass(frozen=True)
class Opaque(Node):
    """A nested Chroma struct we pass through to the store as JSON (configuration, schema)."""

    struct_name: str

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return f"struct {self.struct_name}"

    def convert(self, value: Any, path: Path) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.mismatch(value, path)
        return AnyJson().convert(value, path)


class IncludeList(Node):
    expecting = "a sequence"

    def convert(self, value: Any, path: Path) -> list[str]:
        if not isinstance(value, list):
            raise self.mismatch(value, path)
        return [self._variant(item, path + (i,)) for i, item in enumerate(value)]

    @staticmethod
    def _variant(item: Any, path: Path) -> str:
        if isinstance(item, SyntaxMark):
            raise syntax_error(item)
        if not isinstance(item, str):  # serde_json reads an enum only from a string or a map
            raise syntax_error(SyntaxMark("expected value", path))
        if item not in INCLUDE_VALUES:
            expected = ", ".join(f"`{v}`" for v in INCLUDE_VALUES)
            raise data_error(path, f"unknown variant `{item}`, expected one of {expected}")
        return item


# --------------------------------------------------- untagged enums (buffered)


class Untagged(Node):
    """serde's untagged enum: the whole value is read first, then each variant is tried."""

    enum_name = ""

    def convert(self, value: Any, path: Path) -> Any:
        mark = find_mark(value)
        if mark is not None:
            raise syntax_error(mark)
        matched = self.match(value)
        if matched is None:
            raise data_error(path, f"data did not match any variant of untagged enum {self.enum_name}")
        return matched

    def match(self, value: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Embeddings(Untagged):
    """EmbeddingsPayload (floats or base64 float32), or UpdateEmbeddingsPayload (rows may be null)."""

    nullable_rows: bool

    @property
    def enum_name(self) -> str:  # type: ignore[override]
        return "UpdateEmbeddingsPayload" if self.nullable_rows else "EmbeddingsPayload"

    def match(self, value: Any) -> tuple[str, list[Any]] | None:
        if not isinstance(value, list):
            return None
        rows = [row for row in value if row is not None] if self.nullable_rows else value
        if all(isinstance(row, list) and _all_numbers(row) for row in rows):
            return "floats", value
        if all(isinstance(row, str) for row in rows):
            return "base64", value
        return None


def _all_numbers(row: list[Any]) -> bool:
    return {type(x) for x in row} <= {int, float}


@dataclass(frozen=True)
class MetadataMap(Node):
    """HashMap<String, MetadataValue>; an update's values may also be null (delete the key)."""

    nullable_values: bool
    expecting = "a map"

    def convert(self, value: Any, path: Path) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.mismatch(value, path)
        out = {}
        for key, item in jsonbody.items(value):
            if isinstance(key, jsonbody.MarkKey):
                raise syntax_error(item)
            mark = find_mark(item)
            if mark is not None:
                raise syntax_error(mark)
            out[key] = self._value(item, path + (key,))
        return out

    def _value(self, item: Any, path: Path) -> Any:
        if item is None and self.nullable_values:
            return None
        _refuse_out_of_range(item, path)
        matched = metadata_value(item)
        if matched is None:
            enum = "UpdateMetadataValue" if self.nullable_values else "MetadataValue"  # Chroma's UpdateMetadata
            raise data_error(path, f"data did not match any variant of untagged enum {enum}")
        return matched[0]


def metadata_value(item: Any) -> tuple[Any] | None:
    """The MetadataValue variants in serde's order: bool, i64, f64, string, sparse vector, arrays."""
    if isinstance(item, (bool, str, float)):
        return (item,)
    if isinstance(item, int):
        return (item if I64_MIN <= item <= I64_MAX else _f64(item, ()),)
    if isinstance(item, dict):
        return (item,) if _is_sparse_vector(item) else None
    if isinstance(item, list):
        return _metadata_array(item)
    return None


def _metadata_array(items: list[Any]) -> tuple[Any] | None:
    kinds = {type(x) for x in items}
    if kinds <= {bool} or kinds <= {str}:
        return (items,)
    if kinds <= {int} and all(I64_MIN <= x <= I64_MAX for x in items):
        return (items,)
    if kinds <= {int, float}:
        return ([_f64(x, ()) for x in items],)
    return None


def _is_sparse_vector(item: dict[str, Any]) -> bool:
    indices, values = item.get("indices"), item.get("values")
    return (isinstance(indices, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices)
            and isinstance(values, list) and _all_numbers(values))


# ------------------------------------------------------------------ structs


@dataclass(frozen=True)
class Field:
    """One field of a struct. `serde_default`: the field has `#[serde(default)]`, so it may also be
    left out of the sequence form of its struct (serde reads a struct from a JSON array too)."""

    name: str
    node: Node
    required: bool = False
    default: Any = None
    serde_default: bool = False


@dataclass(frozen=True)
class Struct:
    """A request payload or a struct inside one. `flatten` marks Chroma's payloads with a flattened
    `RawWhereFields`: serde reads their unknown fields with path tracking and refuses a non-object
    body outright. `deny_unknown` is serde's `deny_unknown_fields`. `after` runs once the whole
    body has been read: Chroma's checks of the deserialized request (stage 1's end)."""

    name: str
    fields: tuple[Field, ...]
    flatten: bool = False
    deny_unknown: bool = False
    after: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def check(self, value: Any, path: Path = ()) -> dict[str, Any]:
        if isinstance(value, SyntaxMark):
            raise syntax_error(value)
        if isinstance(value, list) and not self.flatten:
            return self._from_sequence(value, path)
        if not isinstance(value, dict):
            raise data_error(path, f"invalid type: {unexpected(value)}, expected struct {self.name}")
        by_name = {f.name: f for f in self.fields}
        out: dict[str, Any] = {}
        for key, item in jsonbody.items(value):
            if isinstance(key, jsonbody.MarkKey):
                raise syntax_error(item)
            if key not in by_name:
                self._skip_unknown(key, item, path)
            elif key in out:
                raise data_error(path, f"duplicate field `{key}`")
            else:
                out[key] = by_name[key].node.check(item, path + (key,))
        return self._fill_missing(out, path)

    def _from_sequence(self, items: list[Any], path: Path) -> dict[str, Any]:
        """serde's `visit_seq`: the fields in declaration order; more elements than fields is
        serde_json's "trailing characters"."""
        out: dict[str, Any] = {}
        for i, f in enumerate(self.fields):
            if i < len(items):
                out[f.name] = f.node.check(items[i], path + (i,))
            elif f.serde_default:
                out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
            else:
                raise data_error(path, f"invalid length {len(items)}, expected struct {self.name} with "
                                       f"{len(self.fields)} elements")
        if len(items) > len(self.fields):
            mark = find_mark(items)
            raise syntax_error(mark or SyntaxMark("trailing characters", path))
        return out

    def _skip_unknown(self, key: str, item: Any, path: Path) -> None:
        if self.deny_unknown:
            names = tuple(f.name for f in self.fields)
            raise data_error(path + (key,), f"unknown field `{key}`, {one_of('field', names)}")
        mark = find_mark(item)
        if mark is not None:  # serde skips a non-flattened unknown field without tracking inside it
            raise syntax_error(mark if self.flatten else SyntaxMark(mark.message, path + (key,)))

    def _fill_missing(self, out: dict[str, Any], path: Path) -> dict[str, Any]:
        for f in self.fields:
            if f.name not in out:
                if f.required:
                    raise data_error(path, f"missing field `{f.name}`")
                out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
        return out


@dataclass(frozen=True)
class Nested(Node):
    """A struct as a field of another."""

    struct: Struct

    def convert(self, value: Any, path: Path) -> dict[str, Any]:
        return self.struct.check(value, path)


class EmbeddingFunction(Node):
    """EmbeddingFunctionConfiguration, a serde enum tagged by its "type" field. serde buffers the
    map first, so errors inside a variant are reported at the enum's path."""

    variants = ("legacy", "known", "unknown")

    def convert(self, value: Any, path: Path) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise data_error(path, f"invalid type: {unexpected(value)}, expected internally tagged enum "
                                   "EmbeddingFunctionConfiguration")
        AnyJson().convert(value, path)
        if "type" not in value:
            raise data_error(path, "missing field `type`")
        tag = value["type"]
        if not isinstance(tag, str):
            raise data_error(path + ("type",), f"invalid type: {unexpected(tag)}, expected variant identifier")
        if tag not in self.variants:
            raise data_error(path + ("type",), f"unknown variant `{tag}`, {one_of('variant', self.variants)}")
        if tag == "known":
            self._known(value, path)
        return value

    @staticmethod
    def _known(value: dict[str, Any], path: Path) -> None:
        if "name" in value and not isinstance(value["name"], str):
            raise data_error(path, f"invalid type: {unexpected(value['name'])}, expected a string")
        for name in ("name", "config"):
            if name not in value:
                raise data_error(path, f"missing field `{name}`")


def payload(raw: bytes, spec: Struct) -> dict[str, Any]:
    """Stage 1: the body deserialized into `spec`, or Chroma's 400/422 error, then the checks
    Chroma makes of the deserialized request before it looks anything up (`spec.after`)."""
    body = jsonbody.read(raw)
    out = spec.check(body.value)
    if body.trailing is not None:
        raise syntax_error(body.trailing)
    return spec.after(out) if spec.after is not None else out


# ------------------------------------------------ collection configuration types

SPACES = ("l2", "cosine", "ip")
_USIZE = Opt(Unsigned("usize", U64_MAX))
_U32 = Opt(Unsigned())
_F64 = Opt(Float("f64"))
HNSW_TUNING = (Field("ef_search", _USIZE), Field("max_neighbors", _USIZE), Field("num_threads", _USIZE),
               Field("resize_factor", _F64), Field("sync_threshold", _USIZE), Field("batch_size", _USIZE))
HNSW_CONFIGURATION = Struct("HnswConfiguration", (
    Field("space", Opt(UnitEnum(SPACES))), Field("ef_construction", _USIZE), *HNSW_TUNING,
), deny_unknown=True)
SPANN_CONFIGURATION = Struct("SpannConfiguration", (
    Field("search_nprobe", _U32), Field("write_nprobe", _U32), Field("space", Opt(UnitEnum(SPACES))),
    Field("ef_construction", _USIZE), Field("ef_search", _USIZE), Field("max_neighbors", _USIZE),
    Field("reassign_neighbor_count", _U32), Field("split_threshold", _U32), Field("merge_threshold", _U32),
), deny_unknown=True)
UPDATE_HNSW_CONFIGURATION = Struct("UpdateHnswConfiguration", HNSW_TUNING, deny_unknown=True)
UPDATE_SPANN_CONFIGURATION = Struct("UpdateSpannConfiguration", (
    Field("search_nprobe", _U32), Field("ef_search", _USIZE)), deny_unknown=True)


def _configuration(name: str, hnsw: Struct, spann: Struct) -> Nested:
    """A collection configuration. It is handed to the store as serde reads it: every field
    named, null where absent (Chroma's Option fields read both alike), also from an array."""
    return Nested(Struct(name, (
        Field("hnsw", Opt(Nested(hnsw))), Field("spann", Opt(Nested(spann))),
        Field("embedding_function", Opt(EmbeddingFunction())),
    )))


COLLECTION_CONFIGURATION = _configuration("CollectionConfiguration", HNSW_CONFIGURATION, SPANN_CONFIGURATION)
UPDATE_COLLECTION_CONFIGURATION = _configuration("UpdateCollectionConfiguration", UPDATE_HNSW_CONFIGURATION,
                                                 UPDATE_SPANN_CONFIGURATION)


# ------------------------------------- Chroma's checks of a new collection (stage 1's end)


def create_collection_checks(body: dict[str, Any]) -> dict[str, Any]:
    """What Chroma checks before it looks the database up, in its order: the configuration
    against the collection metadata, then the name and metadata together; then raftchroma's
    refusals of what breaks Chroma."""
    configuration = body["configuration"] or {}
    hnsw, spann = configuration.get("hnsw"), configuration.get("spann")
    if hnsw is not None and spann is not None:
        raise InvalidArgument("Multiple vector index configurations provided")
    if spann is None and not _legacy_hnsw_parameters_ok(body["metadata"]):
        raise InvalidArgument("Failed to parse hnsw parameters from segment metadata")
    problems = [(field, message) for field, message in (
        ("name", collection_name_problem(body["name"])),
        ("metadata", collection_metadata_problem(body["metadata"]))) if message]
    if problems:
        raise InvalidArgument("Validation error: " + "\n".join(f"{field}: {message}" for field, message in problems))
    refuse_breaking_collection_metadata(body["metadata"])
    refuse_breaking_max_neighbors([("max_neighbors", (hnsw or {}).get("max_neighbors")),
                                   ("hnsw:M", (body["metadata"] or {}).get("hnsw:M")),
                                   *schema_max_neighbors(body["schema"])])
    return body


def update_collection_checks(body: dict[str, Any]) -> dict[str, Any]:
    """Chroma looks the collection up (404) before its other checks of an update, and this code
    cannot see the store: they stay there. Only what breaks Chroma is refused here."""
    refuse_breaking_collection_metadata(body["new_metadata"])
    hnsw = (body["new_configuration"] or {}).get("hnsw")
    refuse_breaking_max_neighbors([("max_neighbors", (hnsw or {}).get("max_neighbors"))])
    return body


_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]")
NAME_MAX_BYTES = 512


def collection_name_problem(name: str) -> str | None:
    """Chroma's `validate_name`; a name may carry one topology prefix, `topology+name`."""
    if "+" in name:
        topology, rest = name.split("+", 1)
        if len(name.encode()) > NAME_MAX_BYTES:
            return f"Expected a name containing 3-512 characters. Got: {len(name.encode())}"
        if "+" in rest:
            return "Expected a name to contain at most one topology:  Got two `+` characters."
        return collection_name_problem(topology) or collection_name_problem(rest)
    if not _NAME_RE.fullmatch(name):
        return ("Expected a name containing 3-512 characters from [a-zA-Z0-9._-], starting and ending with a "
                f"character in [a-zA-Z0-9]. Got: {name}")
    if ".." in name:
        return f"Expected a name that does not contains two consecutive periods (..). Got {name}"
    if _is_ip_address(name):
        return f"Expected a name that is not a valid ip address. Got {name}"
    return None


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)  # an IPv6 address cannot pass the character check above
    except ValueError:
        return False
    return True


def metadata_key_problem(key: str) -> str | None:
    if not key:
        return "Metadata key cannot be empty"
    if key.startswith(("#", "$")):
        return f"Metadata key cannot start with '#' or '$': {key}"
    return None


def sparse_vector_problem(vector: dict[str, Any]) -> str | None:
    indices, values = vector["indices"], vector["values"]
    if len(indices) != len(values):
        return "Sparse vector indices, values, and tokens (when present) must have the same length"
    if not all(a < b for a, b in zip(indices, indices[1:])):
        return "Sparse vector indices must be sorted in strictly ascending order (no duplicates)"
    return None


def collection_metadata_problem(metadata: dict[str, Any] | None) -> str | None:
    """Chroma's `validate_optional_metadata`. It visits a hash map, so of several bad keys it
    names any one; this names the first in the body."""
    if metadata is None:
        return None
    if not metadata:
        return "Metadata cannot be empty"
    for key, value in metadata.items():
        problem = metadata_key_problem(key)
        if problem is None and isinstance(value, dict):
            problem = sparse_vector_problem(value)
            problem = problem and f"Invalid sparse vector: {problem}"
        if problem:
            return problem
    return None


_LEGACY_HNSW_INTEGERS = ("hnsw:construction_ef", "hnsw:search_ef", "hnsw:M", "hnsw:num_threads",
                         "hnsw:sync_threshold", "hnsw:batch_size")
_LEGACY_HNSW_MINIMUM = {"hnsw:sync_threshold": 2, "hnsw:batch_size": 2}


def _legacy_hnsw_parameters_ok(metadata: dict[str, Any] | None) -> bool:
    """Chroma reads the collection metadata's `hnsw:` keys into a strict struct of usize fields
    (a float, even 5.0, does not fit), a space and a resize factor, then checks two minimums."""
    for key, value in (metadata or {}).items():
        if not key.startswith("hnsw:"):
            continue
        if key == "hnsw:space":
            ok = isinstance(value, str) and value in SPACES
        elif key == "hnsw:resize_factor":
            ok = _is_number(value)
        elif key in _LEGACY_HNSW_INTEGERS:
            ok = type(value) is int and _LEGACY_HNSW_MINIMUM.get(key, 0) <= value <= I64_MAX
        else:
            ok = False  # an unknown `hnsw:` key
        if not ok:
            return False
    return True


# ----------------------------------------------------------- inputs that break Chroma
#
# Each was found against `chroma run` 1.5.9 (see README.md, "Differences from a single Chroma
# server"). Chroma accepts them and then fails, and the embedded Chroma in every replica would
# fail the same way on the committed entry. Refused with 400 InvalidArgumentError instead.

RESERVED_KEY_PREFIX = "chroma:"
HNSW_MAX_NEIGHBORS_MAX = 10_000  # where upstream hnswlib caps M; Chroma's copy does not


def reserved_key_problem(metadatas: list[dict[str, Any] | None] | None) -> str | None:
    for i, metadata in enumerate(metadatas or []):
        for key in metadata or {}:
            if key.startswith(RESERVED_KEY_PREFIX):
                return (f"Invalid metadata at index {i}: the key {key!r} is reserved (keys starting with "
                        f"'{RESERVED_KEY_PREFIX}' are Chroma's own: chroma run 1.5.9 drops or misreads them, and a "
                        "non-string 'chroma:document' breaks every later write and read on the server)")
    return None


def refuse_breaking_collection_metadata(metadata: dict[str, Any] | None) -> None:
    for key, value in (metadata or {}).items():
        kind = "a list" if isinstance(value, list) else "a sparse vector" if isinstance(value, dict) else None
        if kind:
            raise InvalidArgument(
                f"Invalid collection metadata: the value of {key!r} is {kind} (chroma run 1.5.9 crashes on lists "
                "and sparse vectors in collection metadata; they are allowed in record metadata)")


def refuse_breaking_max_neighbors(candidates: list[tuple[str, Any]]) -> None:
    for name, value in candidates:
        if type(value) is int and not 1 <= value <= HNSW_MAX_NEIGHBORS_MAX:
            raise InvalidArgument(
                f"Invalid HNSW configuration: {name} must be between 1 and {HNSW_MAX_NEIGHBORS_MAX}, got {value} "
                "(chroma run 1.5.9 accepts it; with 0 it crashes once the collection holds two records, and with "
                "large values the first add fails, hangs or runs out of memory, depending on the machine)")


def schema_max_neighbors(schema: Any) -> list[tuple[str, Any]]:
    """The HNSW `max_neighbors` of each vector index in a collection schema (passed to the store
    as raw JSON), under the names and aliases serde reads."""
    if not isinstance(schema, dict):
        return []
    value_types = [("defaults", schema.get("defaults"))]
    for keys in ("keys", "key_overrides"):
        if isinstance(schema.get(keys), dict):
            value_types += [(f"{keys}.{key}", types) for key, types in schema[keys].items()]
    found = []
    for where, types in value_types:
        hnsw = _dig(types, ("float_list", "#float_list"), ("vector_index", "$vector_index"), ("config",), ("hnsw",))
        if isinstance(hnsw, dict):
            found.append((f"schema.{where}.float_list.vector_index.config.hnsw.max_neighbors", hnsw.get("max_neighbors")))
    return found


def _dig(value: Any, *steps: tuple[str, ...]) -> Any:
    for names in steps:
        if not isinstance(value, dict):
            return None
        value = next((value[name] for name in names if name in value), None)
    return value


STRINGS = Seq(Str())
OPTIONAL_STRINGS = Opt(Seq(Opt(Str())))
WHERE_FIELDS = (Field("where", AnyJson()), Field("where_document", AnyJson()))


def _records(name: str, update: bool) -> Struct:
    return Struct(name, (
        Field("ids", STRINGS, required=True),
        Field("embeddings", Opt(Embeddings(nullable_rows=True)) if update else Embeddings(nullable_rows=False),
              required=not update),
        Field("documents", OPTIONAL_STRINGS),
        Field("uris", OPTIONAL_STRINGS),
        Field("metadatas", Opt(Seq(Opt(MetadataMap(nullable_values=name != "AddCollectionRecordsPayload"))))),
    ))


CREATE_TENANT = Struct("CreateTenantPayload", (Field("name", Str(), required=True),))
UPDATE_TENANT = Struct("UpdateTenantPayload", (Field("resource_name", Str(), required=True),))
CREATE_DATABASE = Struct("CreateDatabasePayload", (Field("name", Str(), required=True),))
CREATE_COLLECTION = Struct("CreateCollectionPayload", (
    Field("name", Str(), required=True),
    Field("schema", Opt(Opaque("Schema"))),
    Field("configuration", Opt(COLLECTION_CONFIGURATION)),
    Field("metadata", Opt(MetadataMap(nullable_values=False))),
    Field("get_or_create", Bool(), default=False, serde_default=True),
), after=create_collection_checks)
UPDATE_COLLECTION = Struct("UpdateCollectionPayload", (
    Field("new_name", Opt(Str())),
    Field("new_metadata", Opt(MetadataMap(nullable_values=True))),
    Field("new_configuration", Opt(UPDATE_COLLECTION_CONFIGURATION)),
), after=update_collection_checks)
ADD = _records("AddCollectionRecordsPayload", update=False)
UPSERT = _records("UpsertCollectionRecordsPayload", update=False)
UPDATE = _records("UpdateCollectionRecordsPayload", update=True)
DELETE = Struct("DeleteCollectionRecordsPayload", (
    Field("ids", Opt(STRINGS)), *WHERE_FIELDS, Field("limit", Opt(Unsigned())),
), flatten=True)
GET = Struct("GetRequestPayload", (
    Field("ids", Opt(STRINGS)), *WHERE_FIELDS, Field("limit", Opt(Unsigned())), Field("offset", Opt(Unsigned())),
    Field("include", IncludeList(), default=GET_INCLUDE_DEFAULT),
), flatten=True)
QUERY = Struct("QueryRequestPayload", (
    Field("ids", Opt(STRINGS)), *WHERE_FIELDS,
    Field("query_embeddings", F32Rows(), required=True),
    Field("n_results", Opt(Unsigned())),
    Field("include", IncludeList(), default=QUERY_INCLUDE_DEFAULT),
), flatten=True)
FORK = Struct("ForkCollectionPayload", (Field("new_name", Str(), required=True),))
SEARCH = Struct("SearchRequestPayload", (Field("searches", Seq(AnyJson()), required=True),
                                         Field("read_level", AnyJson(), serde_default=True)))
ATTACH_FUNCTION = Struct("AttachFunctionRequest", (
    Field("name", AnyJson(), required=True), Field("function_id", AnyJson(), required=True),
    Field("output_collection", AnyJson(), required=True),
))
ANY_OBJECT = Struct("DetachFunctionRequest", ())


# --------------------------------------------------------- query strings


@dataclass(frozen=True)
class QueryParam:
    name: str
    variants: tuple[str, ...] = ()  # an enum's values; empty for a u32


PAGING = (QueryParam("limit"), QueryParam("offset"))
READ_LEVEL = (QueryParam("read_level", ("index_and_wal", "index_only", "index_and_bounded_wal")),)


def query_params(pairs: Iterable[tuple[str, str]], params: tuple[QueryParam, ...]) -> dict[str, Any]:
    """serde_urlencoded's reading of the query string; unknown parameters are ignored."""
    known = {p.name: p for p in params}
    out: dict[str, Any] = {}
    for key, raw in pairs:
        if key not in known:
            continue
        if key in out:
            raise _query_error(f"duplicate field `{key}`")
        out[key] = _query_value(known[key], raw)
    return {p.name: out.get(p.name) for p in params}


def _query_value(param: QueryParam, raw: str) -> Any:
    if param.variants:
        if raw not in param.variants:
            expected = ", ".join(f"`{v}`" for v in param.variants)
            raise _query_error(f"{param.name}: unknown variant `{raw}`, expected one of {expected}")
        return raw
    digits = raw[1:] if raw.startswith("+") else raw
    if not digits:
        raise _query_error(f"{param.name}: cannot parse integer from empty string")
    if not (digits.isascii() and digits.isdigit()):
        raise _query_error(f"{param.name}: invalid digit found in string")
    if int(digits) > U32_MAX:
        raise _query_error(f"{param.name}: number too large to fit in target type")
    return int(digits)


def _query_error(detail: str) -> ApiError:
    return InvalidArgument(f"Failed to deserialize query string: {detail}")


# ------------------------------------------- stage 3: the payload's own checks


def where_clauses(body: dict[str, Any]) -> None:
    """Chroma's parse of `where`, then of `where_document` (`RawWhereFields::parse`)."""
    try:
        if body.get("where") is not None:
            _check_where(body["where"])
        if body.get("where_document") is not None:
            _check_where_document(body["where_document"])
    except _Undecided:
        pass  # a regular expression Chroma may refuse: the store checks the clauses again, whole


class _Undecided(Exception):
    """A regular expression this code cannot judge; Chroma reports its error where it meets it."""


_SIMPLE_REGEX_RE = re.compile(r"[^\\.^$|?*+()\[\]{}]*")  # no metacharacter: valid for Rust's `regex`


def _check_regex(pattern: str) -> None:
    if not _SIMPLE_REGEX_RE.fullmatch(pattern):
        raise _Undecided


def _bad_where() -> InvalidArgument:
    return InvalidArgument("Invalid where clause")


def _bad_where_document() -> InvalidArgument:
    return InvalidArgument("Invalid where document clause")


def _only_entry(clause: Any, error: Callable[[], InvalidArgument]) -> tuple[str, Any]:
    if not isinstance(clause, dict) or len(clause) != 1:
        raise error()
    return next(iter(clause.items()))


def _check_logical(clause: Any, error: Callable[[], InvalidArgument], check_leaf: Callable[[str, Any], None]) -> None:
    """A where or where_document clause: `$and`/`$or` of clauses, down to leaves `check_leaf` judges."""
    key, value = _only_entry(clause, error)
    if key in ("$and", "$or"):
        if not isinstance(value, list):
            raise error()
        for child in value:
            _check_logical(child, error, check_leaf)
        return
    check_leaf(key, value)


def _check_where_document(clause: Any) -> None:
    _check_logical(clause, _bad_where_document, _check_document_leaf)


def _check_document_leaf(key: str, value: Any) -> None:
    if not isinstance(value, str) or key not in ("$contains", "$not_contains", "$regex", "$not_regex"):
        raise _bad_where_document()
    if key in ("$regex", "$not_regex"):
        _check_regex(value)


def _check_where(clause: Any) -> None:
    _check_logical(clause, _bad_where, _check_where_leaf)


def _check_where_leaf(key: str, value: Any) -> None:
    if key.startswith("$"):
        raise _bad_where()
    if isinstance(value, (str, bool)) or _json_kind(value) in ("i64", "f64"):
        return
    if not isinstance(value, dict):
        raise _bad_where()
    operator, operand = _only_entry(value, _bad_where)
    if isinstance(operand, list):
        _check_set_operand(operator, operand)
    else:
        _check_operand(key, operator, operand)


def _json_kind(value: Any) -> str | None:
    """serde_json's reading of a number: i64, f64, or u64 for an integer that fits only that."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) or not I64_MIN <= value <= U64_MAX:
        return "f64"
    return "i64" if value <= I64_MAX else "u64"


def _check_set_operand(operator: str, operand: list[Any]) -> None:
    if operator not in ("$in", "$nin") or not operand:
        raise _bad_where()
    first = operand[0]
    if isinstance(first, str):
        ok = all(isinstance(x, str) for x in operand)
    elif isinstance(first, bool):
        ok = all(isinstance(x, bool) for x in operand)
    elif _json_kind(first) == "f64":
        ok = all(_json_kind(x) is not None for x in operand)
    elif _json_kind(first) == "i64":
        ok = all(_json_kind(x) == "i64" for x in operand)
    else:
        ok = False
    if not ok:
        raise _bad_where()


_EQUALITY = ("$eq", "$ne")
_CONTAINS = ("$contains", "$not_contains")
_ORDER = ("$lt", "$lte", "$gt", "$gte")


def _check_operand(key: str, operator: str, operand: Any) -> None:
    if isinstance(operand, str):
        if operator in ("$regex", "$not_regex"):
            if key != "#document":
                raise _bad_where()
            _check_regex(operand)
            return
        allowed = _CONTAINS + _EQUALITY
    elif isinstance(operand, bool):
        allowed = _CONTAINS + _EQUALITY
    elif _json_kind(operand) in ("i64", "f64"):
        allowed = _CONTAINS + _EQUALITY + _ORDER
    else:
        raise _bad_where()
    if operator not in allowed or (operator in _CONTAINS and key == "#document" and not isinstance(operand, str)):
        raise _bad_where()


def get_request(body: dict[str, Any]) -> dict[str, Any]:
    where_clauses(body)
    return body


def delete_request(body: dict[str, Any]) -> dict[str, Any]:
    """Chroma's checks of a delete (`DeleteCollectionRecordsRequest::try_new`)."""
    where_clauses(body)
    filtered = body.get("where") is not None or body.get("where_document") is not None
    if body["ids"] == [] and not filtered:
        raise InvalidArgument("Validation error: ids, where: Either ids or where must be specified")
    if body["limit"] is not None and not filtered:
        raise InvalidArgument("Validation error: limit, where: limit can only be specified when a where clause "
                              "is provided")
    return body


def query_request(body: dict[str, Any], max_rows: int | None = None) -> dict[str, Any]:
    """A query's fields; `max_rows` bounds n_results x query embeddings (raftchroma's own limit:
    Chroma would try to build the whole answer, whatever its size)."""
    where_clauses(body)
    n_results = 10 if body["n_results"] is None else body["n_results"]
    embeddings = query_embeddings(body["query_embeddings"])
    rows = n_results * len(embeddings)
    if max_rows is not None and rows > max_rows:
        raise InvalidArgument(
            f"A query may ask for at most {max_rows} rows (n_results x query embeddings, [cluster] max_query_rows); "
            f"this one asks for {n_results} x {len(embeddings)} = {rows}: ask for fewer results or split the query")
    return dict(body, query_embeddings=embeddings, n_results=n_results)


def query_embeddings(rows: list[list[float]]) -> np.ndarray:
    if len({len(row) for row in rows}) > 1:
        raise InvalidArgument("Inconsistent dimensions in provided embeddings")
    if not rows:
        return np.zeros((0, 0), dtype="<f4")
    with np.errstate(over="ignore"):  # beyond float32's range is infinite, as `as f32` in Rust
        return np.asarray(rows, dtype="<f4")


EMPTY_ID_MESSAGE = "Empty ID, ID must have at least one character"


def records(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The op fields of add/upsert/update after Chroma's checks, in Chroma's order: base64
    decoding; its field validators; the dimension check (by the caller, see `LengthMismatch`);
    lengths; empty ids; sparse vectors; then raftchroma's refusal of reserved keys."""
    rows = embedding_rows(body["embeddings"])
    metadatas = body["metadatas"]
    _validate_fields(rows, metadatas)
    if len({len(row) for row in rows or [] if row is not None}) > 1:
        raise InvalidArgument("Inconsistent dimensions in provided embeddings")
    ids, dimension = body["ids"], _dimension(rows)
    for column in (rows, metadatas, body["documents"], body["uris"]):
        if column is not None and len(column) != len(ids):
            raise LengthMismatch(dimension)
    if "" in ids:
        raise LengthMismatch(dimension, EMPTY_ID_MESSAGE)
    _refuse_sparse_vectors(metadatas)
    problem = reserved_key_problem(metadatas)
    if problem:
        raise LengthMismatch(dimension, problem)
    op = {"ids": ids, "embeddings": _packed(rows), "metadatas": _without_empty_lists(metadatas, kind),
          "documents": body["documents"], "uris": body["uris"]}
    keep_rows = _kept_rows(rows)
    if keep_rows:
        op["keep_rows"] = keep_rows
    return op


def _validate_fields(rows: list[np.ndarray | None] | None, metadatas: list[dict[str, Any] | None] | None) -> None:
    """Chroma's field validators run together, and their errors are reported together."""
    problems = [(field, message) for field, message in (
        ("embeddings", _embeddings_problem(rows)), ("metadatas", _metadatas_problem(metadatas))) if message]
    if problems:
        raise InvalidArgument("Validation error: " + "\n".join(f"{field}: {message}" for field, message in problems))


def _embeddings_problem(rows: list[np.ndarray | None] | None) -> str | None:
    present = [row for row in rows or [] if row is not None]
    if any(len(row) == 0 for row in present):
        return "Each embedding must have at least 1 dimension"
    if any(not np.isfinite(row).all() for row in present):
        return "Embeddings must not contain NaN or Infinity values"
    return None


def _metadatas_problem(metadatas: list[dict[str, Any] | None] | None) -> str | None:
    for i, metadata in enumerate(metadatas or []):
        for key, value in (metadata or {}).items():
            if metadata_key_problem(key) or (isinstance(value, dict) and sparse_vector_problem(value)):
                return f"Invalid metadata at index {i}"
    return None


def _refuse_sparse_vectors(metadatas: list[dict[str, Any] | None] | None) -> None:
    for metadata in metadatas or []:
        for key, value in (metadata or {}).items():
            if isinstance(value, dict):
                raise ApiError(f"Unimplemented: Sparse vector is not supported for local chroma: {key}", status=501)


def _without_empty_lists(metadatas: list[dict[str, Any] | None] | None, kind: str) -> Any:
    """Chroma stores an empty list as no value (an update removes the key); the embedded bindings
    refuse empty lists, so they are rewritten here: dropped on add, a key removal otherwise."""
    if not metadatas or not any(value == [] for m in metadatas if m for value in m.values()):
        return metadatas
    if kind == "add":
        return [None if m is None else {k: v for k, v in m.items() if v != []} for m in metadatas]
    return [None if m is None else {k: (None if v == [] else v) for k, v in m.items()} for m in metadatas]


def embedding_rows(embeddings: tuple[str, list[Any]] | None) -> list[np.ndarray | None] | None:
    if embeddings is None:
        return None
    kind, raw_rows = embeddings
    decode = _decode_base64_row if kind == "base64" else _float_row
    return [None if row is None else decode(row) for row in raw_rows]


def _float_row(row: list[float]) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # beyond float32's range is infinite, as `as f32` in Rust
            return np.asarray(row, dtype="<f4")
    except OverflowError:  # an integer literal beyond f64: serde_json refuses to read it
        raise InvalidArgument("Failed to parse the request body as JSON: number out of range") from None


def _dimension(rows: list[np.ndarray | None] | None) -> int | None:
    present = [row for row in rows or [] if row is not None]
    return len(present[0]) if present else None


def _packed(rows: list[np.ndarray | None] | None) -> dict[str, Any] | None:
    """One float32 matrix. An update's null rows (keep the stored vector) are zeros here and
    listed by `_kept_rows`; the store hands Chroma None for them, as Chroma gets them."""
    if rows is None or all(row is None for row in rows):
        return None  # no embeddings, or an update whose embeddings are all null: keep the stored ones
    dim = _dimension(rows)
    return pack_embeddings(np.stack([np.zeros(dim, dtype="<f4") if row is None else row for row in rows]))


def _kept_rows(rows: list[np.ndarray | None] | None) -> list[int]:
    """Indexes of an update's null rows, when some rows are not null (all null: no embeddings at all)."""
    if rows is None or all(row is None for row in rows):
        return []
    return [i for i, row in enumerate(rows) if row is None]


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_B64_WELL_FORMED = re.compile(rb"[A-Za-z0-9+/]*={0,2}")  # what _check_base64_symbols accepts, checked in C


def _decode_base64_row(text: str) -> np.ndarray:
    """Little-endian float32 from standard base64 with canonical padding (Rust's `base64` crate)."""
    data = text.encode()
    _check_base64_symbols(data)
    if len(data) % 4:
        raise InvalidArgument("Invalid base64 string: Invalid padding")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Invalid base64 string: Invalid padding") from None
    if base64.b64encode(raw) != data:
        last = len(data.rstrip(b"=")) - 1
        raise InvalidArgument(f"Invalid base64 string: Invalid last symbol {data[last]}, offset {last}.")
    if len(raw) % 4:
        raise InvalidArgument(f"Invalid byte length: {len(raw)} bytes cannot be converted to f32 values "
                              "(must be divisible by 4)")
    row = np.frombuffer(raw, dtype="<f4")
    bad = np.flatnonzero(~np.isfinite(row))
    if len(bad):
        raise InvalidArgument(f"Non-finite float value at embedding index {bad[0]}: {_rust_f32(row[bad[0]])}")
    return row


def _rust_f32(value: np.float32) -> str:
    """Rust's Display of a non-finite f32."""
    return "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")


def _check_base64_symbols(data: bytes) -> None:
    """Chroma's error for the first symbol outside the alphabet or after the padding. The byte loop
    only runs for a string that is not well formed: a 500 x 384 batch is 1 MB of base64, which the
    loop takes ~145 ms to read and the regular expression a few."""
    if _B64_WELL_FORMED.fullmatch(data):
        return
    pad_at = None
    for offset, byte in enumerate(data):
        if byte == ord("="):
            pad_at = offset if pad_at is None else pad_at
        elif byte not in _B64_ALPHABET or pad_at is not None:
            bad_offset, bad_byte = (offset, byte) if pad_at is None else (pad_at, ord("="))
            raise InvalidArgument(f"Invalid base64 string: Invalid symbol {bad_byte}, offset {bad_offset}.")
    if pad_at is not None and len(data) - pad_at > 2:
        raise InvalidArgument(f"Invalid base64 string: Invalid symbol {ord('=')}, offset {pad_at}.")


def database_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument("Expected a name containing 3-512 characters from [a-zA-Z0-9._-], starting and "
                              f"ending with a character in [a-zA-Z0-9]. Got: {name}")
    return name


def tenant_name(name: str) -> str:
    if len(name) < 3:
        # Chroma prints a HashMap here, whose key order varies between runs; this is one of them.
        raise InvalidArgument(
            f'Validation error: name: Validation error: length [{{"min": Number(3), "value": String("{name}")}}]')
    return name
