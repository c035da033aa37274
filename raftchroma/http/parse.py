"""Request bodies of the Chroma v2 API: parse and validate before anything is proposed.

Owns: turning raw bytes into validated Python values, with the status and error name that
`chroma run` 1.5.9 answers for each kind of bad input (400 for unparseable JSON and
failed validation, 422 for JSON that does not fit the request type, 415 for a wrong
content type). Pure functions: no I/O, no aiohttp.

Where Chroma's message carries serde's " at line L column C" position, ours names the
field but not the column (the conformance test compares with positions removed).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from typing import Any

import numpy as np

from raftchroma.errors import ApiError, InvalidArgument, Unprocessable

INCLUDE_VALUES = ("distances", "documents", "embeddings", "metadatas", "uris")
GET_INCLUDE_DEFAULT = ["metadatas", "documents"]
QUERY_INCLUDE_DEFAULT = ["metadatas", "documents", "distances"]
U32_MAX = 2 ** 32 - 1
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def check_content_type(content_type: str | None) -> None:
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError("Expected request with `Content-Type: application/json`", status=415, name="ChromaError")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"Failed to parse the request body as JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        detail = "EOF while parsing a value" if not raw.strip() else exc.msg
        raise InvalidArgument(
            f"Failed to parse the request body as JSON: {detail} at line {exc.lineno} column {exc.colno - 1}") from None


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"invalid number {name}", name, 0)


def parse_object(raw: bytes) -> dict[str, Any]:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise Unprocessable(f"invalid type: {_json_kind(body)}, expected a struct")
    return body


def collection_id(value: str) -> str:
    """A collection id from a URL path, canonical lower-case hyphenated."""
    if not _UUID_RE.match(value):
        raise InvalidArgument("Collection ID is not a valid UUIDv4")
    return str(uuid.UUID(value))


# ------------------------------------------------------------------ fields


def required(body: dict[str, Any], key: str) -> Any:
    if key not in body:
        raise Unprocessable(f"missing field `{key}`")
    return body[key]


def string(body: dict[str, Any], key: str, optional: bool = False) -> str | None:
    value = body.get(key) if optional else required(body, key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise Unprocessable(f"{key}: invalid type: {_json_kind(value)}, expected a string")
    return value


def boolean(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Unprocessable(f"{key}: invalid type: {_json_kind(value)}, expected a boolean")
    return value


def u32(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unprocessable(f"{key}: invalid type: {_json_kind(value)}, expected u32")
    if not 0 <= value <= U32_MAX:
        raise Unprocessable(f"{key}: invalid value: integer `{value}`, expected u32")
    return value


def obj(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is not None and not isinstance(value, dict):
        raise Unprocessable(f"{key}: invalid type: {_json_kind(value)}, expected a map")
    return value


def string_list(body: dict[str, Any], key: str, optional: bool) -> list[str] | None:
    value = body.get(key) if optional else required(body, key)
    if value is None and optional:
        return None
    if not isinstance(value, list):
        raise Unprocessable(f"{key}: invalid type: {_json_kind(value)}, expected a sequence")
    for item in value:
        if not isinstance(item, str):
            raise Unprocessable(f"{key}: invalid type: {_json_kind(item)}, expected a string")
    return value


def optional_strings(body: dict[str, Any], key: str) -> list[str | None] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise Unprocessable(f"{key}: invalid type: {_json_kind(value)}, expected a sequence")
    for item in value:
        if item is not None and not isinstance(item, str):
            raise Unprocessable(f"{key}: invalid type: {_json_kind(item)}, expected a string")
    return value


def metadata(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Unprocessable(f"{where}: invalid type: {_json_kind(value)}, expected a map")
    for key, item in value.items():
        if not _metadata_value_ok(item):
            raise Unprocessable(f"{where}.{key}: data did not match any variant of untagged enum MetadataValue")
    return value


def metadatas(body: dict[str, Any], key: str) -> list[dict[str, Any] | None] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise Unprocessable(f"{key}: invalid type: {_json_kind(value)}, expected a sequence")
    return [metadata(item, f"{key}[{i}]") for i, item in enumerate(value)]


def _metadata_value_ok(item: Any) -> bool:
    if item is None or isinstance(item, (str, bool, int, float)):
        return not (isinstance(item, float) and not math.isfinite(item))
    if isinstance(item, list):
        return all(isinstance(x, (str, bool, int, float)) for x in item)
    return False


def embeddings(body: dict[str, Any], key: str, optional: bool) -> np.ndarray | None:
    """Float lists or base64 little-endian float32 strings, as one float32 matrix."""
    value = body.get(key) if optional else required(body, key)
    if value is None and optional:
        return None
    if not isinstance(value, list):
        raise Unprocessable(f"{key}: data did not match any variant of untagged enum EmbeddingsPayload")
    if not value:
        return np.zeros((0, 0), dtype="<f4")
    if all(isinstance(v, str) for v in value):
        rows = [_decode_base64_vector(v, key) for v in value]
    elif all(isinstance(v, list) and all(_is_number(x) for x in v) for v in value):
        rows = [np.asarray(v, dtype="<f4") for v in value]
    else:
        raise Unprocessable(f"{key}: data did not match any variant of untagged enum EmbeddingsPayload")
    dims = {len(r) for r in rows}
    if len(dims) != 1:
        raise InvalidArgument(f"All embeddings must have the same dimension, got {sorted(dims)}")
    return np.stack(rows)


def _decode_base64_vector(text: str, key: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{key}: invalid base64 embedding") from None
    if len(raw) % 4:
        raise InvalidArgument(f"{key}: base64 embedding is not a whole number of float32 values")
    return np.frombuffer(raw, dtype="<f4")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def include(body: dict[str, Any], default: list[str]) -> list[str]:
    value = body.get("include")
    if value is None:
        return list(default)
    if not isinstance(value, list):
        raise Unprocessable(f"include: invalid type: {_json_kind(value)}, expected a sequence")
    for i, item in enumerate(value):
        if item not in INCLUDE_VALUES:
            expected = ", ".join(f"`{v}`" for v in INCLUDE_VALUES)
            raise Unprocessable(f"include[{i}]: unknown variant `{item}`, expected one of {expected}")
    return value


def where(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        message = "Invalid where clause" if key == "where" else "Invalid where document clause"
        raise InvalidArgument(message)
    return value


def check_lengths(ids: list[str], *columns: Any) -> None:
    for column in columns:
        if column is not None and len(column) != len(ids):
            raise InvalidArgument("Inconsistent number of IDs, embeddings, documents, URIs and metadatas")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"
