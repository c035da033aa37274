"""Who is asking, and may they: client tokens for the Chroma v2 API.

Owns: reading a token from a request (`Authorization: Bearer T` or `X-Chroma-Token: T`, the two
headers Chroma's clients send), finding the `[[token]]` it belongs to by its SHA-256 (compared in
constant time), the table that says what every route touches (`RULES`: tenant, database, read or
write, admin), the decision, and the identity answer (`GET /api/v2/auth/identity`).

Must not: log, render or keep a token (only its SHA-256 is ever compared), read a body (a request is
refused on its headers, before its body is read), or know anything about Raft or the store.
With no `[[token]]` configured everything is allowed, as before.

Errors use the names Chroma's Python client maps to its auth exceptions (`chromadb.errors`):
401 `AuthorizationError` (its class of that name, whose code is 401) for a missing or unknown
token, 403 `AuthError` (`ChromaAuthError`, code 403, "Forbidden") for a token out of its scope.
The JS client maps the status codes (401 ChromaUnauthorizedError, 403 ChromaForbiddenError).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from aiohttp import web

from raftchroma.config import ALL, TokenConfig
from raftchroma.errors import ApiError

BEARER = "bearer"
TOKEN_HEADER = "X-Chroma-Token"
AUTHORIZATION_HEADER = "Authorization"


class Unauthenticated(ApiError):
    """401: no token, or one that no `[[token]]` has."""

    status = 401
    name = "AuthorizationError"
    headers = {"WWW-Authenticate": 'Bearer realm="raftchroma"'}


class Forbidden(ApiError):
    """403: a known token asking for something outside its scope."""

    status = 403
    name = "AuthError"


class Kind(enum.Enum):
    OPEN = "open"  # no token needed: liveness and version, like Chroma's own ignore list
    SIGNED_IN = "signed-in"  # any known token (identity, the retired v1 API, unknown paths)
    DATABASE = "database"  # the tenant and the database in the path (or CRN)
    TENANT = "tenant"  # the tenant in the path
    TENANT_ALL = "tenant-all"  # the tenant and every database in it (listing, creating, deleting them)
    CLUSTER = "cluster"  # every tenant and database (reset, tenants, raftchroma's own operations)


@dataclass(frozen=True)
class Need:
    """What one request touches. `admin`: only an admin token may do it."""

    kind: Kind
    write: bool = False
    admin: bool = False
    tenant: str | None = None
    database: str | None = None


OPEN = Need(Kind.OPEN)
SIGNED_IN = Need(Kind.SIGNED_IN)
Rule = Callable[[Mapping[str, str]], Need]


def _db(write: bool) -> Rule:
    return lambda m: Need(Kind.DATABASE, write, tenant=m["tenant"], database=m["database"])


def _tenant(kind: Kind, write: bool = False, admin: bool = False) -> Rule:
    return lambda m: Need(kind, write, admin, tenant=m["tenant"])


def _fixed(need: Need) -> Rule:
    return lambda m: need


def _crn(m: Mapping[str, str]) -> Need:
    """`/collections/{crn}` names `tenant:database:collection`; a malformed CRN is the handler's 400."""
    parts = m["crn"].split(":")
    if len(parts) == 3 and all(parts):
        return Need(Kind.DATABASE, tenant=parts[0], database=parts[1])
    return SIGNED_IN


_V2 = "/api/v2"
_SCOPE = _V2 + "/tenants/{tenant}/databases/{database}"
_COL = _SCOPE + "/collections/{collection_id}"
_CLUSTER_ADMIN = _fixed(Need(Kind.CLUSTER, write=True, admin=True))
READ, WRITE = _db(False), _db(True)

# Every route of app.add_routes, by method and aiohttp's canonical path (patterns' regexes
# dropped). A route missing here is refused to everyone but a cluster admin (fail closed);
# tests/test_auth.py checks that the table and the routes agree.
RULES: dict[tuple[str, str], Rule] = {
    ("GET", _V2): _fixed(OPEN),
    ("GET", _V2 + "/heartbeat"): _fixed(OPEN),
    ("GET", _V2 + "/version"): _fixed(OPEN),
    ("GET", _V2 + "/healthcheck"): _fixed(OPEN),
    ("GET", _V2 + "/pre-flight-checks"): _fixed(OPEN),
    ("GET", "/raftchroma/status"): _fixed(OPEN),  # observation only; the CLI polls it
    ("GET", "/readyz"): _fixed(OPEN),  # probes and Prometheus scrapes, as Kubernetes and Prometheus send them
    ("GET", "/livez"): _fixed(OPEN),
    ("GET", "/metrics"): _fixed(OPEN),
    ("GET", _V2 + "/auth/identity"): _fixed(SIGNED_IN),
    ("*", "/api/v1/{tail}"): _fixed(SIGNED_IN),  # answers 410 to everyone signed in
    ("POST", _V2 + "/reset"): _CLUSTER_ADMIN,
    ("POST", _V2 + "/tenants"): _CLUSTER_ADMIN,
    ("GET", _V2 + "/collections/{crn}"): _crn,
    ("GET", _V2 + "/tenants/{tenant}"): _tenant(Kind.TENANT),
    ("PATCH", _V2 + "/tenants/{tenant}"): _tenant(Kind.TENANT_ALL, write=True, admin=True),
    ("GET", _V2 + "/tenants/{tenant}/databases"): _tenant(Kind.TENANT_ALL),
    ("POST", _V2 + "/tenants/{tenant}/databases"): _tenant(Kind.TENANT_ALL, write=True, admin=True),
    ("GET", _SCOPE): READ,
    ("DELETE", _SCOPE): _tenant(Kind.TENANT_ALL, write=True, admin=True),
    ("GET", _SCOPE + "/collections"): READ,
    ("POST", _SCOPE + "/collections"): WRITE,
    ("GET", _SCOPE + "/collections_count"): READ,
    ("GET", _SCOPE + "/collections/by-id/{collection_id}"): READ,
    ("GET", _COL): READ,
    ("PUT", _COL): WRITE,
    ("DELETE", _COL): WRITE,
    ("POST", _COL + "/add"): WRITE,
    ("POST", _COL + "/upsert"): WRITE,
    ("POST", _COL + "/update"): WRITE,
    ("POST", _COL + "/delete"): WRITE,
    ("POST", _COL + "/get"): READ,
    ("POST", _COL + "/query"): READ,
    ("GET", _COL + "/count"): READ,
    ("POST", _COL + "/search"): READ,
    ("POST", _COL + "/fork"): WRITE,
    ("GET", _COL + "/fork_count"): READ,
    ("GET", _COL + "/indexing_status"): READ,
    ("POST", _COL + "/functions/attach"): WRITE,
    ("GET", _COL + "/functions/{function_name}"): READ,
    ("POST", _COL + "/attached_functions/{name}/detach"): WRITE,
    ("GET", "/raftchroma/digest"): _fixed(Need(Kind.CLUSTER)),  # digests of every collection
    ("GET", "/raftchroma/backup"): _CLUSTER_ADMIN,  # every tenant's data
    ("POST", "/raftchroma/transfer-leader"): _CLUSTER_ADMIN,
    ("GET", "/raftchroma/members"): _fixed(OPEN),  # observation only, like status
    ("POST", "/raftchroma/members"): _CLUSTER_ADMIN,
    ("POST", "/raftchroma/members/{member_id}/promote"): _CLUSTER_ADMIN,
    ("DELETE", "/raftchroma/members/{member_id}"): _CLUSTER_ADMIN,
    ("POST", "/raftchroma/test/partition"): _CLUSTER_ADMIN,
    ("POST", "/raftchroma/test/faults"): _CLUSTER_ADMIN,
    ("POST", "/raftchroma/test/raft-stall"): _CLUSTER_ADMIN,
}


def need_of(method: str, canonical: str | None, match_info: Mapping[str, str]) -> Need:
    """What a request touches, from its route; an unmatched path needs only a known token (it is a 404)."""
    if canonical is None:
        return SIGNED_IN
    rule = RULES.get((method, canonical)) or RULES.get(("*", canonical))
    if rule is None and method == "HEAD":
        rule = RULES.get(("GET", canonical))
    return rule(match_info) if rule is not None else Need(Kind.CLUSTER, write=True, admin=True)


# ------------------------------------------------------------------ decisions


def refusal(token: TokenConfig, need: Need) -> str | None:
    """Why `token` may not do what `need` says, or None if it may. Pure."""
    if need.kind in (Kind.OPEN, Kind.SIGNED_IN):
        return None
    if need.admin and not token.admin:
        return "this needs an admin token"
    if need.write and token.read_only:
        return "the token is read-only"
    every_db = token.databases == (ALL,)
    if need.kind is Kind.CLUSTER:
        if token.tenant != ALL or not every_db:
            return 'this needs a token for every tenant and database (tenant = "*", databases = ["*"])'
        return None
    if token.tenant not in (ALL, need.tenant):
        return f"the token is not for tenant {need.tenant!r}"
    if need.kind is Kind.TENANT_ALL and not every_db:
        return f'this needs a token for every database of tenant {need.tenant!r} (databases = ["*"])'
    if need.kind is Kind.DATABASE and not every_db and need.database not in token.databases:
        return f"the token is not for database {need.database!r} of tenant {need.tenant!r}"
    return None


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The token a request carries, or None. Both headers at once must agree."""
    found = []
    authorization = headers.get(AUTHORIZATION_HEADER)
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != BEARER or not value.strip():
            raise Unauthenticated("The Authorization header must be 'Bearer <token>'")
        found.append(value.strip())
    chroma_token = headers.get(TOKEN_HEADER)
    if chroma_token is not None:
        found.append(chroma_token.strip())
    if len(found) == 2 and not hmac.compare_digest(found[0].encode(), found[1].encode()):
        raise Unauthenticated(f"The Authorization and {TOKEN_HEADER} headers carry different tokens")
    return found[0] if found and found[0] else None


class Authorizer:
    """The `[[token]]` tables of cluster.toml, asked once per request."""

    def __init__(self, tokens: tuple[TokenConfig, ...]) -> None:
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def identify(self, headers: Mapping[str, str]) -> TokenConfig:
        """The configured token the request carries; 401 when there is none or it is unknown."""
        token = presented_token(headers)
        if token is None:
            raise Unauthenticated(f"Missing token: send 'Authorization: Bearer <token>' or '{TOKEN_HEADER}: <token>'")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        match = None
        for candidate in self.tokens:  # every one, so the time taken does not say which matched
            if hmac.compare_digest(candidate.sha256, digest):
                match = candidate
        if match is None:
            raise Unauthenticated("Unknown token")
        return match

    def check(self, headers: Mapping[str, str], need: Need) -> TokenConfig | None:
        """The caller's token if `need` is allowed; raises 401 or 403. None: no token was needed."""
        if not self.enabled or need.kind is Kind.OPEN:
            return None
        token = self.identify(headers)
        reason = refusal(token, need)
        if reason is not None:
            raise Forbidden(f"User {token.user_id!r} may not do this: {reason}")
        return token


OPEN_IDENTITY = {"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]}


def identity_body(token: TokenConfig | None) -> dict[str, Any]:
    """Chroma's `GetUserIdentityResponse`. Chroma's clients pick the tenant from it, and the
    database when it names exactly one (the Python client only with
    `chroma_overwrite_singleton_tenant_database_access_from_auth=True`)."""
    if token is None:
        return dict(OPEN_IDENTITY)
    return {"user_id": token.user_id, "tenant": token.tenant, "databases": list(token.databases)}


TOKEN_KEY = "raftchroma.token"  # the request's TokenConfig, or None when none was needed


def middleware(authorizer: Authorizer) -> Any:
    """Refuse a request on its headers, before its body is read; keep its token for identity."""
    @web.middleware
    async def authorize(request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        need = need_of(request.method, resource.canonical if resource is not None else None, request.match_info)
        request[TOKEN_KEY] = authorizer.check(request.headers, need)
        return await handler(request)
    return authorize


def request_token(request: web.Request) -> TokenConfig | None:
    return request.get(TOKEN_KEY)
