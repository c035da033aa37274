"""Client tokens end to end: a real node with [[token]] tables, Chroma's real Python client (token
auth through either header), the real JavaScript client (npm chromadb 3.x) and raw HTTP.

Proves: both transport headers work; identity answers the token's scope and the Python client
lands there given only the token; 401 and 403 raise the Python client's own auth exceptions; a
read-only token changes nothing; admin-only operations are refused to other tokens; liveness
routes stay open.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import chromadb
import pytest
from chromadb.config import Settings
from chromadb.errors import AuthorizationError, ChromaAuthError

from tests.harness import Cluster, http, make_cluster, start_cluster

ADMIN, WRITER, READER, ALICE = "admin-9f2c1e7b", "writer-5d0a8c3f", "reader-7b1e4a92", "alice-3c8d6f01"
JS_DIR = Path(__file__).resolve().parent / "js"
DB = "/api/v2/tenants/default_tenant/databases/default_database"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = f"""
[[token]]
user_id = "root"
sha256 = "{sha(ADMIN)}"
tenant = "*"
databases = ["*"]
admin = true

[[token]]
user_id = "writer"
env = "TEST_WRITER_TOKEN"
tenant = "default_tenant"
databases = ["default_database"]
access = "read-write"

[[token]]
user_id = "reader"
sha256 = "{sha(READER)}"
tenant = "default_tenant"
databases = ["default_database"]
access = "read-only"

[[token]]
user_id = "alice"
sha256 = "{sha(ALICE)}"
tenant = "acme"
databases = ["db1"]
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = make_cluster(Path(tmp_path_factory.mktemp("auth")), size=1, extra_toml=TOKENS,
                           env={"TEST_WRITER_TOKEN": WRITER})
    try:
        start_cluster(cluster)
        yield cluster
    finally:
        cluster.stop_all()


def client(cluster: Cluster, token: str | None, header: str = "Authorization", **kw: Any) -> Any:
    """Chroma's Python client, configured for token auth as its documentation says."""
    auth = {}
    if token is not None:
        auth = dict(chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
                    chroma_client_auth_credentials=token, chroma_auth_token_transport_header=header)
    settings = Settings(anonymized_telemetry=False, **auth, **kw)
    return chromadb.HttpClient(host="127.0.0.1", port=cluster.node("n1").http_port, settings=settings)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def url(cluster: Cluster, path: str) -> str:
    return cluster.node("n1").url + path


@pytest.mark.parametrize("header", ["Authorization", "X-Chroma-Token"])
def test_python_client_with_token_in_each_header(node: Cluster, header: str) -> None:
    c = client(node, WRITER, header)
    name = f"py-{header.lower()}"
    collection = c.create_collection(name, embedding_function=None)
    collection.add(ids=["a", "b", "c"], embeddings=[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                   documents=["one", "two", "three"], metadatas=[{"k": 1}, {"k": 2}, {"k": 3}])
    got = collection.get(ids=["b", "a"], include=["documents", "metadatas"])  # in stored order, as Chroma
    assert (got["ids"], got["documents"], got["metadatas"]) == (["a", "b"], ["one", "two"], [{"k": 1}, {"k": 2}])
    result = collection.query(query_embeddings=[[0, 0.9, 0.1]], n_results=2, include=["documents"])
    assert result["ids"] == [["b", "c"]] and result["documents"] == [["two", "three"]]
    assert collection.count() == 3


def ensure_acme(cluster: Cluster) -> None:
    """Tenant acme with database db1 (alice's scope), made by the admin token with Chroma's AdminClient.
    Each test makes what it needs: under xdist, tests of a module may run on different clusters."""
    admin = chromadb.AdminClient(Settings(
        anonymized_telemetry=False, chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
        chroma_server_http_port=cluster.node("n1").http_port,
        chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
        chroma_client_auth_credentials=ADMIN))
    if http("GET", url(cluster, "/api/v2/tenants/acme"), headers=bearer(ADMIN))[0] == 404:
        admin.create_tenant("acme")
        admin.create_database("db1", tenant="acme")


def test_identity_names_the_tokens_scope_and_the_client_lands_there(node: Cluster) -> None:
    ensure_acme(node)

    assert http("GET", url(node, "/api/v2/auth/identity"), headers={"X-Chroma-Token": ALICE})[::2] == (
        200, {"user_id": "alice", "tenant": "acme", "databases": ["db1"]})
    assert http("GET", url(node, "/api/v2/auth/identity"), headers=bearer(ADMIN))[2] == {
        "user_id": "root", "tenant": "*", "databases": ["*"]}

    # Given only the token, the client takes tenant and database from identity (the Python
    # client does so with this setting, as against Chroma's own server).
    c = client(node, ALICE, chroma_overwrite_singleton_tenant_database_access_from_auth=True)
    assert (c.tenant, c.database) == ("acme", "db1")
    c.create_collection("alices", embedding_function=None).add(ids=["x"], embeddings=[[1.0, 2.0]])
    code, _, body = http("GET", url(node, "/api/v2/tenants/acme/databases/db1/collections/alices"),
                         headers=bearer(ADMIN))
    assert (code, body["name"], body["tenant"], body["database"]) == (200, "alices", "acme", "db1")
    assert http("GET", url(node, DB + "/collections/alices"), headers=bearer(ADMIN))[0] == 404


def test_401_and_403_raise_the_python_clients_auth_errors(node: Cluster) -> None:
    with pytest.raises(AuthorizationError) as missing:
        client(node, None)
    assert type(missing.value) is AuthorizationError
    with pytest.raises(AuthorizationError) as unknown:
        client(node, "not-a-configured-token", "X-Chroma-Token")
    assert type(unknown.value) is AuthorizationError and str(unknown.value) == "Unknown token"
    with pytest.raises(ChromaAuthError) as forbidden:  # alice's token is for acme/db1 only
        client(node, ALICE)
    assert type(forbidden.value) is ChromaAuthError
    assert str(forbidden.value) == "User 'alice' may not do this: the token is not for tenant 'default_tenant'"

    code, headers, body = http("GET", url(node, DB + "/collections"))
    assert (code, body) == (401, {"error": "AuthorizationError", "message": "Missing token: send "
                                  "'Authorization: Bearer <token>' or 'X-Chroma-Token: <token>'"})
    assert headers["WWW-Authenticate"] == 'Bearer realm="raftchroma"'
    code, _, body = http("GET", url(node, DB + "/collections"), headers={"X-Chroma-Token": ALICE})
    assert (code, body["error"]) == (403, "AuthError")


def test_read_only_token_reads_but_cannot_write(node: Cluster) -> None:
    client(node, WRITER).create_collection("shared", embedding_function=None).add(ids=["r1"], embeddings=[[0.5, 0.5]])
    reader = client(node, READER, "X-Chroma-Token")
    shared = reader.get_collection("shared", embedding_function=None)
    assert shared.get(include=[])["ids"] == ["r1"]
    names_before = sorted(c.name for c in reader.list_collections())
    for attempt in (lambda: shared.add(ids=["r2"], embeddings=[[1.0, 0.0]]),
                    lambda: shared.delete(ids=["r1"]),
                    lambda: shared.modify(name="renamed"),
                    lambda: reader.create_collection("readers-own"),
                    lambda: reader.delete_collection("shared")):
        with pytest.raises(ChromaAuthError) as refused:
            attempt()
        assert str(refused.value) == "User 'reader' may not do this: the token is read-only"
    assert shared.get(include=[])["ids"] == ["r1"]
    assert sorted(c.name for c in reader.list_collections()) == names_before


def test_admin_operations_refused_to_other_tokens(node: Cluster) -> None:
    writer = client(node, WRITER)
    writer.get_or_create_collection("survives-reset", embedding_function=None)
    with pytest.raises(ChromaAuthError) as refused:
        writer.reset()  # allowed by the cluster (allow_reset), not by this token
    assert str(refused.value) == "User 'writer' may not do this: this needs an admin token"
    admin_as_writer = chromadb.AdminClient(writer.get_settings())
    with pytest.raises(ChromaAuthError):
        admin_as_writer.create_tenant("writers-tenant")
    with pytest.raises(ChromaAuthError):
        admin_as_writer.create_database("writers-db")
    assert writer.get_collection("survives-reset").name == "survives-reset"
    assert http("GET", url(node, "/api/v2/tenants/writers-tenant"), headers=bearer(ADMIN))[0] == 404
    for path in ("/raftchroma/test/faults", "/raftchroma/test/partition", "/raftchroma/test/raft-stall"):
        assert http("POST", url(node, path), body={}, headers=bearer(WRITER))[0] == 403
        assert http("POST", url(node, path), body={})[0] == 401
    # an admin passes the token check (these routes then answer 404 without --fault-injection)
    assert http("POST", url(node, "/raftchroma/test/faults"), body={}, headers=bearer(ADMIN))[0] == 404
    assert http("POST", url(node, "/api/v2/tenants"), body={"name": "admins-tenant"}, headers=bearer(ADMIN))[0] == 200


def test_backup_export_and_import_need_and_send_a_token(node: Cluster, tmp_path: Path) -> None:
    """A backup holds every tenant's data: cluster admins only. The CLI sends --token."""
    assert http("GET", url(node, "/raftchroma/backup"))[0] == 401
    assert http("GET", url(node, "/raftchroma/backup"), headers=bearer(WRITER))[0] == 403
    base = [sys.executable, "-m", "raftchroma"]
    env = {k: v for k, v in os.environ.items() if k != "RAFTCHROMA_TOKEN"}

    def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                              env=dict(env, RAFTCHROMA_TOKEN=token) if token else env)

    refused = cli("backup", "--to", str(tmp_path / "no.backup"), "--url", node.node("n1").url)
    assert refused.returncode == 1 and "401" in refused.stderr and not (tmp_path / "no.backup").exists()
    done = cli("backup", "--to", str(tmp_path / "ok.backup"), "--url", node.node("n1").url, token=ADMIN)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ok.backup").read_bytes().startswith(b"RCBACKUP 1\n")
    writer = client(node, WRITER)
    writer.get_or_create_collection("to-export", embedding_function=None).upsert(ids=["e"], embeddings=[[1.0, 2.0]])
    exported = cli("export", "--url", node.node("n1").url, "--collection", "to-export", "--to",
                   str(tmp_path / "c.jsonl"), token=WRITER)
    assert exported.returncode == 0, exported.stderr
    imported = cli("import", str(tmp_path / "c.jsonl"), "--url", node.node("n1").url, "--collection", "imported",
                   "--token", WRITER)
    assert imported.returncode == 0, imported.stderr
    assert writer.get_collection("imported").get(ids=["e"])["ids"] == ["e"]


def test_liveness_routes_stay_open_and_the_rest_need_a_token(node: Cluster) -> None:
    for path in ("/api/v2/heartbeat", "/api/v2/version", "/api/v2/healthcheck", "/api/v2/pre-flight-checks",
                 "/raftchroma/status"):
        assert http("GET", url(node, path))[0] == 200, path
    for path in ("/api/v2/auth/identity", "/raftchroma/digest", "/api/v2/tenants/default_tenant", "/no/such/path"):
        assert http("GET", url(node, path))[0] == 401, path
    assert http("GET", url(node, "/raftchroma/digest"), headers=bearer(WRITER))[0] == 403
    assert http("GET", url(node, "/raftchroma/digest"), headers=bearer(ADMIN))[0] == 200
    assert http("GET", url(node, "/no/such/path"), headers=bearer(READER))[0] == 404


def test_tokens_never_reach_the_log(node: Cluster) -> None:
    http("GET", url(node, DB + "/collections"), headers={"X-Chroma-Token": "wrong-" + ADMIN})
    text = node.node("n1").log_path.read_text(errors="replace")
    assert not any(secret in text for secret in (ADMIN, WRITER, READER, ALICE))


# ------------------------------------------------------------------ JavaScript


def js_client(cluster: Cluster, headers: dict[str, str], collection: str) -> dict[str, Any]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (the JS client test needs Node 20+)")
    if not (JS_DIR / "node_modules" / "chromadb").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, capture_output=True,
                       timeout=300)
    args = {"port": cluster.node("n1").http_port, "headers": headers, "collection": collection}
    done = subprocess.run(["node", "client.mjs", json.dumps(args)], cwd=JS_DIR, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_js_client_with_token_header(node: Cluster) -> None:
    ensure_acme(node)
    out = js_client(node, {"x-chroma-token": ALICE}, "from-js")
    assert out == {
        "tenant": "acme", "database": "db1", "count": 2, "ids": ["a", "b"], "documents": ["first", "second"],
        "metadatas": [{"n": 1}, {"n": 2}], "embeddings": [[1, 0, 0], [0, 1, 0]], "nearest": [["b"]],
    }
    code, _, body = http("GET", url(node, "/api/v2/tenants/acme/databases/db1/collections/from-js"),
                         headers=bearer(ADMIN))
    assert (code, body["name"]) == (200, "from-js")
    assert js_client(node, {"Authorization": f"Bearer {READER}"}, "js-denied")["error"] == "ChromaForbiddenError"
    assert js_client(node, {"x-chroma-token": "nobody"}, "js-unknown")["error"] == "ChromaUnauthorizedError"
