"""auth.py's pure decisions (route -> what it touches -> allowed or why not) and intake.py's
gzip reader, without a server. The end-to-end proofs with real nodes and real clients are in
tests/test_auth_cluster.py, tests/test_tls.py and tests/test_intake.py."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from aiohttp import web

from raftchroma.config import TokenConfig
from raftchroma.errors import InvalidArgument
from raftchroma.http import auth
from raftchroma.http.app import add_routes
from raftchroma.http.auth import Authorizer, Forbidden, Kind, Need, Unauthenticated, need_of, refusal
from raftchroma.http.intake import BodyTooLarge, Inflater


def token(user: str = "u", tenant: str = "t", databases: tuple[str, ...] = ("d",), read_only: bool = False,
          admin: bool = False, secret: str | None = None) -> TokenConfig:
    digest = hashlib.sha256((secret or f"secret-{user}").encode()).digest()
    return TokenConfig(user, digest, tenant, databases, read_only, admin)


def test_every_route_of_the_app_has_exactly_one_rule() -> None:
    app = web.Application()
    add_routes(app)
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    assert routes == set(auth.RULES)


def test_routes_map_to_the_tenant_and_database_they_touch() -> None:
    col = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}"
    m = {"tenant": "t", "database": "d", "collection_id": "c"}
    assert need_of("POST", col + "/add", m) == Need(Kind.DATABASE, write=True, tenant="t", database="d")
    assert need_of("POST", col + "/query", m) == Need(Kind.DATABASE, write=False, tenant="t", database="d")
    assert need_of("HEAD", col, m) == Need(Kind.DATABASE, write=False, tenant="t", database="d")
    assert need_of("POST", "/api/v2/reset", {}) == Need(Kind.CLUSTER, write=True, admin=True)
    assert need_of("POST", "/api/v2/tenants/{tenant}/databases", {"tenant": "t"}) == Need(
        Kind.TENANT_ALL, write=True, admin=True, tenant="t")
    assert need_of("GET", "/api/v2/collections/{crn}", {"crn": "t:d:c"}) == Need(Kind.DATABASE, tenant="t", database="d")
    assert need_of("GET", "/api/v2/collections/{crn}", {"crn": "bad"}).kind is Kind.SIGNED_IN
    assert need_of("GET", None, {}).kind is Kind.SIGNED_IN  # unmatched path: a 404 for anyone signed in
    assert need_of("POST", "/some/new/route", {}) == Need(Kind.CLUSTER, write=True, admin=True)  # fail closed
    assert need_of("GET", "/raftchroma/status", {}).kind is Kind.OPEN


DB_WRITE = Need(Kind.DATABASE, write=True, tenant="t", database="d")
DB_READ = Need(Kind.DATABASE, tenant="t", database="d")
CLUSTER_ADMIN = Need(Kind.CLUSTER, write=True, admin=True)
TENANT_ADMIN = Need(Kind.TENANT_ALL, write=True, admin=True, tenant="t")


@pytest.mark.parametrize("tok, need, reason", [
    (token(), DB_WRITE, None),
    (token(), DB_READ, None),
    (token(read_only=True), DB_READ, None),
    (token(read_only=True), DB_WRITE, "the token is read-only"),
    (token(databases=("other",)), DB_READ, "the token is not for database 'd' of tenant 't'"),
    (token(databases=("*",)), DB_WRITE, None),
    (token(tenant="x", databases=("*",)), DB_READ, "the token is not for tenant 't'"),
    (token(tenant="*", databases=("*",)), DB_WRITE, None),
    (token(tenant="*", databases=("*",)), CLUSTER_ADMIN, "this needs an admin token"),
    (token(databases=("*",), admin=True), CLUSTER_ADMIN,
     'this needs a token for every tenant and database (tenant = "*", databases = ["*"])'),
    (token(tenant="*", databases=("*",), admin=True), CLUSTER_ADMIN, None),
    (token(databases=("*",), admin=True), TENANT_ADMIN, None),
    (token(admin=True), TENANT_ADMIN, "this needs a token for every database of tenant 't' (databases = [\"*\"])"),
    (token(tenant="*", databases=("*",)), Need(Kind.CLUSTER), None),  # digest: a read of everything
    (token(), Need(Kind.TENANT, tenant="t"), None),
    (token(), Need(Kind.SIGNED_IN), None),
])
def test_refusal(tok: TokenConfig, need: Need, reason: str | None) -> None:
    assert refusal(tok, need) == reason


def test_tokens_are_read_from_either_header_and_must_agree() -> None:
    assert auth.presented_token({"Authorization": "Bearer abc"}) == "abc"
    assert auth.presented_token({"Authorization": "bearer  abc "}) == "abc"
    assert auth.presented_token({"X-Chroma-Token": "abc"}) == "abc"
    assert auth.presented_token({"Authorization": "Bearer abc", "X-Chroma-Token": "abc"}) == "abc"
    assert auth.presented_token({}) is None
    with pytest.raises(Unauthenticated, match="different tokens"):
        auth.presented_token({"Authorization": "Bearer abc", "X-Chroma-Token": "abd"})
    with pytest.raises(Unauthenticated, match="Bearer"):
        auth.presented_token({"Authorization": "Basic YTpi"})


def test_authorizer_answers_401_then_403_and_is_open_without_tokens() -> None:
    alice = token("alice", secret="s-alice", read_only=True)
    authorizer = Authorizer((token("bob", secret="s-bob"), alice))
    assert authorizer.check({"X-Chroma-Token": "s-alice"}, DB_READ) is alice
    with pytest.raises(Unauthenticated) as missing:
        authorizer.check({}, DB_READ)
    assert (missing.value.status, missing.value.name) == (401, "AuthorizationError")
    with pytest.raises(Unauthenticated, match="Unknown token"):
        authorizer.check({"X-Chroma-Token": "s-carol"}, DB_READ)
    with pytest.raises(Forbidden) as forbidden:
        authorizer.check({"X-Chroma-Token": "s-alice"}, DB_WRITE)
    assert (forbidden.value.status, forbidden.value.name) == (403, "AuthError")
    assert forbidden.value.message == "User 'alice' may not do this: the token is read-only"
    assert authorizer.check({}, auth.OPEN) is None
    assert Authorizer(()).check({}, CLUSTER_ADMIN) is None


def test_identity_in_chromas_shape() -> None:
    assert auth.identity_body(token("alice", tenant="acme", databases=("db1",))) == {
        "user_id": "alice", "tenant": "acme", "databases": ["db1"]}
    assert auth.identity_body(None) == {"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]}


def test_token_repr_shows_no_digest() -> None:
    assert "sha256" not in repr(token()) and hashlib.sha256(b"secret-u").hexdigest() not in repr(token())


# ------------------------------------------------------------------ gzip


def test_inflater_reads_gzip_members_and_stops_a_bomb_at_the_limit() -> None:
    body = b'{"name": "x"}'
    inflater = Inflater(100)
    packed = gzip.compress(body[:5]) + gzip.compress(body[5:])
    assert b"".join(inflater.feed(packed[i:i + 7]) for i in range(0, len(packed), 7)) == body
    inflater.finish()

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KB
    inflater = Inflater(1024 * 1024)
    with pytest.raises(BodyTooLarge):
        for i in range(0, len(bomb), 4096):
            inflater.feed(bomb[i:i + 4096])
    assert inflater.out_bytes <= 1024 * 1024 + 1  # never inflated past the limit


def test_inflater_refuses_bad_and_truncated_gzip() -> None:
    with pytest.raises(InvalidArgument, match="Failed to decompress the gzip request body"):
        Inflater(100).feed(b"not gzip at all")
    inflater = Inflater(100)
    inflater.feed(gzip.compress(b"hello")[:-4])
    with pytest.raises(InvalidArgument, match="ends before the gzip stream does"):
        inflater.finish()
