"""Typed reads: what the HTTP layer asks the node for, each naming its consistency.

Owns: one frozen dataclass per kind of read and how it runs against the store. The HTTP
layer builds a `Read` and hands it to `Node.read`, which waits for the read's consistency
(a linearizable barrier, a minimum applied index, or nothing for `stale`) and then runs the
query on the read pool. Handlers never touch the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Union

from raftchroma.result import Result

LINEARIZABLE = "linearizable"
STALE = "stale"
CONSISTENCIES = (LINEARIZABLE, STALE)


class ReadStore(Protocol):
    def get_tenant(self, name: str) -> Result: ...
    def get_database(self, tenant: str, name: str) -> Result: ...
    def list_databases(self, tenant: str, limit: int | None, offset: int | None) -> Result: ...
    def list_collections(self, tenant: str, database: str, limit: int | None, offset: int) -> Result: ...
    def count_collections(self, tenant: str, database: str) -> Result: ...
    def get_collection(self, tenant: str, database: str, name: str) -> Result: ...
    def get_collection_by_id(self, tenant: str, database: str, api_id: str) -> Result: ...
    def count(self, tenant: str, database: str, api_id: str) -> Result: ...
    def get(self, tenant: str, database: str, api_id: str, req: dict[str, Any]) -> Result: ...
    def query(self, tenant: str, database: str, api_id: str, req: dict[str, Any]) -> Result: ...
    def collection_digests(self) -> dict[str, str]: ...
    def collection_name_index(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class GetTenant:
    name: str

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.get_tenant(self.name)


@dataclass(frozen=True)
class GetDatabase:
    tenant: str
    name: str

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.get_database(self.tenant, self.name)


@dataclass(frozen=True)
class ListDatabases:
    tenant: str
    limit: int | None
    offset: int | None

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.list_databases(self.tenant, self.limit, self.offset)


@dataclass(frozen=True)
class ListCollections:
    tenant: str
    database: str
    limit: int | None
    offset: int

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.list_collections(self.tenant, self.database, self.limit, self.offset)


@dataclass(frozen=True)
class CountCollections:
    tenant: str
    database: str

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.count_collections(self.tenant, self.database)


@dataclass(frozen=True)
class GetCollection:
    tenant: str
    database: str
    name: str

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.get_collection(self.tenant, self.database, self.name)


@dataclass(frozen=True)
class GetCollectionById:
    tenant: str
    database: str
    api_id: str

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.get_collection_by_id(self.tenant, self.database, self.api_id)


@dataclass(frozen=True)
class CountRecords:
    tenant: str
    database: str
    api_id: str

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.count(self.tenant, self.database, self.api_id)


@dataclass(frozen=True)
class GetRecords:
    tenant: str
    database: str
    api_id: str
    request: dict[str, Any]

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.get(self.tenant, self.database, self.api_id, self.request)


@dataclass(frozen=True)
class QueryRecords:
    tenant: str
    database: str
    api_id: str
    request: dict[str, Any]

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return store.query(self.tenant, self.database, self.api_id, self.request)


@dataclass(frozen=True)
class Digest:
    """Per-collection digests at this node's applied index (for convergence checks)."""

    def run(self, store: ReadStore, applied_index: int) -> Result:
        return Result(200, {"applied_index": applied_index, "collections": store.collection_digests(),
                            "names": store.collection_name_index()})


Query = Union[GetTenant, GetDatabase, ListDatabases, ListCollections, CountCollections, GetCollection,
              GetCollectionById, CountRecords, GetRecords, QueryRecords, Digest]


@dataclass(frozen=True)
class Read:
    """A query and the consistency it must be answered at."""

    query: Query
    consistency: str = LINEARIZABLE
    min_index: int | None = None
