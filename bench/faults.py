"""The raftchroma-only workloads, with a fault: the leader SIGKILLed (time to the first write
acknowledged through a survivor), and a follower down while records are written (time for it to
catch up once started again).

Owns: the fault, the writes that probe it (raw HTTP, so that every attempt has its own timeout
and nothing retries behind our back), and the wait for the cluster to be whole again before
the next kill. Must not: kill anything but a node of the benchmark's own cluster.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any, Callable

import numpy as np

from tests.harness import http, wait_for

from bench.options import Options
from bench.servers import STATUS_POLL_S, Servers, wait_caught_up

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
PROBES_PER_SURVIVOR = 2        # concurrent writers per survivor while the leader is gone
PROBE_TIMEOUT_S = 15.0         # one attempt; above the default write_timeout_s (10 s)
PROBE_RETRY_S = 0.02           # pause after a refused attempt
FIRST_ACK_TIMEOUT_S = 120.0
REJOIN_TIMEOUT_S = 300.0


def collection_id(servers: Servers, node_id: str, name: str) -> str:
    status, _, body = http("POST", f"{servers.cluster.node(node_id).url}{SCOPE}/collections",
                           {"name": name, "get_or_create": True}, timeout_s=PROBE_TIMEOUT_S)
    if status != 200:
        raise RuntimeError(f"creating collection {name}: {status} {body}")
    return body["id"]


def _probe(url: str, col_id: str, vector: list[float], acked: list[float], seen: dict[str, int],
           done: threading.Event, give_up_at: float) -> None:
    """Upsert one record after another through `url` until one is acknowledged or another probe's is."""
    while not done.is_set() and time.perf_counter() < give_up_at:
        body = {"ids": [f"k-{uuid.uuid4().hex}"], "embeddings": [vector]}
        try:
            status, _, _ = http("POST", f"{url}{SCOPE}/collections/{col_id}/upsert", body,
                                headers={"X-Raftchroma-Request-Id": str(uuid.uuid4())}, timeout_s=PROBE_TIMEOUT_S)
            outcome = str(status)
        except OSError as exc:
            status, outcome = 0, type(getattr(exc, "reason", exc)).__name__
        seen[outcome] = seen.get(outcome, 0) + 1
        if status in (200, 201):
            acked.append(time.perf_counter())
            done.set()
            return
        time.sleep(PROBE_RETRY_S)


def kill_leader_once(servers: Servers, col_id: str, vector: list[float]) -> dict[str, Any]:
    """SIGKILL the leader; seconds from the kill to the first write acknowledged through a survivor."""
    leader = servers.leader()
    wait_caught_up(servers)
    survivors = servers.followers(leader)
    acked: list[float] = []
    seen: dict[str, int] = {}
    done = threading.Event()
    killed_at = time.perf_counter()
    servers.cluster.kill(leader, signal.SIGKILL)
    give_up_at = killed_at + FIRST_ACK_TIMEOUT_S
    probes = [threading.Thread(target=_probe, daemon=True,
                               args=(servers.cluster.node(n).url, col_id, vector, acked, seen, done, give_up_at))
              for n in survivors for _ in range(PROBES_PER_SURVIVOR)]
    for probe in probes:
        probe.start()
    for probe in probes:
        probe.join(timeout=FIRST_ACK_TIMEOUT_S + PROBE_TIMEOUT_S)
    if not acked:
        raise TimeoutError(f"no write was acknowledged within {FIRST_ACK_TIMEOUT_S} s of killing {leader}")
    first_ack_s = min(acked) - killed_at
    new_leader = servers.cluster.leader(among=survivors, timeout_s=FIRST_ACK_TIMEOUT_S)
    rejoin_s = restart_and_rejoin(servers, leader)
    return {"killed": leader, "new_leader": new_leader, "first_ack_s": round(first_ack_s, 3),
            "attempt_outcomes": seen, "rejoin_s": round(rejoin_s, 3)}


def restart_and_rejoin(servers: Servers, node_id: str) -> float:
    """Start `node_id` again; seconds until it follows the leader and has applied its log."""
    started = time.perf_counter()
    servers.cluster.start(node_id)
    wait_for(lambda: servers.cluster.node(node_id).alive() and servers.status(node_id) is not None,
             REJOIN_TIMEOUT_S, f"{node_id} to answer its status", interval_s=STATUS_POLL_S)
    wait_caught_up(servers)
    return time.perf_counter() - started


def leader_kills(servers: Servers, options: Options, log: Callable[[str], None]) -> list[dict[str, Any]]:
    col_id = collection_id(servers, servers.leader(), "failover")
    vector = np.random.default_rng(options.seed + 5).random(options.dim, dtype=np.float32).tolist()
    kills = []
    for k in range(options.kills):
        kills.append(kill_leader_once(servers, col_id, vector))
        log(f"leader kill {k + 1}/{options.kills}: {kills[-1]['killed']} killed, first ack after "
            f"{kills[-1]['first_ack_s']} s, rejoined in {kills[-1]['rejoin_s']} s")
    return kills


def catch_up(servers: Servers, options: Options, data: np.ndarray) -> dict[str, Any]:
    """Stop a follower (SIGTERM), write `data` through the leader, start the follower again: seconds
    until its applied index reaches the leader's commit index."""
    leader = servers.leader()
    wait_caught_up(servers)
    follower = servers.followers(leader)[0]
    servers.cluster.kill(follower, signal.SIGTERM)
    collection = servers.node_client(leader).create_collection("catchup")
    for lo in range(0, len(data), options.batch_size):
        hi = min(lo + options.batch_size, len(data))
        collection.add(ids=[f"v{i}" for i in range(lo, hi)], embeddings=data[lo:hi])
    target_index = wait_for(lambda: servers.status(leader), REJOIN_TIMEOUT_S, "the leader's status")["commit_index"]
    started = time.perf_counter()
    servers.cluster.start(follower)
    wait_for(lambda: servers.status(follower) is not None, REJOIN_TIMEOUT_S, f"{follower} to answer its status",
             interval_s=STATUS_POLL_S)
    first_status_s = time.perf_counter() - started

    def applied() -> dict[str, Any] | None:
        mine, leaders = servers.status(follower), servers.status(leader)
        return mine if mine and leaders and mine["applied_index"] >= leaders["commit_index"] else None

    status = wait_for(applied, REJOIN_TIMEOUT_S, f"{follower} to catch up", interval_s=STATUS_POLL_S)
    catch_up_s = time.perf_counter() - started
    return {"follower": follower, "records": len(data), "leader_commit_index": target_index,
            "catch_up_s": round(catch_up_s, 3), "first_status_s": round(first_status_s, 3),
            "snapshot_installs_since_start": status["snapshot_installs"]}
