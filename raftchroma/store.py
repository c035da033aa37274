"""The node's embedded Chroma store: the only module that imports `chromadb`.

Owns: the embedded Chroma (its Rust bindings, persistent, telemetry off), the map from the
API-visible ids (chosen before proposing, identical on every replica) to the ids Chroma
assigned locally, and the rendering of Chroma objects into the JSON shapes of Chroma's
HTTP API.

`apply(op)` is the deterministic state-machine step: its result depends only on the
store and the op; it reads no clock, no randomness, no network. Chroma's expected errors
(not found, already exists, wrong dimension...) come back as results, never as
exceptions, so that an apply can never raise into Raft.

The store is derived state: it is rebuilt from the Raft log (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import chromadb_rust_bindings as _bindings
import numpy as np
from chromadb import errors as chroma_errors

from raftchroma import snapshot
from raftchroma.command import unpack_embeddings

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
DEFAULT_DATABASE_ID = "00000000-0000-0000-0000-000000000000"
CHROMA_SERVER_VERSION = "1.0.0"  # what `chroma run` 1.5.9 answers at /api/v2/version
STATE_FILE_NAME = "store.state"  # the clean marker: see Store.mark_clean
APPLY_CHUNK_RECORDS = 50  # records per Chroma call: bounds how long one call holds the GIL


@dataclass(frozen=True)
class Result:
    """The outcome of an apply or a read: an HTTP status and a JSON-able body."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status < 400


def error(status: int, name: str, message: str) -> Result:
    return Result(status, {"error": name, "message": message})


def not_found_collection(collection_id: str, dot: bool = True) -> Result:
    return error(404, "NotFoundError", f"Collection [{collection_id}] does not exist{'.' if dot else ''}")


class StoreUnavailable(Exception):
    """The store cannot apply right now (disk full, I/O error); the op must be retried."""


ENVIRONMENTAL_MARKERS = (
    "disk is full", "no space left", "i/o error", "disk i/o", "error in compaction", "purging logs",
    "failed to apply logs", "database is locked", "readonly database", "too many open files", "out of memory",
)


def is_environmental(exc: Exception) -> bool:
    """Whether Chroma's error says the machine failed (disk full, I/O) rather than the request.

    An allowlist: Chroma reports both kinds as InternalError (a duplicate name is an
    InternalError "... already exists"), and treating a deterministic answer as environmental
    would retry that entry forever on every replica and wedge the cluster."""
    message = (exc.message() if isinstance(exc, chroma_errors.ChromaError) else str(exc)).lower()
    return isinstance(exc, chroma_errors.InternalError) and any(m in message for m in ENVIRONMENTAL_MARKERS)


@dataclass(frozen=True)
class CollectionRef:
    local_id: str
    tenant: str
    database: str


class Store:
    """Embedded Chroma under `data_dir/chroma`, with the API-id map kept beside it."""

    def __init__(self, data_dir: Path, allow_reset: bool, snapshot_index: int = 0) -> None:
        self._chroma_dir = Path(data_dir) / "chroma"
        self._state_path = Path(data_dir) / STATE_FILE_NAME
        self._allow_reset = allow_reset
        self._lock = threading.RLock()  # guards the id maps; Chroma itself is thread-safe
        self._collections: dict[str, CollectionRef] = {}
        self._local_to_api: dict[str, str] = {}
        self._database_ids: dict[str, str] = {DEFAULT_DATABASE_ID: DEFAULT_DATABASE_ID}
        self._swap = threading.Condition()  # readers vs. a snapshot install swapping the store
        self._readers = 0
        self._swapping = False
        self.recovered_index = self._recoverable_index(snapshot_index)
        self._clean = self.recovered_index > 0
        self._bindings = self._open(wipe=not self._clean)

    # ---------------------------------------------------- the clean marker

    def _recoverable_index(self, snapshot_index: int) -> int:
        """The applied index of a store left clean (idle, fsynced) by the last run, if it can be
        kept: it must be at least as new as the local snapshot. 0 means rebuild from scratch."""
        try:
            state = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return 0
        if not state.get("clean") or state.get("applied", 0) < max(snapshot_index, 1) or not self._chroma_dir.exists():
            return 0
        self._load_maps(state["maps"])
        return int(state["applied"])

    @property
    def clean(self) -> bool:
        return self._clean

    def mark_dirty(self) -> None:
        """Before the first change after a clean point: from now on a crash means rebuild."""
        if self._clean:
            self._write_state({"clean": False})
            self._clean = False

    def mark_clean(self, applied_index: int) -> None:
        """Idle at `applied_index`: flush Chroma's files, then record that the store may be kept."""
        if self._clean:
            return
        for path in sorted(self._chroma_dir.rglob("*")):
            if path.is_file():
                _fsync_file(path)
        self._write_state({"clean": True, "applied": applied_index, "maps": self._maps()})
        self._clean = True

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_name(self._state_path.name + ".tmp")
        with open(tmp, "w") as out:
            json.dump(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._state_path)
        dir_fd = os.open(self._state_path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _open(self, wipe: bool) -> Any:
        if wipe and self._chroma_dir.exists():
            shutil.rmtree(self._chroma_dir)
        self._chroma_dir.mkdir(parents=True, exist_ok=True)
        sqlite = _bindings.SqliteDBConfig(
            url=str(self._chroma_dir / "chroma.sqlite3"),
            hash_type=_bindings.MigrationHash.MD5,
            migration_mode=_bindings.MigrationMode.Apply,
        )
        return _bindings.Bindings(
            allow_reset=True, sqlite_db_config=sqlite,
            persist_path=str(self._chroma_dir), hnsw_cache_size=1000,
        )

    # -------------------------------------------------------------- snapshots

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Held by every read, so that a snapshot install never swaps the store under one."""
        with self._swap:
            while self._swapping:
                self._swap.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._swap:
                self._readers -= 1
                self._swap.notify_all()

    def write_snapshot(self, path: Path, header: dict[str, Any]) -> None:
        """Write the store as one snapshot file. Call only from the applier thread, between
        entries: no write is in flight, so the files on disk are a consistent image."""
        snapshot.write_snapshot(path, self._chroma_dir, dict(header, store=self._maps()))

    def _maps(self) -> dict[str, Any]:
        with self._lock:
            return {"collections": {k: [r.local_id, r.tenant, r.database] for k, r in self._collections.items()},
                    "database_ids": dict(self._database_ids)}

    def install_snapshot(self, path: Path, header: dict[str, Any]) -> None:
        """Replace the whole store with the snapshot's (applier thread only)."""
        with self._swap:
            self._swapping = True
            while self._readers:
                self._swap.wait()
        try:
            self._bindings = None
            shutil.rmtree(self._chroma_dir, ignore_errors=True)
            snapshot.extract(path, header, self._chroma_dir)
            self._load_maps(header["store"])
            self._bindings = self._open(wipe=False)
        finally:
            with self._swap:
                self._swapping = False
                self._swap.notify_all()

    def _load_maps(self, maps: dict[str, Any]) -> None:
        with self._lock:
            self._collections = {k: CollectionRef(*v) for k, v in maps["collections"].items()}
            self._local_to_api = {ref.local_id: k for k, ref in self._collections.items()}
            self._database_ids = dict(maps["database_ids"])

    # ------------------------------------------------------------------ apply

    def apply(self, op: dict[str, Any]) -> Result:
        """Apply one replicated op. Chroma's deterministic errors are results; an environmental
        failure (disk full, I/O error) raises StoreUnavailable, and the caller must retry the
        same op: returning it as a result would make this replica differ from the others."""
        handler = _APPLY.get(op["kind"])
        if handler is None:
            return error(500, "InternalError", f"unknown op kind {op['kind']}")
        try:
            return handler(self, op)
        except chroma_errors.ChromaError as exc:
            if is_environmental(exc):
                raise StoreUnavailable(f"{op['kind']}: {exc.message()}") from exc
            return chroma_error_result(exc)
        except OSError as exc:
            raise StoreUnavailable(f"{op['kind']}: {exc}") from exc
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            log.warning("apply of %s rejected: %r", op["kind"], exc)
            return error(400, "InvalidArgumentError", str(exc))

    def _apply_create_tenant(self, op: dict[str, Any]) -> Result:
        self._bindings.create_tenant(op["name"])
        return Result(200, {})

    def _apply_create_database(self, op: dict[str, Any]) -> Result:
        self._bindings.create_database(op["name"], op["tenant"])
        local = self._bindings.get_database(op["name"], op["tenant"])
        with self._lock:
            self._database_ids[str(local.id)] = op["database_id"]
        return Result(200, {})

    def _apply_delete_database(self, op: dict[str, Any]) -> Result:
        tenant, name = op["tenant"], op["name"]
        doomed = [cid for cid, ref in self._collections.items() if ref.tenant == tenant and ref.database == name]
        self._bindings.delete_database(name, tenant)
        with self._lock:
            for cid in doomed:
                self._forget_collection(cid)
        return Result(200, {})

    def _apply_create_collection(self, op: dict[str, Any]) -> Result:
        tenant, database = op["tenant"], op["database"]
        col = self._bindings.create_collection(
            op["name"], op.get("configuration_json"), op.get("schema_json"), op.get("metadata"),
            bool(op.get("get_or_create")), tenant, database,
        )
        local_id = str(col.id)
        with self._lock:
            api_id = self._local_to_api.get(local_id)
            if api_id is None:
                api_id = op["collection_id"]
                self._collections[api_id] = CollectionRef(local_id, tenant, database)
                self._local_to_api[local_id] = api_id
        return Result(200, self._render_collection(col))

    def _apply_update_collection(self, op: dict[str, Any]) -> Result:
        ref = self._ref(op["collection_id"], op["tenant"], op["database"])
        if ref is None:
            return not_found_collection(op["collection_id"])
        self._bindings.update_collection(
            ref.local_id, op.get("new_name"), op.get("new_metadata"), op.get("new_configuration_json"),
        )
        return Result(200, {})

    def _apply_delete_collection(self, op: dict[str, Any]) -> Result:
        col = self._bindings.get_collection(op["name"], op["tenant"], op["database"])
        self._bindings.delete_collection(op["name"], op["tenant"], op["database"])
        with self._lock:
            api_id = self._local_to_api.get(str(col.id))
            if api_id is not None:
                self._forget_collection(api_id)
        return Result(200, {})

    def _apply_records(self, op: dict[str, Any]) -> Result:
        """add / upsert / update. Large batches go to Chroma in chunks, because a Chroma
        write holds the GIL and one 500-record call would stall Raft heartbeats; if a
        later chunk fails, the earlier ones are undone so the batch stays all-or-nothing."""
        ref = self._ref(op["collection_id"], op["tenant"], op["database"])
        if ref is None:
            return not_found_collection(op["collection_id"])
        status = 201 if op["kind"] == "add" else 200
        ids = op["ids"]
        if not ids:
            return Result(status, {})
        columns = {"ids": ids, "embeddings": unpack_embeddings(op.get("embeddings")),
                   "metadatas": op.get("metadatas"), "documents": op.get("documents"), "uris": op.get("uris")}
        if op.get("keep_rows"):
            columns["embeddings"] = _with_null_rows(columns["embeddings"], op["keep_rows"])
        if len(ids) <= APPLY_CHUNK_RECORDS:
            self._write_records(op["kind"], ref, columns)
            return Result(status, {})
        touched = list(dict.fromkeys(ids))
        before = self._bindings.get(ref.local_id, touched, None, None, 0, None,
                                    ["embeddings", "metadatas", "documents", "uris"], ref.tenant, ref.database)
        try:
            for start in range(0, len(ids), APPLY_CHUNK_RECORDS):
                chunk = {k: (v[start:start + APPLY_CHUNK_RECORDS] if v is not None else None) for k, v in columns.items()}
                self._write_records(op["kind"], ref, chunk)
                time.sleep(0)  # hand the GIL to the Raft tick thread between chunks
        except chroma_errors.ChromaError:
            self._restore_records(ref, touched, before)
            raise
        return Result(status, {})

    def _write_records(self, kind: str, ref: CollectionRef, c: dict[str, Any]) -> None:
        rest = (c["metadatas"], c["documents"], c["uris"], ref.tenant, ref.database)
        if kind == "add":
            self._bindings.add(c["ids"], ref.local_id, c["embeddings"], *rest)
        elif kind == "upsert":
            self._bindings.upsert(ref.local_id, c["ids"], c["embeddings"], *rest)
        else:
            self._bindings.update(ref.local_id, c["ids"], c["embeddings"], *rest)

    def _restore_records(self, ref: CollectionRef, ids: list[str], before: Any) -> None:
        """Undo a partly applied batch: drop every id it touched, re-add what existed before."""
        self._bindings.delete(ref.local_id, ids, None, None, None, ref.tenant, ref.database)
        if before.ids:
            self._bindings.add(before.ids, ref.local_id, np.asarray(before.embeddings, dtype=np.float32),
                               before.metadatas, before.documents, before.uris, ref.tenant, ref.database)

    def _apply_delete_records(self, op: dict[str, Any]) -> Result:
        ref = self._ref(op["collection_id"], op["tenant"], op["database"])
        if ref is None:
            return not_found_collection(op["collection_id"])
        deleted = self._bindings.delete(
            ref.local_id, op.get("ids"), _json_or_none(op.get("where")),
            _json_or_none(op.get("where_document")), op.get("limit"), ref.tenant, ref.database,
        )
        return Result(200, {"deleted": int(deleted or 0)})

    def _apply_reset(self, op: dict[str, Any]) -> Result:
        if not self._allow_reset:
            return error(403, "ChromaError", "Reset is disabled by config")
        self._bindings.reset()
        with self._lock:
            self._collections.clear()
            self._local_to_api.clear()
            self._database_ids = {DEFAULT_DATABASE_ID: DEFAULT_DATABASE_ID}
        return Result(200, True)

    def _apply_barrier(self, op: dict[str, Any]) -> Result:
        return Result(200, None)

    def _forget_collection(self, api_id: str) -> None:
        ref = self._collections.pop(api_id, None)
        if ref is not None:
            self._local_to_api.pop(ref.local_id, None)

    def _ref(self, api_id: str, tenant: str, database: str) -> CollectionRef | None:
        with self._lock:
            ref = self._collections.get(api_id)
        if ref is None or ref.tenant != tenant or ref.database != database:
            return None
        return ref

    # ------------------------------------------------------------------ reads

    def read(self, fn: Callable[[], Result]) -> Result:
        """Run a read, turning Chroma's errors into results."""
        try:
            return fn()
        except chroma_errors.ChromaError as exc:
            return chroma_error_result(exc)

    def get_tenant(self, name: str) -> Result:
        return self.read(lambda: Result(200, {"name": self._bindings.get_tenant(name).name, "resource_name": None}))

    def get_database(self, tenant: str, name: str) -> Result:
        return self.read(lambda: Result(200, self._render_database(self._bindings.get_database(name, tenant))))

    def list_databases(self, tenant: str, limit: int | None, offset: int | None) -> Result:
        return self.read(lambda: Result(200, [
            self._render_database(db) for db in self._bindings.list_databases(limit, offset or 0, tenant)
        ]))

    def list_collections(self, tenant: str, database: str, limit: int | None, offset: int) -> Result:
        def run() -> Result:
            rendered = [self._render_collection(c) for c in self._bindings.list_collections(None, None, tenant, database)]
            rendered = sorted((c for c in rendered if c["id"] is not None), key=lambda c: c["id"])
            end = None if limit is None else offset + limit
            return Result(200, rendered[offset:end])
        return self.read(run)

    def count_collections(self, tenant: str, database: str) -> Result:
        return self.read(lambda: Result(200, self._bindings.count_collections(tenant, database)))

    def get_collection(self, tenant: str, database: str, name: str) -> Result:
        return self.read(lambda: Result(200, self._render_collection(self._bindings.get_collection(name, tenant, database))))

    def get_collection_by_id(self, tenant: str, database: str, api_id: str) -> Result:
        ref = self._ref(api_id, tenant, database)
        if ref is None:
            return not_found_collection(api_id, dot=False)
        return self.read(lambda: Result(200, self._render_collection(
            self._bindings.get_collection_by_id(ref.local_id, tenant, database))))

    def count(self, tenant: str, database: str, api_id: str) -> Result:
        ref = self._ref(api_id, tenant, database)
        if ref is None:
            return not_found_collection(api_id)
        return self.read(lambda: Result(200, self._bindings.count(ref.local_id, tenant, database)))

    def get(self, tenant: str, database: str, api_id: str, req: dict[str, Any]) -> Result:
        ref = self._ref(api_id, tenant, database)
        if ref is None:
            return not_found_collection(api_id)
        include = req["include"]

        def run() -> Result:
            resp = self._bindings.get(
                ref.local_id, req.get("ids"), _json_or_none(req.get("where")), req.get("limit"),
                req.get("offset") or 0, _json_or_none(req.get("where_document")), include, tenant, database,
            )
            return Result(200, _render_get(resp, include))
        return self.read(run)

    def query(self, tenant: str, database: str, api_id: str, req: dict[str, Any]) -> Result:
        ref = self._ref(api_id, tenant, database)
        if ref is None:
            return not_found_collection(api_id)
        include = req["include"]

        def run() -> Result:
            resp = self._bindings.query(
                ref.local_id, req.get("ids"), req["query_embeddings"], req["n_results"],
                _json_or_none(req.get("where")), _json_or_none(req.get("where_document")), include, tenant, database,
            )
            return Result(200, _render_query(resp, include))
        return self.read(run)

    def collection_digests(self) -> dict[str, str]:
        """{api collection id: sha256 over its records in id order}; identical on converged replicas."""
        with self._lock:
            refs = dict(self._collections)
        return {api_id: self._digest(ref) for api_id, ref in sorted(refs.items())}

    def _digest(self, ref: CollectionRef) -> str:
        include = ["embeddings", "metadatas", "documents", "uris"]
        resp = self._bindings.get(ref.local_id, None, None, None, 0, None, include, ref.tenant, ref.database)
        order = sorted(range(len(resp.ids)), key=lambda i: resp.ids[i])
        metadatas = resp.metadatas or [None] * len(order)
        documents = resp.documents or [None] * len(order)
        digest = hashlib.sha256()
        for i in order:
            vector = np.asarray(resp.embeddings[i], dtype="<f4").tobytes() if resp.embeddings is not None else b""
            row = [resp.ids[i], metadatas[i], documents[i]]
            digest.update(json.dumps(row, sort_keys=True).encode() + vector)
        return digest.hexdigest()

    def collection_name_index(self) -> dict[str, str]:
        """{api id: "tenant/database/name"} for status and digests."""
        out = {}
        with self._lock:
            refs = dict(self._collections)
        for api_id, ref in refs.items():
            try:
                col = self._bindings.get_collection_by_id(ref.local_id, ref.tenant, ref.database)
                out[api_id] = f"{ref.tenant}/{ref.database}/{col.name}"
            except chroma_errors.ChromaError:
                continue
        return out

    # -------------------------------------------------------------- rendering

    def _render_collection(self, col: Any) -> dict[str, Any]:
        with self._lock:
            api_id = self._local_to_api.get(str(col.id))
        return {
            "id": api_id, "name": col.name, "configuration_json": col.configuration,
            "schema": col.schema, "metadata": col.metadata, "dimension": col.dimension,
            "tenant": col.tenant, "database": col.database, "log_position": 0, "version": 0,
        }

    def _render_database(self, db: Any) -> dict[str, Any]:
        with self._lock:
            api_id = self._database_ids.get(str(db.id), str(db.id))
        return {"id": api_id, "name": db.name, "tenant": db.tenant}

    def close(self) -> None:
        self._bindings = None


_APPLY: dict[str, Callable[[Store, dict[str, Any]], Result]] = {
    "create_tenant": Store._apply_create_tenant,
    "create_database": Store._apply_create_database,
    "delete_database": Store._apply_delete_database,
    "create_collection": Store._apply_create_collection,
    "update_collection": Store._apply_update_collection,
    "delete_collection": Store._apply_delete_collection,
    "add": Store._apply_records,
    "upsert": Store._apply_records,
    "update": Store._apply_records,
    "delete_records": Store._apply_delete_records,
    "reset": Store._apply_reset,
    "barrier": Store._apply_barrier,
}


def chroma_error_result(exc: Exception) -> Result:
    """Chroma's exception as the HTTP error `chroma run` 1.5.9 answers for it."""
    message = exc.message() if isinstance(exc, chroma_errors.ChromaError) else str(exc)
    if "already exists" in message:
        return error(409, "ChromaError", message)
    if isinstance(exc, chroma_errors.NotFoundError):
        return error(404, "NotFoundError", message)
    if isinstance(exc, chroma_errors.InvalidArgumentError):
        return error(400, "InvalidArgumentError", message)
    if isinstance(exc, chroma_errors.InternalError):
        return error(500, "InternalError", message)
    if isinstance(exc, chroma_errors.ChromaError):
        return error(exc.code(), type(exc).__name__, message)
    return error(500, "InternalError", message)


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_or_none(value: Any) -> str | None:
    return json.dumps(value) if value else None


def _f32(rows: Any) -> Any:
    """Float lists as float32 arrays, so JSON shows them as Chroma's server does (shortest f32)."""
    if rows is None:
        return None
    return [np.asarray(row, dtype=np.float32) for row in rows]


def _render_get(resp: Any, include: list[str]) -> dict[str, Any]:
    return {
        "ids": resp.ids,
        "embeddings": _f32(resp.embeddings) if "embeddings" in include else None,
        "documents": resp.documents if "documents" in include else None,
        "uris": resp.uris if "uris" in include else None,
        "metadatas": resp.metadatas if "metadatas" in include else None,
        "include": include,
    }


def _render_query(resp: Any, include: list[str]) -> dict[str, Any]:
    def part(name: str, value: Any) -> Any:
        return value if name in include else None
    return {
        "ids": resp.ids,
        "embeddings": [_f32(rows) for rows in resp.embeddings] if "embeddings" in include and resp.embeddings is not None else None,
        "documents": part("documents", resp.documents),
        "uris": part("uris", resp.uris),
        "metadatas": part("metadatas", resp.metadatas),
        "distances": [np.asarray(d, dtype=np.float32) for d in resp.distances] if "distances" in include and resp.distances is not None else None,
        "include": include,
    }


def _with_null_rows(vectors: np.ndarray, keep_rows: list[int]) -> list[np.ndarray | None]:
    """An update's rows, None where the record keeps its stored vector: Chroma's own
    UpdateEmbeddingsPayload, which the bindings take as is (the stored vectors are never read
    and written back, which would not be exact in a cosine collection)."""
    kept = set(keep_rows)
    return [None if i in kept else vectors[i] for i in range(len(vectors))]
