"""The Chroma v2 HTTP API served by every node (aiohttp).

Owns: routes, request parsing (via `parse`), rendering results and errors as Chroma
1.5.9 does, and the raftchroma headers:

- `X-Raftchroma-Read-Consistency: linearizable | stale` chooses a read's consistency
  (default from cluster.toml);
- `X-Raftchroma-Min-Index: N` makes a read wait until this node has applied index N;
- every successful write answers `X-Raftchroma-Index: N`, the log index it was applied at.

Handlers parse, call the node and render; they hold no replication logic.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from raftchroma.command import pack_embeddings
from raftchroma.errors import ApiError, InvalidArgument
from raftchroma.http import parse
from raftchroma.node import Node
from raftchroma.store import CHROMA_SERVER_VERSION, Result

log = logging.getLogger(__name__)

READ_CONSISTENCY_HEADER = "X-Raftchroma-Read-Consistency"
MIN_INDEX_HEADER = "X-Raftchroma-Min-Index"
INDEX_HEADER = "X-Raftchroma-Index"
NODE_KEY = web.AppKey("node", Node)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def error_response(exc: ApiError) -> web.Response:
    return json_response(exc.body(), status=exc.status)


def result_response(result: Result, index: int | None = None) -> web.Response:
    headers = {INDEX_HEADER: str(index)} if index is not None and result.ok else None
    return json_response(result.body, status=result.status, headers=headers)


@web.middleware
async def chroma_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return json_response({"error": "ChromaError", "message": "Failed to buffer the request body: length limit exceeded"}, 413)
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
        return json_response({"error": "InternalError", "message": str(exc)}, 500)


# ------------------------------------------------------------------ helpers


def node_of(request: web.Request) -> Node:
    return request.app[NODE_KEY]


async def body_of(request: web.Request) -> dict[str, Any]:
    parse.check_content_type(request.headers.get("Content-Type"))
    return parse.parse_object(await request.read())


def read_options(request: web.Request) -> tuple[str, int | None]:
    node = node_of(request)
    consistency = request.headers.get(READ_CONSISTENCY_HEADER, node.config.read_consistency).strip().lower()
    if consistency not in ("linearizable", "stale"):
        raise InvalidArgument(f"{READ_CONSISTENCY_HEADER} must be 'linearizable' or 'stale', got {consistency!r}")
    raw_index = request.headers.get(MIN_INDEX_HEADER)
    if raw_index is None:
        return consistency, None
    if not raw_index.strip().isdigit():
        raise InvalidArgument(f"{MIN_INDEX_HEADER} must be a non-negative integer, got {raw_index!r}")
    return consistency, int(raw_index)


async def do_read(request: web.Request, fn: Callable[[], Result]) -> web.Response:
    consistency, min_index = read_options(request)
    result = await node_of(request).read(consistency, min_index, fn)
    return result_response(result)


async def do_write(request: web.Request, op: dict[str, Any]) -> web.Response:
    index, result = await node_of(request).write(op)
    return result_response(result, index)


def path_scope(request: web.Request) -> tuple[str, str]:
    return request.match_info["tenant"], request.match_info["database"]


def path_collection_id(request: web.Request) -> str:
    return parse.collection_id(request.match_info["collection_id"])


def query_int(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise InvalidArgument(f"Invalid query parameter {key}: {raw!r}")
    return int(raw)


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
    return json_response({"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]})


async def reset(request: web.Request) -> web.Response:
    if not node_of(request).config.allow_reset:
        raise ApiError("Reset is disabled by config", status=403, name="ChromaError")
    return await do_write(request, {"kind": "reset"})


async def v1_gone(request: web.Request) -> web.Response:
    return json_response({"error": "Unimplemented", "message": "The v1 API is deprecated. Please use /v2 apis"}, 410)


# ------------------------------------------------------- tenants, databases


async def create_tenant(request: web.Request) -> web.Response:
    name = parse.string(await body_of(request), "name")
    if len(name) < 3:
        raise InvalidArgument(
            f'Validation error: name: Validation error: length [{{"min": Number(3), "value": String("{name}")}}]')
    return await do_write(request, {"kind": "create_tenant", "name": name})


async def get_tenant(request: web.Request) -> web.Response:
    store = node_of(request).store
    return await do_read(request, lambda: store.get_tenant(request.match_info["tenant"]))


async def update_tenant(request: web.Request) -> web.Response:
    body = await body_of(request)
    parse.string(body, "resource_name")
    return json_response({})  # local Chroma accepts and ignores it: no state changes


async def list_databases(request: web.Request) -> web.Response:
    store, tenant = node_of(request).store, request.match_info["tenant"]
    limit, offset = query_int(request, "limit"), query_int(request, "offset")
    return await do_read(request, lambda: store.list_databases(tenant, limit, offset))


async def create_database(request: web.Request) -> web.Response:
    name = parse.string(await body_of(request), "name")
    op = {"kind": "create_database", "tenant": request.match_info["tenant"], "name": name,
          "database_id": str(uuid.uuid4())}
    return await do_write(request, op)


async def get_database(request: web.Request) -> web.Response:
    store, (tenant, database) = node_of(request).store, path_scope(request)
    return await do_read(request, lambda: store.get_database(tenant, database))


async def delete_database(request: web.Request) -> web.Response:
    tenant, database = path_scope(request)
    return await do_write(request, {"kind": "delete_database", "tenant": tenant, "name": database})


# ------------------------------------------------------------- collections


async def list_collections(request: web.Request) -> web.Response:
    store, (tenant, database) = node_of(request).store, path_scope(request)
    limit, offset = query_int(request, "limit"), query_int(request, "offset") or 0
    return await do_read(request, lambda: store.list_collections(tenant, database, limit, offset))


async def count_collections(request: web.Request) -> web.Response:
    store, (tenant, database) = node_of(request).store, path_scope(request)
    return await do_read(request, lambda: store.count_collections(tenant, database))


async def create_collection(request: web.Request) -> web.Response:
    body = await body_of(request)
    tenant, database = path_scope(request)
    configuration, schema = parse.obj(body, "configuration"), parse.obj(body, "schema")
    op = {
        "kind": "create_collection", "tenant": tenant, "database": database,
        "name": parse.string(body, "name"),
        "metadata": parse.metadata(body.get("metadata"), "metadata"),
        "configuration_json": orjson.dumps(configuration).decode() if configuration is not None else None,
        "schema_json": orjson.dumps(schema).decode() if schema is not None else None,
        "get_or_create": parse.boolean(body, "get_or_create", False),
        "collection_id": str(uuid.uuid4()),
    }
    return await do_write(request, op)


async def get_collection(request: web.Request) -> web.Response:
    store, (tenant, database) = node_of(request).store, path_scope(request)
    name = request.match_info["collection_id"]
    return await do_read(request, lambda: store.get_collection(tenant, database, name))


async def get_collection_by_id(request: web.Request) -> web.Response:
    store, (tenant, database) = node_of(request).store, path_scope(request)
    api_id = path_collection_id(request)
    return await do_read(request, lambda: store.get_collection_by_id(tenant, database, api_id))


async def update_collection(request: web.Request) -> web.Response:
    body = await body_of(request)
    tenant, database = path_scope(request)
    configuration = parse.obj(body, "new_configuration")
    op = {
        "kind": "update_collection", "tenant": tenant, "database": database,
        "collection_id": path_collection_id(request),
        "new_name": parse.string(body, "new_name", optional=True),
        "new_metadata": parse.metadata(body.get("new_metadata"), "new_metadata"),
        "new_configuration_json": orjson.dumps(configuration).decode() if configuration is not None else None,
    }
    return await do_write(request, op)


async def delete_collection(request: web.Request) -> web.Response:
    tenant, database = path_scope(request)
    op = {"kind": "delete_collection", "tenant": tenant, "database": database,
          "name": request.match_info["collection_id"]}
    return await do_write(request, op)


# ------------------------------------------------------------------ records


def record_op(kind: str, body: dict[str, Any], embeddings_optional: bool) -> dict[str, Any]:
    ids = parse.string_list(body, "ids", optional=False)
    vectors = parse.embeddings(body, "embeddings", optional=embeddings_optional)
    metadatas = parse.metadatas(body, "metadatas")
    documents = parse.optional_strings(body, "documents")
    uris = parse.optional_strings(body, "uris")
    parse.check_lengths(ids, vectors, metadatas, documents, uris)
    packed = pack_embeddings(vectors) if vectors is not None and len(vectors) else None
    return {"kind": kind, "ids": ids, "embeddings": packed, "metadatas": metadatas, "documents": documents, "uris": uris}


def records_handler(kind: str, embeddings_optional: bool) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        body = await body_of(request)
        tenant, database = path_scope(request)
        op = record_op(kind, body, embeddings_optional)
        op.update(tenant=tenant, database=database, collection_id=path_collection_id(request))
        return await do_write(request, op)
    return handle


async def delete_records(request: web.Request) -> web.Response:
    body = await body_of(request)
    tenant, database = path_scope(request)
    op = {
        "kind": "delete_records", "tenant": tenant, "database": database,
        "collection_id": path_collection_id(request),
        "ids": parse.string_list(body, "ids", optional=True),
        "where": parse.where(body, "where"), "where_document": parse.where(body, "where_document"),
        "limit": parse.u32(body, "limit"),
    }
    return await do_write(request, op)


async def get_records(request: web.Request) -> web.Response:
    body = await body_of(request)
    store, (tenant, database) = node_of(request).store, path_scope(request)
    req = {
        "ids": parse.string_list(body, "ids", optional=True),
        "where": parse.where(body, "where"), "where_document": parse.where(body, "where_document"),
        "limit": parse.u32(body, "limit"), "offset": parse.u32(body, "offset"),
        "include": parse.include(body, parse.GET_INCLUDE_DEFAULT),
    }
    api_id = path_collection_id(request)
    return await do_read(request, lambda: store.get(tenant, database, api_id, req))


async def query_records(request: web.Request) -> web.Response:
    body = await body_of(request)
    store, (tenant, database) = node_of(request).store, path_scope(request)
    n_results = parse.u32(body, "n_results")
    req = {
        "query_embeddings": parse.embeddings(body, "query_embeddings", optional=False),
        "ids": parse.string_list(body, "ids", optional=True),
        "where": parse.where(body, "where"), "where_document": parse.where(body, "where_document"),
        "n_results": 10 if n_results is None else n_results,
        "include": parse.include(body, parse.QUERY_INCLUDE_DEFAULT),
    }
    api_id = path_collection_id(request)
    return await do_read(request, lambda: store.query(tenant, database, api_id, req))


async def count_records(request: web.Request) -> web.Response:
    store, (tenant, database) = node_of(request).store, path_scope(request)
    api_id = path_collection_id(request)
    return await do_read(request, lambda: store.count(tenant, database, api_id))


# ------------------------------------------- routes local Chroma does not implement


def not_implemented(message: str, status: int = 501, name: str = "ChromaError") -> Handler:
    async def handle(request: web.Request) -> web.Response:
        if request.method == "POST" and request.can_read_body:
            await body_of(request)
        path_collection_id(request) if "collection_id" in request.match_info else None
        return json_response({"error": name, "message": message}, status)
    return handle


async def search(request: web.Request) -> web.Response:
    parse.required(await body_of(request), "searches")
    path_collection_id(request)
    return json_response({"error": "ChromaError", "message":
                          "Error executing plan: Not implemented: Search operation is not implemented for local executor"}, 501)


async def attach_function(request: web.Request) -> web.Response:
    body = await body_of(request)
    for key in ("name", "function_id", "output_collection"):
        parse.required(body, key)
    return json_response({"error": "ChromaError", "message": "Tonic error: code: 'Operation is not implemented or not "
                          "supported', message: \" Attached Function operations not yet implemented in SqliteSysDb\""}, 501)


async def get_by_crn(request: web.Request) -> web.Response:
    crn = request.match_info["crn"]
    parts = crn.split(":")
    if len(parts) != 3 or not all(parts):
        raise InvalidArgument("Validation error: crn: CRN must be in the format "
                              "<tenant_resource_name>:<database_name>:<collection_name> with non-empty parts")
    raise ApiError("Getting a collection by CRN is not implemented for local chroma", status=501)


# ------------------------------------------------------------ raftchroma's own


async def raft_status(request: web.Request) -> web.Response:
    return json_response(node_of(request).status())


async def raft_digest(request: web.Request) -> web.Response:
    """Per-collection digests at this node's applied index (after the read's consistency wait)."""
    node = node_of(request)
    consistency, min_index = read_options(request)

    def run() -> Result:
        return Result(200, {"applied_index": node.applied_index, "collections": node.store.collection_digests(),
                            "names": node.store.collection_name_index()})
    result = await node.read(consistency, min_index, run)
    return result_response(result)


def add_routes(app: web.Application) -> None:
    v2 = "/api/v2"
    scope = v2 + "/tenants/{tenant}/databases/{database}"
    col = scope + "/collections/{collection_id}"
    r = app.router
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
    r.add_get(scope + "/collections/by-id/{collection_id}", get_collection_by_id)
    r.add_get(col, get_collection)
    r.add_put(col, update_collection)
    r.add_delete(col, delete_collection)
    r.add_post(col + "/add", records_handler("add", embeddings_optional=False))
    r.add_post(col + "/upsert", records_handler("upsert", embeddings_optional=False))
    r.add_post(col + "/update", records_handler("update", embeddings_optional=True))
    r.add_post(col + "/delete", delete_records)
    r.add_post(col + "/get", get_records)
    r.add_post(col + "/query", query_records)
    r.add_get(col + "/count", count_records)
    r.add_post(col + "/search", search)
    r.add_post(col + "/fork", not_implemented("Collection forking is unsupported for local chroma"))
    r.add_get(col + "/fork_count", not_implemented("Count forks is unsupported for local chroma"))
    r.add_get(col + "/indexing_status", not_implemented("Method scout_logs is not implemented", 500, "InternalError"))
    r.add_post(col + "/functions/attach", attach_function)
    r.add_get(col + "/functions/{function_name}", not_implemented("Attached function not found", 404, "NotFoundError"))
    r.add_post(col + "/attached_functions/{name}/detach", not_implemented(
        "Tonic error: code: 'Operation is not implemented or not supported', message: \"Not implemented\""))
    r.add_route("*", "/api/v1/{tail:.*}", v1_gone)
    r.add_get("/raftchroma/status", raft_status)
    r.add_get("/raftchroma/digest", raft_digest)


def build_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[chroma_errors], client_max_size=node.config.max_body_bytes)
    app[NODE_KEY] = node
    add_routes(app)
    return app


async def run_server(node: Node, stop_event: asyncio.Event) -> None:
    """Serve the API until `stop_event` is set, then stop the node."""
    app = build_app(node)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await node.start()
    site = web.TCPSite(runner, node.node.http_host, node.node.http_port, reuse_address=True)
    await site.start()
    log.info("node %s serving the Chroma API on %s", node.node.id, node.node.http_url)
    try:
        await stop_event.wait()
    finally:
        await runner.cleanup()
        await node.stop()
