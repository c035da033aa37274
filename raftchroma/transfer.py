"""Export and import of one collection through Chroma's HTTP API, with the real `chromadb.HttpClient`,
so that they work the same against raftchroma and against a plain `chroma run`.

Owns: the collection file format (below), paging an export, batching an import. Must not: reach
into a node or its files (it is only an HTTP client), nor format anything for a terminal (cli.py
does). It imports chromadb for its HTTP client only; store.py owns the embedded Chroma.

**Format** (version 1): UTF-8 JSON Lines. Line 1, the header:

    {"format": "raftchroma-collection", "version": 1, "name": ..., "tenant": ..., "database": ...,
     "metadata": {...} | null, "configuration": {...} (Chroma's configuration_json),
     "dimension": int | null, "records": N, "embedding_encoding": "f32le-base64"}

then exactly N lines, one per record, in the order Chroma returned them:

    {"id": "...", "embedding": "<base64 of the vector as little-endian float32>" | null,
     "metadata": {...} | null, "document": "..." | null, "uri": "..." | null}

Vectors are float32 little-endian (what Chroma stores), base64-encoded, so they round-trip
bit for bit. The collection's schema is not exported (Chroma derives it). An export pages with
`get(limit, offset)`: it is a consistent copy only if nothing writes to the collection meanwhile
(for a point-in-time copy of everything, use a backup). An import creates the collection (it
refuses an existing one) and upserts in batches no larger than the server's max batch size, so a
batch retried after a timeout applies once.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

FORMAT_NAME = "raftchroma-collection"
FORMAT_VERSION = 1
EMBEDDING_ENCODING = "f32le-base64"
PAGE_RECORDS = 1000  # records per get() while exporting
DEFAULT_BATCH_RECORDS = 1000  # records per upsert while importing (also capped by the server)
MAX_BATCH_BYTES = 8 * 1024 * 1024  # of file lines per upsert: keeps requests far below max_body_bytes
RETRIES = 5
RETRY_FIRST_DELAY_S = 0.5
INCLUDE = ["embeddings", "metadatas", "documents", "uris"]

Progress = Callable[[int], None]  # called with the number of records just done


class TransferError(Exception):
    """The file is not a valid collection export, or the server refused; the message is one line."""


@dataclass(frozen=True)
class Summary:
    name: str
    records: int
    path: Path


def connect(url: str, tenant: str, database: str, token: str | None = None) -> Any:
    """A chromadb.HttpClient for `url` (http://host:port) in this tenant and database, sending
    `token` (a raftchroma client token, see README "Security") as `Authorization: Bearer`."""
    import chromadb
    from chromadb.config import Settings

    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransferError(f"expected a URL like http://host:8000, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 8000)
    try:
        return chromadb.HttpClient(host=parts.hostname, port=port, ssl=parts.scheme == "https", tenant=tenant,
                                   database=database, settings=Settings(anonymized_telemetry=False),
                                   headers={"Authorization": f"Bearer {token}"} if token else None)
    except Exception as exc:  # the client checks tenant and database on creation
        raise TransferError(f"cannot use {url} ({tenant}/{database}): {exc}") from None


# ------------------------------------------------------------------ export


def export_collection(client: Any, name: str, path: Path, tenant: str, database: str,
                      on_start: Callable[[int], None] = lambda total: None, on_progress: Progress = lambda n: None,
                      page_records: int = PAGE_RECORDS) -> Summary:
    """Write collection `name` to `path` (atomically: a temp file renamed at the end)."""
    collection = _collection(client, name)
    on_start(collection.count())
    body = path.with_name(path.name + ".records")
    try:
        count, dimension = _write_records(collection, body, on_progress, page_records)
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": collection.name, "tenant": tenant,
                  "database": database, "metadata": collection.metadata or None,
                  "configuration": collection.configuration_json, "dimension": dimension, "records": count,
                  "embedding_encoding": EMBEDDING_ENCODING}
        _assemble(path, header, body)
    finally:
        body.unlink(missing_ok=True)
    return Summary(collection.name, count, path)


def _collection(client: Any, name: str) -> Any:
    try:
        return client.get_collection(name, embedding_function=None)
    except Exception as exc:
        raise TransferError(f"cannot open collection {name!r}: {exc}") from None


def _write_records(collection: Any, body: Path, on_progress: Progress, page_records: int) -> tuple[int, int | None]:
    count, dimension, offset = 0, None, 0
    with open(body, "w", encoding="utf-8") as out:
        while True:
            page = _retried(lambda: collection.get(limit=page_records, offset=offset, include=INCLUDE))
            ids = page["ids"]
            for i, record_id in enumerate(ids):
                line = _record_line(record_id, page, i)
                if dimension is None and page["embeddings"] is not None:
                    dimension = len(page["embeddings"][i])
                out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
            count += len(ids)
            offset += len(ids)
            on_progress(len(ids))
            if len(ids) < page_records:
                return count, dimension


def _record_line(record_id: str, page: dict[str, Any], i: int) -> dict[str, Any]:
    def column(key: str) -> Any:
        values = page.get(key)
        return None if values is None else values[i]
    vector = column("embeddings")
    return {"id": record_id, "embedding": encode_vector(vector) if vector is not None else None,
            "metadata": column("metadatas") or None, "document": column("documents"), "uri": column("uris")}


def encode_vector(vector: Any) -> str:
    """float32 little-endian, base64: Chroma stores float32, so this is exact."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<f4").astype(np.float32)


def _assemble(path: Path, header: dict[str, Any], body: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "w", encoding="utf-8") as out, open(body, encoding="utf-8") as records:
            out.write(json.dumps(header, ensure_ascii=False) + "\n")
            while chunk := records.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


# ------------------------------------------------------------------ import


def read_header(path: Path) -> dict[str, Any]:
    """The header of an export file, checked, and the file checked to hold exactly its records."""
    try:
        with open(path, encoding="utf-8") as f:
            header = _parse_header(f.readline(), path)
            count = 0
            for number, line in enumerate(f, start=2):
                _parse_record(line, path, number, header["dimension"])
                count += 1
    except (OSError, UnicodeDecodeError) as exc:
        raise TransferError(f"{path}: cannot read: {exc}") from None
    if count != header["records"]:
        raise TransferError(f"{path}: holds {count} records, its header says {header['records']} (truncated?)")
    return header


def _parse_header(line: str, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise TransferError(f"{path}: not a raftchroma collection export")
    if header.get("version") != FORMAT_VERSION or header.get("embedding_encoding") != EMBEDDING_ENCODING:
        raise TransferError(f"{path}: export format version {header.get('version')} is not supported "
                            f"(this raftchroma reads version {FORMAT_VERSION})")
    if not isinstance(header.get("name"), str) or not isinstance(header.get("records"), int):
        raise TransferError(f"{path}: damaged header")
    return header


def _parse_record(line: str, path: Path, number: int, dimension: int | None) -> dict[str, Any]:
    try:
        record = json.loads(line)
        ok = isinstance(record, dict) and isinstance(record.get("id"), str)
        vector = decode_vector(record["embedding"]) if ok and record.get("embedding") is not None else None
    except (ValueError, TypeError):
        ok, vector = False, None
    if not ok or (vector is not None and dimension is not None and len(vector) != dimension):
        raise TransferError(f"{path}: line {number} is not a valid record")
    record["embedding"] = vector
    return record


def import_collection(client: Any, path: Path, new_name: str | None = None,
                      batch_records: int = DEFAULT_BATCH_RECORDS, on_start: Callable[[int], None] = lambda n: None,
                      on_progress: Progress = lambda n: None) -> Summary:
    """Create the collection from the file at `path` (as `new_name` if given) and upsert its records."""
    header = read_header(path)  # the whole file is checked before anything is created
    name = new_name or header["name"]
    batch_records = max(1, min(batch_records, _retried(client.get_max_batch_size)))
    try:
        collection = client.create_collection(name, configuration=header["configuration"],
                                              metadata=header["metadata"], embedding_function=None)
    except Exception as exc:
        raise TransferError(f"cannot create collection {name!r}: {exc}") from None
    on_start(header["records"])
    imported = 0
    for batch in _batches(path, header["dimension"], batch_records):
        _retried(lambda: _upsert(collection, batch))
        imported += len(batch)
        on_progress(len(batch))
    return Summary(name, imported, path)


def _batches(path: Path, dimension: int | None, batch_records: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    batch_bytes = 0
    with open(path, encoding="utf-8") as f:
        f.readline()
        for number, line in enumerate(f, start=2):
            if batch and (len(batch) >= batch_records or batch_bytes + len(line) > MAX_BATCH_BYTES):
                yield batch
                batch, batch_bytes = [], 0
            batch.append(_parse_record(line, path, number, dimension))
            batch_bytes += len(line)
    if batch:
        yield batch


def _upsert(collection: Any, batch: list[dict[str, Any]]) -> None:
    def column(key: str) -> list[Any] | None:
        values = [record.get(key) for record in batch]
        return None if all(v is None for v in values) else values
    embeddings = column("embedding")
    collection.upsert(ids=[r["id"] for r in batch],
                      embeddings=np.stack(embeddings) if embeddings is not None else None,
                      metadatas=column("metadata"), documents=column("document"), uris=column("uri"))


def _retried(call: Callable[[], Any]) -> Any:
    """Retry what a busy or failing-over server refuses (503) or leaves unknown (504, a timeout):
    export reads and import upserts are safe to repeat. Chroma's deterministic refusals are not retried."""
    from chromadb import errors as chroma_errors

    delay_s = RETRY_FIRST_DELAY_S
    for attempt in range(RETRIES):
        try:
            return call()
        except (chroma_errors.InvalidArgumentError, chroma_errors.NotFoundError, ValueError, TypeError):
            raise
        except Exception:
            if attempt == RETRIES - 1:
                raise
            time.sleep(delay_s)  # backoff before a retry, not synchronisation
            delay_s *= 2
    raise AssertionError("unreachable")
