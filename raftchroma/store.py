"""The node's embedded Chroma store: the only module that imports `chromadb`.

Owns: the embedded Chroma (its Rust bindings, persistent, telemetry off), the map from the
API-visible ids (chosen before proposing, identical on every replica) to the ids Chroma
assigned locally, the remembered outcomes of client request ids, the rendering of Chroma
objects into the JSON shapes of Chroma's HTTP API, and the translation of Chroma's failures
into three kinds, by type and errno only (never by message text): `Refused` (Chroma's typed,
deterministic answer), `StoreUnavailable` (the machine failed: retry) and `StoreFault` (cannot be
classified: the node stops). It decides nothing: the state machine (state_machine.py) checks
and orders every change; this module only carries them out.

The store is derived state: it is rebuilt from the Raft log (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import chromadb_rust_bindings as _bindings
import numpy as np
from chromadb import errors as chroma_errors

from raftchroma import snapshot
from raftchroma.command import CreateCollection, DeleteRecords, UpdateCollection, WriteRecords, unpack_embeddings
from raftchroma.state_machine import Remembered
from raftchroma.result import (
    ENVIRONMENTAL_ERRNOS, Refused, Result, StoreFault, StoreUnavailable, not_found_collection,
)

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
DEFAULT_DATABASE_ID = "00000000-0000-0000-0000-000000000000"
CHROMA_SERVER_VERSION = "1.0.0"  # what `chroma run` 1.5.9 answers at /api/v2/version
STATE_FILE_NAME = "store.state"  # the clean marker: see Store.mark_clean
CHROMA_DB_FILE_NAME = "chroma.sqlite3"


MIN_FREE_BYTES = 1024 * 1024  # less than this free on the data disk counts as full
PROBE_FILE_NAME = "store.probe"
PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class CollectionInfo:
    api_id: str
    name: str
    dimension: int | None


@dataclass(frozen=True)
class CollectionRef:
    local_id: str
    tenant: str
    database: str


class Store:
    """Embedded Chroma under `data_dir/chroma`, with the API-id map kept beside it."""

    injected_failure: OSError | None = None  # TEST ONLY (fault injection): every change is StoreUnavailable

    def __init__(self, data_dir: Path, snapshot_index: int = 0) -> None:
        self._chroma_dir = Path(data_dir) / "chroma"
        self._state_path = Path(data_dir) / STATE_FILE_NAME
        self._lock = threading.RLock()  # guards the id maps; Chroma itself is thread-safe
        self._collections: dict[str, CollectionRef] = {}
        self._local_to_api: dict[str, str] = {}
        self._database_ids: dict[str, str] = {DEFAULT_DATABASE_ID: DEFAULT_DATABASE_ID}
        self._outcomes: OrderedDict[str, Remembered] = OrderedDict()  # client request id -> first outcome
        self._swap = threading.Condition()  # readers vs. a snapshot install swapping the store
        self._readers = 0
        self._swapping = False
        self._fresh_database: bytes | None = None  # Chroma's database right after a reset (see reset)
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
        snapshot.write_json_atomically(self._state_path, state)

    def _open(self, wipe: bool) -> Any:
        if wipe and self._chroma_dir.exists():
            shutil.rmtree(self._chroma_dir)
        self._chroma_dir.mkdir(parents=True, exist_ok=True)
        sqlite = _bindings.SqliteDBConfig(
            url=str(self._chroma_dir / CHROMA_DB_FILE_NAME),
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

    def write_snapshot(self, path: Path, header: dict[str, Any], durable: bool = True) -> None:
        """Write the store as one snapshot file. Call only from the applier thread, between
        entries: no write is in flight, so the files on disk are a consistent image. A copy that
        is only streamed away (a backup) need not be `durable`: skipping the fsync shortens the
        applier's pause."""
        fsync = os.fsync if durable else _no_fsync
        snapshot.write_snapshot(path, self._chroma_dir, dict(header, store=self._maps()), fsync=fsync)

    def _maps(self) -> dict[str, Any]:
        with self._lock:
            return {"collections": {k: [r.local_id, r.tenant, r.database] for k, r in self._collections.items()},
                    "database_ids": dict(self._database_ids),
                    "outcomes": [[rid, *dataclasses.astuple(kept)] for rid, kept in self._outcomes.items()]}

    def install_snapshot(self, path: Path, header: dict[str, Any]) -> None:
        """Replace the whole store with the snapshot's (applier thread only)."""
        def replace() -> None:
            shutil.rmtree(self._chroma_dir, ignore_errors=True)
            snapshot.extract(path, header, self._chroma_dir)
            self._load_maps(header["store"])
        self._swap_store(replace)

    def _swap_store(self, replace: Callable[[], None]) -> None:
        """Close Chroma, let `replace` rebuild its directory, open it again: with no reader inside."""
        with self._swap:
            self._swapping = True
            while self._readers:
                self._swap.wait()
        try:
            self._bindings = None
            replace()
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
            self._outcomes = OrderedDict((kept[0], Remembered(*kept[1:])) for kept in maps.get("outcomes", []))

    # ------------------------------------------------- what the state machine asks

    def tenant_exists(self, name: str) -> bool:
        return self._exists(lambda: self._bindings.get_tenant(name))

    def database_exists(self, tenant: str, name: str) -> bool:
        """Whether an op already made this database. One that exists in Chroma but has no API id
        yet can only be the current op's own attempt, cut short by a failure of the machine
        (ops apply one at a time, each until it succeeds), so it counts as not made yet."""
        with self._translated("database_exists"):
            try:
                local = self._bindings.get_database(name, tenant)
            except chroma_errors.NotFoundError:
                return False
        with self._lock:
            return str(local.id) in self._database_ids

    def collection(self, tenant: str, database: str, api_id: str) -> CollectionInfo | None:
        """The collection with this API id in this scope, or None."""
        ref = self._ref(api_id, tenant, database)
        if ref is None:
            return None
        with self._translated("collection"):
            try:
                col = self._bindings.get_collection_by_id(ref.local_id, tenant, database)
            except chroma_errors.NotFoundError:
                return None
        return CollectionInfo(api_id, col.name, col.dimension)

    def collection_named(self, tenant: str, database: str, name: str) -> CollectionInfo | None:
        with self._translated("collection_named"):
            try:
                col = self._bindings.get_collection(name, tenant, database)
            except (chroma_errors.NotFoundError, chroma_errors.InvalidArgumentError):
                return None
        with self._lock:
            api_id = self._local_to_api.get(str(col.id))
        return CollectionInfo(api_id, col.name, col.dimension) if api_id is not None else None

    def _exists(self, lookup: Callable[[], Any]) -> bool:
        with self._translated("lookup"):
            try:
                lookup()
            except chroma_errors.NotFoundError:
                return False
        return True

    def recall(self, request_id: str) -> Remembered | None:
        """The first outcome of a write that carried this client request id, if still remembered."""
        with self._lock:
            return self._outcomes.get(request_id)

    def remember(self, request_id: str, remembered: Remembered, window: int) -> None:
        """Keep the outcome; forget the oldest beyond `window` ids (the same on every replica)."""
        with self._lock:
            self._outcomes[request_id] = remembered
            while len(self._outcomes) > window:
                self._outcomes.popitem(last=False)

    def rendered_collection(self, tenant: str, database: str, api_id: str) -> dict[str, Any] | None:
        ref = self._ref(api_id, tenant, database)
        if ref is None:
            return None
        with self._translated("rendered_collection"):
            try:
                return self._render_collection(self._bindings.get_collection_by_id(ref.local_id, tenant, database))
            except chroma_errors.NotFoundError:
                return None

    # ------------------------------------------------------------- changes

    def create_tenant(self, name: str) -> None:
        with self._translated("create_tenant"):
            self._bindings.create_tenant(name)

    def create_database(self, tenant: str, name: str, database_id: str) -> None:
        """Create and map; idempotent, so a retry after a failed machine finishes the job."""
        with self._translated("create_database"):
            if not self._exists(lambda: self._bindings.get_database(name, tenant)):
                self._bindings.create_database(name, tenant)
            local = self._bindings.get_database(name, tenant)
        with self._lock:
            self._database_ids[str(local.id)] = database_id

    def delete_database(self, tenant: str, name: str) -> None:
        with self._lock:
            doomed = [cid for cid, ref in self._collections.items() if ref.tenant == tenant and ref.database == name]
        with self._translated("delete_database"):
            self._bindings.delete_database(name, tenant)
        with self._lock:
            for cid in doomed:
                self._forget_collection(cid)

    def create_collection(self, op: CreateCollection) -> dict[str, Any]:
        """Create (or, with get_or_create, get) the collection; its rendering."""
        col = self._own_collection(op)  # this op's own earlier try, cut short by the machine
        if col is None:
            with self._translated("create_collection"):
                col = self._bindings.create_collection(
                    op.name, op.configuration_json, op.schema_json, op.metadata, op.get_or_create, op.tenant,
                    op.database)
        local_id = str(col.id)
        with self._lock:
            created = self._local_to_api.get(local_id, op.collection_id) == op.collection_id
            if created:
                self._collections[op.collection_id] = CollectionRef(local_id, op.tenant, op.database)
                self._local_to_api[local_id] = op.collection_id
        if created and op.hnsw_num_threads is not None:
            col = self._set_num_threads(col, op)
        return self._render_collection(col)

    def _own_collection(self, op: CreateCollection) -> Any:
        """The collection this op created before a failure of the machine stopped it: mapped to
        the op's id already, or in Chroma under the op's name with no API id (ops apply one at a
        time, each until it succeeds, so nothing else can have made it)."""
        with self._lock:
            ref = self._collections.get(op.collection_id)
        with self._translated("create_collection"):
            try:
                if ref is not None:
                    return self._bindings.get_collection_by_id(ref.local_id, op.tenant, op.database)
                col = self._bindings.get_collection(op.name, op.tenant, op.database)
            except (chroma_errors.NotFoundError, chroma_errors.InvalidArgumentError):
                return None
        with self._lock:
            return col if str(col.id) not in self._local_to_api else None

    def _set_num_threads(self, col: Any, op: CreateCollection) -> Any:
        """Chroma fills HNSW `num_threads` with this machine's CPU count, so replicas on different
        machines would store different configurations; store the proposer's choice instead."""
        with self._translated("create_collection"):
            self._bindings.update_collection(str(col.id), None, None,
                                             json.dumps({"hnsw": {"num_threads": op.hnsw_num_threads}}))
            return self._bindings.get_collection_by_id(str(col.id), op.tenant, op.database)

    def update_collection(self, op: UpdateCollection) -> None:
        ref = self._required_ref(op.collection_id, op.tenant, op.database)
        with self._translated("update_collection"):
            self._bindings.update_collection(ref.local_id, op.new_name, op.new_metadata, op.new_configuration_json)

    def delete_collection(self, tenant: str, database: str, name: str) -> None:
        with self._translated("delete_collection"):
            col = self._bindings.get_collection(name, tenant, database)
            self._bindings.delete_collection(name, tenant, database)
        with self._lock:
            api_id = self._local_to_api.get(str(col.id))
            if api_id is not None:
                self._forget_collection(api_id)

    def write_records(self, op: WriteRecords) -> None:
        """add / upsert / update as one Chroma call, so that readers see the whole batch or none
        of it. (It holds this process's GIL for the whole call, up to seconds for a full batch;
        Raft runs in its own process, see raft_process.py, so heartbeats do not wait for it.)"""
        ref = self._required_ref(op.collection_id, op.tenant, op.database)
        if not op.ids:
            return
        embeddings = unpack_embeddings(op.embeddings)
        if op.keep_rows:
            embeddings = _with_null_rows(embeddings, op.keep_rows)
        rest = (op.metadatas, op.documents, op.uris, ref.tenant, ref.database)
        with self._translated(op.kind):
            if op.kind == "add":
                self._bindings.add(op.ids, ref.local_id, embeddings, *rest)
            elif op.kind == "upsert":
                self._bindings.upsert(ref.local_id, op.ids, embeddings, *rest)
            else:
                self._bindings.update(ref.local_id, op.ids, embeddings, *rest)

    def delete_records(self, op: DeleteRecords) -> int:
        ref = self._required_ref(op.collection_id, op.tenant, op.database)
        with self._translated("delete_records"):
            deleted = self._bindings.delete(
                ref.local_id, op.ids, _json_or_none(op.where), _json_or_none(op.where_document), op.limit,
                ref.tenant, ref.database,
            )
        return int(deleted or 0)

    def reset(self) -> None:
        """Chroma's reset deletes its database and runs every migration again (about 40 sqlite
        transactions, each fsynced: ~40 ms, on every replica). The first reset is Chroma's own; its
        result, a fresh database, is kept, and later resets put a copy of it in place instead (~5 ms).
        The copy is Chroma's database right after its own reset, so both leave the same store
        (their `.dump`s are identical but for a row in Chroma's internal write-lock table, which
        Chroma adds whenever it opens an existing database, as at every restart; no API reads it;
        tests/test_store_reset.py). Nothing needs fsyncing: the store is marked dirty
        before any change, and `mark_clean` fsyncs every file."""
        with self._translated("reset"):
            if self._fresh_database is None:
                self._bindings.reset()
                self._fresh_database = (self._chroma_dir / CHROMA_DB_FILE_NAME).read_bytes()
            else:
                self._reopen_fresh()
        with self._lock:
            self._collections.clear()
            self._local_to_api.clear()
            self._database_ids = {DEFAULT_DATABASE_ID: DEFAULT_DATABASE_ID}
            # The remembered outcomes stay: a retry after a reset must not apply twice.

    def _reopen_fresh(self) -> None:
        """Swap in a copy of the fresh database, with no reader inside (as a snapshot install).
        The copy is written beside the store first, so a full disk fails before anything changed."""
        staged = self._chroma_dir.with_name(CHROMA_DB_FILE_NAME + ".fresh")
        staged.write_bytes(self._fresh_database)

        def replace() -> None:
            shutil.rmtree(self._chroma_dir)
            self._chroma_dir.mkdir(parents=True)
            os.replace(staged, self._chroma_dir / CHROMA_DB_FILE_NAME)
        self._swap_store(replace)

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

    def _required_ref(self, api_id: str, tenant: str, database: str) -> CollectionRef:
        ref = self._ref(api_id, tenant, database)
        if ref is None:  # the state machine checks first; this is its guard
            raise Refused(not_found_collection(api_id))
        return ref

    # ------------------------------------------------- failures, by type

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Chroma's failures as the store's three kinds, decided by type and errno, never by text:
        a typed Chroma answer is Refused; an OSError or MemoryError is StoreUnavailable when its
        errno says the machine failed; Chroma's InternalError (it gives no errno) is
        StoreUnavailable when a probe of the data directory fails, else StoreFault."""
        if self.injected_failure is not None:  # TEST ONLY: see Node.inject_faults
            raise StoreUnavailable(f"{what}: {self.injected_failure}")
        try:
            yield
        except chroma_errors.InternalError as exc:
            failure = self.environment_failure()
            if failure is not None:
                raise StoreUnavailable(f"{what}: {failure}") from exc
            raise StoreFault(f"{what}: Chroma InternalError: {exc.message()}") from exc
        except chroma_errors.ChromaError as exc:
            raise Refused(Result.error(_status_of(exc), _name_of(exc), exc.message())) from exc
        except MemoryError as exc:
            raise StoreUnavailable(f"{what}: out of memory") from exc
        except OSError as exc:
            if exc.errno in ENVIRONMENTAL_ERRNOS:
                raise StoreUnavailable(f"{what}: {exc}") from exc
            raise StoreFault(f"{what}: {exc!r}") from exc
        except (TypeError, ValueError, OverflowError) as exc:  # the bindings refuse a value's type
            raise Refused(Result.error(400, "InvalidArgumentError", str(exc))) from exc
        except BaseException as exc:
            if not _is_rust_panic(exc):
                raise
            raise StoreFault(f"{what}: Chroma panicked: {exc}") from None  # its state may be half-changed

    def environment_failure(self) -> OSError | None:
        """Whether the data directory's file system works: not read-only, not (nearly) full, a small
        file can be written and fsynced, a descriptor can be opened. None if healthy."""
        try:
            stat = os.statvfs(self._chroma_dir)
            if stat.f_flag & os.ST_RDONLY:
                return OSError(errno.EROFS, "read-only file system", str(self._chroma_dir))
            if stat.f_bavail * stat.f_frsize < MIN_FREE_BYTES or (stat.f_files and stat.f_favail == 0):
                return OSError(errno.ENOSPC, "no space left on device", str(self._chroma_dir))
            probe = self._chroma_dir.parent / PROBE_FILE_NAME
            with open(probe, "wb") as out:
                out.write(b"\0" * PROBE_BYTES)
                out.flush()
                os.fsync(out.fileno())
            probe.unlink()
        except MemoryError:
            return OSError(errno.ENOMEM, "out of memory")
        except OSError as exc:
            return exc if exc.errno in ENVIRONMENTAL_ERRNOS else None
        return None

    # ------------------------------------------------------------------ reads

    def read(self, fn: Callable[[], Result]) -> Result:
        """Run a read, turning Chroma's typed errors into results (by type, as `chroma run` does)."""
        try:
            return fn()
        except chroma_errors.ChromaError as exc:
            return Result.error(_status_of(exc), _name_of(exc), exc.message())

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
        # Each attribute read of a bindings result copies the whole column: read each once.
        ids, embeddings = resp.ids, resp.embeddings
        metadatas = resp.metadatas or [None] * len(ids)
        documents = resp.documents or [None] * len(ids)
        digest = hashlib.sha256()
        for i in sorted(range(len(ids)), key=ids.__getitem__):
            vector = np.asarray(embeddings[i], dtype="<f4").tobytes() if embeddings is not None else b""
            row = [ids[i], metadatas[i], documents[i]]
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


def _is_rust_panic(exc: BaseException) -> bool:
    """pyo3's PanicException (a BaseException, so `except Exception` misses it), by its type."""
    kind = type(exc)
    return kind.__module__ == "pyo3_runtime" and kind.__name__ == "PanicException"


def _status_of(exc: Exception) -> int:
    """The HTTP status `chroma run` answers for a typed Chroma error."""
    if isinstance(exc, chroma_errors.NotFoundError):
        return 404
    if isinstance(exc, chroma_errors.InvalidArgumentError):
        return 400
    code = exc.code() if isinstance(exc, chroma_errors.ChromaError) else 500
    return code if isinstance(code, int) and 400 <= code < 600 else 500


def _name_of(exc: Exception) -> str:
    if isinstance(exc, chroma_errors.NotFoundError):
        return "NotFoundError"
    if isinstance(exc, chroma_errors.InvalidArgumentError):
        return "InvalidArgumentError"
    return type(exc).__name__


def _no_fsync(fd: int) -> None:
    """For copies that do not have to survive a crash of this machine."""


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
