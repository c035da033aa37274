"""A real 3-node cluster used through the real chromadb.HttpClient: writes on any node,
reads on any other, identical ids and state everywhere, Chroma's errors for bad input."""

from __future__ import annotations

import base64

import chromadb.errors
import numpy as np
import pytest

from tests.harness import Cluster, http

LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}
STALE = {"X-Raftchroma-Read-Consistency": "stale"}
SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"


def digests(cluster: Cluster) -> list[dict]:
    out = []
    for node in cluster.nodes.values():
        status, _, body = http("GET", node.url + "/raftchroma/digest", headers=LIN)
        assert status == 200, body
        out.append(body["collections"])
    return out


def test_create_on_one_write_on_another_read_on_third(cluster: Cluster) -> None:
    c1, c2, c3 = (cluster.node(n).client() for n in ("n1", "n2", "n3"))
    created = c1.create_collection("replicated", metadata={"topic": "demo"})
    on_two = c2.get_collection("replicated")
    on_two.add(ids=["a", "b"], embeddings=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
               metadatas=[{"k": 1}, {"k": 2}], documents=["alpha", "beta"])
    on_three = c3.get_collection("replicated")
    assert created.id == on_two.id == on_three.id
    got = on_three.get(include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == ["a", "b"]
    assert got["metadatas"] == [{"k": 1}, {"k": 2}]
    assert got["documents"] == ["alpha", "beta"]
    assert np.array_equal(np.asarray(got["embeddings"]), np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32))
    assert on_three.metadata == {"topic": "demo"}


def test_every_node_lists_collections_in_the_same_order(cluster: Cluster) -> None:
    client = cluster.node("n2").client()
    for name in ("order-c", "order-a", "order-b"):
        client.create_collection(name)
    listings = [[c.id for c in cluster.node(n).client().list_collections()] for n in cluster.nodes]
    assert listings[0] == listings[1] == listings[2]
    assert listings[0] == sorted(listings[0], key=str)
    pages = [c.id for c in cluster.node("n3").client().list_collections(limit=2, offset=1)]
    assert pages == listings[0][1:3]


def test_write_response_carries_the_applied_index(cluster: Cluster) -> None:
    node = cluster.node("n3")
    status, headers, body = http("POST", node.url + SCOPE + "/collections", {"name": "indexed"})
    assert status == 200
    first = int(headers["X-Raftchroma-Index"])
    vector = base64.b64encode(np.array([1, 2, 3], dtype="<f4").tobytes()).decode()
    status, headers, _ = http("POST", f"{node.url}{SCOPE}/collections/{body['id']}/add",
                              {"ids": ["x"], "embeddings": [vector]})
    assert status == 201
    assert int(headers["X-Raftchroma-Index"]) > first


def test_follower_linearizable_read_sees_write_acknowledged_elsewhere(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    writer = cluster.node(leader).client().get_or_create_collection("linreg")
    reader = cluster.node(follower).client(**LIN).get_collection("linreg")
    for i in range(30):
        writer.upsert(ids=["reg"], embeddings=[[float(i), 0.0]], metadatas=[{"v": i}])
        assert reader.get(ids=["reg"])["metadatas"] == [{"v": i}]


def test_min_index_read_on_any_node_sees_own_write(cluster: Cluster) -> None:
    node1, node3 = cluster.node("n1"), cluster.node("n3")
    _, _, col = http("POST", node1.url + SCOPE + "/collections", {"name": "ryw", "get_or_create": True})
    status, headers, _ = http("POST", f"{node1.url}{SCOPE}/collections/{col['id']}/upsert",
                              {"ids": ["k"], "embeddings": [[1.0]], "metadatas": [{"v": 7}]})
    assert status == 200
    index = headers["X-Raftchroma-Index"]
    status, _, body = http("POST", f"{node3.url}{SCOPE}/collections/{col['id']}/get", {"ids": ["k"]},
                           headers={**STALE, "X-Raftchroma-Min-Index": index})
    assert status == 200 and body["metadatas"] == [{"v": 7}]


def test_bad_read_consistency_header_is_a_chroma_error(cluster: Cluster) -> None:
    status, _, body = http("GET", cluster.node("n1").url + SCOPE + "/collections",
                           headers={"X-Raftchroma-Read-Consistency": "eventual"})
    assert status == 400 and body["error"] == "InvalidArgumentError"


@pytest.mark.parametrize("case", ["malformed", "wrong_dimension", "unknown_collection", "duplicate_name", "oversized"])
def test_bad_input_gets_chromas_answer_and_changes_nothing(cluster: Cluster, case: str) -> None:
    client = cluster.node("n1").client()
    col = client.get_or_create_collection("guarded")
    col.upsert(ids=["g1"], embeddings=[[1.0, 2.0]])
    before = digests(cluster)
    url = cluster.node("n2").url
    expected = {
        "malformed": (400, "InvalidArgumentError"),
        "wrong_dimension": (400, "InvalidArgumentError"),
        "unknown_collection": (404, "NotFoundError"),
        "duplicate_name": (409, "ChromaError"),
        "oversized": (413, "ChromaError"),
    }[case]
    if case == "malformed":
        status, _, body = http("POST", f"{url}{SCOPE}/collections/{col.id}/add", raw=b'{"ids": [')
    elif case == "wrong_dimension":
        status, _, body = http("POST", f"{url}{SCOPE}/collections/{col.id}/add", {"ids": ["g2"], "embeddings": [[1.0]]})
    elif case == "unknown_collection":
        status, _, body = http("POST", f"{url}{SCOPE}/collections/ff2a7781-f25a-4698-842d-924ff9b5be76/add",
                               {"ids": ["g3"], "embeddings": [[1.0, 2.0]]})
    elif case == "duplicate_name":
        status, _, body = http("POST", f"{url}{SCOPE}/collections", {"name": "guarded"})
    else:
        status, _, body = http("POST", f"{url}{SCOPE}/collections/{col.id}/add", raw=b" " * (41 * 1024 * 1024))
    assert (status, body["error"]) == expected, body
    assert digests(cluster) == before
    assert col.count() == 1


def test_client_errors_map_to_chroma_exceptions(cluster: Cluster) -> None:
    client = cluster.node("n3").client()
    with pytest.raises(chromadb.errors.NotFoundError):
        client.get_collection("does-not-exist")
    col = client.get_or_create_collection("dims")
    col.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(chromadb.errors.InvalidArgumentError, match="dimension of 3, got 2"):
        col.add(ids=["b"], embeddings=[[1.0, 2.0]])


def test_converged_digests_after_mixed_writes(cluster: Cluster) -> None:
    clients = [cluster.node(n).client() for n in cluster.nodes]
    col = clients[0].get_or_create_collection("mixed")
    for i in range(12):
        target = clients[i % 3].get_collection("mixed")
        target.upsert(ids=[f"id{i % 5}"], embeddings=[[float(i), 1.0]], metadatas=[{"i": i}], documents=[f"doc {i}"])
        if i % 4 == 3:
            target.delete(ids=[f"id{(i + 1) % 5}"])
    d = digests(cluster)
    assert d[0] == d[1] == d[2]
    assert str(col.id) in d[0]


def test_cluster_keeps_going_after_duplicate_creates(cluster: Cluster) -> None:
    """Regression: a duplicate tenant, database or collection is an answer, not a store failure."""
    client = cluster.node("n1").client()
    client.create_collection("dupe-me")
    for _ in range(2):
        with pytest.raises(chromadb.errors.ChromaError, match="already exists"):
            client.create_collection("dupe-me")
    status, _, body = http("POST", cluster.node("n2").url + "/api/v2/tenants", {"name": "default_tenant"})
    assert (status, body["error"]) == (409, "ChromaError")
    status, _, body = http("POST", cluster.node("n3").url + "/api/v2/tenants/default_tenant/databases",
                           {"name": "default_database"})
    assert (status, body["error"]) == (409, "ChromaError")
    after = cluster.node("n3").client().create_collection("after-dupes")
    after.add(ids=["x"], embeddings=[[1.0]])
    assert cluster.node("n2").client().get_collection("after-dupes").count() == 1
    assert all(cluster.node(n).answered_status()["apply_error"] is None for n in cluster.nodes)


@pytest.mark.parametrize("kind", ["add", "upsert", "update"])
def test_a_batch_above_chromas_limit_is_refused_before_the_log(cluster: Cluster, kind: str) -> None:
    """Embedded Chroma refuses more than 5,461 records in one call; committed, such a batch stopped
    every replica on it (and again after each restart). Chroma's clients refuse it too."""
    url = cluster.node("n2").url
    status, _, col = http("POST", url + SCOPE + "/collections", {"name": f"too-big-{kind}", "get_or_create": True})
    assert status == 200
    ids = [f"r{i}" for i in range(5462)]
    status, _, body = http("POST", f"{url}{SCOPE}/collections/{col['id']}/{kind}",
                           {"ids": ids, "embeddings": [[float(i % 7)] for i in range(5462)]})
    assert (status, body) == (400, {"error": "InvalidArgumentError",
                                    "message": "Batch size 5462 exceeds maximum batch size 5461"})
    status, _, _ = http("POST", f"{url}{SCOPE}/collections/{col['id']}/add",
                        {"ids": ids[:5461], "embeddings": [[1.0]] * 5461})
    assert status == 201
    assert [cluster.node(n).client().get_collection(f"too-big-{kind}").count() for n in cluster.nodes] == [5461] * 3
