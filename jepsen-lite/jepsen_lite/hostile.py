"""The hostile corpus and the seeded generator of hostile requests (the `hostile` workload).

Owns: the corpus (Chroma's own error texts, OS error texts, reserved metadata keys, extreme
numbers, long and awkward unicode) and `hostile_request`, a pure function from a random source to
one request spec: method, path, body (or raw bytes), and how many times to send it. Every choice
comes from the random source, so a run's seed replays the same requests. It must not send
anything (the workload does) nor judge replies (checkers do).

Why these texts: raftchroma must tell Chroma's deterministic errors (a duplicate name) from
environmental ones (disk full) by the error text, and Chroma echoes names in its errors
("Tenant [disk is full] already exists"). A name that *contains* an environmental-looking text
is the sharpest probe of that classification: if it is taken for a disk failure, the entry is
retried forever on every replica and the cluster stops applying.

A spec is plain JSON data (it is recorded in the history as the operation's input):
`{"kind", "method", "path", "content_type", "repeat"}` plus either `"body"` (a JSON value,
encoded with `"ascii"` escapes or as raw UTF-8) or `"raw"` (text whose lone surrogates stand for
raw bytes, `surrogateescape`). `path` is relative to `/api/v2`, percent-encoded, and may hold
`{target}`: the id of the workload's target collection, known only after setup.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from typing import Any
from urllib.parse import quote

DEFAULT_SCOPE = "/tenants/default_tenant/databases/default_database"
TARGET = "{target}"
SET_COLLECTION = "jl-hostile-set"  # the normal writes' collection; hostile ops never write into it
TARGET_COLLECTION = "jl-hostile-target"
LONG_TEXT_CHARS = (1_000, 6_000)  # "multi-KB", bounded so that a run's history stays a few MB
NAME_CHARS_MAX = 512  # Chroma's limit for database and collection names
RECORDS_PER_REQUEST_MAX = 3

# Chroma's texts: raftchroma's ENVIRONMENTAL_MARKERS (raftchroma/store.py), SQLite's messages,
# and the error bodies of chroma 1.5.9 (reference traces, errors_summary.json).
CHROMA_ERROR_TEXTS = (
    "disk is full", "database or disk is full", "no space left on device", "no space left",
    "database is locked", "already exists", "does not exist", "UNIQUE constraint failed",
    "UNIQUE constraint failed: collections.name, collections.database_id",
    "Database error: error returned from database: (code: 2067) UNIQUE constraint failed",
    "Collection [x] already exists", "Collection [jl-hostile-set] already exists",
    "Tenant [default_tenant] already exists", "Database [default_database] already exists",
    "Collection [nope_missing] does not exist", "I/O error", "disk I/O error", "readonly database",
    "attempt to write a readonly database", "too many open files", "out of memory",
    "error in compaction", "purging logs", "failed to apply logs", "InternalError", "NoQuorum",
    "WriteOutcomeUnknown", "Invalid where clause", "Collection expecting embedding with dimension of 4, got 3",
    "Reset is disabled by config", "Failed to deserialize the JSON body into the target type",
)
# strerror texts as glibc words them (fixed here, not os.strerror, so a seed means the same
# requests on every platform), bare and as Python prints an OSError.
OS_ERROR_TEXTS = (
    "No space left on device", "Input/output error", "Read-only file system", "Too many open files",
    "Too many open files in system", "Cannot allocate memory", "Disk quota exceeded", "Permission denied",
    "Operation not permitted", "Device or resource busy", "Resource temporarily unavailable",
    "[Errno 28] No space left on device", "OSError: [Errno 5] Input/output error",
    "[Errno 30] Read-only file system", "[Errno 24] Too many open files", "MemoryError",
)
RESERVED_METADATA_KEYS = ("chroma:document", "chroma:foo", "chroma:id", "chroma:embedding", "hnsw:space",
                          "#document", "$contains", "$and", "")
EXTREME_NUMBERS: tuple[int | float, ...] = (
    1e308, -1e308, 2 ** 63, -2 ** 63 - 1, 2 ** 63 - 1, -2 ** 63, 2 ** 64, 1e39, -1e39, 3.4028235e38,
    5e-324, 1e-45, -0.0, 0, 1,
)
EMBEDDING_NUMBERS: tuple[int | float, ...] = (1e308, -1e308, 2 ** 63, -2 ** 63 - 1, 1e39, -1e39, 3.4028234e38,
                                              -3.4028234e38, 1e-45, 5e-324, -0.0, 0.5)
UNICODE_PIECES = (
    "🔥", "💾", "👩‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇦", "שלום", "مرحبا بالعالم", "\u202eRLO-override\u202c", "\u200f", "e\u0301",
    "Z\u0334\u0321\u031b\u034e", "ﷺ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "中文字符", "日本語", "한국어", "\u200b", "\ufeff", "\u00a0",
    "Ω", "ß", "ǅ", "İ", "\u0000", "\u001b[31m", "\t", "\n", "'", '"', "\\", "/", "%2F", "../", "{x}", "$and",
)
LONE_SURROGATES = ("\ud800", "\udfff", "\udbff\udbff")
RAW_BODIES = (
    "", "null", "[]", "{", '{"name": "disk is full"', "{'name': 'disk is full'}", '{"name": 1e400}',
    '{"name": NaN}', '{"name": "a", "name": "b"}', '{"ids": "a"}', '{"ids": ["a"], "embeddings": [[Infinity, 1]]}',
    '{"ids": ["a"], "embeddings": [[1e400, 1]]}',
    '{"ids": ["a"], "embeddings": [[1, 2]], "metadatas": [{"a": {"b": 1}}]}',
    '\ufeff{"name": "bom-prefixed"}', '{"name": "\\ud800"}', '{"name": "disk is full"} trailing',
    "[" * 3000 + "]" * 3000, '{"a":' * 3000 + "1" + "}" * 3000,
)
INVALID_UTF8_BODIES = (b'{"name": "\xff\xfe disk is full"}', b'{"ids": ["\xc3\x28"], "embeddings": [[1, 2]]}',
                       b"\x80\x81\x82")
CONTENT_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded",
                 "application/json; charset=latin-1")

# kind -> weight in the mix of hostile requests
KIND_WEIGHTS = {
    "create-tenant": 3, "create-database": 2, "create-collection": 3, "modify-collection": 1,
    "add": 2, "upsert": 2, "update": 2, "delete": 1, "raw": 2,
}
_NAME_SAFE = re.compile(r"[^a-zA-Z0-9._-]+")


# -------------------------------------------------------------------- texts


def long_unicode(rng: random.Random, chars: tuple[int, int] = LONG_TEXT_CHARS) -> str:
    target = rng.randint(*chars)
    pieces: list[str] = []
    length = 0
    while length < target:
        piece = rng.choice(UNICODE_PIECES)
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)[:target]


def short_unicode(rng: random.Random) -> str:
    return "".join(rng.choice(UNICODE_PIECES) for _ in range(rng.randint(1, 6)))


def error_text(rng: random.Random) -> str:
    return rng.choice(CHROMA_ERROR_TEXTS if rng.random() < 0.7 else OS_ERROR_TEXTS)


def valid_name(text: str) -> str:
    """`text` made into a name Chroma accepts for databases and collections: 3 to 512 characters
    from [a-zA-Z0-9._-], alphanumeric at both ends. Hostile but valid: "disk-is-full"."""
    name = _NAME_SAFE.sub("-", text).strip("._-")[:NAME_CHARS_MAX].rstrip("._-")
    return name + "x" * (3 - len(name)) if len(name) < 3 else name


def hostile_text(rng: random.Random) -> tuple[str, str]:
    """(category, text) for ids, documents, metadata keys and values."""
    roll = rng.random()
    if roll < 0.45:
        return "error-text", error_text(rng)
    if roll < 0.6:
        return "long-unicode", long_unicode(rng)
    if roll < 0.8:
        return "unicode", short_unicode(rng)
    if roll < 0.9:
        return "reserved", rng.choice(RESERVED_METADATA_KEYS)
    if roll < 0.95:
        return "surrogate", "x" + rng.choice(LONE_SURROGATES)
    return "plain", f"plain-{rng.randrange(10_000)}"


def tenant_name(rng: random.Random) -> tuple[str, str]:
    """Tenant names are taken as they are (3 characters or more), so the texts go in raw."""
    roll = rng.random()
    if roll < 0.6:
        return "error-text", error_text(rng)
    if roll < 0.75:
        return "long-unicode", long_unicode(rng)
    if roll < 0.9:
        return "unicode", short_unicode(rng) + "-t"
    return "valid", valid_name(error_text(rng))


def scoped_name(rng: random.Random) -> tuple[str, str]:
    """A database or collection name: mostly valid names made of error texts (they reach
    Chroma), else raw texts, unicode, and the 512 / 513 character boundary."""
    roll = rng.random()
    if roll < 0.55:
        return "valid", valid_name(error_text(rng))
    if roll < 0.75:
        return "error-text", error_text(rng)
    if roll < 0.85:
        return "unicode", short_unicode(rng)
    if roll < 0.92:
        return "long-unicode", long_unicode(rng)
    size = rng.choice((NAME_CHARS_MAX, NAME_CHARS_MAX + 1))
    return f"length-{size}", ("disk-is-full-" * 50)[: size - 1] + "x"


# ------------------------------------------------------------------ records


def number(rng: random.Random, pool: tuple[int | float, ...] = EXTREME_NUMBERS) -> int | float:
    return rng.choice(pool) if rng.random() < 0.7 else round(rng.uniform(-10, 10), 3)


def metadata_value(rng: random.Random, nullable: bool) -> Any:
    roll = rng.random()
    if roll < 0.35:
        return hostile_text(rng)[1]
    if roll < 0.65:
        return number(rng)
    if roll < 0.72:
        return rng.random() < 0.5
    if roll < 0.8:
        return [number(rng) for _ in range(rng.randint(0, 3))]
    if roll < 0.87:
        return [error_text(rng), rng.random() < 0.5]  # mixed types: not a metadata value
    if roll < 0.93:
        return {"nested": error_text(rng)}
    return None if nullable else error_text(rng)


def metadata(rng: random.Random, nullable: bool = False) -> dict[str, Any]:
    keys = rng.randint(1, 3)
    out: dict[str, Any] = {}
    for _ in range(keys):
        key = rng.choice(RESERVED_METADATA_KEYS) if rng.random() < 0.4 else hostile_text(rng)[1]
        out[key] = metadata_value(rng, nullable)
    return out


def _embedding(rng: random.Random, dimension: int) -> list[int | float]:
    return [number(rng, EMBEDDING_NUMBERS) for _ in range(dimension)]


def records_body(rng: random.Random, kind: str) -> dict[str, Any]:
    """add / upsert / update: 1-3 records with hostile ids, embeddings (extreme values; the
    target collection has 2 dimensions, 1 in 10 requests has 3), documents and metadata."""
    count = rng.randint(1, RECORDS_PER_REQUEST_MAX)
    ids = [hostile_text(rng)[1] for _ in range(count)]
    if rng.random() < 0.1:
        ids[-1] = ids[0]  # a duplicate id inside one request
    dimension = 3 if rng.random() < 0.1 else 2
    body: dict[str, Any] = {"ids": ids}
    if kind != "update" or rng.random() < 0.5:
        body["embeddings"] = [_embedding(rng, dimension) for _ in ids]
    if rng.random() < 0.6:
        body["documents"] = [hostile_text(rng)[1] if rng.random() < 0.8 else None for _ in ids]
    if rng.random() < 0.6:
        nullable = kind != "add"
        body["metadatas"] = [metadata(rng, nullable) if rng.random() < 0.85 else None for _ in ids]
    return body


def delete_body(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.5:
        return {"ids": [hostile_text(rng)[1] for _ in range(rng.randint(1, 3))]}
    if roll < 0.8:
        return {"where": {hostile_text(rng)[1]: {"$eq": metadata_value(rng, nullable=False)}}}
    return {"where_document": {"$contains": error_text(rng)}}


# ---------------------------------------------------------------- requests


def _segment(text: str) -> str:
    """One path segment, percent-encoded (lone surrogates as their surrogatepass bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _collection_path(rng: random.Random) -> tuple[str, str]:
    """(category, path) of the collection a records request goes to: mostly the target."""
    roll = rng.random()
    if roll < 0.85:
        return "target", f"{DEFAULT_SCOPE}/collections/{TARGET}"
    if roll < 0.93:
        return "missing-uuid", f"{DEFAULT_SCOPE}/collections/{uuid.UUID(int=rng.getrandbits(128), version=4)}"
    return "text-id", f"{DEFAULT_SCOPE}/collections/{_segment(error_text(rng))}"


def _scope(rng: random.Random) -> tuple[str, str]:
    """(category, scope path) for creating collections: mostly the default database."""
    if rng.random() < 0.8:
        return "default", DEFAULT_SCOPE
    tenant = tenant_name(rng)[1] if rng.random() < 0.7 else "default_tenant"
    return "hostile-scope", f"/tenants/{_segment(tenant)}/databases/{_segment(scoped_name(rng)[1])}"


def _spec(kind: str, method: str, path: str, body: Any, repeat: int = 1, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "method": method, "path": path, "body": body, "content_type": "application/json",
            "repeat": repeat, **extra}


def _create(rng: random.Random, kind: str) -> tuple[str, dict[str, Any]]:
    """create-tenant / -database / -collection, each sent twice in a row: the second is a
    duplicate of the first (names repeat across requests too: the corpus is small)."""
    if kind == "create-tenant":
        category, name = tenant_name(rng)
        return category, _spec(kind, "POST", "/tenants", {"name": name}, repeat=2)
    if kind == "create-database":
        tenant = "default_tenant" if rng.random() < 0.6 else tenant_name(rng)[1]
        category, name = scoped_name(rng)
        return category, _spec(kind, "POST", f"/tenants/{_segment(tenant)}/databases", {"name": name}, repeat=2)
    scope_category, scope = _scope(rng)
    category, name = scoped_name(rng)
    body: dict[str, Any] = {"name": name, "get_or_create": False}
    if rng.random() < 0.4:
        body["metadata"] = metadata(rng)
    return f"{category}/{scope_category}", _spec(kind, "POST", f"{scope}/collections", body, repeat=2)


def _modify_collection(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Renames the target (to the set collection's name: Chroma's UNIQUE constraint failure)
    or gives it hostile metadata. The set collection itself is never touched."""
    body: dict[str, Any] = {}
    if rng.random() < 0.5:
        body["new_name"] = SET_COLLECTION if rng.random() < 0.5 else scoped_name(rng)[1]
    if not body or rng.random() < 0.5:
        body["new_metadata"] = metadata(rng)
    category = "rename-duplicate" if body.get("new_name") == SET_COLLECTION else "modify"
    return category, _spec("modify-collection", "PUT", f"{DEFAULT_SCOPE}/collections/{TARGET}", body)


def _records(rng: random.Random, kind: str) -> tuple[str, dict[str, Any]]:
    category, path = _collection_path(rng)
    body = delete_body(rng) if kind == "delete" else records_body(rng, kind)
    spec = _spec(kind, "POST", f"{path}/{kind}", body)
    spec["ascii"] = rng.random() < 0.5  # \u escapes, or raw UTF-8 (lone surrogates then become invalid bytes)
    return category, spec


def _raw(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Invalid requests: malformed or hostile JSON, invalid UTF-8, a wrong content type."""
    path = rng.choice(("/tenants", f"{DEFAULT_SCOPE}/collections", f"{DEFAULT_SCOPE}/collections/{TARGET}/add",
                       f"{DEFAULT_SCOPE}/collections/{TARGET}/upsert"))
    roll = rng.random()
    if roll < 0.75:
        category, raw = "malformed-json", rng.choice(RAW_BODIES)
    elif roll < 0.9:
        category, raw = "invalid-utf8", rng.choice(INVALID_UTF8_BODIES).decode("utf-8", "surrogateescape")
    else:
        category, raw = "content-type", json.dumps({"name": error_text(rng)})
    content_type = rng.choice(CONTENT_TYPES) if category == "content-type" else "application/json"
    return category, {"kind": "raw", "method": "POST", "path": path, "raw": raw, "content_type": content_type,
                      "repeat": 1}


def hostile_request(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """(category, spec) of one hostile request. Pure: the same random state, the same request."""
    kinds = sorted(KIND_WEIGHTS)
    kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
    if kind.startswith("create-"):
        return _create(rng, kind)
    if kind == "modify-collection":
        return _modify_collection(rng)
    if kind == "raw":
        return _raw(rng)
    return _records(rng, kind)


def request_bytes(spec: dict[str, Any]) -> bytes:
    """The body bytes of a spec: raw text back to its bytes, or the JSON body encoded as asked."""
    if "raw" in spec:
        return str(spec["raw"]).encode("utf-8", "surrogateescape")
    text = json.dumps(spec["body"], ensure_ascii=bool(spec.get("ascii", True)))
    return text.encode("utf-8", "surrogatepass")
