"""Crash safety: SIGKILL one random node, or all three, at random instants during a stream of
writes, many times; restart; nothing acknowledged is lost and every replica is identical."""

from __future__ import annotations

import random
import threading
import urllib.error
from pathlib import Path

import pytest

from tests.harness import Cluster, http, make_cluster, start_cluster, wait_for

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}


class Writer(threading.Thread):
    """Adds unique ids round-robin over the nodes; records ok / info outcomes."""

    def __init__(self, cluster: Cluster, collection_id: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.collection_id = cluster, collection_id
        self.acked: list[str] = []
        self.unknown: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        nodes = list(self.cluster.nodes)
        for i in range(100_000):
            if self.stop.is_set():
                return
            url = self.cluster.node(nodes[i % len(nodes)]).url
            record_id = f"w{i}"
            try:
                status, _, _ = http("POST", f"{url}{SCOPE}/collections/{self.collection_id}/add",
                                    {"ids": [record_id], "embeddings": [[float(i), 1.0]]}, timeout_s=40)
            except (urllib.error.URLError, OSError) as exc:
                refused = isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)
                if not refused:
                    self.unknown.append(record_id)
                continue
            if status == 201:
                self.acked.append(record_id)
            elif status == 504:
                self.unknown.append(record_id)


def ids_on(cluster: Cluster, node_id: str, collection_id: str) -> set[str]:
    status, _, body = http("POST", f"{cluster.node(node_id).url}{SCOPE}/collections/{collection_id}/get",
                           {"include": []}, headers=LIN, timeout_s=60)
    assert status == 200, body
    return set(body["ids"])


def run_crashes(cluster: Cluster, rounds: int, all_at_once: bool, seed: int) -> None:
    rng = random.Random(seed)
    status, _, col = http("POST", cluster.node(cluster.leader()).url + SCOPE + "/collections", {"name": "crash"})
    assert status == 200
    writer = Writer(cluster, col["id"])
    writer.start()
    try:
        for _ in range(rounds):
            target = len(writer.acked) + rng.randint(2, 12)
            wait_for(lambda: len(writer.acked) >= target, 120, "writes to progress")
            victims = list(cluster.nodes) if all_at_once else [rng.choice(list(cluster.nodes))]
            for node_id in victims:
                cluster.kill(node_id)
            for node_id in victims:
                cluster.start(node_id)
        wait_for(lambda: len(writer.acked) >= target + 3, 120, "writes to resume after the last crash")
    finally:
        writer.stop.set()
        writer.join(timeout=60)
    cluster.leader(timeout_s=60)
    acked, attempted = set(writer.acked), set(writer.acked) | set(writer.unknown)
    present = [ids_on(cluster, n, col["id"]) for n in cluster.nodes]
    for node_present in present:
        assert acked <= node_present, f"lost acknowledged writes: {sorted(acked - node_present)}"
        assert node_present <= attempted, f"never attempted: {sorted(node_present - attempted)}"
    assert present[0] == present[1] == present[2]
    counts = [http("GET", f"{cluster.node(n).url}{SCOPE}/collections/{col['id']}/count", headers=LIN)[2]
              for n in cluster.nodes]
    assert counts == [len(present[0])] * 3
    digests = [http("GET", cluster.node(n).url + "/raftchroma/digest", headers=LIN)[2]["collections"]
               for n in cluster.nodes]
    assert digests[0] == digests[1] == digests[2]


@pytest.mark.slow
@pytest.mark.parametrize("all_at_once, rounds", [(False, 8), (True, 4)])
def test_random_sigkills_lose_nothing(tmp_path: Path, all_at_once: bool, rounds: int) -> None:
    cluster = make_cluster(tmp_path, raft_keys="snapshot_min_entries = 25")
    try:
        start_cluster(cluster)
        run_crashes(cluster, rounds, all_at_once, seed=7 if all_at_once else 11)
    finally:
        cluster.stop_all()
