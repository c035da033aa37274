"""TLS for the client API ([tls] in cluster.toml): a real node serving https with a throwaway CA
(tests/certs.py), Chroma's real Python client over `ssl=True` verifying with that CA, and client
certificates required when `client_ca_file` is set. The harness and `raftchroma status` reach the
nodes over https too."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
from pathlib import Path

import chromadb
import pytest
from chromadb.config import Settings

from tests.certs import CA
from tests.harness import Cluster, http, make_cluster, start_cluster


def tls_cluster(root: Path, tls_toml: str, context: ssl.SSLContext) -> Cluster:
    cluster = make_cluster(root, size=1, extra_toml=tls_toml, client_ssl=context)
    start_cluster(cluster)
    return cluster


@pytest.fixture
def servers_ca(tmp_path: Path) -> CA:
    return CA(tmp_path, "servers-ca")


def cli_status(cluster: Cluster, *flags: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "raftchroma", "status", "--json", "--config",
                           str(cluster.config_path), *flags], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


def test_python_client_over_https_with_the_ca(tmp_path: Path, servers_ca: CA) -> None:
    server = servers_ca.issue("node", server=True)
    toml = f'[tls]\ncert_file = "{server.cert}"\nkey_file = "{server.key}"\n'
    cluster = tls_cluster(tmp_path, toml, ssl.create_default_context(cafile=str(servers_ca.files.cert)))
    try:
        port = cluster.node("n1").http_port
        client = chromadb.HttpClient(host="127.0.0.1", port=port, ssl=True, settings=Settings(
            anonymized_telemetry=False, chroma_server_ssl_verify=str(servers_ca.files.cert)))
        collection = client.create_collection("over-tls", embedding_function=None)
        collection.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["x", "y"])
        assert collection.get(include=["documents"])["documents"] == ["x", "y"]
        assert collection.query(query_embeddings=[[0.1, 0.9]], n_results=1, include=[])["ids"] == [["b"]]

        with pytest.raises(ValueError, match="Could not connect to a Chroma server"):  # the system CAs do not know it
            chromadb.HttpClient(host="127.0.0.1", port=port, ssl=True, settings=Settings(anonymized_telemetry=False))
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain http on the TLS port
            http("GET", f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout_s=5)
        assert cli_status(cluster, "--cacert", str(servers_ca.files.cert))["reachable"] is True
        assert cli_status(cluster)["reachable"] is False  # no CA given and none in [tls] ca_file
    finally:
        cluster.stop_all()


def test_client_certificate_required_when_client_ca_file_is_set(tmp_path: Path, servers_ca: CA) -> None:
    server = servers_ca.issue("node", server=True)
    clients_ca = CA(tmp_path, "clients-ca")
    good = clients_ca.issue("good-client", server=False)
    rogue = CA(tmp_path, "rogue-ca").issue("rogue-client", server=False)
    toml = (f'[tls]\ncert_file = "{server.cert}"\nkey_file = "{server.key}"\n'
            f'client_ca_file = "{clients_ca.files.cert}"\nca_file = "{servers_ca.files.cert}"\n')

    def context(cert: Path | None, key: Path | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(servers_ca.files.cert))
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        return ctx

    cluster = tls_cluster(tmp_path, toml, context(good.cert, good.key))  # the harness polls with the good one
    try:
        url = cluster.node("n1").url + "/api/v2/heartbeat"
        assert http("GET", url, context=context(good.cert, good.key))[0] == 200
        for refused in (context(None, None), context(rogue.cert, rogue.key)):
            with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
                http("GET", url, context=refused, timeout_s=5)
        # Chroma's Python client takes a CA but no client certificate: it is refused (TLS 1.3
        # refuses after the handshake, so httpx sees the connection close).
        with pytest.raises(ValueError, match="Server disconnected without sending a response"):
            chromadb.HttpClient(host="127.0.0.1", port=cluster.node("n1").http_port, ssl=True, settings=Settings(
                anonymized_telemetry=False, chroma_server_ssl_verify=str(servers_ca.files.cert)))
        assert cli_status(cluster, "--cert", str(good.cert), "--key", str(good.key))["reachable"] is True
        assert cli_status(cluster)["reachable"] is False
    finally:
        cluster.stop_all()
