"""The Chroma v2 HTTP API served by every node (aiohttp).

Owns: routes, request parsing (via `parse`), rendering results and errors as Chroma
1.5.9 does, and the raftchroma headers:

- `X-Raftchroma-Read-Consistency: linearizable | stale` chooses a read's consistency
  (default from cluster.toml);
- `X-Raftchroma-Min-Index: N` makes a read wait until this node has applied index N;
- every successful write answers `X-Raftchroma-Index: N`, the log index it was applied at;
- `X-Raftchroma-Request-Id: ID` on a write makes it apply at most once: a retry with the same
  id answers the first outcome (see state_machine.py).

Handlers parse, build a typed op (command.py) or a typed read (reads.py), hand it to the node
and render; they hold no replication logic and never touch the store. Before a handler runs,
`intake` (deadlines, the body budget, gzip) and `auth` (tokens and scopes, per route) have had
their say; both are installed here as middleware and own their decisions.

Operations: `GET /metrics` (Prometheus text, metrics.py), `GET /readyz` (200 when this node can
serve: a usable leader and its store caught up; else 503 with the reason), `GET /livez` (200 while
this process serves and its applier and Raft process run), and `GET /raftchroma/status`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any, Awaitable, Callable, TypeVar

import orjson
from aiohttp import web

from raftchroma import backup, machine_defaults, reads
from raftchroma.command import (
    CreateCollection, CreateDatabase, CreateTenant, DeleteCollection, DeleteDatabase, DeleteRecords, Op, Reset,
    UpdateCollection, WriteRecords,
)
from raftchroma.config import is_loopback
from raftchroma.errors import ApiError, InvalidArgument, result_error
from raftchroma.http import auth, intake, parse, tls
from raftchroma.node import Node
from raftchroma.result import Result, error_body, not_found_collection
from raftchroma.store import CHROMA_SERVER_VERSION

log = logging.getLogger(__name__)

READ_CONSISTENCY_HEADER = "X-Raftchroma-Read-Consistency"
MIN_INDEX_HEADER = "X-Raftchroma-Min-Index"
INDEX_HEADER = "X-Raftchroma-Index"
REQUEST_ID_HEADER = "X-Raftchroma-Request-Id"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
NODE_KEY = web.AppKey("node", Node)
BACKUPS_KEY = web.AppKey("backups", backup.BackupTaker)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def error_response(exc: ApiError) -> web.Response:
    response = json_response(exc.body(), status=exc.status, headers=dict(exc.headers) or None)
    if exc.close_connection:
        response.force_close()
    return response


def result_response(result: Result, index: int | None = None) -> web.Response:
    # Also on a committed write that Chroma refused (e.g. 409): the index still orders it.
    headers = {INDEX_HEADER: str(index)} if index is not None else None
    return json_response(result.body, status=result.status, headers=headers)


@web.middleware
async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by its route's pattern (bounded), not its URL (unbounded)."""
    started, status = time.monotonic(), 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first (nginx's code for it)
        raise
    finally:
        resource = request.match_info.route.resource
        node_of(request).metrics.http_request(request.method, resource.canonical if resource is not None else None,
                                              status, time.monotonic() - started)


@web.middleware
async def chroma_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPMethodNotAllowed as exc:
        return web.Response(status=405, headers={"Allow": ",".join(sorted(exc.allowed_methods))})
    except web.HTTPNotFound:
        return web.Response(status=404)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug: answer Chroma-shaped, keep serving
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(error_body("InternalError", str(exc)), 500)


# ------------------------------------------------------------------ helpers


def node_of(request: web.Request) -> Node:
    return request.app[NODE_KEY]


async def body_as(request: web.Request, spec: parse.Struct) -> dict[str, Any]:
    """Stage 1 of Chroma's checks: content type, then the body deserialized into `spec`. A large
    body is parsed in a worker thread, so the event loop keeps answering meanwhile."""
    parse.check_content_type(request.headers.get("Content-Type"))
    raw = await intake.read_body(request)
    if len(raw) >= request.app[intake.INTAKE_KEY].limits.json_thread_min_bytes:
        return await asyncio.to_thread(parse.payload, raw, spec)
    return parse.payload(raw, spec)


async def json_of(request: web.Request) -> Any:
    """A raftchroma-own route's JSON body (read within the same limits as Chroma's routes)."""
    try:
        return orjson.loads(await intake.read_body(request))
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"Failed to parse the request body as JSON: {exc}") from None


def read_of(request: web.Request, query: reads.Query) -> reads.Read:
    """The typed read for `query` at the consistency the request's headers ask for."""
    node = node_of(request)
    consistency = request.headers.get(READ_CONSISTENCY_HEADER, node.config.read_consistency).strip().lower()
    if consistency not in reads.CONSISTENCIES:
        raise InvalidArgument(f"{READ_CONSISTENCY_HEADER} must be 'linearizable' or 'stale', got {consistency!r}")
    raw_index = request.headers.get(MIN_INDEX_HEADER)
    if raw_index is None:
        return reads.Read(query, consistency)
    if not raw_index.strip().isdigit():
        raise InvalidArgument(f"{MIN_INDEX_HEADER} must be a non-negative integer, got {raw_index!r}")
    return reads.Read(query, consistency, int(raw_index))


async def read_result(request: web.Request, query: reads.Query) -> Result:
    return await node_of(request).read(read_of(request, query))


async def do_read(request: web.Request, query: reads.Query) -> web.Response:
    return result_response(await read_result(request, query))


def request_id_of(request: web.Request) -> str | None:
    raw = request.headers.get(REQUEST_ID_HEADER)
    if raw is None:
        return None
    if not _REQUEST_ID_RE.match(raw.strip()):
        raise InvalidArgument(f"{REQUEST_ID_HEADER} must be 1-128 characters of [A-Za-z0-9._:-] (a UUID fits)")
    return raw.strip()


async def do_write(request: web.Request, op: Op) -> web.Response:
    index, result = await node_of(request).write(op, request_id_of(request))
    return result_response(result, index)


def path_scope(request: web.Request) -> tuple[str, str]:
    return request.match_info["tenant"], request.match_info["database"]


def path_collection_id(request: web.Request, by_id_route: bool = False) -> str:
    return parse.collection_id(request.match_info["collection_id"], by_id_route)


def query_params(request: web.Request, params: tuple[parse.QueryParam, ...]) -> dict[str, Any]:
    return parse.query_params(request.query.items(), params)


async def require_collection(request: web.Request, api_id: str) -> dict[str, Any]:
    """The collection as this read sees it, or Chroma's 404 for the records routes."""
    tenant, database = path_scope(request)
    result = await read_result(request, reads.GetCollectionById(tenant, database, api_id))
    if result.status == 404:
        result = not_found_collection(api_id)
    if not result.ok:
        raise result_error(result.status, result.body["error"], result.body["message"])
    return result.body


async def checked(request: web.Request, api_id: str, check: Callable[[], T]) -> T:
    """Stage 3 (the payload's own checks) with Chroma's precedence: it looks the collection up
    first, so a missing collection (404) and then a wrong dimension beat the payload's errors.
    Only a failing request pays for the lookup."""
    try:
        return check()
    except parse.LengthMismatch as exc:
        expected = (await require_collection(request, api_id))["dimension"]
        if expected is not None and exc.dimension is not None and exc.dimension != expected:
            raise InvalidArgument(
                f"Collection expecting embedding with dimension of {expected}, got {exc.dimension}") from None
        raise
    except ApiError:
        await require_collection(request, api_id)
        raise


# ------------------------------------------------------------ system routes


async def heartbeat(request: web.Request) -> web.Response:
    return json_response({"nanosecond heartbeat": time.time_ns()})


async def version(request: web.Request) -> web.Response:
    return json_response(CHROMA_SERVER_VERSION)


async def healthcheck(request: web.Request) -> web.Response:
    return json_response({"is_executor_ready": True, "is_log_client_ready": True})


async def pre_flight_checks(request: web.Request) -> web.Response:
    return json_response({"max_batch_size": node_of(request).config.max_batch_size, "supports_base64_encoding": True})


async def identity(request: web.Request) -> web.Response:
    return json_response(auth.identity_body(auth.request_token(request)))


async def reset(request: web.Request) -> web.Response:
    # Decided here, before proposing: allow_reset is a cluster-wide setting (peers with another
    # value are refused), and the replicated Reset op itself reads no configuration.
    if not node_of(request).config.allow_reset:
        raise ApiError("Reset is disabled by config", status=403, name="ChromaError")
    return await do_write(request, Reset())


async def v1_gone(request: web.Request) -> web.Response:
    if request.method == "POST":  # Chroma routes every v1 method but POST to this answer
        return web.Response(status=405)
    return json_response(error_body("Unimplemented", "The v1 API is deprecated. Please use /v2 apis"), 410)


# ------------------------------------------------------- tenants, databases


async def create_tenant(request: web.Request) -> web.Response:
    name = parse.tenant_name((await body_as(request, parse.CREATE_TENANT))["name"])
    return await do_write(request, CreateTenant(name))


async def get_tenant(request: web.Request) -> web.Response:
    return await do_read(request, reads.GetTenant(request.match_info["tenant"]))


async def update_tenant(request: web.Request) -> web.Response:
    await body_as(request, parse.UPDATE_TENANT)
    return json_response({})  # local Chroma accepts and ignores it: no state changes


async def list_databases(request: web.Request) -> web.Response:
    page = query_params(request, parse.PAGING)
    return await do_read(request, reads.ListDatabases(request.match_info["tenant"], page["limit"], page["offset"]))


async def create_database(request: web.Request) -> web.Response:
    name = parse.database_name((await body_as(request, parse.CREATE_DATABASE))["name"])
    return await do_write(request, CreateDatabase(request.match_info["tenant"], name, str(uuid.uuid4())))


async def get_database(request: web.Request) -> web.Response:
    return await do_read(request, reads.GetDatabase(*path_scope(request)))


async def delete_database(request: web.Request) -> web.Response:
    tenant, database = path_scope(request)
    return await do_write(request, DeleteDatabase(tenant, database))


# ------------------------------------------------------------- collections


async def list_collections(request: web.Request) -> web.Response:
    tenant, database = path_scope(request)
    page = query_params(request, parse.PAGING)
    return await do_read(request, reads.ListCollections(tenant, database, page["limit"], page["offset"] or 0))


async def count_collections(request: web.Request) -> web.Response:
    return await do_read(request, reads.CountCollections(*path_scope(request)))


def json_text(value: dict[str, Any] | None) -> str | None:
    return orjson.dumps(value).decode() if value is not None else None


async def create_collection(request: web.Request) -> web.Response:
    body = await body_as(request, parse.CREATE_COLLECTION)
    tenant, database = path_scope(request)
    op = CreateCollection(
        tenant=tenant, database=database, name=body["name"], collection_id=str(uuid.uuid4()),
        metadata=body["metadata"], configuration_json=json_text(body["configuration"]),
        schema_json=json_text(body["schema"]), get_or_create=bool(body["get_or_create"]),
        hnsw_num_threads=machine_defaults.hnsw_num_threads(body["configuration"], body["schema"]),
    )
    return await do_write(request, op)


async def get_collection(request: web.Request) -> web.Response:
    tenant, database = path_scope(request)
    return await do_read(request, reads.GetCollection(tenant, database, request.match_info["collection_id"]))


async def get_collection_by_id(request: web.Request) -> web.Response:
    tenant, database = path_scope(request)
    api_id = path_collection_id(request, by_id_route=True)
    return await do_read(request, reads.GetCollectionById(tenant, database, api_id))


async def update_collection(request: web.Request) -> web.Response:
    body = await body_as(request, parse.UPDATE_COLLECTION)
    tenant, database = path_scope(request)
    op = UpdateCollection(
        tenant=tenant, database=database, collection_id=path_collection_id(request), new_name=body["new_name"],
        new_metadata=body["new_metadata"], new_configuration_json=json_text(body["new_configuration"]),
    )
    return await do_write(request, op)


async def delete_collection(request: web.Request) -> web.Response:
    tenant, database = path_scope(request)
    return await do_write(request, DeleteCollection(tenant, database, request.match_info["collection_id"]))


# ------------------------------------------------------------------ records


def records_handler(kind: str, spec: parse.Struct) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        body = await body_as(request, spec)
        tenant, database = path_scope(request)
        api_id = path_collection_id(request)
        fields = await checked(request, api_id, lambda: parse.records(body, kind))
        limit = node_of(request).config.max_batch_size
        if len(fields["ids"]) > limit:  # what Chroma's clients refuse before sending (pre-flight-checks)
            raise InvalidArgument(f"Batch size {len(fields['ids'])} exceeds maximum batch size {limit}")
        return await do_write(request, WriteRecords(kind=kind, tenant=tenant, database=database,
                                                    collection_id=api_id, **fields))
    return handle


async def delete_records(request: web.Request) -> web.Response:
    body = await body_as(request, parse.DELETE)
    tenant, database = path_scope(request)
    api_id = path_collection_id(request)
    req = await checked(request, api_id, lambda: parse.delete_request(body))
    op = DeleteRecords(tenant=tenant, database=database, collection_id=api_id, ids=req["ids"], where=req["where"],
                       where_document=req["where_document"], limit=req["limit"])
    return await do_write(request, op)


def records_read(spec: Any, parse_request: Callable[..., dict[str, Any]],
                 query: type[reads.GetRecords] | type[reads.QueryRecords]) -> Handler:
    """get and query: parse, check the collection as Chroma orders its checks, then read."""
    async def handle(request: web.Request) -> web.Response:
        body = await body_as(request, spec)
        tenant, database = path_scope(request)
        api_id = path_collection_id(request)
        bound = {"max_rows": node_of(request).config.max_query_rows} if query is reads.QueryRecords else {}
        req = await checked(request, api_id, lambda: parse_request(body, **bound))
        return await do_read(request, query(tenant, database, api_id, req))
    return handle


async def count_records(request: web.Request) -> web.Response:
    tenant, database = path_scope(request)
    api_id = path_collection_id(request)
    query_params(request, parse.READ_LEVEL)  # validated as Chroma does; every read here sees the WAL
    return await do_read(request, reads.CountRecords(tenant, database, api_id))


# ------------------------------------------- routes local Chroma does not implement


def unsupported(message: str, status: int = 501, name: str = "ChromaError", spec: parse.Struct | None = None) -> Handler:
    """A collection route local Chroma answers with an error once the body and collection check out."""
    async def handle(request: web.Request) -> web.Response:
        if spec is not None:
            await body_as(request, spec)
        await require_collection(request, path_collection_id(request))
        return json_response(error_body(name, message), status)
    return handle


def not_implemented(message: str, status: int = 501, name: str = "ChromaError",
                    spec: parse.Struct | None = None) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        if spec is not None:
            await body_as(request, spec)
        path_collection_id(request)
        return json_response(error_body(name, message), status)
    return handle


async def get_by_crn(request: web.Request) -> web.Response:
    crn = request.match_info["crn"]
    parts = crn.split(":")
    if len(parts) != 3 or not all(parts):
        raise InvalidArgument("Validation error: crn: CRN must be in the format "
                              "<tenant_resource_name>:<database_name>:<collection_name> with non-empty parts")
    # `chroma run` panics on a well-formed CRN (its local sysdb does not implement the lookup).
    raise ApiError("Getting a collection by CRN is not implemented for local chroma", status=501)


# ------------------------------------------------------------ raftchroma's own


async def raft_status(request: web.Request) -> web.Response:
    body = node_of(request).status()
    body["request_body_bytes_in_flight"] = request.app[intake.INTAKE_KEY].budget.in_flight_bytes
    return json_response(body)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = node_of(request).metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def readyz(request: web.Request) -> web.Response:
    node = node_of(request)
    reason = node.readiness()
    body = {"ready": reason is None, "node": node.node.id, "applied_index": node.applied_index}
    return json_response(body if reason is None else {**body, "reason": reason}, 200 if reason is None else 503)


async def livez(request: web.Request) -> web.Response:
    node = node_of(request)
    reason = node.liveness()
    body = {"live": reason is None, "node": node.node.id}
    return json_response(body if reason is None else {**body, "reason": reason}, 200 if reason is None else 503)


async def raft_digest(request: web.Request) -> web.Response:
    """Per-collection digests at this node's applied index (after the read's consistency wait)."""
    return await do_read(request, reads.Digest())


async def raft_backup(request: web.Request) -> web.StreamResponse:
    """The whole store as one archive (backup.py), consistent at an index at least that of every
    write acknowledged before this request; the index is also in `X-Raftchroma-Index`. The applier
    pauses only while the store is copied locally, never while the archive streams."""
    node = node_of(request)
    copy = await request.app[BACKUPS_KEY].take(node.config.read_timeout_s)
    try:
        stream = backup.ArchiveStream(copy)
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(stream.size_bytes),
            INDEX_HEADER: str(copy.metadata["index"]),
            "Content-Disposition": f'attachment; filename="raftchroma-{copy.metadata["index"]}.backup"'})
        await response.prepare(request)
        async for chunk in backup.stream_chunks(stream):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        copy.release()  # deletes the local copy; the next backup may start


TRANSFER_TIMEOUT_S = 5.0


async def transfer_leader(request: web.Request) -> web.Response:
    """`{"to": "n3"}` (or `{}`: the most caught-up peer): the leader hands leadership over with
    Raft's TimeoutNow and answers once another node leads. 409 NotLeader on any other node."""
    body = await json_of(request) if request.can_read_body else {}
    if not isinstance(body, dict) or not isinstance(body.get("to"), (str, type(None))):
        raise InvalidArgument('expected {"to": "<node id>"} or {}')
    node = node_of(request)
    new_leader = await node.transfer_leadership(body.get("to"), TRANSFER_TIMEOUT_S)
    return json_response({"leader": new_leader})


MEMBERSHIP_TIMEOUT_S = 10.0


async def add_member(request: web.Request) -> web.Response:
    """`{"id": "n4", "raft": "host:port", "http": "host:port"}`: the leader adds a non-voting member
    (it replicates and serves reads, and is promoted once caught up). 409 NotLeader on any other node,
    409 MembershipChangeRefused with the reason (membership.plan_change)."""
    body = await json_of(request)
    if not (isinstance(body, dict) and set(body) <= {"id", "raft", "http"}
            and all(isinstance(body.get(k), str) for k in ("id", "raft", "http"))):
        raise InvalidArgument('expected {"id": "<node id>", "raft": "<host:port>", "http": "<host:port>"}')
    return await _change_membership(request, {"op": "add", **body})


async def promote_member(request: web.Request) -> web.Response:
    """Make a caught-up non-voter a voter; refused while it is behind or not connected."""
    return await _change_membership(request, {"op": "promote", "id": request.match_info["member_id"]})


async def remove_member(request: web.Request) -> web.Response:
    """Remove a member (voter or not). The leader cannot remove itself: transfer leadership first."""
    return await _change_membership(request, {"op": "remove", "id": request.match_info["member_id"]})


async def _change_membership(request: web.Request, change: dict[str, Any]) -> web.Response:
    result = await node_of(request).change_membership(change, MEMBERSHIP_TIMEOUT_S)
    return json_response(result)


async def list_members(request: web.Request) -> web.Response:
    """The membership in force on this node (the last membership entry in its log)."""
    status = node_of(request).status()
    return json_response({"members": status["members"], "leader": status["leader"],
                         "membership_index": status["membership_index"]})


async def test_partition(request: web.Request) -> web.Response:
    """TEST ONLY: `{"blocked": ["n2", ...]}` drops Raft traffic with those peers; `[]` heals;
    `"inbound_only": true` drops only what they send here. 404 unless run with `--fault-injection`."""
    node = node_of(request)
    if not node.fault_injection:
        raise web.HTTPNotFound()
    body = await json_of(request)
    if not isinstance(body, dict):
        raise InvalidArgument("expected {\"blocked\": [node ids], \"inbound_only\": false}")
    blocked, inbound_only = body.get("blocked"), body.get("inbound_only", False)
    if not isinstance(blocked, list) or not all(isinstance(n, str) for n in blocked) or not isinstance(inbound_only, bool):
        raise InvalidArgument("expected {\"blocked\": [node ids], \"inbound_only\": false}")
    try:
        node.replication.block_peers(blocked, inbound_only)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return json_response({"blocked": node.replication.blocked_peers()})


async def test_faults(request: web.Request) -> web.Response:
    """TEST ONLY: `{"disk_full": bool, "apply_fails": bool}` (see Node.inject_faults); both false
    heals. Answers 404 unless the node runs with `--fault-injection`."""
    node = node_of(request)
    if not node.fault_injection:
        raise web.HTTPNotFound()
    body = await json_of(request)
    flags = {key: body.get(key, False) for key in ("disk_full", "apply_fails")} if isinstance(body, dict) else {}
    if not flags or not all(isinstance(v, bool) for v in flags.values()):
        raise InvalidArgument('expected {"disk_full": false, "apply_fails": false}')
    return json_response(node.inject_faults(**flags))


RAFT_STALL_PLACES = ("fsync", "tick")


async def test_raft_stall(request: web.Request) -> web.Response:
    """TEST ONLY: `{"seconds": s, "at": "fsync" | "tick"}`: the Raft tick thread is held up once for
    `s` (0 < s <= 10) in the journal's next fsync, or before its next tick (Replication.stall).
    Answers 404 unless the node runs with `--fault-injection`."""
    node = node_of(request)
    if not node.fault_injection:
        raise web.HTTPNotFound()
    body = await json_of(request)
    seconds, at = (body.get("seconds"), body.get("at")) if isinstance(body, dict) else (None, None)
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 10
            or at not in RAFT_STALL_PLACES):
        raise InvalidArgument('expected {"seconds": s, "at": "fsync" or "tick"} with 0 < s <= 10')
    node.replication.stall(float(seconds), at)
    return json_response({"seconds": float(seconds), "at": at})


def add_routes(app: web.Application) -> None:
    v2 = "/api/v2"
    scope = v2 + "/tenants/{tenant}/databases/{database}"
    col = scope + "/collections/{collection_id:[^/]+}"  # aiohttp's default excludes braces; Chroma takes "{uuid}"
    r = app.router
    r.add_get(v2, heartbeat)
    r.add_get(v2 + "/heartbeat", heartbeat)
    r.add_get(v2 + "/version", version)
    r.add_get(v2 + "/healthcheck", healthcheck)
    r.add_get(v2 + "/pre-flight-checks", pre_flight_checks)
    r.add_get(v2 + "/auth/identity", identity)
    r.add_post(v2 + "/reset", reset)
    r.add_get(v2 + "/collections/{crn}", get_by_crn)
    r.add_post(v2 + "/tenants", create_tenant)
    r.add_get(v2 + "/tenants/{tenant}", get_tenant)
    r.add_patch(v2 + "/tenants/{tenant}", update_tenant)
    r.add_get(v2 + "/tenants/{tenant}/databases", list_databases)
    r.add_post(v2 + "/tenants/{tenant}/databases", create_database)
    r.add_get(scope, get_database)
    r.add_delete(scope, delete_database)
    r.add_get(scope + "/collections", list_collections)
    r.add_post(scope + "/collections", create_collection)
    r.add_get(scope + "/collections_count", count_collections)
    r.add_get(scope + "/collections/by-id/{collection_id:[^/]+}", get_collection_by_id)
    r.add_get(col, get_collection)
    r.add_put(col, update_collection)
    r.add_delete(col, delete_collection)
    r.add_post(col + "/add", records_handler("add", parse.ADD))
    r.add_post(col + "/upsert", records_handler("upsert", parse.UPSERT))
    r.add_post(col + "/update", records_handler("update", parse.UPDATE))
    r.add_post(col + "/delete", delete_records)
    r.add_post(col + "/get", records_read(parse.GET, parse.get_request, reads.GetRecords))
    r.add_post(col + "/query", records_read(parse.QUERY, parse.query_request, reads.QueryRecords))
    r.add_get(col + "/count", count_records)
    r.add_post(col + "/search", unsupported(
        "Error executing plan: Not implemented: Search operation is not implemented for local executor",
        spec=parse.SEARCH))
    r.add_post(col + "/fork", unsupported("Collection forking is unsupported for local chroma", spec=parse.FORK))
    r.add_get(col + "/fork_count", unsupported("Count forks is unsupported for local chroma"))
    r.add_get(col + "/indexing_status", unsupported("Method scout_logs is not implemented", 500, "InternalError"))
    r.add_post(col + "/functions/attach", not_implemented(
        "Tonic error: code: 'Operation is not implemented or not supported', message: \" Attached Function "
        "operations not yet implemented in SqliteSysDb\"", spec=parse.ATTACH_FUNCTION))
    r.add_get(col + "/functions/{function_name}", not_implemented("Attached function not found", 404, "NotFoundError"))
    r.add_post(col + "/attached_functions/{name}/detach", not_implemented(
        "Tonic error: code: 'Operation is not implemented or not supported', message: \"Not implemented\"",
        spec=parse.ANY_OBJECT))
    r.add_route("*", "/api/v1/{tail:.+}", v1_gone)
    r.add_get("/raftchroma/status", raft_status)
    r.add_get("/metrics", metrics)
    r.add_get("/readyz", readyz)
    r.add_get("/livez", livez)
    r.add_get("/raftchroma/digest", raft_digest)
    r.add_get("/raftchroma/backup", raft_backup)
    r.add_post("/raftchroma/transfer-leader", transfer_leader)
    r.add_get("/raftchroma/members", list_members)
    r.add_post("/raftchroma/members", add_member)
    r.add_post("/raftchroma/members/{member_id}/promote", promote_member)
    r.add_delete("/raftchroma/members/{member_id}", remove_member)
    r.add_post("/raftchroma/test/partition", test_partition)
    r.add_post("/raftchroma/test/faults", test_faults)
    r.add_post("/raftchroma/test/raft-stall", test_raft_stall)


TRACE_ID_HEADER = "chroma-trace-id"
NO_TRACE_ID = "0" * 32  # what `chroma run` 1.5.9 sends on every error when tracing is off


async def add_trace_id(request: web.Request, response: web.StreamResponse) -> None:
    """Chroma's clients copy this header of an error answer into `ChromaError.trace_id`."""
    if response.status >= 400:
        response.headers.setdefault(TRACE_ID_HEADER, NO_TRACE_ID)


def build_app(node: Node) -> web.Application:
    config = node.config
    limits = intake.Intake(config.http, config.max_body_bytes)
    # Outermost first: render every error Chroma's way; deadlines and the body budget; then the
    # token, checked on the headers before any body is read.
    middlewares = [http_metrics, chroma_errors, limits.middleware, auth.middleware(auth.Authorizer(config.tokens))]
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes)
    app.on_response_prepare.append(add_trace_id)
    app[NODE_KEY] = node
    app[intake.INTAKE_KEY] = limits
    app[BACKUPS_KEY] = backup.BackupTaker(node)
    add_routes(app)
    return app


def open_api_warning(node: Node) -> str | None:
    """The warning `serve` logs when anyone beyond this machine could use an API without tokens."""
    host, port = node.node.http_bind
    if node.config.tokens or is_loopback(host):
        return None
    return (f"node {node.node.id} serves the Chroma API on {host}:{port} with no "
            "[[token]] in cluster.toml: anyone who can reach it can read, write and delete everything "
            "(see README, Security)")


# After answering a request whose body was not read (413, 503, 408...), aiohttp reads and drops
# the rest for this long before closing, so a client still sending gets the answer, not a reset.
LINGER_S = 2.0


async def run_server(node: Node, stop_event: asyncio.Event) -> None:
    """Serve the API until `stop_event` is set, then stop the node."""
    app = build_app(node)
    config = node.config
    runner = web.AppRunner(app, access_log=None, auto_decompress=False,  # intake inflates gzip, within limits
                           keepalive_timeout=config.http.keepalive_timeout_s, lingering_time=LINGER_S)
    await runner.setup()
    await node.start()
    assert runner.server is not None
    ssl_context = tls.server_context(config.tls) if config.tls is not None else None
    host, port = node.node.http_bind
    listener = await asyncio.get_running_loop().create_server(
        app[intake.INTAKE_KEY].protocol_factory(runner.server), host, port, ssl=ssl_context, reuse_address=True)
    log.info("node %s serving the Chroma API on %s:%d (advertised as %s)", node.node.id, host, port, node.node.http_url)
    warning = open_api_warning(node)
    if warning is not None:
        log.warning(warning)
    try:
        await stop_event.wait()
    finally:
        listener.close()
        await runner.cleanup()
        await node.stop()
