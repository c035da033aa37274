"""The workloads that run the same way against `chroma run` and raftchroma, through the real
`chromadb.HttpClient`: batched ingest, concurrent single-record upserts, concurrent queries and gets.

Owns: the requests and their data (seeded numpy vectors, explicit embeddings only) and the checks
on the answers (a get by id must find its record). Must not: start or stop servers; a workload
gets its clients from the caller, one per thread (each HttpClient has its own connection pool).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bench.measure import Op, Sample, concurrent, sequential
from bench.options import Options

INGEST = "ingest"
UPSERTS = "upserts"
QUERY_N_RESULTS = 10
POOL_VECTORS = 1_024   # distinct vectors the upserters and the queries cycle through

ClientFactory = Callable[[int], Any]  # client number -> a chromadb client


def ingest(client: Any, collection_name: str, data: np.ndarray, batch_size: int) -> Sample:
    """Add `data` as records v0, v1, ... in batches of `batch_size`, one batch at a time."""
    collection = client.create_collection(collection_name)
    starts = list(range(0, len(data), batch_size))

    def add_batch(b: int) -> None:
        lo, hi = starts[b], min(starts[b] + batch_size, len(data))
        collection.add(ids=[f"v{i}" for i in range(lo, hi)], embeddings=data[lo:hi])

    sample = sequential(len(starts), add_batch, lambda b: min(batch_size, len(data) - starts[b]))
    count = collection.count()
    if count != len(data):
        raise AssertionError(f"{collection_name}: count is {count} after ingesting {len(data)}")
    return sample


def pool(options: Options, salt: int) -> np.ndarray:
    return np.random.default_rng(options.seed + salt).random((POOL_VECTORS, options.dim), dtype=np.float32)


def upserts(make_client: ClientFactory, options: Options) -> Sample:
    """`options.clients` clients, each upserting one record per request (ids of its own)."""
    make_client(0).get_or_create_collection(UPSERTS)
    vectors = pool(options, salt=1)

    def op_for(k: int) -> Op:
        collection = make_client(k).get_collection(UPSERTS)
        return lambda i: collection.upsert(ids=[f"c{k}-{i}"], embeddings=vectors[(k * 7919 + i) % POOL_VECTORS:][:1])

    return concurrent([op_for(k) for k in range(options.clients)], options.upsert_s)


def queries(make_client: ClientFactory, options: Options) -> Sample:
    """`options.read_clients` clients, each querying the ingest collection for the 10 nearest."""
    vectors = pool(options, salt=3)

    def op_for(k: int) -> Op:
        collection = make_client(k).get_collection(INGEST)

        def query(i: int) -> None:
            answer = collection.query(query_embeddings=vectors[(k * 7919 + i) % POOL_VECTORS:][:1],
                                      n_results=QUERY_N_RESULTS)
            if len(answer["ids"][0]) != QUERY_N_RESULTS:
                raise AssertionError(f"query answered {len(answer['ids'][0])} ids")
        return query

    return concurrent([op_for(k) for k in range(options.read_clients)], options.read_s)


def counts(make_client: ClientFactory, options: Options) -> Sample:
    """`options.read_clients` clients, each counting the ingest collection (it must hold every record)."""
    def op_for(k: int) -> Op:
        collection = make_client(k).get_collection(INGEST)

        def count(i: int) -> None:
            if (n := collection.count()) != options.records:
                raise AssertionError(f"count answered {n}, expected {options.records}")
        return count

    return concurrent([op_for(k) for k in range(options.read_clients)], options.read_s)


def gets(make_client: ClientFactory, options: Options) -> Sample:
    """`options.read_clients` clients, each getting one random ingested record by id."""
    def op_for(k: int) -> Op:
        collection = make_client(k).get_collection(INGEST)
        picks = np.random.default_rng(options.seed + 100 + k).integers(0, options.records, POOL_VECTORS)

        def get(i: int) -> None:
            record_id = f"v{picks[i % POOL_VECTORS]}"
            if collection.get(ids=[record_id])["ids"] != [record_id]:
                raise AssertionError(f"get({record_id}) did not find it")
        return get

    return concurrent([op_for(k) for k in range(options.read_clients)], options.read_s)


# ----------------------------------------------------------------- answer quality

RECALL_QUERIES = 100


def top_ids(client: Any, queries: np.ndarray) -> list[list[str]]:
    """The ingest collection's 10 nearest ids for each query, one query at a time."""
    collection = client.get_collection(INGEST)
    return [collection.query(query_embeddings=q[None, :], n_results=QUERY_N_RESULTS)["ids"][0] for q in queries]


def exact_top_ids(data: np.ndarray, queries: np.ndarray) -> list[list[str]]:
    """Brute-force 10 nearest by squared L2 (Chroma's default space)."""
    distances = (queries ** 2).sum(1)[:, None] - 2 * queries @ data.T + (data ** 2).sum(1)[None, :]
    return [[f"v{i}" for i in row] for row in np.argsort(distances, axis=1)[:, :QUERY_N_RESULTS]]


def overlap(a: list[list[str]], b: list[list[str]]) -> float:
    """Mean share of b's ids found in a's answer to the same query (recall@10 when b is exact)."""
    return round(float(np.mean([len(set(x) & set(y)) / max(1, len(y)) for x, y in zip(a, b)])), 4)


def recall(clients: dict[str, Any], data: np.ndarray, options: Options) -> dict[str, Any]:
    """HNSW is approximate: each target's recall@10 against brute force, and how far the raftchroma
    nodes' answers agree with the first node's."""
    queries = np.random.default_rng(options.seed + 9).random((RECALL_QUERIES, options.dim), dtype=np.float32)
    exact = exact_top_ids(data, queries)
    answers = {name: top_ids(client, queries) for name, client in clients.items()}
    nodes = [name for name in answers if name != "chroma_run"]
    return {"queries": RECALL_QUERIES, "recall_at_10": {name: overlap(ids, exact) for name, ids in answers.items()},
            "agreement_with_" + nodes[0]: {n: overlap(answers[n], answers[nodes[0]]) for n in nodes[1:]}}
