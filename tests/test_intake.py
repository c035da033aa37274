"""Request hygiene on a real node (raftchroma/http/intake.py, [http] in cluster.toml): clients that
trickle headers or bodies are cut off, request bodies in flight are capped (503 Overloaded), gzip
bodies are read within max_body_bytes after decompression (a gzip bomb is 413 without being
inflated), large bodies are parsed in a worker thread, and a query's result size is bounded
([cluster] max_query_rows).

Raw sockets send what no well-behaved client would; every wait is a poll with a deadline. The
only sleeps are the trickle itself (a byte a second), paced by a receive timeout that also
watches for the disconnect."""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib
from pathlib import Path
from typing import Iterator

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings
from chromadb.errors import InvalidArgumentError

from tests.harness import DEFAULT_CLUSTER_KEYS, Cluster, http, make_cluster, start_cluster, wait_for

MAX_BODY_BYTES = 1024 * 1024
MAX_INFLIGHT_BYTES = 1536 * 1024
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
CLUSTER_KEYS = DEFAULT_CLUSTER_KEYS + f"\nmax_body_bytes = {MAX_BODY_BYTES}\nmax_query_rows = 1000"
HTTP_TABLE = f"""
[http]
header_read_timeout_s = {HEADER_TIMEOUT_S}
body_read_timeout_s = {BODY_TIMEOUT_S}
max_inflight_body_bytes = {MAX_INFLIGHT_BYTES}
json_thread_min_bytes = 65536
"""
DB = "/api/v2/tenants/default_tenant/databases/default_database"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = make_cluster(Path(tmp_path_factory.mktemp("intake")), size=1, cluster_keys=CLUSTER_KEYS,
                           extra_toml=HTTP_TABLE)
    try:
        start_cluster(cluster)
        yield cluster
    finally:
        cluster.stop_all()


def connect(cluster: Cluster) -> socket.socket:
    return socket.create_connection(("127.0.0.1", cluster.node("n1").http_port), timeout=5)


def trickle_until_closed(sock: socket.socket, data: bytes, deadline_s: float) -> tuple[float, bytes]:
    """Send `data` a byte a second, reading meanwhile; (seconds until the server closed, what it sent)."""
    start, received = time.monotonic(), b""
    sock.settimeout(1.0)
    for i in range(len(data) + 1000):
        assert time.monotonic() - start < deadline_s, "the server did not close the connection in time"
        try:
            if i < len(data):
                sock.sendall(data[i:i + 1])
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start, received
        if not chunk:
            return time.monotonic() - start, received
        received += chunk
    raise AssertionError("ran out of bytes to trickle")


def response_of(raw: bytes) -> tuple[int, dict[str, str], object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body) if body else None


def in_flight(cluster: Cluster) -> int:
    return cluster.node("n1").answered_status()["request_body_bytes_in_flight"]


def test_trickled_headers_are_cut_off(node: Cluster) -> None:
    with connect(node) as sock:
        elapsed_s, received = trickle_until_closed(sock, b"GET /api/v2/heartbeat HTTP/1.1\r\nHost: x\r\n\r\n", 30)
    assert received == b""  # closed without an answer
    assert HEADER_TIMEOUT_S - 0.5 <= elapsed_s < HEADER_TIMEOUT_S + 10
    assert http("GET", node.node("n1").url + "/api/v2/heartbeat")[0] == 200  # the node serves on


def test_an_idle_keepalive_connection_is_not_cut_by_the_header_deadline(node: Cluster) -> None:
    """The deadline runs from a request's first byte, not from the last answer."""
    request = b"GET /api/v2/version HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(node) as sock:
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.settimeout(HEADER_TIMEOUT_S + 1.0)
        with pytest.raises(socket.timeout):  # neither a byte nor a close (b"") for longer than the deadline
            sock.recv(1)
        sock.settimeout(5)
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_trickled_body_gets_408_and_the_connection_is_closed(node: Cluster) -> None:
    head = (b"POST /api/v2/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    with connect(node) as sock:
        sock.sendall(head)
        elapsed_s, received = trickle_until_closed(sock, b'{"name": "slow' + b" " * 84 + b'"}', 30)
    status, headers, body = response_of(received)
    assert (status, body) == (408, {"error": "ChromaError", "message":
                                    "The request body did not arrive within 3 s ([http] body_read_timeout_s)"})
    assert headers["connection"] == "close"
    assert BODY_TIMEOUT_S - 0.5 <= elapsed_s < BODY_TIMEOUT_S + 15
    assert http("GET", node.node("n1").url + "/api/v2/tenants/slow")[0] == 404  # nothing was created


def test_request_bodies_in_flight_are_capped(node: Cluster) -> None:
    url = node.node("n1").url
    holder = connect(node)  # declares 1,000,000 bytes and sends none of them: they stay reserved
    holder.sendall(b"POST /api/v2/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 1000000\r\n\r\n")
    try:
        wait_for(lambda: in_flight(node) == 1_000_000, 10, "the holder's body to be reserved")
        with connect(node) as second:  # 600,000 more would pass max_inflight_body_bytes: refused before its body
            second.sendall(b"POST /api/v2/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 600000\r\n\r\n")
            raw = b""
            while b"}" not in raw:
                chunk = second.recv(65536)
                assert chunk, "closed before answering"
                raw += chunk
        status, _, body = response_of(raw)
        assert (status, body) == (503, {"error": "Overloaded", "message": (
            "Request bodies in flight on this node would reach 1600000 bytes, above [http] "
            f"max_inflight_body_bytes = {MAX_INFLIGHT_BYTES}; retry later")})
    finally:
        holder.close()
    wait_for(lambda: in_flight(node) == 0, 10, "the holder's reservation to be returned")
    padded = json.dumps({"name": "after-the-holder"}).encode().ljust(600_000)
    assert http("POST", url + "/api/v2/tenants", raw=padded)[0] == 200
    assert in_flight(node) == 0


def vm_peak_bytes(cluster: Cluster) -> int:
    """The node's peak resident memory (VmHWM) so far."""
    text = Path(f"/proc/{cluster.node('n1').process.pid}/status").read_text()
    line = next(line for line in text.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def gzip_of_zeros(n_bytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(n_bytes // len(zeros))) + packer.flush()


def test_gzip_bomb_is_413_without_being_inflated(node: Cluster) -> None:
    bomb = gzip_of_zeros(256 * 1024 * 1024)  # 256 MiB of zeros in ~250 KB: under max_body_bytes as sent
    assert len(bomb) < MAX_BODY_BYTES
    peak_before = vm_peak_bytes(node)
    code, _, body = http("POST", node.node("n1").url + DB + "/collections", raw=bomb,
                         headers={"Content-Encoding": "gzip"})
    assert (code, body) == (413, {"error": "ChromaError",
                                  "message": "Failed to buffer the request body: length limit exceeded"})
    assert vm_peak_bytes(node) - peak_before < 64 * 1024 * 1024  # inflating it all would take 256 MiB
    assert in_flight(node) == 0


def test_gzip_bodies_count_after_decompression_and_large_ones_parse_off_the_loop(node: Cluster) -> None:
    url = node.node("n1").url
    code, _, created = http("POST", url + DB + "/collections", body={"name": "gzipped"})
    assert code == 200
    n, dim = 400, 32  # ~150 KB of JSON: above json_thread_min_bytes, so parsed in a worker thread
    ids = [f"id-{i:03d}" for i in range(n)]
    embeddings = [[(i * dim + j) / 1000.0 for j in range(dim)] for i in range(n)]
    raw = json.dumps({"ids": ids, "embeddings": embeddings, "documents": ids}).encode()
    assert len(raw) > 65536
    add = url + DB + f"/collections/{created['id']}/add"
    code, _, _ = http("POST", add, raw=gzip.compress(raw), headers={"Content-Encoding": "gzip"})
    assert code == 201
    code, _, got = http("POST", url + DB + f"/collections/{created['id']}/get",
                        body={"ids": ["id-007", "id-399"], "include": ["documents", "embeddings"]})
    assert (code, got["ids"], got["documents"]) == (200, ["id-007", "id-399"], ["id-007", "id-399"])
    stored = np.asarray(got["embeddings"], dtype="<f4")
    assert (stored == np.asarray([embeddings[7], embeddings[399]], dtype="<f4")).all()  # float32, as Chroma stores

    # over max_body_bytes once inflated, though small as sent
    big = json.dumps({"ids": ["x"], "embeddings": [[0.0] * 300_000]}).encode()
    assert len(big) > MAX_BODY_BYTES and len(gzip.compress(big)) < MAX_BODY_BYTES // 10
    code, _, body = http("POST", add, raw=gzip.compress(big), headers={"Content-Encoding": "gzip"})
    assert (code, body["message"]) == (413, "Failed to buffer the request body: length limit exceeded")
    code, _, body = http("POST", add, raw=b"{}", headers={"Content-Encoding": "br"})
    assert (code, body) == (415, {"error": "ChromaError",
                                  "message": "Unsupported Content-Encoding 'br': send the body as is or gzip it"})


def test_query_result_size_is_bounded(node: Cluster) -> None:
    client = chromadb.HttpClient(host="127.0.0.1", port=node.node("n1").http_port,
                                 settings=Settings(anonymized_telemetry=False))
    collection = client.create_collection("bounded", embedding_function=None)
    collection.add(ids=["a", "b", "c"], embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    within = collection.query(query_embeddings=[[1.0, 0.0]] * 10, n_results=100, include=[])  # 1,000 rows: the bound
    assert within["ids"] == [["a", "c", "b"]] * 10
    with pytest.raises(InvalidArgumentError) as refused:
        collection.query(query_embeddings=[[1.0, 0.0]] * 11, n_results=100, include=[])
    assert type(refused.value) is InvalidArgumentError
    assert str(refused.value) == (
        "A query may ask for at most 1000 rows (n_results x query embeddings, [cluster] max_query_rows); "
        "this one asks for 100 x 11 = 1100: ask for fewer results or split the query")
